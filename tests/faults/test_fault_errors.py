"""Issue 9, items 10 and 11: the error contract. User and device faults give one line naming what is wrong
and the fix, exit 1, no traceback; a bug (any other exception) keeps its traceback; foreign errors that
mean bad input are chained; the manifest's schema is validated on load, naming the wrong field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faultkit import (
    INT8,
    MANIFEST,
    SOURCE_SET,
    STREAM,
    TEXT,
    assert_bundle_verifies,
    assert_one_line_error,
    cli,
    created_in,
    engine_file,
    fill,
    leftovers,
    run_cli,
    set_dir,
    small_tmpfs,
    tree,
)

from trtbert.errors import TrtbertError


class Bug(Exception):
    """Stands for a programming error inside trtbert or a library: no user fault, an empty message."""


# --- item 10: user and device faults --------------------------------------------------------------------


def test_non_utf8_byte_in_text_argument(bundle: Path) -> None:
    """Item 10: a non-UTF-8 byte in a TEXT argument (a real argv) is one line naming the encoding."""
    result = run_cli("run", bundle, b"caf\xe9 au lait")
    assert_one_line_error(result, r"utf-?8|encod|byte")


def test_truncated_safetensors(model_dir: Path, tmp_path: Path) -> None:
    """Item 10: a truncated model.safetensors is one line naming the file."""
    ck = Path(shutil.copytree(model_dir, tmp_path / "ck"))
    weights = ck / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = cli("export", "--model", ck, "--out", tmp_path / "out")
    assert_one_line_error(result, r"model\.safetensors")


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_model_pointing_at_config_json(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       relative: bool) -> None:
    """Item 10: ``--model .../config.json`` (a file, not the checkpoint directory) is one line naming the file
    and saying to pass the directory."""
    ck = Path(shutil.copytree(model_dir, tmp_path / "ck"))
    monkeypatch.chdir(tmp_path)
    target = "ck/config.json" if relative else str(ck / "config.json")
    result = cli("export", "--model", target, "--out", tmp_path / "out")
    assert_one_line_error(result, r"config\.json", r"director", absent=(r"does not exist", r"hub"))


def _edit_manifest(root: Path, edit) -> None:
    data = json.loads((root / MANIFEST).read_text())
    edit(data)
    (root / MANIFEST).write_text(json.dumps(data, indent=2))


WRONG_TYPES = {
    "files-list": (lambda m: m.update(files=list(m["files"].values())), r"files"),
    "stages-empty": (lambda m: m.update(stages=[]), r"stages"),
    "exit_layers-empty": (lambda m: m.update(exit_layers=[]), r"exit_layers"),
    "engine_sets-list": (lambda m: m.update(engine_sets=list(m["engine_sets"].values())), r"engine_sets"),
    "hidden_size-string": (lambda m: m["model"].update(hidden_size="32"), r"hidden_size"),
    "labels-string": (lambda m: m["model"].update(labels="LABEL_0"), r"labels"),
    "stage-inputs-dict": (lambda m: m["stages"][1].update(inputs={"name": "hidden_states"}), r"inputs"),
    "stage-kind-unknown": (lambda m: m["stages"][1].update(kind="lyr"), r"stages\[1\]\.kind must be one of embeddings"),
    "problem_type-unknown": (lambda m: m["model"].update(problem_type="x"), r"model\.problem_type must be one of"),
}


@pytest.mark.parametrize("command", ["inspect", "run"])
@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_manifest_with_wrong_types(bundle_copy: Path, case: str, command: str) -> None:
    """Items 10 and 11: valid JSON manifests with wrong types are one line naming the field, for ``inspect``
    and ``run`` alike (the schema is validated on load)."""
    edit, field = WRONG_TYPES[case]
    _edit_manifest(bundle_copy, edit)
    args = ("inspect", bundle_copy) if command == "inspect" else ("run", bundle_copy, TEXT, "--engines", INT8)
    assert_one_line_error(cli(*args), field, r"manifest")


def test_runner_predict_none(bundle: Path) -> None:
    """Item 10: ``Runner.predict(None)`` raises a user error (TrtbertError) naming the input, not a TypeError."""
    from trtbert import Runner

    with Runner.from_bundle(bundle) as runner, pytest.raises(TrtbertError, match=r"(?i)input|text"):
        runner.predict(None)


# --- item 10: a full disk (a real small tmpfs) ---------------------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path):
    with small_tmpfs(tmp_path / "disk", "2m") as mount:
        yield mount


def test_full_disk_during_eval_json(bundle: Path, glue_dir: Path, disk: Path) -> None:
    """Item 10: ``eval --json`` on a full disk: one line saying no space is left, exit 1."""
    fill(disk)
    result = cli("eval", bundle, "--task", "sst2", "--data-dir", glue_dir, "--limit", "4", "--quiet",
                 "--json", disk / "report.json")
    assert_one_line_error(result, r"no space|disk.*full|space left")
    assert not (disk / "report.json").exists() or (disk / "report.json").stat().st_size == 0


def test_full_disk_during_eval_calibrate(bundle: Path, glue_dir: Path, disk: Path) -> None:
    """Item 10: ``eval --calibrate`` with the bundle on a full disk: one line (no space), the manifest intact."""
    copy = Path(shutil.copytree(bundle, disk / "bundle"))
    before = (copy / MANIFEST).read_bytes()
    fill(disk)
    result = cli("eval", copy, "--task", "sst2", "--data-dir", glue_dir, "--calibrate", "--calibration-limit", "8",
                 "--limit", "4", "--quiet")
    assert_one_line_error(result, r"no space|disk.*full|space left")
    assert (copy / MANIFEST).read_bytes() == before
    assert leftovers(disk) == []


@pytest.mark.parametrize("free", ["none", "half-a-set"])
def test_full_disk_during_build(bundle: Path, disk: Path, free: str) -> None:
    """Item 10: ``build`` on a full (or nearly full) disk: one line saying no space is left (not "Protobuf
    serialization failed"), the bundle intact, no temporaries; with no room at all nothing is even started
    (free space is checked before building, as ``export`` does)."""
    copy = Path(shutil.copytree(bundle, disk / "bundle"))
    shutil.rmtree(copy / set_dir(INT8))  # drop the set from disk and manifest: build it again
    _edit_manifest(copy, lambda m: (m["engine_sets"].pop(INT8), [m["files"].pop(k) for k in list(m["files"])
                                                                  if k.startswith(set_dir(INT8) + "/")]))
    set_bytes = sum(p.stat().st_size for p in (bundle / set_dir(INT8)).rglob("*") if p.is_file())
    before = tree(copy)
    fill(disk, leave=0 if free == "none" else set_bytes // 2)
    with created_in(copy) as in_root, created_in(copy / "engines") as in_engines:
        result = cli("build", copy, "--int8")
    assert_one_line_error(result, r"no space|disk.*full|space left|not enough (disk )?space", absent=(r"protobuf",))
    assert tree(copy) == before
    assert leftovers(disk) == []
    if free == "none":
        assert in_root == [] and in_engines == [], f"build started writing on a full disk: {in_root + in_engines}"
    assert_bundle_verifies(copy, STREAM)


# --- item 11: bugs keep their traceback; foreign errors are chained -----------------------------------------


def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc
    return fail


def _assert_bug_propagates(result) -> None:
    assert isinstance(result.exception, Bug), (
        f"a bug was turned into {result.exception!r} (exit {result.exit_code}) instead of propagating with its "
        f"traceback; stderr: {result.stderr[-800:]!r}")
    assert "error:" not in result.stderr


def test_bug_in_onnx_export_keeps_traceback(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 11: an unexpected exception (empty message) inside the stage export propagates as a bug."""
    import torch.onnx

    monkeypatch.setattr(torch.onnx, "export", _raise(Bug()))
    _assert_bug_propagates(cli("export", "--model", model_dir, "--out", tmp_path / "out"))


def test_bug_in_quantiser_keeps_traceback(bundle_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 11: an unexpected exception inside int8 quantisation propagates as a bug (not a one-line error)."""
    import onnxruntime.quantization

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", _raise(Bug()))
    _assert_bug_propagates(cli("build", bundle_copy, "--int8", "--name", "again"))


def test_bug_in_graph_optimiser_keeps_traceback(bundle_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 11: an unexpected exception inside ONNX Runtime's session creation during ``build`` propagates."""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "InferenceSession", _raise(Bug()))
    _assert_bug_propagates(cli("build", bundle_copy, "--name", "fp32"))


@pytest.mark.parametrize("engines", [SOURCE_SET, STREAM])
def test_bug_in_session_creation_at_run_keeps_traceback(bundle_copy: Path, monkeypatch: pytest.MonkeyPatch,
                                                        engines: str) -> None:
    """Item 11: an unexpected exception while ``run`` creates a session (stage or streamed template) propagates."""
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "InferenceSession", _raise(Bug()))
    _assert_bug_propagates(cli("run", bundle_copy, TEXT, "--engines", engines))


def test_bug_in_tokenizer_loading_keeps_traceback(bundle_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 11: an unexpected exception while loading the tokenizer propagates as a bug."""
    import tokenizers

    class Broken:
        from_file = staticmethod(_raise(Bug()))

    monkeypatch.setattr(tokenizers, "Tokenizer", Broken)
    _assert_bug_propagates(cli("run", bundle_copy, TEXT))


def test_foreign_error_with_empty_message_is_one_line(bundle_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 11: a foreign error that means a bad environment (an OSError with no message) is still one line
    (no IndexError from an empty message)."""
    import onnxruntime.quantization

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", _raise(OSError()))
    assert_one_line_error(cli("build", bundle_copy, "--int8", "--name", "again"))


def test_onnxruntime_load_failure_with_empty_message_is_one_line(bundle_copy: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 11: ONNX Runtime's own load failure with an empty message is one line, not an IndexError."""
    import onnxruntime
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    monkeypatch.setattr(onnxruntime, "InferenceSession", _raise(Fail("")))
    assert_one_line_error(cli("run", bundle_copy, TEXT, "--engines", INT8))


def _garbage_engine(root: Path) -> str:
    """Replace an int8 engine by bytes ONNX Runtime cannot load, recorded (size, sha256) in the manifest."""
    import hashlib

    rel = engine_file(root, INT8, "layer_02")
    data = b"\x08\x07" + b"not an onnx graph " * 64
    (root / rel).write_bytes(data)
    _edit_manifest(root, lambda m: m["files"].update(
        {rel: {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}}))
    return rel


def test_unloadable_engine_error_is_chained(bundle_copy: Path) -> None:
    """Item 11: an engine ONNX Runtime cannot load is a user error naming the file, with the cause chained."""
    from trtbert import Runner

    rel = _garbage_engine(bundle_copy)
    with pytest.raises(TrtbertError, match="layer_02") as caught:
        with Runner.from_bundle(bundle_copy, engines=INT8) as runner:
            runner.predict(TEXT)
    assert caught.value.__cause__ is not None, "the foreign error was dropped (raise ... from None)"
    assert_one_line_error(cli("run", bundle_copy, TEXT, "--engines", INT8), rel.split("/")[-1])
