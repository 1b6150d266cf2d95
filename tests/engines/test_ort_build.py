"""ONNX Runtime build steps one by one: fp16 conversion keeps fp32 I/O and LayerNorm, the TensorRT
provider's engine cache is recorded relative to the bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from trtbert import bundle as B
from trtbert.engines.ort import OrtEngine, OrtOptions
from trtbert.engines.ort_build import OrtBuilder, convert_fp16, quantize_int8
from trtbert.engines.registry import create_engine


def _layer(bundle: Path) -> tuple[B.Bundle, B.Stage]:
    loaded = B.load_bundle(bundle)
    return loaded, loaded.manifest.stage("layer_01")


def _run(path: Path, stage: B.Stage, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with OrtEngine(path, stage.name, stage.inputs, stage.outputs, OrtOptions(optimization="disable")) as e:
        return e.infer(feeds)[B.HIDDEN_OUT]


def test_fp16_keeps_fp32_io_and_layernorm(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle, stage = _layer(tiny_bundles["bert"])
    dst = tmp_path / "layer16.onnx"
    convert_fp16(bundle.path(stage.file), dst)
    graph = onnx.load(str(dst)).graph
    assert {i.type.tensor_type.elem_type for i in graph.input if i.name == B.HIDDEN} == {onnx.TensorProto.FLOAT}
    assert {o.type.tensor_type.elem_type for o in graph.output} == {onnx.TensorProto.FLOAT}
    weights = {t.name: t.data_type for t in graph.initializer}
    to_fp32 = {n.output[0] for n in graph.node if n.op_type == "Cast"
               and onnx.helper.get_attribute_value(n.attribute[0]) == onnx.TensorProto.FLOAT}
    norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    assert norms
    for norm in norms:  # every LayerNorm input is fp32: an fp32 weight or a cast to fp32
        assert all(weights.get(name) == onnx.TensorProto.FLOAT or name in to_fp32 for name in norm.input), norm
    assert onnx.TensorProto.FLOAT16 in weights.values()  # the matmuls did go to fp16
    rng = np.random.default_rng(0)
    feeds = {B.HIDDEN: rng.standard_normal((2, 9, 32)).astype(np.float32), B.ATTENTION_MASK: np.ones((2, 9), np.int64)}
    ref = _run(bundle.path(stage.file), stage, feeds)
    np.testing.assert_allclose(_run(dst, stage, feeds), ref, atol=1e-2, rtol=1e-2)  # CPU runs fp16 graphs too


def test_int8_weight_types(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle, stage = _layer(tiny_bundles["bert"])
    rng = np.random.default_rng(1)
    feeds = {B.HIDDEN: rng.standard_normal((1, 12, 32)).astype(np.float32), B.ATTENTION_MASK: np.ones((1, 12), np.int64)}
    ref = _run(bundle.path(stage.file), stage, feeds)
    for weights in ("qint8", "quint8"):
        dst = tmp_path / f"{weights}.onnx"
        quantize_int8(bundle.path(stage.file), dst, weights)
        ops = {n.op_type for n in onnx.load(str(dst)).graph.node}
        assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
        assert np.abs(_run(dst, stage, feeds) - ref).max() < 0.05


def test_trt_cache_recorded_relative_and_resolved(tiny_bundles: dict[str, Path]) -> None:
    builder = OrtBuilder(provider="tensorrt", precision="fp16", trt_cache_dir="engines/ort-tensorrt-fp16/trt_cache")
    options = builder.options()
    assert options["trt_cache_dir"] == "engines/ort-tensorrt-fp16/trt_cache" and options["trt_fp16"] is True
    bundle, stage = _layer(tiny_bundles["bert"])
    engine_set = B.EngineSet(name="ort-tensorrt-fp16", backend="ort", precision="fp16",
                             stage_files={stage.name: stage.file}, options=options)
    engine = create_engine(bundle, engine_set, stage)  # not loaded: no TensorRT needed
    assert engine.options.trt_cache_dir == str(bundle.path("engines/ort-tensorrt-fp16/trt_cache"))
    assert engine.options.optimization == "disable" and engine.options.trt_fp16
