"""Streamed engines: weights split from the graph (safetensors files, mapped without a copy) give the same
outputs as the stage's own session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trtbert import bundle as B
from trtbert.engines.ort import OrtEngine, OrtOptions
from trtbert.engines.streamed import StreamedEngine, read_header, split_weights, template_of
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
        assert template_of(header, tmp_path / weights) == template and len(header) > 1
        feeds = feeds_for(stage, rng)
        with OrtEngine(bundle.path(stage.file), stage.name, stage.inputs, stage.outputs) as reference:
            expected = reference.infer(feeds)
        streamed = StreamedEngine(tmp_path / weights, stage.name, stage.inputs, stage.outputs, OrtOptions())
        with streamed:
            assert streamed.nbytes >= sum(e["data_offsets"][1] - e["data_offsets"][0]
                                          for k, e in header.items() if k != "__metadata__")
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
    bad.write_bytes(b"TRTBW001" + bytes(64))  # the hand-made format of earlier builds
    with pytest.raises(EngineError, match="older trtbert; rebuild"):
        engine.load()


def test_weights_files_are_safetensors_read_without_a_copy(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    bundle = B.load_bundle(tiny_bundles["bert"])
    stage = bundle.manifest.stage("layer_01")
    path = tmp_path / "layer_01.weights"
    split_weights(bundle.path(stage.file), path)
    expected = load_file(str(path))  # any safetensors reader reads it
    engine = StreamedEngine(path, stage.name, stage.inputs, stage.outputs, OrtOptions())
    with engine:
        assert set(engine._weights) == set(expected)
        for name, array in engine._weights.items():
            np.testing.assert_array_equal(array, expected[name])
            assert not array.flags.owndata and not array.flags.writeable  # a view of the read-only mapping
    assert engine._mapped is None and engine._weights == {}


def test_truncated_weights_file_is_refused_before_mapping(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = B.load_bundle(tiny_bundles["bert"])
    stage = bundle.manifest.stage("layer_01")
    path = tmp_path / "layer_01.weights"
    split_weights(bundle.path(stage.file), path)
    path.write_bytes(path.read_bytes()[:-100])
    engine = StreamedEngine(path, stage.name, stage.inputs, stage.outputs, OrtOptions())
    with pytest.raises(EngineError, match=r"tensor w\d+ .* does not fit the file"):
        engine.load()
    assert not engine.loaded


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_streamed_set_runs_under_a_small_cap_like_the_source_set(
    family: str, tiny_bundles: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    from caps import streaming_cap
    from models import SENTENCES
    from trtbert.engines.build import BuildOptions, build_engines
    from trtbert.runtime.runner import Runner

    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundles[family], root)
    result = build_engines(BuildOptions(bundle=root, stream=True))
    assert result.name == "ort-cpu-fp32-stream" and all(c.ok for c in result.stages)
    engine_set = B.load_bundle(root).engine_set(result.name)
    assert engine_set.backend == "ort-stream"
    assert all(f.endswith(".weights") for f in engine_set.stage_files.values())
    cap = streaming_cap(root, result.name)
    with Runner.from_bundle(root) as source:
        expected = source.layer_logits(SENTENCES)
    with Runner.from_bundle(root, engines=result.name, memory_cap=cap) as streamed:
        got = streamed.layer_logits(SENTENCES)
        stats = streamed.stats()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert stats.peak_bytes <= cap
    if family == "bert":
        assert stats.evictions > 0  # the cap really streamed the layers


def test_stream_is_cpu_only(tiny_bundles: dict[str, Path]) -> None:
    from trtbert.engines.build import BuildOptions, build_engines

    with pytest.raises(EngineError, match="--stream is for the CPU provider"):
        build_engines(BuildOptions(bundle=tiny_bundles["bert"], provider="cuda", precision="fp16", stream=True))
