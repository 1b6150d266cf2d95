"""`trtbert export` and `trtbert inspect` through click's CliRunner: outputs, exit codes, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from trtbert.cli import main


def test_export_then_inspect(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "bundle"
    result = runner.invoke(main, ["export", "--model", str(tiny_models["albert"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "layer_01" in result.output and "end-to-end max|diff|" in result.output
    assert "final exit only" in result.output
    shown = runner.invoke(main, ["inspect", str(out)])
    assert shown.exit_code == 0
    assert "[albert] 2 layers, hidden 32" in shown.output
    assert re.search(r"^layer_02\s+layer\s+onnx/layer_01\.onnx\s", shown.output, re.M)  # columns, any width


def one_line_error(result, text: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.output


def test_bad_input_gives_one_line(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    model = str(tiny_models["bert"])
    (tmp_path / "exists").mkdir()
    one_line_error(runner.invoke(main, ["export", "--model", model, "--out", str(tmp_path / "exists")]),
                   "already exists; pass --overwrite")
    one_line_error(runner.invoke(main, ["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]),
                   "does not exist")
    one_line_error(runner.invoke(main, ["export", "--model", model, "--out", str(tmp_path / "o"), "--opset", "30"]),
                   "opset 30 cannot be produced")
    (tmp_path / "file").write_text("x")
    one_line_error(runner.invoke(main, ["export", "--model", model, "--out", str(tmp_path / "file" / "b")]),
                   "cannot write to")
    one_line_error(runner.invoke(main, ["export", "--model", "no-such-org/no-such-model", "--out", str(tmp_path / "o")]),
                   "pass the local directory instead")
    one_line_error(runner.invoke(main, ["export", "--model", model, "--out", str(tmp_path / "o"), "--exits", "x"]),
                   "cannot read --exits")
    one_line_error(runner.invoke(main, ["inspect", str(tmp_path / "nothing")]), "does not exist")
    assert not (tmp_path / "o").exists()
