"""Streamed engines: weights split from the graph give the same outputs as the stage's own session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trtbert import bundle as B
from trtbert.engines.ort import OrtEngine, OrtOptions
from trtbert.engines.streamed import StreamedEngine, read_header, split_weights
from trtbert.errors import EngineError


def feeds_for(stage: B.Stage, rng: np.random.Generator, batch: int = 2, seq: int = 9) -> dict[str, np.ndarray]:
    feeds = {}
    for t in stage.inputs:
        if t.name == B.ATTENTION_MASK:
            mask = np.ones((batch, seq), np.int64)
            mask[-1, seq // 2:] = 0
            feeds[t.name] = mask
        elif t.name == B.TOKEN_TYPE_IDS:
            feeds[t.name] = rng.integers(0, 2, size=(batch, seq)).astype(np.int64)
        elif t.dtype == "int64":
            feeds[t.name] = rng.integers(5, 100, size=(batch, seq)).astype(np.int64)
        else:
            feeds[t.name] = rng.standard_normal((batch, seq, int(t.shape[-1]))).astype(np.float32)
    return feeds


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_streamed_stages_match_their_sessions(family: str, tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = B.load_bundle(tiny_bundles[family])
    rng = np.random.default_rng(0)
    templates = set()
    for stage in bundle.manifest.stages:
        weights = f"{stage.name}.weights"
        template = split_weights(bundle.path(stage.file), tmp_path / weights)
        templates.add(template)
        header, _ = read_header(tmp_path / weights)
        assert header["template"] == template and header["tensors"]
        feeds = feeds_for(stage, rng)
        with OrtEngine(bundle.path(stage.file), stage.name, stage.inputs, stage.outputs) as reference:
            expected = reference.infer(feeds)
        streamed = StreamedEngine(tmp_path / weights, stage.name, stage.inputs, stage.outputs, OrtOptions())
        with streamed:
            assert streamed.nbytes >= sum(t["nbytes"] for t in header["tensors"])
            got = streamed.infer(feeds)
        assert not streamed.loaded
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, atol=1e-5, rtol=1e-5)
    if family == "bert":
        # embeddings, layer 1 (+ mean-read-out head), layer 2 (+ the model's classifier): three structures
        assert len(templates) == 3


def test_identical_layers_share_one_template(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = B.load_bundle(tiny_bundles["albert"])
    names = {split_weights(bundle.path(s.file), tmp_path / f"{s.name}.weights") for s in bundle.manifest.layers}
    assert len(names) == 1


def test_weights_file_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "x.weights"
    bad.write_bytes(b"not a weights file")
    engine = StreamedEngine(bad, "x", (), ())
    with pytest.raises(EngineError, match="not a trtbert weights file"):
        engine.load()
    with pytest.raises(EngineError, match="not loaded"):
        engine.infer({})
