"""``trtbert run`` through click's CliRunner: outputs, --json keys, exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from caps import streaming_cap
from conftest import LAYERS, TEXTS
from trtbert.cli import main


def _run(*args: str):
    return CliRunner().invoke(main, ["run", *map(str, args)])


def test_plain_output(rt_bundles: dict[str, Path]) -> None:
    result = _run(rt_bundles["bert"], TEXTS[0], TEXTS[1], "--exit", "none", "--stats")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    label, prob, exit_, text = lines[0].split("\t")
    assert label.startswith("LABEL_") and 0.5 <= float(prob) <= 1 and exit_ == f"exit {LAYERS}/{LAYERS}"
    assert text == TEXTS[0]
    assert "pool: cap unlimited" in result.stderr and "peak RSS" in result.stderr


def test_json_output_and_tsv_pairs(rt_bundles: dict[str, Path], tmp_path: Path) -> None:
    cap = streaming_cap(rt_bundles["bert"])
    result = _run(rt_bundles["bert"], TEXTS[0], "--json", "--memory-cap", str(cap), "--exit", "max-layers:2")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert set(record) == {"text", "label", "probabilities", "exit_layer", "truncated", "timings_ms"}
    assert record["truncated"] is False and record["timings_ms"]["total"] > 0 and "layer_01" in record["timings_ms"]
    assert record["exit_layer"] == 2 and record["text"] == TEXTS[0]
    assert set(record["probabilities"]) == {"LABEL_0", "LABEL_1"}
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(f"{a}\t{b}\n" for a, b in zip(TEXTS[:3], TEXTS[3:6])), encoding="utf-8")
    result = _run(rt_bundles["bert"], "--file", pairs, "--json", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["text"], r["text_b"]) for r in records] == list(zip(TEXTS[:3], TEXTS[3:6]))


def test_regression_json(regression_bundle: Path) -> None:
    result = _run(regression_bundle, TEXTS[0], "--json")
    record = json.loads(result.stdout)
    assert record["label"] is None and record["probabilities"] is None and isinstance(record["value"], float)


@pytest.fixture
def corrupted(rt_bundles: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "corrupted"
    shutil.copytree(rt_bundles["bert"], copy)
    path = copy / "onnx" / "layer_01.onnx"
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("args, message", [
    (["   "], "input 1 is empty or only whitespace"),
    (["text", "--memory-cap", "64XB"], "cannot read size '64XB'"),
    (["text", "--memory-cap", "1KiB"], "memory cap 1.0 KiB is below"),
    (["text", "--exit", "entropy:abc"], "exit rule 'entropy:abc'"),
    (["text", "--exit", "sometimes"], "unknown exit rule"),
    (["text", "--engines", "int8"], "build it with: trtbert build"),
    ([], "give either TEXT arguments or --file"),
])
def test_bad_input_is_one_line(rt_bundles: dict[str, Path], args: list[str], message: str) -> None:
    result = _run(rt_bundles["bert"], *args)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert message in result.stderr
    assert result.stdout == ""


def test_missing_bundle_and_checksum_mismatch(tmp_path: Path, corrupted: Path) -> None:
    for bundle, message in [(tmp_path / "nope", "does not exist"), (corrupted, "does not match its sha256")]:
        result = _run(bundle, "some text")
        assert result.exit_code == 1 and result.stderr.count("\n") == 1 and message in result.stderr
