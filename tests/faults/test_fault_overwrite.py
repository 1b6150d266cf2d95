"""Issue 9, item 1: ``--overwrite`` replaces only what trtbert wrote (a directory holding a trtbert
manifest, or an empty one), never the source model, a directory that contains it, or user files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from faultkit import assert_bundle_verifies, assert_ok, assert_one_line_error, cli, tree

TRAIN_SMALL = ("--task", "sst2", "--limit", "4", "--eval-limit", "4", "--epochs", "1", "--batch-size", "4",
               "--max-seq-len", "16")


@pytest.fixture
def ck(model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny checkpoint, inside ``tmp_path/work``."""
    dst = tmp_path / "work" / "ck"
    shutil.copytree(model_dir, dst)
    return dst


def assert_checkpoint_intact(ck: Path, before: dict[str, str]) -> None:
    assert ck.is_dir(), f"the checkpoint {ck} was deleted"
    assert tree(ck) == before, f"the checkpoint {ck} was changed"
    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(str(ck))  # still loads


def user_files(directory: Path) -> Path:
    (directory / "photos").mkdir(parents=True)
    (directory / "notes.txt").write_text("my notes\n")
    (directory / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return directory


def test_export_out_is_the_checkpoint(ck: Path) -> None:
    """Item 1: ``export --model ck --out ck --overwrite`` is refused and the checkpoint survives."""
    before = tree(ck)
    result = cli("export", "--model", ck, "--out", ck, "--overwrite")
    assert_one_line_error(result, r"ck")
    assert_checkpoint_intact(ck, before)


def test_export_out_is_the_checkpoints_parent(ck: Path) -> None:
    """Item 1: ``--out`` at the directory that contains the model is refused; nothing in it is lost."""
    parent = ck.parent
    (parent / "other.txt").write_text("keep me\n")
    before = tree(parent)
    result = cli("export", "--model", ck, "--out", parent, "--overwrite")
    assert_one_line_error(result, parent.name)
    assert tree(parent) == before
    assert_checkpoint_intact(ck, tree(ck))


def test_export_out_is_a_directory_of_user_files(ck: Path, tmp_path: Path) -> None:
    """Item 1: ``--out`` at a directory of user files (no trtbert manifest) is refused with --overwrite."""
    mine = user_files(tmp_path / "mine")
    before = tree(mine)
    result = cli("export", "--model", ck, "--out", mine, "--overwrite")
    assert_one_line_error(result, r"mine")
    assert tree(mine) == before


def test_export_out_is_a_user_file(ck: Path, tmp_path: Path) -> None:
    """Item 1: ``--out`` naming an existing user file is refused with --overwrite; the file is kept."""
    mine = tmp_path / "report.pdf"
    mine.write_bytes(b"%PDF-1.4 precious")
    result = cli("export", "--model", ck, "--out", mine, "--overwrite")
    assert_one_line_error(result, r"report\.pdf")
    assert mine.read_bytes() == b"%PDF-1.4 precious"


def test_export_out_is_a_bundle_that_holds_the_checkpoint(ck: Path, bundle: Path, tmp_path: Path) -> None:
    """Item 1: a bundle directory that contains the source model is never replaced."""
    out = tmp_path / "bundle-with-model"
    shutil.copytree(bundle, out)
    inner = out / "ck"
    shutil.copytree(ck, inner)
    before = tree(out)
    result = cli("export", "--model", inner, "--out", out, "--overwrite")
    assert_one_line_error(result, r"bundle-with-model|ck")
    assert tree(out) == before


def test_export_overwrite_replaces_a_bundle(ck: Path, bundle: Path, tmp_path: Path) -> None:
    """Item 1 (what stays allowed): ``--overwrite`` replaces a directory holding a trtbert manifest."""
    out = tmp_path / "old-bundle"
    shutil.copytree(bundle, out)
    assert_ok(cli("export", "--model", ck, "--out", out, "--overwrite"))
    assert_bundle_verifies(out)


def test_train_out_is_the_checkpoint(ck: Path, glue_dir: Path) -> None:
    """Item 1: ``train --model ck --out ck --overwrite`` is refused; the checkpoint is unchanged."""
    before = tree(ck)
    result = cli("train", "--model", ck, "--out", ck, "--overwrite", "--data-dir", glue_dir, *TRAIN_SMALL)
    assert_one_line_error(result, r"ck")
    assert_checkpoint_intact(ck, before)


def test_train_out_is_the_checkpoints_parent(ck: Path, glue_dir: Path) -> None:
    """Item 1: ``train --out`` at the model's parent directory is refused with --overwrite."""
    parent = ck.parent
    before = tree(parent)
    result = cli("train", "--model", ck, "--out", parent, "--overwrite", "--data-dir", glue_dir, *TRAIN_SMALL)
    assert_one_line_error(result, parent.name)
    assert tree(parent) == before


def test_train_out_is_a_directory_of_user_files(ck: Path, glue_dir: Path, tmp_path: Path) -> None:
    """Item 1: ``train --out`` at a directory of user files is refused with --overwrite."""
    mine = user_files(tmp_path / "mine")
    before = tree(mine)
    result = cli("train", "--model", ck, "--out", mine, "--overwrite", "--data-dir", glue_dir, *TRAIN_SMALL)
    assert_one_line_error(result, r"mine")
    assert tree(mine) == before


def test_eval_json_over_the_bundle_manifest_is_refused(bundle_copy: Path, glue_dir: Path) -> None:
    """Item 1 ("every other writer"): ``eval --json`` pointed at a file trtbert did not write as a report (the
    bundle's own manifest.json) is refused; the bundle still verifies."""
    manifest = bundle_copy / "manifest.json"
    before = manifest.read_bytes()
    result = cli("eval", bundle_copy, "--task", "sst2", "--data-dir", glue_dir, "--limit", "2", "--quiet",
                 "--json", manifest)
    assert_one_line_error(result, r"manifest\.json")
    assert manifest.read_bytes() == before
    assert_bundle_verifies(bundle_copy)
