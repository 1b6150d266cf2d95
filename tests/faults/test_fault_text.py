"""Issue 9, items 12 and 13: text inputs with a byte-order mark, stdin, zero-width text, rows named by
file:line, paths that are files or missing, messages that give the right fix, warnings that are due."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from faultkit import INT8, SENTENCES, TEXT, assert_ok, assert_one_line_error, cli, engine_file, flip_bit, write_sst2

MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"


# --- item 12: byte-order marks ------------------------------------------------------------------------------


def _mrpc_with_bom(directory: Path) -> Path:
    task = directory / "MRPC"
    task.mkdir(parents=True)
    rows = [f"{i % 2}\t{i}\t{i + 100}\t{SENTENCES[i % 6]}\t{SENTENCES[(i + 1) % 6]}" for i in range(8)]
    for split in ("train", "dev"):
        (task / f"{split}.tsv").write_bytes(b"\xef\xbb\xbf" + ("\n".join([MRPC_HEADER, *rows]) + "\n").encode())
    return directory


@pytest.mark.parametrize("task", ["sst2", "mrpc"])
def test_glue_tsv_with_byte_order_mark(bundle: Path, tmp_path: Path, task: str) -> None:
    """Item 12: GLUE files that begin with a UTF-8 byte-order mark (as the official MRPC dev/train do) are read."""
    data = write_sst2(tmp_path / "glue", rows=8, bom=True) if task == "sst2" else _mrpc_with_bom(tmp_path / "glue")
    result = cli("eval", bundle, "--task", task, "--data-dir", data, "--quiet")
    assert_ok(result)
    assert "(8 examples)" in result.stdout


def test_run_file_with_byte_order_mark(bundle: Path, tmp_path: Path) -> None:
    """Item 12: ``run --file`` strips a leading byte-order mark: the first text is the text, without U+FEFF."""
    path = tmp_path / "texts.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(SENTENCES[:3]).encode() + b"\n")
    result = cli("run", bundle, "--file", path, "--json")
    assert_ok(result)
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == SENTENCES[:3]


# --- item 13 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "inspect", "build", "eval"])
def test_file_where_a_bundle_directory_is_expected(tmp_path: Path, glue_dir: Path, command: str) -> None:
    """Item 13: a file given where a bundle directory is expected is reported as not a directory, not as
    missing."""
    path = tmp_path / "bundle.tar"
    path.write_bytes(b"not a directory")
    args = {"run": ("run", path, TEXT), "inspect": ("inspect", path), "build": ("build", path, "--int8"),
            "eval": ("eval", path, "--task", "sst2", "--data-dir", glue_dir, "--quiet")}[command]
    assert_one_line_error(cli(*args), r"bundle\.tar", r"not a (bundle )?director|is a file", absent=(r"does not exist",))


@pytest.mark.parametrize("fault", ["flipped", "deleted"])
def test_engine_fault_says_rebuild_not_reexport(bundle_copy: Path, fault: str) -> None:
    """Item 13: a corrupted or missing engine file (which only needs a rebuild) says to rebuild the set,
    not to re-export the bundle."""
    engine = bundle_copy / engine_file(bundle_copy, INT8, "layer_02")
    if fault == "flipped":
        flip_bit(engine)
    else:
        engine.unlink()
    line = assert_one_line_error(cli("run", bundle_copy, TEXT, "--engines", INT8), r"layer_02\.onnx",
                                 r"rebuild|trtbert build", absent=(r"re-?export",))
    assert INT8 in line


def test_file_dash_reads_stdin(bundle: Path) -> None:
    """Item 13: ``run --file -`` reads the inputs from stdin."""
    result = cli("run", bundle, "--file", "-", "--json", input="\n".join(SENTENCES[:2]) + "\n")
    assert_ok(result)
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == SENTENCES[:2]


@pytest.mark.parametrize("text", ["\u200b\u200b", "\u200c \u2060\u200d", "\ufeff"],
                         ids=["zwsp", "zw-mix", "zwnbsp"])
def test_zero_width_only_text_is_refused(bundle: Path, text: str) -> None:
    """Item 13: text made only of zero-width characters is refused like whitespace-only text."""
    result = cli("run", bundle, text)
    assert_one_line_error(result, r"empty|whitespace|no text|invisible|zero.width")
    assert result.stdout == ""


def test_empty_row_in_run_file_is_named_by_file_and_line(bundle: Path, tmp_path: Path) -> None:
    """Item 13: an empty row of ``run --file`` is reported as file:line, not "input N"."""
    path = tmp_path / "rows.tsv"
    path.write_text(f"{SENTENCES[0]}\n\n   \n{SENTENCES[1]}\n", encoding="utf-8")  # line 3 is blank text
    assert_one_line_error(cli("run", bundle, "--file", path), r"rows\.tsv:3\b")


def test_empty_pair_column_in_run_file_is_named_by_file_and_line(bundle: Path, tmp_path: Path) -> None:
    """Item 13: a pair row whose second text is empty is reported as file:line."""
    path = tmp_path / "pairs.tsv"
    path.write_text(f"{SENTENCES[0]}\t{SENTENCES[1]}\n{SENTENCES[2]}\t \n", encoding="utf-8")
    assert_one_line_error(cli("run", bundle, "--file", path), r"pairs\.tsv:2\b")


def test_empty_row_in_eval_data_is_named_by_file_and_line(bundle: Path, tmp_path: Path) -> None:
    """Item 13: an example with empty text in a GLUE file is reported as file:line by ``eval``."""
    data = write_sst2(tmp_path / "glue", rows=6)
    dev = data / "SST-2" / "dev.tsv"
    lines = dev.read_text(encoding="utf-8").splitlines()
    lines[2] = "\t1"  # file line 3: no sentence
    dev.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert_one_line_error(cli("eval", bundle, "--task", "sst2", "--data-dir", data, "--quiet"), r"dev\.tsv:3\b")


def test_missing_local_path_is_not_looked_up_on_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 13: ``--model ex/does-not-exist`` where ``ex/`` is a local directory is reported as a missing
    path, not looked up on the Hugging Face Hub."""
    (tmp_path / "ex").mkdir()
    monkeypatch.chdir(tmp_path)
    result = cli("export", "--model", "ex/does-not-exist", "--out", tmp_path / "out")
    assert_one_line_error(result, re.escape("ex/does-not-exist"), r"does not exist|not found|no such",
                          absent=(r"hub",))


@pytest.mark.parametrize("rule", ["entropy:0.5", "patience:1", "confidence:0.6"])
def test_exit_rule_on_final_only_bundle_warns(final_only_bundle: Path, rule: str) -> None:
    """Item 13: an exit rule on a bundle with only the final exit can do nothing: say so with a warning."""
    result = cli("run", final_only_bundle, TEXT, "--exit", rule)
    assert_ok(result)
    warnings = [ln for ln in result.stderr.splitlines() if re.search(r"warn", ln, re.IGNORECASE)]
    assert any(re.search(r"final|only|no (intermediate |early )?exit", ln, re.IGNORECASE) for ln in warnings), \
        f"no warning that {rule} cannot exit early on a final-exit-only bundle; stderr: {result.stderr!r}"

