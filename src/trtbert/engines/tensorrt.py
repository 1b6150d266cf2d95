"""TensorRT engines through Polygraphy: the builder (one engine per stage) and ``TrtEngine`` (load/infer/unload).

Supported: 8.6 <= TensorRT < 11 (Jetson Orin: JetPack 6 ships TensorRT 10; JetPack 4.6's TensorRT 8.0/8.2 is
refused, and so is TensorRT 11, which drops calls used here). Engines are specific to the GPU and the
TensorRT version: build them on the device.

Inference runs through Polygraphy's ``TrtRunner`` (its device buffers, output allocator and stream), so
this module allocates no I/O buffers of its own. An engine's device bytes (:class:`DeviceMemory`: weights,
the execution context's activation memory, I/O buffers at the profile's largest shapes) are counted in
``TrtEngine.nbytes``: on a Jetson the GPU shares the board's memory, so they count against the same cap.

Activation memory: by default every execution context owns its own (TensorRT allocates it with the
context and frees it with it). Engines that run one at a time can instead share one buffer, a
:class:`TrtScratch` that the caller creates up front for the largest stage and passes to each engine;
it never moves or grows, and a lock lets one engine execute on it at a time.

This module imports tensorrt and polygraphy lazily; a missing one raises :class:`EngineError` naming
the pip extra. TensorRT itself has not been run with this code (no GPU where it was written); its tests
run it over a fake TensorRT and a fake CUDA runtime beneath the real Polygraphy: see docs/build.md.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtbert.bundle import Stage, TensorSpec
from trtbert.engines.base import Engine
from trtbert.errors import EngineError
from trtbert.sizes import format_size

log = logging.getLogger(__name__)

TIMING_CACHE = "timing.cache"  # shared by the stages of one set, kept in the set's directory
SUPPORTED = ((8, 6), (11, 0))  # lowest supported, first unsupported (major, minor)
_NORM_NAMES = ("layernorm", "layer_norm", "layernormalization")
_HEAVY_TACTICS = ("CUBLAS", "CUBLAS_LT", "CUDNN")


def check_tensorrt_version(version: str) -> None:
    """Refuse a TensorRT version this module was not written for (8.6 <= version < 11)."""
    match = re.match(r"\s*(\d+)\.(\d+)", version)
    if match is None:
        raise EngineError(f"cannot read the TensorRT version {version!r}; trtbert needs TensorRT 8.6 to 10.x")
    found = (int(match.group(1)), int(match.group(2)))
    if found < SUPPORTED[0]:
        raise EngineError(f"TensorRT {version} is too old: trtbert needs 8.6 to 10.x (JetPack 6 on Orin); "
                          "JetPack 4.6's TensorRT 8.0/8.2 is not supported: use --backend ort there")
    if found >= SUPPORTED[1]:
        raise EngineError(f"TensorRT {version} is not supported: trtbert needs 8.6 to 10.x (TensorRT 11 removed "
                          "the fp16 builder flag and device_memory_size it uses); install tensorrt<11")


def import_tensorrt() -> tuple[Any, Any]:
    """``(tensorrt, polygraphy.cuda)`` after the version check, or an :class:`EngineError` saying how to get them."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError(
            "tensorrt is not installed: on Jetson it comes with JetPack (python3-libnvinfer); on an x86 "
            "machine with CUDA: pip install tensorrt 'trtbert[tensorrt]'; or use --backend ort"
        ) from None
    try:
        from polygraphy import cuda
    except ImportError:
        raise EngineError("polygraphy is not installed; install it with: pip install 'trtbert[tensorrt]'") from None
    check_tensorrt_version(str(getattr(trt, "__version__", "unknown")))
    return trt, cuda


def tensorrt_versions() -> dict[str, str]:
    """Versions recorded with a TensorRT engine set."""
    trt, _ = import_tensorrt()
    import polygraphy

    return {"tensorrt": trt.__version__, "polygraphy": polygraphy.__version__}


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def _polygraphy_error() -> type[Exception]:
    from polygraphy.exception import PolygraphyException

    return PolygraphyException


# --- builder ---------------------------------------------------------------------------------------


def profile_shapes(spec: TensorSpec, max_batch: int, max_seq: int, opt_batch: int, opt_seq: int
                   ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) of one input: axis 0 is the batch, axis 1 the sequence, others fixed."""
    ranges = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim > 0:
            ranges.append((dim, dim, dim))
        elif axis == 0:
            ranges.append((1, opt_batch, max_batch))
        elif axis == 1:
            ranges.append((1, opt_seq, max_seq))
        else:
            raise EngineError(f"input {spec.name} has a dynamic axis {axis} ({dim}); only batch and sequence may vary")
    lo, opt, hi = zip(*ranges) if ranges else ((), (), ())
    return tuple(lo), tuple(opt), tuple(hi)


def keep_norms_fp32(network: Any) -> int:
    """Pin LayerNorm layers (the normalisation layer of TensorRT 8.6+, or their decomposed ops) to fp32."""
    import tensorrt as trt

    norm_type = getattr(trt.LayerType, "NORMALIZATION", None)
    pinned = 0
    for layer in network:
        name = layer.name.lower().replace("/", "_")
        if layer.type == norm_type or any(n in name for n in _NORM_NAMES):
            if layer.type in (trt.LayerType.SHAPE, trt.LayerType.CONSTANT):
                continue
            layer.precision = trt.float32
            for i in range(layer.num_outputs):
                if layer.get_output(i).dtype in (trt.float32, trt.float16):
                    layer.set_output_type(i, trt.float32)
            pinned += 1
    log.debug("pinned %d LayerNorm layers to fp32", pinned)
    return pinned


@dataclass(frozen=True)
class TrtBuilder:
    """Builds one TensorRT engine per stage file through Polygraphy (fp16 or fp32)."""

    precision: str = "fp16"
    max_batch: int = 8
    max_seq_len: int = 512
    opt_batch: int = 1
    opt_seq_len: int = 128
    workspace: int = 256 << 20

    backend = "tensorrt"
    suffix = ".engine"

    def check(self) -> None:
        """Refuse what this backend cannot build, before any file is written."""
        if self.precision == "int8":
            raise EngineError("int8 on TensorRT needs calibration data, which trtbert build does not take; "
                              "build --fp16, or --backend ort --int8 for the CPU")
        if self.precision not in ("fp16", "fp32"):
            raise EngineError(f"TensorRT builds fp16 or fp32, not {self.precision}")
        if not (1 <= self.opt_batch <= self.max_batch and 1 <= self.opt_seq_len <= self.max_seq_len):
            raise EngineError(f"profile needs 1 <= opt <= max: batch {self.opt_batch}/{self.max_batch}, "
                              f"sequence {self.opt_seq_len}/{self.max_seq_len}")
        trt, _ = import_tensorrt()
        if self.precision == "fp16":
            builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
            if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in 10.5: assume yes without it
                raise EngineError("this GPU has no fast fp16; build without --fp16")

    def options(self) -> dict[str, Any]:
        """Build options recorded in the manifest."""
        return {"max_batch": self.max_batch, "max_seq_len": self.max_seq_len, "opt_batch": self.opt_batch,
                "opt_seq_len": self.opt_seq_len, "workspace": self.workspace, "timing_cache": TIMING_CACHE,
                "layernorm": "fp32", "tactic_sources": "no cublas/cudnn"}

    def versions(self) -> dict[str, str]:
        """TensorRT and Polygraphy versions."""
        return tensorrt_versions()

    def build(self, src: Path, dst: Path, stage: Stage) -> None:
        """Parse ``src`` (ONNX), build a serialized engine for ``stage``'s shapes, write ``dst``."""
        trt, _ = import_tensorrt()
        from polygraphy.backend.trt import (
            CreateConfig,
            EngineBytesFromNetwork,
            NetworkFromOnnxPath,
            PostprocessNetwork,
            Profile,
        )

        profile = Profile()
        for spec in stage.inputs:
            lo, opt, hi = profile_shapes(spec, self.max_batch, self.max_seq_len, self.opt_batch, self.opt_seq_len)
            profile.add(spec.name, min=lo, opt=opt, max=hi)
        sources = [s for n, s in trt.TacticSource.__members__.items() if n not in _HEAVY_TACTICS]
        cache = str(dst.parent / TIMING_CACHE)
        config = CreateConfig(
            fp16=self.precision == "fp16",
            profiles=[profile],
            precision_constraints="obey",  # OBEY_PRECISION_CONSTRAINTS: LayerNorm stays fp32
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: self.workspace},
            tactic_sources=sources,
            load_timing_cache=cache,
        )
        network = PostprocessNetwork(NetworkFromOnnxPath(str(src)), func=keep_norms_fp32, name="keep LayerNorm fp32")
        try:
            engine_bytes = EngineBytesFromNetwork(network, config=config, save_timing_cache=cache)()
        except _polygraphy_error() as exc:  # Polygraphy reports parser and builder failures this way
            raise EngineError(f"TensorRT could not build {stage.name} from {src.name}: {_first_line(exc)}") from exc
        finally:
            # Polygraphy locks the cache through a "<cache>.lock" file it leaves behind; it is not part of the set.
            Path(cache + ".lock").unlink(missing_ok=True)
        with open(dst, "wb") as fh:
            fh.write(engine_bytes)

    def engine(self, path: Path, stage: Stage) -> TrtEngine:
        """An engine over a built file, to check it against its ONNX stage."""
        return TrtEngine(path, stage.name, stage.inputs, stage.outputs)

    def close(self) -> None:
        """Nothing to release (engines free their own memory on unload)."""


# --- device memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceMemory:
    """Device bytes of one engine while it is loaded.

    ``weights``: the engine's weights (TensorRT's TOTAL_WEIGHTS_SIZE where it reports it, else the size of
    the serialized engine, an upper bound); ``activations``: its execution context's device memory
    (``device_memory_size(_v2)``), shared when a :class:`TrtScratch` is used; ``io``: input and output
    buffers at the profile's largest shapes (Polygraphy allocates them on first use and grows them up to this).
    """

    weights: int
    activations: int
    io: int

    @property
    def total(self) -> int:
        """All three."""
        return self.weights + self.activations + self.io

    def as_dict(self) -> dict[str, int]:
        """For the manifest."""
        return {"weights": self.weights, "activations": self.activations, "io": self.io}


def _device_memory_size(engine: Any) -> int:
    size = getattr(engine, "device_memory_size_v2", None)  # TensorRT 10.1+
    return int(size if size is not None else engine.device_memory_size)


def _weights_nbytes(trt: Any, engine: Any, serialized: int) -> int:
    stat = getattr(trt, "EngineStat", None)  # recent TensorRT 10 releases
    if stat is not None and hasattr(engine, "get_engine_stat"):
        size = int(engine.get_engine_stat(stat.TOTAL_WEIGHTS_SIZE))
        if size >= 0:
            return size
    return serialized


def _volume(shape: Iterable[int]) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64))


def _profiles(engine: Any, names: Iterable[str]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """(min, max) shape of each input in profile 0."""
    ranges = {}
    for name in names:
        lo, _, hi = engine.get_tensor_profile_shape(name, 0)
        ranges[name] = (tuple(int(d) for d in lo), tuple(int(d) for d in hi))
    return ranges


def _io_nbytes(trt: Any, engine: Any, context: Any, inputs: Iterable[str], outputs: Iterable[str]) -> int:
    """Bytes of every input and output at the profile's largest input shapes (sets those shapes on ``context``)."""
    total = 0
    for name, (_, hi) in _profiles(engine, inputs).items():
        if not context.set_input_shape(name, hi):
            raise EngineError(f"TensorRT refused the profile's own maximum shape {hi} for {name}; rebuild the engine")
        total += _volume(hi) * np.dtype(trt.nptype(engine.get_tensor_dtype(name))).itemsize
    for name in outputs:
        shape = tuple(context.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise EngineError(f"TensorRT cannot tell the shape of output {name} at the largest inputs; "
                              "rebuild the engine")
        total += _volume(shape) * np.dtype(trt.nptype(engine.get_tensor_dtype(name))).itemsize
    return total


def _deserialize(trt: Any, path: Path, data: bytes) -> tuple[Any, Any]:
    """``(runtime, engine)``; the runtime is kept alive beside its engine."""
    from polygraphy.backend.trt import EngineFromBytes
    from polygraphy.backend.trt import util as trt_util

    runtime = trt.Runtime(trt_util.get_trt_logger())
    try:
        engine = EngineFromBytes(data, runtime=runtime)()
    except _polygraphy_error() as exc:
        raise EngineError(f"cannot deserialise {path} (built for another GPU or TensorRT version? rebuild it on "
                          f"this device): {_first_line(exc)}") from exc
    return runtime, engine


def _context_without_memory(trt: Any, engine: Any) -> Any:
    strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)
    if strategy is not None:  # TensorRT 10
        context = engine.create_execution_context(strategy.USER_MANAGED)
    else:  # TensorRT 8.6
        context = engine.create_execution_context_without_device_memory()
    if not context:
        raise EngineError("TensorRT could not create an execution context (out of device memory?)")
    return context


def _bind_device_memory(context: Any, ptr: int, nbytes: int) -> None:
    if hasattr(context, "set_device_memory"):  # TensorRT 10.1+
        context.set_device_memory(ptr, nbytes)
    else:
        context.device_memory = ptr


def _check_names(path: Path, engine: Any, inputs: Iterable[TensorSpec], outputs: Iterable[TensorSpec]) -> None:
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    want = {t.name for t in inputs} | {t.name for t in outputs}
    if names != want:
        raise EngineError(f"{path} has tensors {sorted(names)}, the manifest says {sorted(want)}; rebuild it")


def _drop_frames(exc: BaseException) -> None:
    """Clear the locals of the frames an exception went through, so that the TensorRT objects a failed
    load held are freed now rather than whenever the exception object dies."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        traceback.clear_frames(item.__traceback__)
        stack += [item.__cause__, item.__context__]


def engine_device_memory(path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> DeviceMemory:
    """The device bytes the engine file at ``path`` holds once loaded, without loading it for inference.

    Deserialises it (its weights are on the device for the duration of the call), reads the sizes, and
    frees everything again. For a build step to record in the manifest, and to size a :class:`TrtScratch`.
    """
    trt, _ = import_tensorrt()
    path = Path(path)
    data = path.read_bytes()
    held: dict[str, Any] = {}
    try:
        held["runtime"], held["engine"] = _deserialize(trt, path, data)
        _check_names(path, held["engine"], inputs, outputs)
        held["context"] = _context_without_memory(trt, held["engine"])
        return DeviceMemory(
            weights=_weights_nbytes(trt, held["engine"], len(data)),
            activations=_device_memory_size(held["engine"]),
            io=_io_nbytes(trt, held["engine"], held["context"], [t.name for t in inputs], [t.name for t in outputs]),
        )
    except BaseException as exc:
        _drop_frames(exc)
        raise
    finally:
        for key in ("context", "engine", "runtime"):  # a context before its engine, an engine before its runtime
            held.pop(key, None)


# --- shared activation memory ----------------------------------------------------------------------


class TrtScratch:
    """One device buffer serving as the activation memory of several engines' execution contexts.

    Owned by the caller, who creates it once, up front, for the largest stage (``TrtScratch.for_engines``)
    and passes it to every :class:`TrtEngine` that should use it. It is never reallocated: an engine that
    needs more is refused at load. Engines that share it run one at a time (``lock`` is held while one
    executes); loading and unloading never touch its contents. ``close`` frees it, and refuses while any
    engine using it is loaded.
    """

    def __init__(self, nbytes: int) -> None:
        _, cuda = import_tensorrt()
        self.nbytes = max(int(nbytes), 1)
        try:
            self._array: Any = cuda.DeviceArray.raw((self.nbytes,))
        except _polygraphy_error() as exc:
            raise EngineError(f"cannot allocate {format_size(self.nbytes)} of device memory for the TensorRT "
                              f"scratch: {_first_line(exc)}") from exc
        self.lock = threading.Lock()
        self._state = threading.Lock()
        self._users = 0

    @classmethod
    def for_engines(cls, memories: Iterable[DeviceMemory]) -> TrtScratch:
        """A scratch large enough for every engine of ``memories`` (e.g. from :func:`engine_device_memory`)."""
        return cls(max((m.activations for m in memories), default=0))

    @property
    def ptr(self) -> int:
        """Device address of the buffer."""
        if self._array is None:
            raise EngineError("the TensorRT scratch has been closed")
        return int(self._array.ptr)

    @property
    def users(self) -> int:
        """Loaded engines using the buffer."""
        return self._users

    def attach(self, name: str, need: int) -> int:
        """Register a loaded engine that needs ``need`` bytes; returns the buffer's address."""
        with self._state:
            if self._array is None:
                raise EngineError(f"{name}: the TensorRT scratch it was given has been closed")
            if need > self.nbytes:
                raise EngineError(f"{name} needs {format_size(need)} of activation memory, more than the shared "
                                  f"TensorRT scratch ({format_size(self.nbytes)}); size the scratch for the largest "
                                  "stage (TrtScratch.for_engines)")
            self._users += 1
            return int(self._array.ptr)

    def detach(self) -> None:
        """Unregister an engine that has unloaded."""
        with self._state:
            self._users = max(0, self._users - 1)

    def close(self) -> None:
        """Free the buffer; refused while an engine using it is loaded. Idempotent."""
        with self._state:
            if self._users:
                raise EngineError(f"the TensorRT scratch is still used by {self._users} loaded engine(s); "
                                  "unload them before closing it")
            if self._array is not None:
                self._array.free()
                self._array = None

    def __enter__(self) -> TrtScratch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --- runtime ---------------------------------------------------------------------------------------


class TrtEngine(Engine):
    """A stage run by a deserialised TensorRT engine through Polygraphy's ``TrtRunner``.

    ``scratch``: a :class:`TrtScratch` to use as activation memory (the execution context then has none
    of its own). :attr:`device_memory` and :attr:`device_nbytes` say what it holds on the device.
    """

    backend = "tensorrt"

    def __init__(self, path: Path, name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                 scratch: TrtScratch | None = None) -> None:
        super().__init__(path, name, inputs, outputs)
        self.scratch = scratch
        self._memory: DeviceMemory | None = None
        self._held: dict[str, Any] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self._ranges: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    @property
    def device_memory(self) -> DeviceMemory | None:
        """The engine's device bytes as measured at its last load (None before the first load)."""
        return self._memory

    @property
    def device_nbytes(self) -> int:
        """Device bytes this engine holds while loaded: its weights, its I/O buffers and its own
        activation memory (none when it uses a shared :class:`TrtScratch`, which its owner counts once);
        0 when unloaded."""
        if not self.loaded or self._memory is None:
            return 0
        memory = self._memory
        return memory.weights + memory.io + (0 if self.scratch is not None else memory.activations)

    def _load(self) -> None:
        try:
            self._acquire()
        except BaseException as exc:
            self._release()
            _drop_frames(exc)  # the frames below hold TensorRT objects: free them now
            raise

    def _acquire(self) -> None:
        """Deserialise, create the context, measure, activate the runner; everything held goes into
        ``self._held`` as soon as it exists, so that :meth:`_release` can free it whatever fails."""
        trt, _ = import_tensorrt()
        from polygraphy.backend.trt import TrtRunner

        held = self._held
        data = self.path.read_bytes()
        held["runtime"], held["engine"] = _deserialize(trt, self.path, data)
        engine = held["engine"]
        _check_names(self.path, engine, self.inputs, self.outputs)
        if self.scratch is not None:
            held["context"] = _context_without_memory(trt, engine)
            ptr = self.scratch.attach(self.name, _device_memory_size(engine))
            held["scratch"] = self.scratch
            _bind_device_memory(held["context"], ptr, self.scratch.nbytes)
        else:
            held["context"] = engine.create_execution_context()  # owns its activation memory
            if not held["context"]:
                raise EngineError(f"{self.name}: TensorRT could not create an execution context "
                                  "(out of device memory?)")
        inputs, outputs = [t.name for t in self.inputs], [t.name for t in self.outputs]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in inputs + outputs}
        self._ranges = _profiles(engine, inputs)
        memory = DeviceMemory(weights=_weights_nbytes(trt, engine, len(data)), activations=_device_memory_size(engine),
                              io=_io_nbytes(trt, engine, held["context"], inputs, outputs))
        held["runner"] = TrtRunner(held["context"], name=f"trtbert-{self.name}")
        try:
            held["runner"].activate()
        except _polygraphy_error() as exc:
            raise EngineError(f"{self.name}: cannot prepare TensorRT inference: {_first_line(exc)}") from exc
        self._memory = memory

    def _release(self) -> None:
        """Free what a load acquired, in order: the runner's buffers and stream, the context before its
        engine, the engine before its runtime, and last the claim on the shared scratch."""
        held = self._held
        try:
            if "runner" in held:
                self._free_runner(held.pop("runner"))  # no local reference: the runner dies on return
        finally:
            for key in ("context", "engine", "runtime"):
                held.pop(key, None)
            scratch = held.pop("scratch", None)
            held.clear()
            if scratch is not None:
                scratch.detach()

    @staticmethod
    def _free_runner(runner: Any) -> None:
        from polygraphy import cuda

        # TrtRunner.deactivate frees its input buffers and stream but not the device buffers of its output
        # allocator (Polygraphy 0.53): free those first. DeviceArray.free is idempotent.
        allocator = getattr(runner, "output_allocator", None)
        for buf in list(getattr(allocator, "buffers", {}).values()):
            if isinstance(buf, cuda.DeviceArray):
                buf.free()
        if runner.is_active:
            runner.deactivate()

    def _unload(self) -> None:
        self._release()

    def _check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        lo, hi = self._ranges[name]
        if len(shape) != len(hi) or any(not a <= d <= b for d, a, b in zip(shape, lo, hi)):
            raise EngineError(f"{self.name}: input {name} shape {shape} is outside the engine's profile "
                              f"(min {lo}, max {hi}); rebuild with a larger --max-batch / --max-seq-len")

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if self.scratch is None:
            yield
        else:
            with self.scratch.lock:
                yield

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        runner = self._held["runner"]
        feed = {}
        for spec in self.inputs:
            arr = np.asarray(feeds[spec.name])
            self._check_profile(spec.name, arr.shape)
            # TensorRT 8.6 turns int64 inputs into int32; feed what the engine declares.
            feed[spec.name] = np.ascontiguousarray(arr, dtype=self._dtypes[spec.name])
        with self._exclusive():
            try:
                raw = runner.infer(feed, check_inputs=False)
            except _polygraphy_error() as exc:
                raise EngineError(f"{self.name}: TensorRT inference failed: {_first_line(exc)}") from exc
        # The runner reuses its host buffers on the next call: copy out (fp16 outputs become the manifest's dtype).
        return {spec.name: np.array(raw[spec.name], dtype=np.dtype(spec.dtype)) for spec in self.outputs}
