"""TensorRT engines through Polygraphy: the builder (one engine per stage) and ``TrtEngine`` (load/infer/unload).

Written for TensorRT 8.6 and 10.x (Jetson Orin: JetPack 6 ships TensorRT 10). Polygraphy covers most API
differences; the few left (context without device memory, device memory size) are handled here.
Engines are specific to the GPU and the TensorRT version: build them on the device.

Memory: every execution context is created without its own device memory; all share one scratch
buffer sized for the largest stage loaded so far (:class:`SharedScratch`), freed when the last engine
unloads. cuBLAS/cuDNN tactic sources are left out (initialising them costs hundreds of MiB on Jetson).

This module imports tensorrt and polygraphy lazily; a missing one raises :class:`EngineError` naming
the pip extra. None of it could run on the machine this was written on (no GPU): see docs/build.md.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtbert.bundle import Stage, TensorSpec
from trtbert.engines.base import Engine
from trtbert.errors import EngineError

log = logging.getLogger(__name__)

TIMING_CACHE = "timing.cache"  # shared by the stages of one set, kept in the set's directory
_NORM_NAMES = ("layernorm", "layer_norm", "layernormalization")
_HEAVY_TACTICS = ("CUBLAS", "CUBLAS_LT", "CUDNN")


def import_tensorrt() -> tuple[Any, Any]:
    """``(tensorrt, polygraphy.cuda)``, or an :class:`EngineError` saying how to get them."""
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
    major_minor = tuple(int(p) for p in trt.__version__.split(".")[:2])
    if major_minor < (8, 6):
        raise EngineError(f"TensorRT {trt.__version__} is too old: trtbert needs 8.6 or 10.x (JetPack 6 on Orin)")
    return trt, cuda


def tensorrt_versions() -> dict[str, str]:
    """Versions recorded with a TensorRT engine set."""
    trt, _ = import_tensorrt()
    import polygraphy

    return {"tensorrt": trt.__version__, "polygraphy": polygraphy.__version__}


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
            with trt.Builder(trt.Logger(trt.Logger.WARNING)) as builder:
                if not builder.platform_has_fast_fp16:
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
        except Exception as exc:  # Polygraphy raises PolygraphyException; TensorRT its own errors
            raise EngineError(f"TensorRT could not build {stage.name} from {src.name}: {str(exc).splitlines()[0]}") from None
        with open(dst, "wb") as fh:
            fh.write(engine_bytes)

    def engine(self, path: Path, stage: Stage) -> TrtEngine:
        """An engine over a built file, to check it against its ONNX stage."""
        return TrtEngine(path, stage.name, stage.inputs, stage.outputs)

    def close(self) -> None:
        """Nothing to release (engines free their own memory on unload)."""


# --- runtime ---------------------------------------------------------------------------------------


class SharedScratch:
    """One device buffer that serves as the activation memory of every loaded execution context.

    It grows to the largest stage's requirement and is freed when the last engine releases it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._array: Any = None
        self._users = 0

    @property
    def nbytes(self) -> int:
        """Bytes currently allocated."""
        return 0 if self._array is None else int(self._array.allocated_nbytes)

    def acquire(self, nbytes: int) -> None:
        """Register a user needing ``nbytes`` of scratch; grows the buffer if needed."""
        _, cuda = import_tensorrt()
        with self._lock:
            if self._array is None:
                self._array = cuda.DeviceArray(shape=(max(nbytes, 1),), dtype=np.uint8)
            elif nbytes > self._array.allocated_nbytes:
                self._array.resize((nbytes,))
            self._users += 1

    def release(self) -> None:
        """Unregister a user; frees the buffer when none is left."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0 and self._array is not None:
                self._array.free()
                self._array = None

    def bind(self, context: Any) -> None:
        """Point ``context`` at the buffer (it may have moved since the context last ran)."""
        array = self._array
        if hasattr(context, "set_device_memory"):  # TensorRT 10.1+
            context.set_device_memory(array.ptr, array.allocated_nbytes)
        else:
            context.device_memory = array.ptr


SCRATCH = SharedScratch()


def _device_memory_size(engine: Any) -> int:
    size = getattr(engine, "device_memory_size_v2", None)  # TensorRT 10.1+
    return int(size if size is not None else engine.device_memory_size)


def _context_without_memory(trt: Any, engine: Any) -> Any:
    strategy = getattr(trt, "ExecutionContextAllocationStrategy", None)
    if strategy is not None:  # TensorRT 10
        context = engine.create_execution_context(strategy.USER_MANAGED)
    else:  # TensorRT 8.6
        context = engine.create_execution_context_without_device_memory()
    if context is None:
        raise EngineError("TensorRT could not create an execution context (out of memory?)")
    return context


class TrtEngine(Engine):
    """A stage run by a deserialised TensorRT engine, with dynamic batch and sequence length."""

    backend = "tensorrt"

    def __init__(self, path: Path, name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        super().__init__(path, name, inputs, outputs)
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers: dict[str, Any] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self.scratch_bytes = 0

    def _load(self) -> None:
        trt, cuda = import_tensorrt()
        from polygraphy.backend.trt import EngineFromBytes

        try:
            engine = EngineFromBytes(self.path.read_bytes())()
        except Exception as exc:
            raise EngineError(f"cannot deserialise {self.path} (built for another GPU or TensorRT version? "
                              f"rebuild it on this device): {str(exc).splitlines()[0]}") from None
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        want = {t.name for t in self.inputs} | {t.name for t in self.outputs}
        if set(names) != want:
            raise EngineError(f"{self.path} has tensors {sorted(names)}, the manifest says {sorted(want)}; rebuild it")
        self._engine = engine
        self._context = _context_without_memory(trt, engine)
        self.scratch_bytes = _device_memory_size(engine)
        SCRATCH.acquire(self.scratch_bytes)
        self._stream = cuda.Stream()
        for name in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            self._dtypes[name] = dtype
            self._buffers[name] = cuda.DeviceArray(dtype=dtype)

    def _unload(self) -> None:
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        if self._stream is not None:
            self._stream.free()
        self._context = None  # the context before its engine
        self._engine = None
        self._stream = None
        SCRATCH.release()

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        context, stream = self._context, self._stream
        for spec in self.inputs:
            # TensorRT 8.6 turns int64 inputs into int32; feed what the engine expects.
            arr = np.ascontiguousarray(feeds[spec.name], dtype=self._dtypes[spec.name])
            if not context.set_input_shape(spec.name, arr.shape):
                raise EngineError(f"{self.name}: input {spec.name} shape {arr.shape} is outside the engine's profile; "
                                  "rebuild with a larger --max-batch / --max-seq-len")
            buf = self._buffers[spec.name]
            buf.copy_from(arr, stream)
            context.set_tensor_address(spec.name, buf.ptr)
        hosts: dict[str, np.ndarray] = {}
        for spec in self.outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            buf = self._buffers[spec.name]
            buf.resize(shape)
            context.set_tensor_address(spec.name, buf.ptr)
            hosts[spec.name] = np.empty(shape, dtype=self._dtypes[spec.name])
        SCRATCH.bind(context)
        if not context.execute_async_v3(stream.ptr):
            raise EngineError(f"{self.name}: TensorRT execution failed (see the TensorRT log)")
        for name, host in hosts.items():
            hosts[name] = self._buffers[name].copy_to(host, stream)
        stream.synchronize()
        return {name: host.astype(np.float32, copy=False) if host.dtype == np.float16 else host
                for name, host in hosts.items()}
