"""A fake ``tensorrt`` module for tests: the runtime and builder API that trtbert and Polygraphy call.

Installed as ``sys.modules["tensorrt"]`` by :func:`fake_trt.install` for one test; never importable as
``tensorrt`` otherwise. It mimics TensorRT 8.6 or 10.x (:func:`configure` adds or removes the names that
differ), allocates every device byte (engine weights, context activation memory) on the
:class:`~fake_trt.cudart.FakeCudart` device that Polygraphy's ``polygraphy.cuda`` also uses, and runs
the math with ONNX Runtime: a "serialized engine" is a small JSON header plus the stage's ONNX graph.

``execute_async_v3`` reads its inputs from, and writes its outputs to, device addresses (host memory
here), on the stream, when the stream is synchronised. Outputs of an fp16 build pass through float16.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from fake_trt.cudart import DeviceError, FakeCudart

__version__ = "10.3.0"
MAGIC = b"FAKETRT\0"
CACHE_MAGIC = b"FAKECACHE\n"
_DEVICE: FakeCudart | None = None


def _device() -> FakeCudart:
    if _DEVICE is None:
        raise RuntimeError("fake tensorrt used without a fake device (fake_trt.install)")
    return _DEVICE


def _version() -> tuple[int, ...]:
    return tuple(int(p) for p in __version__.split(".")[:2])


class _Enum(enum.Enum):
    """Like TensorRT's enums: named members, ``int()`` for bit flags, not equal to plain ints."""

    def __int__(self) -> int:
        return int(self.value)


class DataType(_Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    INT64 = 8


float32, float16, int8, int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32
bool = DataType.BOOL  # noqa: A001 (TensorRT's name)
uint8 = DataType.UINT8
int64 = DataType.INT64  # removed by configure() for 8.6

_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
          DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}
_FROM_ORT = {"tensor(float)": DataType.FLOAT, "tensor(float16)": DataType.HALF, "tensor(int64)": DataType.INT64,
             "tensor(int32)": DataType.INT32, "tensor(bool)": DataType.BOOL}


def nptype(dtype: DataType) -> type:
    return _NUMPY[dtype]


class TensorIOMode(_Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class TensorFormat(_Enum):
    LINEAR = 0
    CHW2 = 1
    HWC8 = 2
    CHW4 = 3
    CHW16 = 4
    CHW32 = 5
    HWC = 8


class TensorLocation(_Enum):
    DEVICE = 0
    HOST = 1


class ExecutionContextAllocationStrategy(_Enum):  # TensorRT 10
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


class EngineStat(_Enum):  # recent TensorRT 10 releases
    TOTAL_WEIGHTS_SIZE = 0
    STRIPPED_WEIGHTS_SIZE = 1


class LayerType(_Enum):
    CONVOLUTION = 0
    ACTIVATION = 2
    SCALE = 4
    SOFTMAX = 5
    CONCATENATION = 7
    ELEMENTWISE = 8
    UNARY = 11
    SHUFFLE = 13
    REDUCE = 14
    CONSTANT = 15
    SLICE = 17
    SHAPE = 18
    MATRIX_MULTIPLY = 21
    GATHER = 20
    IDENTITY = 24
    CAST = 25
    SELECT = 29
    NORMALIZATION = 40


class BuilderFlag(_Enum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 4
    DISABLE_TIMING_CACHE = 5
    TF32 = 6
    SPARSE_WEIGHTS = 7
    SAFETY_SCOPE = 8
    OBEY_PRECISION_CONSTRAINTS = 9
    PREFER_PRECISION_CONSTRAINTS = 10
    DIRECT_IO = 11


class NetworkDefinitionCreationFlag(_Enum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class MemoryPoolType(_Enum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4


class TacticSource(_Enum):
    CUBLAS = 0
    CUBLAS_LT = 1
    CUDNN = 2
    EDGE_MASK_CONVOLUTIONS = 3
    JIT_CONVOLUTIONS = 4


class ProfilingVerbosity(_Enum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


class DeviceType(_Enum):
    GPU = 0
    DLA = 1


class EngineCapability(_Enum):
    STANDARD = 0
    SAFETY = 1
    DLA_STANDALONE = 2


class OnnxParserFlag(_Enum):
    NATIVE_INSTANCENORM = 0


class Dims(tuple):
    """TensorRT's shape type: a tuple here."""


# --- logging ----------------------------------------------------------------------------------------


class _Severity(_Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = _Severity
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (_Severity.INTERNAL_ERROR, _Severity.ERROR, _Severity.WARNING,
                                                     _Severity.INFO, _Severity.VERBOSE)

    def __init__(self) -> None:
        pass

    def log(self, severity: _Severity, msg: str) -> None:
        pass


class Logger(ILogger):
    def __init__(self, min_severity: _Severity = _Severity.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity


def init_libnvinfer_plugins(logger: ILogger, namespace: str) -> bool:
    return True


class IOutputAllocator:
    def __init__(self) -> None:
        pass


# --- the engine file ----------------------------------------------------------------------------------


def _ort_session(onnx_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _symbols(shape: list[Any]) -> list[Any]:
    return [d if isinstance(d, int) else str(d) for d in shape]


def make_engine_bytes(onnx_bytes: bytes, profiles: dict[str, tuple[tuple[int, ...], ...]], *,
                      version: str | None = None, fp16: bool = False, output_dtypes: dict[str, str] | None = None,
                      activation_bytes: int | None = None, extra: dict[str, Any] | None = None) -> bytes:
    """A fake serialized engine of an ONNX graph: ``profiles`` maps each input to (min, opt, max) shapes.

    int64 inputs become int32 on TensorRT 8.6 (as its ONNX parser does); ``output_dtypes`` overrides an
    output's dtype (e.g. ``{"logits": "HALF"}``).
    """
    version = version or __version__
    old = tuple(int(p) for p in version.split(".")[:2]) < (10, 0)
    session = _ort_session(onnx_bytes)
    inputs = []
    for arg in session.get_inputs():
        dtype = _FROM_ORT[arg.type]
        if dtype == DataType.INT64 and old:
            dtype = DataType.INT32
        lo, opt, hi = profiles[arg.name]
        inputs.append({"name": arg.name, "dtype": dtype.name, "onnx_dtype": _FROM_ORT[arg.type].name,
                       "shape": _symbols(arg.shape), "profile": [list(lo), list(opt), list(hi)]})
    outputs = []
    for arg in session.get_outputs():
        dtype = (output_dtypes or {}).get(arg.name, _FROM_ORT[arg.type].name)
        outputs.append({"name": arg.name, "dtype": dtype, "shape": _symbols(arg.shape)})
    if activation_bytes is None:  # something plausible: a few copies of the largest output
        sizes = {}
        for inp in inputs:
            for sym, value in zip(inp["shape"], inp["profile"][2]):
                sizes[sym] = value
        activation_bytes = 4 * sum(4 * int(np.prod([sizes.get(d, d) for d in out["shape"]])) for out in outputs)
    header = {"version": version, "inputs": inputs, "outputs": outputs, "activation_bytes": activation_bytes,
              "fp16": fp16, **(extra or {})}
    raw = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(raw)) + raw + onnx_bytes


def read_header(data: bytes | Path) -> dict[str, Any]:
    """The JSON header of a fake engine (bytes or a file)."""
    if isinstance(data, Path):
        data = data.read_bytes()
    (size,) = struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])
    return json.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + size])


# --- runtime ------------------------------------------------------------------------------------------


class Runtime:
    def __init__(self, logger: ILogger) -> None:
        _device()  # creating a runtime initialises CUDA
        self.logger = logger
        self.engine_host_code_allowed = False

    def deserialize_cuda_engine(self, serialized_engine: Any) -> ICudaEngine | None:
        data = bytes(serialized_engine)
        if not data.startswith(MAGIC):
            self.logger.log(Logger.ERROR, "1: [runtime.cpp::parsePlan] Error Code 1: Serialization (not an engine)")
            return None
        header = read_header(data)
        if header["version"] != __version__:
            self.logger.log(Logger.ERROR, "1: [stdArchiveReader.cpp] Error Code 1: Serialization assertion failed: "
                                          f"engine built with TensorRT {header['version']}, this is {__version__}")
            return None
        start = len(MAGIC) + 4 + struct.unpack("<I", data[len(MAGIC):len(MAGIC) + 4])[0]
        try:
            return ICudaEngine(header, data[start:], self.logger)
        except DeviceError as exc:
            _device().errors.append(str(exc))
            self.logger.log(Logger.ERROR, f"2: [engine.cpp] Error Code 2: OutOfMemory ({exc})")
            return None


class ICudaEngine:
    """A deserialised engine: its weights live on the fake device until it is garbage-collected."""

    def __init__(self, header: dict[str, Any], onnx_bytes: bytes, logger: ILogger) -> None:
        self._freed = True
        self._logger = logger
        self._header = header
        self._inputs = {t["name"]: t for t in header["inputs"]}
        self._outputs = {t["name"]: t for t in header["outputs"]}
        # Outputs first: code must not assume inputs come first.
        self._names = list(self._outputs) + list(self._inputs)
        self._activation_bytes = int(header["activation_bytes"])
        self._session = _ort_session(onnx_bytes)
        self._weights_nbytes = len(onnx_bytes)
        self._dev = _device()
        self._weights = self._dev.malloc(len(onnx_bytes), "engine weights")
        self._freed = False
        ctypes.memmove(self._weights, onnx_bytes, len(onnx_bytes))

    def __del__(self) -> None:
        if not getattr(self, "_freed", True):
            self._freed = True
            self._dev.free(self._weights)

    # tensors
    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def _spec(self, name: str) -> dict[str, Any]:
        spec = self._inputs.get(name) or self._outputs.get(name)
        if spec is None:
            raise RuntimeError(f"no tensor {name!r}")
        return spec

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in self._inputs else TensorIOMode.OUTPUT if name in self._outputs \
            else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self._spec(name)["dtype"]]

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(d if isinstance(d, int) else -1 for d in self._spec(name)["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        if name not in self._inputs or profile_index != 0:
            raise RuntimeError(f"no profile shape for {name!r} in profile {profile_index}")
        return [Dims(s) for s in self._inputs[name]["profile"]]

    def is_shape_inference_io(self, name: str) -> bool:
        return False

    def get_tensor_format(self, name: str, profile_index: int = 0) -> TensorFormat:
        return TensorFormat.LINEAR

    def get_tensor_location(self, name: str) -> TensorLocation:
        return TensorLocation.DEVICE

    def get_aliased_input_tensor(self, name: str) -> str | None:  # recent TensorRT 10
        return None

    num_optimization_profiles = 1

    # memory
    @property
    def device_memory_size(self) -> int:
        return self._activation_bytes

    @property
    def device_memory_size_v2(self) -> int:  # TensorRT 10.1+
        return self._activation_bytes

    def get_device_memory_size_for_profile(self, index: int) -> int:
        return self._activation_bytes

    def get_device_memory_size_for_profile_v2(self, index: int) -> int:  # TensorRT 10.1+
        return self._activation_bytes

    def get_engine_stat(self, stat: EngineStat) -> int:  # recent TensorRT 10
        return self._weights_nbytes if stat == EngineStat.TOTAL_WEIGHTS_SIZE else -1

    # contexts
    def create_execution_context(self, strategy: Any = None) -> IExecutionContext | None:
        if strategy is not None and _version() < (10, 0):
            raise TypeError("create_execution_context() takes no arguments on TensorRT 8.6")
        user_managed = strategy is not None and strategy.name == "USER_MANAGED"
        return self._context(own_memory=not user_managed)

    def create_execution_context_without_device_memory(self) -> IExecutionContext | None:
        return self._context(own_memory=False)

    def _context(self, own_memory: bool) -> IExecutionContext | None:
        try:
            return IExecutionContext(self, own_memory)
        except DeviceError as exc:
            _device().errors.append(str(exc))
            self._logger.log(Logger.ERROR, f"2: [executionContext.cpp] Error Code 2: OutOfMemory ({exc})")
            return None

    # execution (called on the stream)
    def _run(self, inputs: dict[str, tuple[int, tuple[int, ...], DataType]],
             outputs: dict[str, tuple[int, tuple[int, ...], DataType]], scratch: tuple[int, int]) -> None:
        dev = _device()
        feeds = {}
        for name, (addr, shape, dtype) in inputs.items():
            nbytes = int(np.prod(shape)) * np.dtype(nptype(dtype)).itemsize
            dev.check(addr, nbytes, f"input {name} (when the stream ran)")
            raw = (ctypes.c_char * nbytes).from_address(addr)
            arr = np.frombuffer(raw, dtype=nptype(dtype)).reshape(shape).copy()
            feeds[name] = arr.astype(nptype(DataType[self._inputs[name]["onnx_dtype"]]))
        ptr, size = scratch
        if size:
            dev.check(ptr, size, "activation memory (when the stream ran)")
            ctypes.memset(ptr, 0xAB, size)  # scribble, as the layers' intermediate results would
        results = dict(zip([o.name for o in self._session.get_outputs()], self._session.run(None, feeds)))
        for name, (addr, shape, dtype) in outputs.items():
            value = results[name]
            if tuple(value.shape) != tuple(shape):
                raise DeviceError(f"output {name}: computed shape {value.shape}, announced {shape}")
            if self._header.get("fp16") and value.dtype == np.float32:
                value = value.astype(np.float16).astype(np.float32)
            value = np.ascontiguousarray(value, dtype=nptype(dtype))
            dev.check(addr, value.nbytes, f"output {name} (when the stream ran)")
            ctypes.memmove(addr, value.ctypes.data, value.nbytes)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine, own_memory: bool) -> None:
        self._own = 0
        self._dev = _device()
        self.engine = engine
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._addresses: dict[str, int] = {}
        self._allocators: dict[str, Any] = {}
        self._memory = (0, 0)
        self.active_optimization_profile = 0
        if own_memory and engine._activation_bytes:
            self._own = self._dev.malloc(engine._activation_bytes, "context activations")
            self._memory = (self._own, engine._activation_bytes)

    def __del__(self) -> None:
        if getattr(self, "_own", 0):
            own, self._own = self._own, 0
            self._dev.free(own)

    def _error(self, msg: str) -> bool:
        self.engine._logger.log(Logger.ERROR, msg)
        return False

    # shapes and addresses
    def set_input_shape(self, name: str, shape: Any) -> bool:
        spec = self.engine._inputs.get(name)
        if spec is None:
            return self._error(f"3: setInputShape: {name} is not an input")
        shape = tuple(int(d) for d in shape)
        lo, _, hi = spec["profile"]
        if len(shape) != len(hi) or any(not a <= d <= b for d, a, b in zip(shape, lo, hi)):
            return self._error(f"3: [executionContext.cpp::setInputShape] Error Code 3: API Usage Error "
                               f"({name}: {shape} is outside the profile {lo}..{hi})")
        self._shapes[name] = shape
        return True

    def _symbols(self) -> dict[str, int]:
        values: dict[str, int] = {}
        for name, spec in self.engine._inputs.items():
            shape = self._shapes.get(name)
            if shape is None:
                continue
            for sym, value in zip(spec["shape"], shape):
                if isinstance(sym, str):
                    values[sym] = value
        return values

    def get_tensor_shape(self, name: str) -> Dims:
        if name in self.engine._inputs:
            return Dims(self._shapes.get(name, self.engine.get_tensor_shape(name)))
        values = self._symbols()
        return Dims(d if isinstance(d, int) else values.get(d, -1) for d in self.engine._spec(name)["shape"])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.engine._spec(name)
        self._addresses[name] = int(ptr)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def set_output_allocator(self, name: str, allocator: Any) -> bool:
        if name not in self.engine._outputs:
            return self._error(f"3: setOutputAllocator: {name} is not an output")
        self._allocators[name] = allocator
        return True

    def get_output_allocator(self, name: str) -> Any:
        return self._allocators.get(name)

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        return index == 0

    # activation memory
    @property
    def device_memory(self) -> int:
        raise AttributeError("device_memory is write-only")

    @device_memory.setter
    def device_memory(self, ptr: int) -> None:
        if self._own:
            raise DeviceError("device memory set on a context that owns its own")
        self._memory = (int(ptr), self.engine._activation_bytes)

    def set_device_memory(self, ptr: int, size: int) -> None:  # TensorRT 10.1+
        if self._own:
            raise DeviceError("device memory set on a context that owns its own")
        if size < self.engine._activation_bytes:
            raise DeviceError(f"set_device_memory: {size} bytes, the engine needs {self.engine._activation_bytes}")
        self._memory = (int(ptr), int(size))

    def execute_async_v3(self, stream_handle: int) -> bool:
        dev, engine = _device(), self.engine
        try:
            ptr, size = self._memory
            need = engine._activation_bytes
            if need:
                if not ptr:
                    raise DeviceError("the context has no device memory (set_device_memory / device_memory)")
                dev.check(ptr, need, "activation memory")
            inputs = {}
            for name, spec in engine._inputs.items():
                if name not in self._shapes:
                    raise DeviceError(f"input {name} has no shape")
                dtype = DataType[spec["dtype"]]
                nbytes = int(np.prod(self._shapes[name])) * np.dtype(nptype(dtype)).itemsize
                addr = self._addresses.get(name, 0)
                dev.check(addr, nbytes, f"input {name}")
                inputs[name] = (addr, self._shapes[name], dtype)
            outputs = {}
            for name, spec in engine._outputs.items():
                shape = tuple(self.get_tensor_shape(name))
                dtype = DataType[spec["dtype"]]
                nbytes = int(np.prod(shape)) * np.dtype(nptype(dtype)).itemsize
                allocator = self._allocators.get(name)
                if allocator is not None:
                    current = self._addresses.get(name, 0)
                    if _version() >= (10, 0) and hasattr(allocator, "reallocate_output_async"):
                        addr = allocator.reallocate_output_async(name, current, nbytes, 256, stream_handle)
                    else:
                        addr = allocator.reallocate_output(name, current, nbytes, 256)
                    if not addr:
                        raise DeviceError(f"the output allocator gave no memory for {name}")
                    self._addresses[name] = int(addr)
                    allocator.notify_shape(name, Dims(shape))
                addr = self._addresses.get(name, 0)
                dev.check(addr, nbytes, f"output {name}")
                outputs[name] = (addr, shape, dtype)
            dev.enqueue(int(stream_handle or 0), lambda: engine._run(inputs, outputs, (ptr, need)))
        except DeviceError as exc:
            dev.errors.append(str(exc))
            return self._error(f"1: [enqueue] {exc}")
        return True


# --- builder ------------------------------------------------------------------------------------------


class ITensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType) -> None:
        self.name, self.shape, self.dtype = name, Dims(shape), dtype
        self.is_shape_tensor = False


class ILayer:
    def __init__(self, name: str, type: LayerType, outputs: list[ITensor]) -> None:  # noqa: A002
        self.name, self.type, self._outputs = name, type, outputs
        self._precision: DataType | None = None
        self._output_types: dict[int, DataType] = {}

    @property
    def precision(self) -> DataType:
        return self._precision or DataType.FLOAT

    @precision.setter
    def precision(self, value: DataType) -> None:
        self._precision = value

    @property
    def precision_is_set(self) -> bool:
        return self._precision is not None

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]

    def set_output_type(self, index: int, dtype: DataType) -> None:
        self._output_types[index] = dtype

    def output_type_is_set(self, index: int) -> bool:
        return index in self._output_types


_LAYER_TYPES = {"LayerNormalization": LayerType.NORMALIZATION, "Shape": LayerType.SHAPE, "Constant": LayerType.CONSTANT,
                "MatMul": LayerType.MATRIX_MULTIPLY, "Gemm": LayerType.MATRIX_MULTIPLY, "Softmax": LayerType.SOFTMAX,
                "Reshape": LayerType.SHUFFLE, "Transpose": LayerType.SHUFFLE, "Gather": LayerType.GATHER,
                "Cast": LayerType.CAST, "Concat": LayerType.CONCATENATION, "Slice": LayerType.SLICE,
                "ReduceMean": LayerType.REDUCE, "Erf": LayerType.UNARY, "Sqrt": LayerType.UNARY,
                "Where": LayerType.SELECT}


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.name = "network"
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._layers: list[ILayer] = []
        self._onnx: bytes = b""

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, index: int) -> ITensor:
        return self._inputs[index]

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_output(self, index: int) -> ITensor:
        return self._outputs[index]

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_layer(self, index: int) -> ILayer:
        return self._layers[index]

    def __iter__(self) -> Any:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def get_flag(self, flag: NetworkDefinitionCreationFlag) -> Any:
        return (self.flags & (1 << int(flag))) != 0


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.network, self.logger = network, logger
        self.flags = 0
        self._errors: list[str] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> str:
        return self._errors[index]

    def clear_errors(self) -> None:
        self._errors.clear()

    def parse_from_file(self, path: str) -> Any:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            self._errors.append(f"cannot read {path}: {exc}")
            return False
        return self.parse(data)

    def parse(self, model: bytes, path: str | None = None) -> Any:
        import onnx
        from onnx import TensorProto

        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as exc:  # noqa: BLE001 (any decoding failure is a parser error, as in TensorRT)
            self._errors.append(f"ModelImporter.cpp: failed to parse ONNX model: {exc}")
            return False
        types = {TensorProto.FLOAT: DataType.FLOAT, TensorProto.FLOAT16: DataType.HALF,
                 TensorProto.INT64: DataType.INT64 if _version() >= (10, 0) else DataType.INT32,
                 TensorProto.INT32: DataType.INT32, TensorProto.BOOL: DataType.BOOL}

        def tensor(value: Any) -> ITensor:
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
            return ITensor(value.name, dims, types[value.type.tensor_type.elem_type])

        initializers = {i.name for i in proto.graph.initializer}
        net = self.network
        net._inputs = [tensor(v) for v in proto.graph.input if v.name not in initializers]
        net._outputs = [tensor(v) for v in proto.graph.output]
        for i, node in enumerate(proto.graph.node):
            outs = [ITensor(o, (), DataType.INT64 if node.op_type == "Shape" else DataType.FLOAT) for o in node.output]
            net._layers.append(ILayer(node.name or f"{node.op_type}_{i}", _LAYER_TYPES.get(node.op_type,
                                                                                        LayerType.ELEMENTWISE), outs))
        net._onnx = bytes(model)
        return True


class IOptimizationProfile:
    def __init__(self) -> None:
        self._shapes: dict[str, list[tuple[int, ...]]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 (TensorRT's names)
        self._shapes[input] = [tuple(min), tuple(opt), tuple(max)]

    def get_shape(self, input: str) -> list[Dims]:  # noqa: A002
        return [Dims(s) for s in self._shapes.get(input, [])]

    def __bool__(self) -> bool:  # noqa: A003 (shadowed name)
        return len(self._shapes) > 0


class ITimingCache:
    def __init__(self, entries: list[str]) -> None:
        self.entries = sorted(set(entries))

    def serialize(self) -> memoryview:
        return memoryview(CACHE_MAGIC + json.dumps(self.entries).encode())

    def combine(self, other: ITimingCache, ignore_mismatch: Any) -> Any:
        self.entries = sorted(set(self.entries) | set(other.entries))
        return True


class IBuilderConfig:
    def __init__(self) -> None:
        self._flags = {BuilderFlag.TF32}
        self._profiles: list[IOptimizationProfile] = []
        self._pools: dict[MemoryPoolType, int] = {}
        self._tactics = sum(1 << int(s) for s in TacticSource)
        self._cache: ITimingCache | None = None
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self.engine_capability = EngineCapability.STANDARD
        self.DLA_core = -1
        self.default_device_type = DeviceType.GPU

    def set_flag(self, flag: BuilderFlag) -> None:
        self._flags.add(flag)

    def clear_flag(self, flag: BuilderFlag) -> None:
        self._flags.discard(flag)

    def get_flag(self, flag: BuilderFlag) -> Any:
        return flag in self._flags

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self._pools[pool] = int(size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self._pools.get(pool, 1 << 40)

    def set_tactic_sources(self, tactic_sources: int) -> Any:
        self._tactics = int(tactic_sources)
        return True

    def get_tactic_sources(self) -> int:
        return self._tactics

    def create_timing_cache(self, serialized_timing_cache: Any) -> ITimingCache | None:
        data = bytes(serialized_timing_cache)
        if not data:
            return ITimingCache([])
        if not data.startswith(CACHE_MAGIC):
            return None
        return ITimingCache(json.loads(data[len(CACHE_MAGIC):]))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: Any) -> Any:
        self._cache = cache
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return self._cache


class Builder:
    platform_has_fast_fp16 = True
    num_DLA_cores = 0

    def __init__(self, logger: ILogger) -> None:
        _device()
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> memoryview | None:
        if not network._onnx:
            self.logger.log(Logger.ERROR, "4: [network.cpp::validate] the network is empty")
            return None
        if len(config._profiles) != 1:
            self.logger.log(Logger.ERROR, f"4: expected one optimization profile, got {len(config._profiles)}")
            return None
        shapes = config._profiles[0]._shapes
        for tensor in network._inputs:
            if tensor.name not in shapes:
                self.logger.log(Logger.ERROR, f"4: [network.cpp::validate] input {tensor.name} has no profile")
                return None
            lo, opt, hi = shapes[tensor.name]
            for axis, dim in enumerate(tensor.shape):
                if not (lo[axis] <= opt[axis] <= hi[axis]) or (dim >= 0 and not lo[axis] == hi[axis] == dim):
                    self.logger.log(Logger.ERROR, f"4: profile of {tensor.name} axis {axis} is not valid for dim {dim}")
                    return None
        fp32_layers = [layer.name for layer in network if layer.precision_is_set and layer.precision == DataType.FLOAT]
        pinned_outputs = all(layer.output_type_is_set(i) for layer in network if layer.name in fp32_layers
                             for i in range(layer.num_outputs))
        key = hashlib.sha256(network._onnx).hexdigest()[:16]
        if config._cache is not None:
            config._cache.entries = sorted(set(config._cache.entries) | {key})
        extra = {"fp32_layers": fp32_layers, "fp32_outputs_pinned": pinned_outputs,
                 "flags": sorted(f.name for f in config._flags), "tactic_sources": config._tactics,
                 "workspace": config._pools.get(MemoryPoolType.WORKSPACE), "cache_key": key}
        return memoryview(make_engine_bytes(network._onnx, {k: tuple(v) for k, v in shapes.items()},
                                            fp16=BuilderFlag.FP16 in config._flags, extra=extra))


# --- versions -----------------------------------------------------------------------------------------

_CLASS_FEATURES: dict[tuple[type, str], tuple[int, int]] = {
    (ICudaEngine, "device_memory_size_v2"): (10, 1),
    (ICudaEngine, "get_device_memory_size_for_profile_v2"): (10, 1),
    (ICudaEngine, "get_engine_stat"): (10, 14),
    (ICudaEngine, "get_aliased_input_tensor"): (10, 14),
    (IExecutionContext, "set_device_memory"): (10, 1),
}
_MODULE_FEATURES: dict[str, tuple[int, int]] = {
    "ExecutionContextAllocationStrategy": (10, 0),
    "EngineStat": (10, 14),
    "int64": (10, 0),
}
_SAVED: dict[Any, Any] = {}


def configure(version: str, device: FakeCudart | None) -> None:
    """Act as TensorRT ``version`` (8.6.x or 10.x) on ``device``: names that version lacks are removed."""
    global __version__, _DEVICE
    __version__ = version
    _DEVICE = device
    have = _version()
    module = globals()
    for (cls, name), since in _CLASS_FEATURES.items():
        _SAVED.setdefault((cls, name), cls.__dict__.get(name, _SAVED.get((cls, name))))
        if have >= since:
            setattr(cls, name, _SAVED[(cls, name)])
        elif name in cls.__dict__:
            delattr(cls, name)
    for name, since in _MODULE_FEATURES.items():
        _SAVED.setdefault(name, module.get(name, _SAVED.get(name)))
        if have >= since:
            module[name] = _SAVED[name]
        else:
            module.pop(name, None)
