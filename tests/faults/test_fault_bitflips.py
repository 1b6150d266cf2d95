"""Issue 9, item 3: one flipped bit in any file an engine set reads makes ``run``/``eval`` stop with one
line naming the file (every file is in the manifest with size and sha256 and verified like the others)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from faultkit import (
    INT8,
    MANIFEST,
    SOURCE_SET,
    STREAM,
    TEXT,
    assert_ok,
    assert_one_line_error,
    cli,
    flip_bit,
    engine_file,
    manifest_json,
    set_files,
)


def _template_scale(root: Path) -> str:
    """The streamed set's template holding the attention scale (a float attribute, e.g. FusedMatMul's alpha)."""
    import onnx

    for rel in set_files(root, STREAM):
        if Path(rel).name.startswith("template_"):
            for node in onnx.load(str(root / rel)).graph.node:
                if any(a.type == onnx.AttributeProto.FLOAT and a.f not in (0.0, 1.0) for a in node.attribute):
                    return rel
    pytest.fail("no template of the streamed set carries a float attribute (the attention scale)")


def _flip_scale(path: Path) -> None:
    """Flip one exponent bit of the template's attention scale: the graph still loads, the scale halves."""
    import onnx

    data = path.read_bytes()
    for node in onnx.load(str(path)).graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.FLOAT and attr.f not in (0.0, 1.0):
                raw = struct.pack("<f", attr.f)
                if data.count(raw) == 1:
                    flip_bit(path, data.index(raw) + 2, bit=7)
                    return
    flip_bit(path)


def test_pristine_bundle_runs_with_every_set(bundle: Path) -> None:
    """Item 3 (control): the unflipped bundle runs with each set, so the failures below are the flips'."""
    for engines in (SOURCE_SET, INT8, STREAM):
        assert_ok(cli("run", bundle, TEXT, "--engines", engines))
    assert_ok(cli("inspect", bundle))


FILES = {  # kind of file -> (how to find it in a bundle, the engine set run reads it with)
    "onnx-stage": (lambda root: "onnx/layer_02.onnx", SOURCE_SET),
    "word-embeddings": (lambda root: "onnx/word_embeddings.npy", SOURCE_SET),
    "tokenizer": (lambda root: "tokenizer/tokenizer.json", INT8),
    "int8-engine": (lambda root: engine_file(root, INT8, "layer_02"), INT8),
    "stream-weights": (lambda root: engine_file(root, STREAM, "layer_02"), STREAM),
    "stream-embeddings": (lambda root: engine_file(root, STREAM, "embeddings"), STREAM),
    "stream-template": (_template_scale, STREAM),
}


def names_the_file(rel: str) -> list[str]:
    """Patterns an error line must match to name ``rel``: its file name, and its set for engine files."""
    patterns = [re.escape(Path(rel).name)]
    if rel.startswith("engines/"):
        patterns.append(re.escape(rel.split("/")[1]))
    return patterns


@pytest.mark.parametrize("kind", list(FILES))
def test_bit_flip_in_each_kind_of_file_stops_run(bundle_copy: Path, kind: str) -> None:
    """Item 3: a flipped bit in each kind of bundle file: ``run`` exits 1 with one line naming the file."""
    find, engines = FILES[kind]
    rel = find(bundle_copy)
    if kind == "stream-template":
        _flip_scale(bundle_copy / rel)
    else:
        flip_bit(bundle_copy / rel)
    result = cli("run", bundle_copy, TEXT, "--engines", engines, "--exit", "none")
    assert_one_line_error(result, *names_the_file(rel))
    assert result.stdout == "", "an answer was printed from a corrupted bundle"


def test_bit_flip_in_template_stops_eval(bundle_copy: Path, glue_dir: Path) -> None:
    """Item 3: ``eval`` with a streamed set whose template has a flipped bit exits 1 naming the template."""
    rel = _template_scale(bundle_copy)
    _flip_scale(bundle_copy / rel)
    result = cli("eval", bundle_copy, "--task", "sst2", "--data-dir", glue_dir, "--engines", STREAM,
                 "--limit", "4", "--quiet")
    assert_one_line_error(result, *names_the_file(rel))


def test_every_file_of_a_streamed_set_is_in_the_manifest(bundle: Path) -> None:
    """Item 3: every file of every engine set (templates included) is listed with its size and sha256."""
    files = manifest_json(bundle)["files"]
    on_disk = {p.relative_to(bundle).as_posix() for p in (bundle / "engines").rglob("*") if p.is_file()}
    unlisted = sorted(on_disk - set(files))
    assert not unlisted, f"engine-set files missing from the manifest: {unlisted}"
    for rel in on_disk:
        entry = files[rel]
        assert entry["size"] == (bundle / rel).stat().st_size and len(entry["sha256"]) == 64


@pytest.mark.parametrize("where", ["first-byte", "key"])
def test_bit_flip_in_manifest_stops_run(bundle_copy: Path, where: str) -> None:
    """Item 3: a flipped bit in manifest.json itself: one line naming the manifest, exit 1."""
    path = bundle_copy / MANIFEST
    data = path.read_bytes()
    offset = 0 if where == "first-byte" else data.index(b'"exit_layers"') + 5
    flip_bit(path, offset, bit=0 if where == "first-byte" else 1)
    result = cli("run", bundle_copy, TEXT, "--engines", STREAM)
    assert_one_line_error(result, r"manifest")
