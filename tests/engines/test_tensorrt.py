"""TensorRT through Polygraphy.

Without a GPU the glue still runs for real: ``fake_trt`` puts a fake CUDA runtime under Polygraphy's real
``polygraphy.cuda`` (host memory standing in for the device, every allocation tracked) and a fake
``tensorrt`` module (8.6 or 10.x API) whose engines run the stage's ONNX graph with ONNX Runtime. So
``TrtEngine`` and ``TrtBuilder`` go through Polygraphy's real ``TrtRunner``, ``EngineFromBytes``,
``DeviceArray``, ``Stream`` and builder loaders, and their outputs are checked against the ONNX stages.
TensorRT itself does not run here: the tests at the end need tensorrt and a GPU and skip elsewhere.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("polygraphy")

import fake_trt  # noqa: E402 (tests/engines/fake_trt)
from fake_trt import assert_released, fake_tensorrt  # noqa: E402

from trtbert import bundle as B  # noqa: E402
from trtbert.engines.tensorrt import (  # noqa: E402
    DeviceMemory,
    TrtBuilder,
    TrtEngine,
    TrtScratch,
    check_tensorrt_version,
    engine_device_memory,
    profile_shapes,
)
from trtbert.errors import EngineError  # noqa: E402

MAX_BATCH, MAX_SEQ = 4, 32
SHAPES = ((2, 16), (1, 7), (MAX_BATCH, MAX_SEQ), (1, 1), (3, 5))  # (batch, sequence), max and min included


def test_profile_covers_batch_and_sequence() -> None:
    spec = B.TensorSpec(B.HIDDEN, "float32", ("batch", "sequence", 768))
    assert profile_shapes(spec, max_batch=8, max_seq=512, opt_batch=1, opt_seq=128) == (
        (1, 1, 768), (1, 128, 768), (8, 512, 768))
    mask = B.TensorSpec(B.ATTENTION_MASK, "int64", ("batch", "sequence"))
    assert profile_shapes(mask, 4, 64, 2, 32) == ((1, 1), (2, 32), (4, 64))
    with pytest.raises(EngineError, match="dynamic axis 2"):
        profile_shapes(B.TensorSpec("x", "float32", ("batch", "sequence", "hidden")), 8, 512, 1, 128)


@pytest.mark.parametrize("version, ok", [
    ("8.0.1", False), ("8.2.3.0", False), ("8.5.3", False), ("8.6.1", True), ("8.6.1.post1", True),
    ("9.3.0", True), ("10.0.1", True), ("10.14.1", True), ("11.0.0", False), ("12.1", False), ("unknown", False),
])
def test_version_gate(version: str, ok: bool) -> None:
    if ok:
        check_tensorrt_version(version)
    else:
        with pytest.raises(EngineError, match="8.6 to 10.x"):
            check_tensorrt_version(version)


# --- the fake device and its engines ---------------------------------------------------------------------


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[fake_trt.FakeCudart]:
    """The fake CUDA device under Polygraphy plus the fake tensorrt, as TensorRT 10.3 or the version given
    by parametrizing ``fake`` indirectly."""
    version = getattr(request, "param", "10.3.0")
    device = fake_trt.install(monkeypatch, version)
    yield device
    fake_trt.uninstall()


@pytest.fixture(scope="module")
def bert(tiny_bundles: dict[str, Path]) -> B.Bundle:
    return B.load_bundle(tiny_bundles["bert"])


def _stage(bundle: B.Bundle, kind: str) -> B.Stage:
    """``embeddings``; ``layer``: the first layer; ``exit``: the last layer (it has exit logits)."""
    stages = bundle.manifest.stages
    layers = [s for s in stages if s.name.startswith("layer")]
    stage = {"embeddings": stages[0], "layer": layers[0], "exit": layers[-1]}[kind]
    assert kind != "exit" or "logits" in {t.name for t in stage.outputs}
    return stage


def _engine_file(bundle: B.Bundle, stage: B.Stage, dst: Path, **options: Any) -> Path:
    profiles = {t.name: profile_shapes(t, MAX_BATCH, MAX_SEQ, 1, 16) for t in stage.inputs}
    return fake_trt.write_engine(bundle.path(stage.file), dst, profiles, **options)


def _engine(bundle: B.Bundle, stage: B.Stage, tmp_path: Path, scratch: TrtScratch | None = None,
            **options: Any) -> TrtEngine:
    path = _engine_file(bundle, stage, tmp_path / f"{stage.name}.engine", **options)
    return TrtEngine(path, stage.name, stage.inputs, stage.outputs, scratch=scratch)


def _feeds(stage: B.Stage, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 97 * batch + seq)
    feeds = {}
    for spec in stage.inputs:
        shape = tuple(batch if d == "batch" else seq if d == "sequence" else d for d in spec.shape)
        if spec.dtype == "float32":
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
        elif spec.name == B.ATTENTION_MASK:
            mask = np.ones(shape, np.int64)
            mask[-1, max(1, seq // 2):] = 0  # the last row half padded
            feeds[spec.name] = mask
        else:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(np.dtype(spec.dtype))
    return feeds


def _reference(bundle: B.Bundle, stage: B.Stage, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle.path(stage.file)), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def _io_bytes(stage: B.Stage, engine_dtypes: dict[str, str] | None = None) -> int:
    """Bytes of every input and output at the largest shapes, from the manifest's specs."""
    total = 0
    for spec in stage.inputs + stage.outputs:
        shape = [MAX_BATCH if d == "batch" else MAX_SEQ if d == "sequence" else d for d in spec.shape]
        dtype = (engine_dtypes or {}).get(spec.name, spec.dtype)
        total += int(np.prod(shape)) * np.dtype(dtype).itemsize
    return total


# --- load, infer, unload --------------------------------------------------------------------------------


@pytest.mark.parametrize("fake", ["8.6.1", "10.0.1", "10.3.0", "10.14.1"], indirect=True)
@pytest.mark.parametrize("kind", ["exit", "embeddings"])
def test_engine_runs_stage_at_every_shape_and_frees_everything(
    fake: fake_trt.FakeCudart, bert: B.Bundle, kind: str, tmp_path: Path
) -> None:
    stage = _stage(bert, kind)
    engine = _engine(bert, stage, tmp_path)
    engine.load()
    engine.load()  # idempotent
    header = fake_tensorrt.read_header(engine.path)
    old = fake_tensorrt.__version__.startswith("8.")
    int_dtype = "int32" if old else "int64"  # TensorRT 8.6 turns int64 inputs into int32
    engine_dtypes = {t.name: int_dtype for t in stage.inputs if t.dtype == "int64"}
    memory = engine.device_memory
    assert memory is not None
    weights_on_device = fake.live()["engine weights"]
    stat = fake_tensorrt.__version__ == "10.14.1"  # EngineStat: the weights exactly; else the file, an upper bound
    assert memory.weights == (weights_on_device if stat else engine.file_size)
    assert memory.activations == header["activation_bytes"] == fake.live()["context activations"]
    assert memory.io == _io_bytes(stage, engine_dtypes)
    assert engine.device_nbytes == memory.total

    results = []
    for batch, seq in SHAPES:
        feeds = _feeds(stage, batch, seq)
        got = engine.infer(feeds)
        want = _reference(bert, stage, feeds)
        assert set(got) == {t.name for t in stage.outputs}
        for name, ref in want.items():
            assert got[name].dtype == np.float32 and got[name].shape == ref.shape
            np.testing.assert_allclose(got[name], ref, rtol=1e-6, atol=1e-6)
        results.append((got, want))
        # What Polygraphy allocated for I/O stays within what the engine reports.
        assert fake.used <= memory.total
    for got, want in results:  # outputs are copies: later inferences did not overwrite them
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6)
    assert fake.errors == []

    engine.unload()
    engine.unload()  # idempotent
    assert engine.device_nbytes == 0
    assert_released(fake)  # weights, activations, Polygraphy's input and output buffers, the stream
    with pytest.raises(EngineError, match="not loaded"):
        engine.infer(_feeds(stage, 1, 4))

    engine.load()  # and again, from scratch
    got = engine.infer(_feeds(stage, 2, 9))
    assert got.keys() == {t.name for t in stage.outputs}
    engine.unload()
    assert_released(fake)


def test_fp16_outputs_come_back_as_float32(fake: fake_trt.FakeCudart, bert: B.Bundle, tmp_path: Path) -> None:
    stage = _stage(bert, "exit")
    halves = {t.name: "HALF" for t in stage.outputs}
    with _engine(bert, stage, tmp_path, output_dtypes=halves, fp16=True) as engine:
        assert engine.device_memory is not None
        assert engine.device_memory.io == _io_bytes(stage, {n: "float16" for n in halves})
        for batch, seq in SHAPES:
            feeds = _feeds(stage, batch, seq)
            got, want = engine.infer(feeds), _reference(bert, stage, feeds)
            for name, ref in want.items():
                assert got[name].dtype == np.float32
                np.testing.assert_allclose(got[name], ref, rtol=2e-3, atol=2e-3)
                assert not np.array_equal(got[name], ref)  # it did go through float16
    assert_released(fake)


def test_input_outside_profile_is_refused_with_the_fix(fake: fake_trt.FakeCudart, bert: B.Bundle,
                                                       tmp_path: Path) -> None:
    stage = _stage(bert, "layer")
    with _engine(bert, stage, tmp_path) as engine:
        for batch, seq in ((MAX_BATCH + 1, 8), (1, MAX_SEQ + 1)):
            with pytest.raises(EngineError, match=r"outside the engine's profile \(min \(1, 1, 32\), max "
                                                  r"\(4, 32, 32\)\); rebuild with a larger --max-batch"):
                engine.infer(_feeds(stage, batch, seq))
        feeds = _feeds(stage, 2, 8)  # still usable
        got, want = engine.infer(feeds), _reference(bert, stage, feeds)
        for name, ref in want.items():
            np.testing.assert_allclose(got[name], ref, rtol=1e-6, atol=1e-6)
    assert_released(fake)


def test_engine_device_memory_before_loading(fake: fake_trt.FakeCudart, bert: B.Bundle, tmp_path: Path) -> None:
    stage = _stage(bert, "exit")
    engine = _engine(bert, stage, tmp_path)
    before = engine_device_memory(engine.path, stage.inputs, stage.outputs)
    assert_released(fake)  # measuring frees what it deserialised
    with engine:
        assert engine.device_memory == before
    assert before.as_dict() == {"weights": before.weights, "activations": before.activations, "io": before.io}
    assert_released(fake)


# --- failures release what they acquired -----------------------------------------------------------------


def _break_stream(fake: fake_trt.FakeCudart, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake, "cudaStreamCreate", lambda ptr: 2)  # cudaErrorMemoryAllocation


@pytest.mark.parametrize("failure, message", [
    ("other-version", "cannot deserialise .*rebuild it on this device"),
    ("garbage", "cannot deserialise"),
    ("wrong-stage", "has tensors .* the manifest says"),
    ("no-memory-for-context", "could not create an execution context"),
    ("no-stream", "cannot prepare TensorRT inference"),
    ("scratch-too-small", "more than the shared TensorRT scratch"),
])
def test_failed_load_leaks_nothing(fake: fake_trt.FakeCudart, bert: B.Bundle, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, failure: str, message: str) -> None:
    stage = _stage(bert, "exit")
    scratch = TrtScratch(16) if failure == "scratch-too-small" else None
    engine = _engine(bert, stage, tmp_path, scratch=scratch,
                     version="10.0.1" if failure == "other-version" else None)
    if failure == "garbage":
        engine.path.write_bytes(b"\x00garbage" * 100)
    if failure == "wrong-stage":
        other = _stage(bert, "embeddings")
        path = _engine_file(bert, other, tmp_path / "other.engine")
        engine = TrtEngine(path, stage.name, stage.inputs, stage.outputs)
    if failure == "no-memory-for-context":
        weights = len(engine.path.read_bytes())
        fake.capacity = weights + 64  # room for the weights, not for the activation memory
    if failure == "no-stream":
        _break_stream(fake, monkeypatch)
    baseline = fake.live()
    with pytest.raises(EngineError, match=message) as excinfo:
        engine.load()
    # Released while the exception (and its traceback) is still alive: the pool may keep it for a while.
    assert fake.live() == baseline, f"a failed load kept {fake.live()} (before: {baseline})"
    assert not engine.loaded and engine.device_nbytes == 0
    assert excinfo.value.__cause__ is not None or failure in ("wrong-stage", "no-memory-for-context",
                                                              "scratch-too-small")
    if scratch is not None:
        assert scratch.users == 0
        scratch.close()
    fake.errors.clear()  # the injected failures were reported as CUDA errors, as they should be
    assert_released(fake)


def test_tensorrt_11_is_refused_before_anything_is_allocated(fake: fake_trt.FakeCudart, bert: B.Bundle,
                                                             tmp_path: Path) -> None:
    stage = _stage(bert, "exit")
    engine = _engine(bert, stage, tmp_path)
    fake_tensorrt.__version__ = "11.0.0"
    with pytest.raises(EngineError, match="TensorRT 11.0.0 is not supported.*install tensorrt<11"):
        engine.load()
    with pytest.raises(EngineError, match="not supported"):
        TrtBuilder(precision="fp32").check()
    assert fake.mallocs == 0
    assert_released(fake)


# --- one scratch shared by several engines ---------------------------------------------------------------


@pytest.mark.parametrize("fake", ["8.6.1", "10.0.1", "10.3.0"], indirect=True)
def test_engines_share_one_scratch_that_never_moves(fake: fake_trt.FakeCudart, bert: B.Bundle,
                                                    tmp_path: Path) -> None:
    stages = [_stage(bert, k) for k in ("embeddings", "layer", "exit")]
    engines = [_engine(bert, s, tmp_path) for s in stages]
    memories = [engine_device_memory(e.path, e.inputs, e.outputs) for e in engines]
    scratch = TrtScratch.for_engines(memories)
    assert scratch.nbytes == max(m.activations for m in memories)
    engines = [TrtEngine(e.path, e.name, e.inputs, e.outputs, scratch=scratch) for e in engines]
    ptr = scratch.ptr
    for engine in engines:
        engine.load()
    assert scratch.users == 3
    assert set(fake.live()) == {"engine weights", "cudaMalloc"}  # no context owns activation memory
    for engine, memory in zip(engines, memories):
        assert engine.device_nbytes == memory.weights + memory.io  # the scratch is its owner's to count
    for round_ in range(2):
        for engine, stage in zip(engines, stages):
            feeds = _feeds(stage, 2, 11, seed=round_)
            got, want = engine.infer(feeds), _reference(bert, stage, feeds)
            for name, ref in want.items():
                np.testing.assert_allclose(got[name], ref, rtol=1e-6, atol=1e-6)
    engines[1].unload()
    engines[1].load()
    assert scratch.ptr == ptr  # never reallocated
    with pytest.raises(EngineError, match="still used by 3 loaded engine"):
        scratch.close()
    for engine in engines:
        engine.unload()
    assert scratch.users == 0 and fake.live() == {"cudaMalloc": scratch.nbytes}
    scratch.close()
    scratch.close()  # idempotent
    assert_released(fake)


def test_loading_beside_a_running_engine_does_not_disturb_it(fake: fake_trt.FakeCudart, bert: B.Bundle,
                                                             tmp_path: Path) -> None:
    """The pool's prefetch loads the next stage on a worker thread while the current one computes."""
    run, other = _stage(bert, "exit"), _stage(bert, "layer")
    scratch = TrtScratch.for_engines([engine_device_memory(_engine_file(bert, s, tmp_path / f"{s.name}.m"),
                                                           s.inputs, s.outputs) for s in (run, other)])
    running = _engine(bert, run, tmp_path, scratch=scratch)
    loading = _engine(bert, other, tmp_path, scratch=scratch)
    running.load()
    feeds = _feeds(run, 3, 13)
    want = _reference(bert, run, feeds)
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for _ in range(10):
                loading.load()
                loading.unload()
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    worker = threading.Thread(target=churn)
    worker.start()
    for _ in range(10):
        got = running.infer(feeds)
        for name, ref in want.items():
            np.testing.assert_allclose(got[name], ref, rtol=1e-6, atol=1e-6)
    worker.join()
    assert errors == []
    running.unload()
    scratch.close()
    assert_released(fake)


# --- the builder, through Polygraphy's loaders -----------------------------------------------------------


@pytest.mark.parametrize("fake", ["8.6.1", "10.3.0"], indirect=True)
def test_builder_goes_through_polygraphy_and_pins_layernorm(fake: fake_trt.FakeCudart, bert: B.Bundle,
                                                            tmp_path: Path) -> None:
    import onnx

    stage = _stage(bert, "exit")
    builder = TrtBuilder(precision="fp16", max_batch=MAX_BATCH, max_seq_len=MAX_SEQ, opt_seq_len=16,
                         workspace=64 << 20)
    builder.check()
    first, second = tmp_path / "a.engine", tmp_path / "b.engine"
    builder.build(bert.path(stage.file), first, stage)
    builder.build(bert.path(stage.file), second, stage)  # reads and extends the timing cache
    header = fake_tensorrt.read_header(first)
    assert header["version"] == fake_tensorrt.__version__
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= set(header["flags"]) and "TF32" not in header["flags"]
    norms = [n.name for n in onnx.load(str(bert.path(stage.file))).graph.node if n.op_type == "LayerNormalization"]
    assert sorted(header["fp32_layers"]) == sorted(norms) and len(norms) == 2
    assert header["fp32_outputs_pinned"]
    banned = sum(1 << int(fake_tensorrt.TacticSource[n]) for n in ("CUBLAS", "CUBLAS_LT", "CUDNN"))
    assert header["tactic_sources"] & banned == 0 and header["tactic_sources"] != 0
    assert header["workspace"] == 64 << 20
    profile = {i["name"]: i["profile"] for i in header["inputs"]}
    assert profile[B.HIDDEN] == [[1, 1, 32], [1, 16, 32], [MAX_BATCH, MAX_SEQ, 32]]
    cache = tmp_path / "timing.cache"
    assert cache.read_bytes().startswith(fake_tensorrt.CACHE_MAGIC) and header["cache_key"] in cache.read_text()
    assert not (tmp_path / "timing.cache.lock").exists()  # Polygraphy's lock file is not left in the set
    with builder.engine(second, stage) as engine:
        for batch, seq in SHAPES:
            feeds = _feeds(stage, batch, seq)
            got, want = engine.infer(feeds), _reference(bert, stage, feeds)
            for name, ref in want.items():
                np.testing.assert_allclose(got[name], ref, rtol=1e-2, atol=1e-2)
    assert_released(fake)


def test_builder_refusals(fake: fake_trt.FakeCudart, bert: B.Bundle, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineError, match="calibration data"):
        TrtBuilder(precision="int8").check()
    monkeypatch.setattr(fake_tensorrt.Builder, "platform_has_fast_fp16", False)
    with pytest.raises(EngineError, match="no fast fp16"):
        TrtBuilder(precision="fp16").check()
    TrtBuilder(precision="fp32").check()
    stage = _stage(bert, "layer")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(EngineError, match=f"TensorRT could not build {stage.name} from bad.onnx") as excinfo:
        TrtBuilder(precision="fp32").build(bad, tmp_path / "x.engine", stage)
    assert excinfo.value.__cause__ is not None and not (tmp_path / "x.engine").exists()
    assert_released(fake)


def test_build_engines_checks_every_stage_through_trt_engine(fake: fake_trt.FakeCudart, tiny_bundles: dict[str, Path],
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``trtbert build --backend tensorrt``: build, then the check step runs every stage through TrtEngine."""
    from trtbert.engines import build as build_module

    # Costs are measured in a separate clean process, where the fake TensorRT does not exist.
    monkeypatch.setattr(build_module, "measure_costs", lambda bundle, engine_set, built: engine_set, raising=False)
    root = tmp_path / "albert"
    shutil.copytree(tiny_bundles["albert"], root)
    result = build_module.build_engines(build_module.BuildOptions(bundle=root, backend="tensorrt", precision="fp32",
                                                                  max_batch=4, max_seq_len=64))
    assert result.name == "trt-fp32" and all(c.ok for c in result.stages), result.stages
    bundle = B.load_bundle(root, verify="full")
    engine_set = bundle.engine_set("trt-fp32")
    assert engine_set.backend == "tensorrt" and engine_set.versions["tensorrt"] == fake_tensorrt.__version__
    assert engine_set.stage_files["layer_01"] == engine_set.stage_files["layer_02"]  # ALBERT's shared layer
    assert not any(f.endswith(".lock") for f in bundle.manifest.files)
    assert_released(fake)


def test_device_memory_total() -> None:
    assert DeviceMemory(weights=10, activations=5, io=3).total == 18


# --- real TensorRT on a GPU (skipped without tensorrt) ---------------------------------------------------


@pytest.fixture
def trt_bundle(tiny_bundles: dict[str, Path], tmp_path: Path) -> Path:
    pytest.importorskip("tensorrt")
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


def test_trt_engines_share_one_scratch_and_free_it(trt_bundle: Path) -> None:
    from trtbert.engines.build import BuildOptions, build_engines
    from trtbert.engines.validate import reference_samples

    build_engines(BuildOptions(bundle=trt_bundle, backend="tensorrt", precision="fp32", max_batch=4, max_seq_len=64))
    bundle = B.load_bundle(trt_bundle)
    engine_set = bundle.engine_set("trt-fp32")
    refs = reference_samples(bundle)
    stages = bundle.manifest.stages
    paths = [bundle.path(engine_set.stage_files[s.name]) for s in stages]
    scratch = TrtScratch.for_engines(engine_device_memory(p, s.inputs, s.outputs) for p, s in zip(paths, stages))
    engines = [TrtEngine(p, s.name, s.inputs, s.outputs, scratch=scratch) for p, s in zip(paths, stages)]
    for engine in engines:
        engine.load()
        assert engine.device_memory is not None and engine.device_nbytes > 0
    for engine, stage in zip(engines, stages):
        sample = refs[stage.name]
        for feeds, expected in zip(sample.feeds, sample.outputs):
            got = engine.infer(feeds)
            for name, ref in expected.items():
                np.testing.assert_allclose(got[name], ref, atol=1e-3, rtol=1e-3)
    with pytest.raises(EngineError, match="outside the engine's profile"):
        engines[1].infer({B.HIDDEN: np.zeros((5, 8, 32), np.float32), B.ATTENTION_MASK: np.ones((5, 8), np.int64)})
    for engine in engines:
        engine.unload()
    scratch.close()
