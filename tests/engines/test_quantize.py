"""int8 static quantisation and its calibration; int4 weight-only quantisation."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from trtbert import bundle as B
from trtbert.engines.calibrate import calibration_data
from trtbert.engines.ort import OrtEngine, OrtOptions
from trtbert.engines.quantize import (
    RangeObserver,
    dynamic_inputs,
    make_static,
    quantize_dynamic_int8,
    quantize_nbits,
    uint8_params,
    with_outputs,
)
from trtbert.errors import DataError, EngineError


def _run(path: Path, stage: B.Stage, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with OrtEngine(path, stage.name, stage.inputs, stage.outputs, OrtOptions(optimization="disable")) as engine:
        return engine.infer(feeds)[B.HIDDEN_OUT]


def _batch(rng: np.random.Generator, rows: int, seq: int, hidden: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {B.HIDDEN: (scale * rng.standard_normal((rows, seq, hidden))).astype(np.float32),
            B.ATTENTION_MASK: np.ones((rows, seq), np.int64)}


def test_uint8_params_are_dynamic_quantize_linear_s() -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info(n, t, None) for n, t in
                               (("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in (np.array([-3.0, 0.5, 7.25], np.float32), np.array([0.5, 2.0], np.float32),
              np.array([-1.5, -0.25], np.float32)):
        _, scale, zero = session.run(None, {"x": x})
        ours = uint8_params(float(x.min()), float(x.max()))
        assert ours[0] == pytest.approx(float(scale), rel=1e-6) and int(ours[1]) == int(zero)
    assert uint8_params(0.0, 0.0) == (np.float32(1.0), np.uint8(0))  # a tensor that was always zero


def test_static_layer_is_close_to_fp32_and_row_independent(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = B.load_bundle(tiny_bundles["bert"])
    stage = bundle.manifest.stage("layer_01")
    src = bundle.path(stage.file)
    hidden = bundle.manifest.model.hidden_size
    dynamic = tmp_path / "dynamic.onnx"
    quantize_dynamic_int8(src, dynamic, "qint8", per_channel=True)
    names = dynamic_inputs(dynamic)
    assert B.HIDDEN in names and len(names) >= 3  # the layer's input, the attention output, the FFN's two
    rng = np.random.default_rng(0)
    observer = RangeObserver(names)
    import onnxruntime as ort

    calib = ort.InferenceSession(with_outputs(src, names), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in calib.get_outputs()]
    for _ in range(4):
        feeds = _batch(rng, 4, 12, hidden)
        observer.observe({**feeds, **dict(zip(outputs, calib.run(outputs, feeds)))})
    static = tmp_path / "static.onnx"
    assert make_static(dynamic, observer.ranges(), static) == len(names)
    ops = Counter(n.op_type for n in onnx.load(str(static)).graph.node)
    assert ops["DynamicQuantizeLinear"] == 0 and ops["QuantizeLinear"] == len(names)
    assert ops["MatMulIntegerToFloat"] >= 1

    row = _batch(rng, 1, 12, hidden)
    ref = _run(src, stage, row)
    alone = _run(static, stage, row)
    assert np.abs(alone - ref).max() < 0.1
    # the same row beside a batchmate ten times larger: a static row answers the same, a dynamic one does not
    loud = _batch(rng, 3, 12, hidden, scale=10.0)
    batch = {k: np.concatenate([row[k], loud[k]]) for k in row}
    np.testing.assert_allclose(_run(static, stage, batch)[0], alone[0], atol=1e-6, rtol=0)
    assert np.abs(_run(dynamic, stage, batch)[0] - _run(dynamic, stage, row)[0]).max() > 1e-3


def test_missing_range_is_refused(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = B.load_bundle(tiny_bundles["bert"])
    dynamic = tmp_path / "dynamic.onnx"
    quantize_dynamic_int8(bundle.path(bundle.manifest.stage("layer_01").file), dynamic)
    with pytest.raises(EngineError, match="no calibrated range for"):
        make_static(dynamic, {}, tmp_path / "static.onnx")


def test_calibration_sources(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trtbert"):
        default = calibration_data(limit=10)
    assert len(default.texts) == 10 and "sst2 sample" in default.source
    assert "calibrating on the SST-2 sample shipped with trtbert" in caplog.text
    texts = tmp_path / "calib.tsv"
    texts.write_text("a first text\nanother one\n\na third\n", encoding="utf-8")
    from_file = calibration_data(texts, limit=2)
    assert from_file.texts == ("a first text", "another one") and from_file.describe()["rows"] == 2
    from trtbert.data.glue import SAMPLE_GLUE

    task = calibration_data(task="sst2", data_dir=SAMPLE_GLUE, limit=5)
    assert len(task.texts) == 5 and task.source.startswith("sst2 train")
    with pytest.raises(DataError, match="not both"):
        calibration_data(texts, "sst2")
    with pytest.raises(DataError, match="at least one row"):
        calibration_data(limit=0)


def test_static_set_records_its_calibration(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    from trtbert.engines.build import BuildOptions, build_engines

    root = tmp_path / "bert"
    shutil.copytree(tiny_bundles["bert"], root)
    texts = tmp_path / "calib.tsv"
    texts.write_text("\n".join(["the movie was great", "a dull , boring film", "what a wonderful day"]) + "\n",
                     encoding="utf-8")
    result = build_engines(BuildOptions(bundle=root, precision="int8", calibration_data=texts))
    assert result.name == "ort-cpu-int8" and result.warnings == ()
    options = B.load_bundle(root).engine_set(result.name).options
    assert options["int8_mode"] == "static" and options["calibration"]["rows"] == 3
    assert "batch_dependent" not in options
    dynamic = build_engines(BuildOptions(bundle=root, precision="int8", int8_mode="dynamic"))
    assert dynamic.name == "ort-cpu-int8-dynamic"
    assert any("depends on the other rows of its batch" in w for w in dynamic.warnings)
    assert B.load_bundle(root).engine_set(dynamic.name).options["batch_dependent"] is True
    assert not list((root / B.ENGINES_DIR).rglob(".prepare-*"))  # intermediates removed


def test_nbits(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = B.load_bundle(tiny_bundles["bert"])
    stage = bundle.manifest.stage("layer_01")
    dst = tmp_path / "int4.onnx"
    assert quantize_nbits(bundle.path(stage.file), dst, 4, 32, 4) >= 4
    rng = np.random.default_rng(0)
    feeds = _batch(rng, 2, 7, bundle.manifest.model.hidden_size)
    assert np.abs(_run(dst, stage, feeds) - _run(bundle.path(stage.file), stage, feeds)).max() < 0.2
    with pytest.raises(EngineError, match="4 or 8 bits"):
        quantize_nbits(bundle.path(stage.file), dst, 3)
    with pytest.raises(EngineError, match="power of two"):
        quantize_nbits(bundle.path(stage.file), dst, 4, 48)


def test_int4_sets_do_not_stream(tiny_bundles: dict[str, Path]) -> None:
    from trtbert.engines.build import BuildOptions, build_engines

    with pytest.raises(EngineError, match="int4 sets cannot stream"):
        build_engines(BuildOptions(bundle=tiny_bundles["bert"], precision="int4", stream=True))
