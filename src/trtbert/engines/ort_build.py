"""Offline ONNX Runtime builds of one stage graph: optimise for a provider, quantise to int8, convert to fp16.

Each function reads one ONNX file and writes one; ``OrtBuilder`` chains them for an engine set.
Graphs are optimised offline with the provider's level and saved, so the runtime can load built sets
with graph optimisation off (``registry.py`` defaults ``optimization="disable"`` for built sets).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtbert.bundle import Stage
from trtbert.engines.ort import PROVIDERS, OrtEngine, OrtOptions, provider_list, session_options
from trtbert.errors import EngineError, missing_extra

log = logging.getLogger(__name__)

# Offline level per provider. "all" adds layout transforms tied to the build machine's CPU, and the
# TensorRT provider does its own fusions and cannot run ONNX Runtime's fused contrib ops.
OFFLINE_LEVEL = {"cpu": "extended", "cuda": "extended", "tensorrt": "basic"}
INT8_WEIGHTS = ("qint8", "quint8")
# Kept in fp32 by the fp16 conversion: LayerNorm overflows in fp16 (DESIGN.md, TensorRT notes).
FP32_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization")


def optimize_model(src: Path, dst: Path, provider: str, level: str | None = None) -> None:
    """Run ONNX Runtime's graph optimiser for ``provider`` on ``src`` and save the result as ``dst``."""
    import onnxruntime as ort

    options = OrtOptions(provider=provider, optimization=level or OFFLINE_LEVEL[provider], threads=1)
    so = session_options(options)
    so.optimized_model_filepath = str(dst)
    try:
        ort.InferenceSession(str(src), sess_options=so, providers=provider_list(options))
    except EngineError:
        raise
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise EngineError(f"optimising {src.name} for {provider} failed: {str(exc).splitlines()[0]}") from None
    if not dst.is_file():
        raise EngineError(f"optimising {src.name} for {provider} wrote no {dst.name}")


def quantize_int8(src: Path, dst: Path, weights: str = "quint8") -> None:
    """Dynamic int8 quantisation of MatMul/Gemm weights (activations quantised at run time)."""
    try:
        import onnx  # noqa: F401
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise missing_extra(exc.name or "onnx", "int8") from None
    if weights not in INT8_WEIGHTS:
        raise EngineError(f"unknown int8 weight type {weights!r}; choose one of {', '.join(INT8_WEIGHTS)}")
    weight_type = QuantType.QInt8 if weights == "qint8" else QuantType.QUInt8
    try:
        with _quiet_root_logger():
            quantize_dynamic(src, dst, op_types_to_quantize=["MatMul", "Gemm"], weight_type=weight_type,
                             per_channel=False, reduce_range=False)
    except Exception as exc:  # the quantiser raises plain exceptions of many types
        raise EngineError(f"int8 quantisation of {src.name} failed: {str(exc).splitlines()[0]}") from None


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantiser logs advice ("consider pre-processing") on the root logger for every stage."""
    root = logging.getLogger()
    drop = logging.Filter()
    drop.filter = lambda record: record.name != "root" or record.levelno > logging.WARNING  # type: ignore[method-assign]
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute with fp32 inputs/outputs (the runtime feeds float32) and fp32 LayerNorm."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError as exc:
        raise missing_extra(exc.name or "onnx", "int8") from None
    model = onnx.load(str(src))
    try:
        model = convert_float_to_float16(model, keep_io_types=True,
                                         op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP32_OPS])
    except Exception as exc:
        raise EngineError(f"fp16 conversion of {src.name} failed: {str(exc).splitlines()[0]}") from None
    onnx.save(model, str(dst))


@dataclass(frozen=True)
class OrtBuilder:
    """Builds one stage file for ONNX Runtime: ``fp32`` (optimised), ``int8`` (CPU) or ``fp16`` (GPU)."""

    provider: str
    precision: str
    int8_weights: str = "quint8"
    trt_cache_dir: str | None = None  # relative to the bundle root, for the TensorRT provider

    backend = "ort"
    suffix = ".onnx"

    def check(self) -> None:
        """Refuse combinations the provider cannot build, before any file is written."""
        if self.provider not in PROVIDERS:
            raise EngineError(f"unknown provider {self.provider!r}; choose one of {', '.join(PROVIDERS)}")
        if self.precision == "fp16" and self.provider == "cpu":
            raise EngineError("fp16 needs a GPU provider: use --provider cuda or tensorrt, or --int8 for the CPU")
        if self.precision == "int8" and self.provider != "cpu":
            raise EngineError(f"int8 (dynamic quantisation) runs on the CPU provider only, not {self.provider}; "
                              "use --provider cpu --int8, or --fp16 on the GPU")
        provider_list(OrtOptions(provider=self.provider))  # raises naming onnxruntime-gpu if missing

    def options(self) -> dict[str, Any]:
        """What the runtime needs to recreate the sessions (OrtOptions field names) and how it was built."""
        opts: dict[str, Any] = {"provider": self.provider, "optimization": "disable",
                                "offline_optimization": OFFLINE_LEVEL[self.provider]}
        if self.precision == "int8":
            opts["int8_weights"] = self.int8_weights
        if self.provider == "tensorrt":
            opts["trt_fp16"] = self.precision == "fp16"
            if self.trt_cache_dir:
                opts["trt_cache_dir"] = self.trt_cache_dir
        return opts

    def versions(self) -> dict[str, str]:
        """Library versions that produced the files."""
        import onnxruntime

        out = {"onnxruntime": onnxruntime.__version__}
        try:
            import onnx

            out["onnx"] = onnx.__version__
        except ImportError:
            pass
        return out

    def build(self, src: Path, dst: Path, stage: Stage) -> None:
        """Write the built graph of ``src`` (one stage file) to ``dst``."""
        with tempfile.TemporaryDirectory(prefix=".build-", dir=dst.parent) as tmp:
            current = src
            if self.precision == "int8":
                quantized = Path(tmp) / "int8.onnx"
                quantize_int8(current, quantized, self.int8_weights)
                current = quantized
            elif self.precision == "fp16" and self.provider == "cuda":
                # The TensorRT provider keeps the fp32 graph and builds in fp16 itself (trt_fp16).
                half = Path(tmp) / "fp16.onnx"
                convert_fp16(current, half)
                current = half
            optimize_model(current, dst, self.provider)

    def engine(self, path: Path, stage: Stage) -> OrtEngine:
        """An engine over a built file (still in the set's temporary directory), to check it."""
        cache = str(path.parent / Path(self.trt_cache_dir).name) if self.trt_cache_dir else None
        options = OrtOptions(provider=self.provider, optimization="disable", trt_cache_dir=cache,
                             trt_fp16=self.provider == "tensorrt" and self.precision == "fp16")
        return OrtEngine(path, stage.name, stage.inputs, stage.outputs, options)

    def close(self) -> None:
        """Nothing to release."""

