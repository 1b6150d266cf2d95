"""The bundle contract: complete bundles load, partial or corrupted ones are rejected in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from trtbert import bundle as B
from trtbert.errors import BundleError, TrtbertError


@pytest.fixture
def copy(tiny_bundles: dict[str, Path], tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundles["bert"], target)
    return target


def test_complete_bundle_loads(copy: Path) -> None:
    bundle = B.load_bundle(copy)
    assert bundle.manifest.stages[0].name == "embeddings"


def test_corrupted_file_is_rejected(copy: Path) -> None:
    path = copy / "onnx/layer_02.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupted: onnx/layer_02.onnx does not match its sha256"):
        B.load_bundle(copy)
    B.load_bundle(copy, verify="sizes")  # same size: only the checksum can tell


def test_truncated_file_is_rejected_by_size(copy: Path) -> None:
    path = copy / "onnx/layer_01.onnx"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BundleError, match="has 100 bytes, the manifest says"):
        B.load_bundle(copy, verify="sizes")


def test_missing_file_is_rejected(copy: Path) -> None:
    (copy / "onnx/embeddings.onnx").unlink()
    with pytest.raises(BundleError, match="incomplete: onnx/embeddings.onnx is missing"):
        B.load_bundle(copy)


def test_missing_manifest_is_a_partial_bundle(copy: Path) -> None:
    (copy / B.MANIFEST).unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        B.load_bundle(copy)


def test_wrong_version_and_malformed_manifest(copy: Path) -> None:
    data = json.loads((copy / B.MANIFEST).read_text())
    (copy / B.MANIFEST).write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(BundleError, match="format version 99 is not supported"):
        B.load_bundle(copy)
    del data["stages"]
    (copy / B.MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="malformed"):
        B.load_bundle(copy)
    (copy / B.MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="cannot be read"):
        B.load_bundle(copy)


def test_missing_engine_set_names_the_build_command(copy: Path) -> None:
    with pytest.raises(BundleError, match="no engine set 'ort-cpu-int8'.*trtbert build"):
        B.load_bundle(copy).engine_set("ort-cpu-int8")


def test_atomic_directory_keeps_old_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("old")
    (target / B.MANIFEST).write_text(json.dumps({"format_version": B.FORMAT_VERSION}))  # a trtbert output
    with pytest.raises(RuntimeError):
        with B.atomic_directory(target, overwrite=True) as tmp:
            (tmp / "new").write_text("new")
            raise RuntimeError("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (target / "keep").read_text() == "old"
    with B.atomic_directory(target, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new"]
    with pytest.raises(TrtbertError, match="already exists; pass --overwrite"):
        with B.atomic_directory(target):
            pass
    with pytest.raises(TrtbertError, match="holds files trtbert did not write"):  # user files: never replaced
        with B.atomic_directory(target, overwrite=True):
            pass
    assert [p.name for p in target.iterdir()] == ["new"]
