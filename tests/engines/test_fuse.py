"""Stage fusions: the exported attention is recognised after the scale rewrite, and fused stages give the
exported stage's outputs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from trtbert import bundle as B
from trtbert.engines.fuse import canonicalize, fuse_stage
from trtbert.engines.ort import OrtEngine, OrtOptions


def _feeds(hidden: int, batch: int = 2, seq: int = 9) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mask = np.ones((batch, seq), np.int64)
    mask[-1, seq // 2:] = 0
    return {B.HIDDEN: rng.standard_normal((batch, seq, hidden)).astype(np.float32), B.ATTENTION_MASK: mask}


def _run(path: Path, stage: B.Stage, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with OrtEngine(path, stage.name, stage.inputs, stage.outputs, OrtOptions(optimization="disable")) as engine:
        return engine.infer(feeds)


def test_scale_mul_becomes_div_and_constants_initializers(tiny_bundles: dict[str, Path]) -> None:
    bundle = B.load_bundle(tiny_bundles["bert"])
    model = onnx.load(str(bundle.path(bundle.manifest.stage("layer_01").file)))
    assert any(n.op_type == "Constant" for n in model.graph.node)
    assert canonicalize(model) == 1  # one attention block per layer
    assert not any(n.op_type == "Constant" for n in model.graph.node)
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["Div"] >= 1


@pytest.mark.parametrize("attention, expected", [("packed", "Attention"), ("separate", "MultiHeadAttention"),
                                                 ("none", None)])
def test_fused_layer_matches_the_exported_one(tiny_bundles: dict[str, Path], tmp_path: Path, attention: str,
                                              expected: str | None) -> None:
    bundle = B.load_bundle(tiny_bundles["bert"])
    model = bundle.manifest.model
    for stage in bundle.manifest.layers:
        dst = tmp_path / f"{stage.name}-{attention}.onnx"
        counts = fuse_stage(bundle.path(stage.file), dst, model.num_heads, model.hidden_size, attention=attention)
        assert counts.get("SkipLayerNormalization") == 2 and counts.get("BiasGelu") == 1
        if expected is None:
            assert not counts.get("Attention") and not counts.get("MultiHeadAttention")
        else:
            assert counts.get(expected) == 1
        feeds = _feeds(model.hidden_size)
        got, ref = _run(dst, stage, feeds), _run(bundle.path(stage.file), stage, feeds)
        for name, value in ref.items():
            valid = feeds[B.ATTENTION_MASK].astype(bool) if value.ndim == 3 else slice(None)
            np.testing.assert_allclose(got[name][valid], value[valid], atol=1e-5, rtol=1e-5)


def test_fp32_build_records_its_fusions(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from trtbert.engines.build import BuildOptions, build_engines

    root = tmp_path / "bert"
    shutil.copytree(tiny_bundles["bert"], root)
    result = build_engines(BuildOptions(bundle=root))
    assert all(c.ok for c in result.stages)
    options = B.load_bundle(root).engine_set(result.name).options
    assert options["fused"]["Attention"] == 2 and options["fused"]["SkipLayerNormalization"] == 4
    unfused = build_engines(BuildOptions(bundle=root, fuse=False, name="plain"))
    assert "fused" not in B.load_bundle(root).engine_set(unfused.name).options
