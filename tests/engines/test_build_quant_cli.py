"""``trtbert build`` flags for quantised and fused sets: one line on a bad combination, warnings that say
what a batch-dependent set does, and what the manifest records."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from trtbert import bundle as B
from trtbert.cli import main


@pytest.fixture
def bert_copy(tiny_bundles: dict[str, Path], tmp_path: Path) -> Path:
    dst = tmp_path / "bert"
    shutil.copytree(tiny_bundles["bert"], dst)
    return dst


def test_static_int8_from_a_text_file(bert_copy: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.tsv"
    texts.write_text("the movie was great\tand i loved it\na dull , boring film\tno story\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["build", str(bert_copy), "--int8", "--calibration-data", str(texts)])
    assert result.exit_code == 0, result.output
    assert "built ort-cpu-int8 (ort int8)" in result.output
    options = B.load_bundle(bert_copy).engine_set("ort-cpu-int8").options
    assert options["int8_mode"] == "static" and options["calibration"]["source"].startswith("texts.tsv")


def test_dynamic_int8_warns_it_is_batch_dependent(bert_copy: Path) -> None:
    result = CliRunner().invoke(main, ["build", str(bert_copy), "--int8", "--int8-mode", "dynamic", "--no-fuse"])
    assert result.exit_code == 0, result.output
    assert "built ort-cpu-int8-dynamic" in result.output
    assert "depends on the other rows of its batch" in result.output
    options = B.load_bundle(bert_copy).engine_set("ort-cpu-int8-dynamic").options
    assert options["batch_dependent"] is True and "fused" not in options


@pytest.mark.parametrize("args, text", [
    (["--calibration-data", "x.tsv", "--calibration-task", "sst2"], "not both"),
    (["--calibration-task", "nosuchtask"], "unknown task"),
    (["--calibration-data", "missing.tsv"], "cannot read missing.tsv"),
])
def test_bad_calibration_is_one_line(bert_copy: Path, args: list[str], text: str) -> None:
    result = CliRunner().invoke(main, ["build", str(bert_copy), "--int8", *args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.output
    assert "ort-cpu-int8" not in B.load_bundle(bert_copy).manifest.engine_sets
