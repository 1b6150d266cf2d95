"""TensorRT through Polygraphy. The profile arithmetic runs anywhere; the rest needs tensorrt and a GPU
(a Jetson or an NVIDIA machine) and is skipped elsewhere."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from trtbert import bundle as B
from trtbert.engines.tensorrt import profile_shapes
from trtbert.errors import EngineError


def test_profile_covers_batch_and_sequence() -> None:
    spec = B.TensorSpec(B.HIDDEN, "float32", ("batch", "sequence", 768))
    assert profile_shapes(spec, max_batch=8, max_seq=512, opt_batch=1, opt_seq=128) == (
        (1, 1, 768), (1, 128, 768), (8, 512, 768))
    mask = B.TensorSpec(B.ATTENTION_MASK, "int64", ("batch", "sequence"))
    assert profile_shapes(mask, 4, 64, 2, 32) == ((1, 1), (2, 32), (4, 64))
    with pytest.raises(EngineError, match="dynamic axis 2"):
        profile_shapes(B.TensorSpec("x", "float32", ("batch", "sequence", "hidden")), 8, 512, 1, 128)


@pytest.fixture
def trt_bundle(tiny_bundles: dict[str, Path], tmp_path: Path) -> Path:
    pytest.importorskip("tensorrt")
    pytest.importorskip("polygraphy")
    dst = tmp_path / "albert"
    shutil.copytree(tiny_bundles["albert"], dst)
    return dst


def test_trt_fp16_builds_and_matches(trt_bundle: Path) -> None:
    from trtbert.engines.build import BuildOptions, build_engines

    result = build_engines(BuildOptions(bundle=trt_bundle, backend="tensorrt", precision="fp16",
                                        max_batch=4, max_seq_len=64))
    assert result.name == "trt-fp16" and all(c.ok for c in result.stages)
    bundle = B.load_bundle(trt_bundle, verify="full")
    engine_set = bundle.engine_set("trt-fp16")
    assert engine_set.backend == "tensorrt" and "tensorrt" in engine_set.versions
    assert engine_set.stage_files["layer_01"] == engine_set.stage_files["layer_02"]  # shared layer built once
    assert "engines/trt-fp16/timing.cache" in bundle.manifest.files


def test_trt_int8_refused(trt_bundle: Path) -> None:
    from trtbert.engines.build import BuildOptions, build_engines

    with pytest.raises(EngineError, match="calibration data"):
        build_engines(BuildOptions(bundle=trt_bundle, backend="tensorrt", precision="int8"))


def test_trt_engines_share_one_scratch_and_free_it(trt_bundle: Path) -> None:
    from trtbert.engines.build import BuildOptions, build_engines
    from trtbert.engines.registry import create_engine
    from trtbert.engines.tensorrt import SCRATCH
    from trtbert.engines.validate import reference_samples

    build_engines(BuildOptions(bundle=trt_bundle, backend="tensorrt", precision="fp32", max_batch=4, max_seq_len=64))
    bundle = B.load_bundle(trt_bundle)
    engine_set = bundle.engine_set("trt-fp32")
    refs = reference_samples(bundle)
    engines = [create_engine(bundle, engine_set, s) for s in bundle.manifest.stages]
    for engine in engines:
        engine.load()
    assert SCRATCH.nbytes >= max(e.scratch_bytes for e in engines)
    for engine, stage in zip(engines, bundle.manifest.stages):
        sample = refs[stage.name]
        for feeds, expected in zip(sample.feeds, sample.outputs):
            got = engine.infer(feeds)
            for name, ref in expected.items():
                np.testing.assert_allclose(got[name], ref, atol=1e-3, rtol=1e-3)
    with pytest.raises(EngineError, match="outside the engine's profile"):
        stage = bundle.manifest.stage("layer_01")
        engines[1].infer({B.HIDDEN: np.zeros((5, 8, 32), np.float32), B.ATTENTION_MASK: np.ones((5, 8), np.int64)})
    for engine in engines:
        engine.unload()
    assert SCRATCH.nbytes == 0
