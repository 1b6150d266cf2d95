"""Quantisation of one stage graph: int8 (dynamic, or static with calibrated activation scales) and
weight-only int4 (``MatMulNBits``).

int8 starts from ONNX Runtime's dynamic quantisation: weights of ``MatMul`` and ``Attention`` become
int8, and a ``DynamicQuantizeLinear`` before each quantises its input at run time with one scale over
the whole tensor, that is over every row of the batch: a row's answer then depends on its batchmates.
:func:`make_static` replaces each of those with a ``QuantizeLinear`` whose scale and zero point come
from calibration (the activation's range over the task's texts, :mod:`trtbert.engines.calibrate`), and
turns ``MatMulInteger -> Cast -> Mul(scale)`` into ``MatMulIntegerToFloat``: the same integer kernels,
with answers that depend on the row alone.

Weights: ``qint8`` (s8) on CPUs with VNNI, where ONNX Runtime's u8 x s8 kernels run twice as fast as
u8 x u8 (measured on this project's AVX512-VNNI machine: 0.70 vs 1.36 ms per bert-base layer at 12
tokens); ``quint8`` elsewhere, where u8 x s8 can saturate (docs/build.md).
"""

from __future__ import annotations

import logging
import platform
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from trtbert.errors import EngineError, first_line, missing_extra

log = logging.getLogger(__name__)

INT8_WEIGHTS = ("qint8", "quint8", "auto")
INT8_MODES = ("static", "dynamic")
INT8_OPS = ("MatMul", "Attention")
NBITS_ACCURACY = (0, 1, 2, 3, 4)  # MatMulNBits accuracy_level: 0/1 fp32 compute ... 4 int8 compute
FLOAT = 1  # onnx.TensorProto.FLOAT


def cpu_has_vnni() -> bool:
    """Whether this CPU has x86 VNNI (AVX512-VNNI or AVX-VNNI); True on ARM (dot-product kernels)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni"})
    except OSError:
        pass
    return False


def resolve_weights(weights: str) -> str:
    """``qint8`` or ``quint8``; ``auto`` picks qint8 where the CPU has VNNI, else quint8."""
    if weights not in INT8_WEIGHTS:
        raise EngineError(f"unknown int8 weight type {weights!r}; choose one of {', '.join(INT8_WEIGHTS)}")
    if weights == "auto":
        return "qint8" if cpu_has_vnni() else "quint8"
    return weights


def quantize_dynamic_int8(src: Path, dst: Path, weights: str = "qint8", per_channel: bool = False,
                          reduce_range: bool = False) -> None:
    """Dynamic int8 quantisation of the ``MatMul`` and ``Attention`` weights of ``src`` (activations
    quantised at run time, one scale per tensor)."""
    try:
        import onnx  # noqa: F401
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise missing_extra(exc.name or "onnx", "int8") from None
    weight_type = QuantType.QInt8 if resolve_weights(weights) == "qint8" else QuantType.QUInt8
    # The quantiser writes "<input>-inferred.onnx" beside its input: give it a private copy, so that
    # nothing temporary lands in the bundle's onnx/ and concurrent builds cannot collide.
    private = dst.parent / f".{dst.stem}-source.onnx"
    shutil.copyfile(src, private)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice on the root logger for every graph
    try:
        quantize_dynamic(private, dst, op_types_to_quantize=list(INT8_OPS), weight_type=weight_type,
                         per_channel=per_channel, reduce_range=reduce_range,
                         extra_options={"DefaultTensorType": FLOAT})
    except (OSError, ValueError, RuntimeError) as exc:  # unreadable graph, full disk; anything else is a bug
        raise EngineError(f"int8 quantisation of {src.name} failed: {first_line(exc)}") from exc
    finally:
        root.setLevel(level)
        private.unlink(missing_ok=True)
        private.with_name(private.stem + "-inferred.onnx").unlink(missing_ok=True)


def dynamic_inputs(path: Path) -> list[str]:
    """The tensors a dynamically quantised graph quantises at run time (inputs of its
    ``DynamicQuantizeLinear`` nodes), in graph order: what calibration must measure."""
    import onnx

    names: list[str] = []
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type == "DynamicQuantizeLinear" and node.input[0] not in names:
            names.append(node.input[0])
    return names


def uint8_params(low: float, high: float) -> tuple[np.float32, np.uint8]:
    """Scale and zero point of asymmetric uint8 quantisation over ``[low, high]`` (widened to hold 0),
    as ``DynamicQuantizeLinear`` computes them for one tensor."""
    low, high = min(0.0, float(low)), max(0.0, float(high))
    scale = (high - low) / 255.0
    if not np.isfinite(scale) or scale <= 0.0:
        return np.float32(1.0), np.uint8(0)
    zero = np.clip(np.round(-low / scale), 0, 255)
    return np.float32(scale), np.uint8(zero)


def make_static(dynamic: Path, ranges: Mapping[str, tuple[float, float]], dst: Path) -> int:
    """Write ``dynamic`` (a :func:`quantize_dynamic_int8` graph) to ``dst`` with every run-time
    quantisation replaced by a fixed one over ``ranges[tensor] = (low, high)``; returns how many."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(dynamic))
    graph = model.graph
    missing = [n.input[0] for n in graph.node if n.op_type == "DynamicQuantizeLinear" and n.input[0] not in ranges]
    if missing:
        raise EngineError(f"{dynamic.name}: no calibrated range for {', '.join(missing)}; rebuild with calibration data")
    nodes, scales = [], {}
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x = node.input[0]
        y, y_scale, y_zero = node.output
        scale, zero = uint8_params(*ranges[x])
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), y_scale),
                                  numpy_helper.from_array(np.array(zero, np.uint8), y_zero)])
        scales[y_scale] = y_zero
        nodes.append(helper.make_node("QuantizeLinear", [x, y_scale, y_zero], [y], name=f"{node.name}_static"))
    del graph.node[:]
    graph.node.extend(nodes)
    _integer_to_float(graph, scales)
    if not any(d.domain == "com.microsoft" for d in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return len(scales)


def _integer_to_float(graph: object, activation_scales: Mapping[str, str]) -> None:
    """``MatMulInteger(a, b, a_zp, b_zp) -> Cast -> Mul(Mul(a_scale, b_scale))`` becomes one
    ``MatMulIntegerToFloat(a, b, a_scale, b_scale, a_zp, b_zp)`` where ``a_scale`` is a calibrated scale."""
    from onnx import helper

    nodes = list(graph.node)  # type: ignore[attr-defined]
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    drop: set[int] = set()
    replace: dict[int, object] = {}
    for node in nodes:
        if node.op_type != "MatMulInteger" or len(node.input) != 4:
            continue
        casts = consumers.get(node.output[0], [])
        if len(casts) != 1 or casts[0].op_type != "Cast":
            continue
        muls = consumers.get(casts[0].output[0], [])
        if len(muls) != 1 or muls[0].op_type != "Mul":
            continue
        mul = muls[0]
        other = mul.input[1] if mul.input[0] == casts[0].output[0] else mul.input[0]
        scale_mul = producer.get(other)
        if scale_mul is None or scale_mul.op_type != "Mul" or len(consumers.get(other, [])) != 1:
            continue
        a_scale = next((s for s in scale_mul.input if s in activation_scales), None)
        if a_scale is None:
            continue
        b_scale = scale_mul.input[1] if scale_mul.input[0] == a_scale else scale_mul.input[0]
        a, b, a_zero, b_zero = node.input
        fused = helper.make_node("MatMulIntegerToFloat", [a, b, a_scale, b_scale, a_zero, b_zero], [mul.output[0]],
                                 name=f"{node.name}_to_float", domain="com.microsoft")
        replace[id(node)] = fused
        drop.update({id(casts[0]), id(mul), id(scale_mul)})
    kept = [replace.get(id(n), n) for n in nodes if id(n) not in drop]
    del graph.node[:]  # type: ignore[attr-defined]
    graph.node.extend(kept)  # type: ignore[attr-defined]


class RangeObserver:
    """Running min/max of named tensors over calibration batches."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        self.low = {n: np.inf for n in self.names}
        self.high = {n: -np.inf for n in self.names}
        self.batches = 0

    def observe(self, values: Mapping[str, np.ndarray]) -> None:
        """Fold one batch's tensors in."""
        for name in self.names:
            value = values[name]
            if value.size:
                self.low[name] = min(self.low[name], float(np.min(value)))
                self.high[name] = max(self.high[name], float(np.max(value)))
        self.batches += 1

    def ranges(self) -> dict[str, tuple[float, float]]:
        """``name -> (low, high)``; a tensor never seen gets (0, 0)."""
        return {n: (self.low[n], self.high[n]) if np.isfinite(self.low[n]) else (0.0, 0.0) for n in self.names}


def with_outputs(src: Path, names: Iterable[str]) -> bytes:
    """The graph ``src`` with ``names`` added as outputs (what calibration runs)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    present = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    for name in names:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, FLOAT, None))
    return model.SerializeToString()


def quantize_nbits(src: Path, dst: Path, bits: int = 4, block_size: int = 128, accuracy_level: int = 4,
                   symmetric: bool = True) -> int:
    """Weight-only quantisation of every ``MatMul`` weight into ``MatMulNBits`` (``bits`` 4 or 8, one scale
    per ``block_size`` weights along K); returns how many MatMuls it converted. ``accuracy_level`` 4
    computes in int8 with each row's activations quantised per block: a row's answer never depends
    on its batchmates."""
    try:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:
        raise missing_extra(exc.name or "onnx", "int8") from None
    if bits not in (4, 8):
        raise EngineError(f"weight-only quantisation takes 4 or 8 bits, not {bits}")
    if accuracy_level not in NBITS_ACCURACY:
        raise EngineError(f"accuracy level {accuracy_level} is not one of {NBITS_ACCURACY}")
    if block_size < 16 or block_size & (block_size - 1):
        raise EngineError(f"block size {block_size} must be a power of two, 16 or more")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=block_size,
                                         is_symmetric=symmetric, accuracy_level=accuracy_level)
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst))
    except (OSError, ValueError, RuntimeError) as exc:
        raise EngineError(f"{bits}-bit quantisation of {src.name} failed: {first_line(exc)}") from exc
    finally:
        root.setLevel(level)
    return sum(1 for n in onnx.load(str(dst), load_external_data=False).graph.node if n.op_type == "MatMulNBits")
