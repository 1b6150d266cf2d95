"""`trtbert build` through click's CliRunner: the per-stage table, exit codes, one-line errors."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from trtbert import bundle as B
from trtbert.cli import main


@pytest.fixture
def bert_bundle(tiny_bundles: dict[str, Path], tmp_path: Path) -> Path:
    dst = tmp_path / "bert"
    shutil.copytree(tiny_bundles["bert"], dst)
    return dst


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.output


def test_build_int8_then_inspect(bert_bundle: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["build", str(bert_bundle), "--int8"])
    assert result.exit_code == 0, result.output
    assert "max|diff|" in result.output and "layer_02" in result.output
    assert "built ort-cpu-int8 (ort int8)" in result.output
    shown = runner.invoke(main, ["inspect", str(bert_bundle)])
    assert shown.exit_code == 0 and "ort-cpu-int8" in shown.output
    assert re.search(r"int8_weights=q u?int8".replace(" ", ""), shown.output)  # s8 on VNNI CPUs, u8 elsewhere
    again = runner.invoke(main, ["build", str(bert_bundle), "--int8"])
    one_line_error(again, "engine set 'ort-cpu-int8' already exists")
    named = runner.invoke(main, ["build", str(bert_bundle), "--name", "cpu-opt"])
    assert named.exit_code == 0, named.output
    assert set(B.load_bundle(bert_bundle).manifest.engine_sets) == {"ort-cpu-int8", "cpu-opt"}


@pytest.mark.parametrize("args, text", [
    (["--fp16"], "fp16 needs a GPU provider"),
    (["--provider", "cuda"], "install onnxruntime-gpu"),
    (["--backend", "tensorrt", "--int8"], "int8 on TensorRT needs calibration data"),
    (["--trt-cache"], "--trt-cache is for --provider tensorrt"),
])
def test_refusals_are_one_line(args: list[str], text: str, bert_bundle: Path) -> None:
    if "cuda" in args:
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("this onnxruntime has CUDA")
    before = (bert_bundle / B.MANIFEST).read_bytes()
    one_line_error(CliRunner().invoke(main, ["build", str(bert_bundle), *args]), text)
    assert (bert_bundle / B.MANIFEST).read_bytes() == before


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_missing_names_the_extra(bert_bundle: Path) -> None:
    result = CliRunner().invoke(main, ["build", str(bert_bundle), "--backend", "tensorrt"])
    one_line_error(result, "trtbert[tensorrt]")
    assert "JetPack" in result.output


def test_missing_bundle_is_one_line(tmp_path: Path) -> None:
    one_line_error(CliRunner().invoke(main, ["build", str(tmp_path / "nope")]), "does not exist")
