"""Offline ONNX Runtime builds of one stage graph: optimise for a provider, quantise to int8, convert to fp16.

Each function reads one ONNX file and writes one; ``OrtBuilder`` chains them for an engine set.
Graphs are optimised offline with the provider's level and saved, so the runtime can load built sets
with graph optimisation off (``registry.py`` defaults ``optimization="disable"`` for built sets).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtbert.bundle import Stage
from trtbert.engines.ort import PROVIDERS, OrtEngine, OrtOptions, provider_list, session_options
from trtbert.errors import EngineError, first_line, missing_extra, ort_load_errors

log = logging.getLogger(__name__)

# Offline level per provider. "all" adds layout transforms tied to the build machine's CPU, and the
# TensorRT provider does its own fusions and cannot run ONNX Runtime's fused contrib ops.
OFFLINE_LEVEL = {"cpu": "extended", "cuda": "extended", "tensorrt": "basic"}
INT8_WEIGHTS = ("qint8", "quint8")
# Kept in fp32 by the fp16 conversion: LayerNorm overflows in fp16 (docs/design.md, TensorRT notes).
FP32_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization")


def optimize_model(src: Path, dst: Path, provider: str, level: str | None = None) -> None:
    """Run ONNX Runtime's graph optimiser for ``provider`` on ``src`` and save the result as ``dst``."""
    import onnxruntime as ort

    options = OrtOptions(provider=provider, optimization=level or OFFLINE_LEVEL[provider], threads=1)
    so = session_options(options)
    so.optimized_model_filepath = str(dst)
    try:
        ort.InferenceSession(str(src), sess_options=so, providers=provider_list(options))
    except ort_load_errors() as exc:
        raise EngineError(f"optimising {src.name} for {provider} failed: {first_line(exc)}") from exc
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
    # The quantiser writes "<input>-inferred.onnx" beside its input: give it a private copy, so that
    # nothing temporary lands in the bundle's onnx/ and concurrent builds cannot collide.
    private = dst.parent / f".{dst.stem}-source.onnx"
    shutil.copyfile(src, private)
    try:
        quantize_dynamic(private, dst, op_types_to_quantize=["MatMul", "Gemm"], weight_type=weight_type,
                         per_channel=False, reduce_range=False)
    except (OSError, ValueError) as exc:  # unreadable graph, full disk; anything else is a bug
        raise EngineError(f"int8 quantisation of {src.name} failed: {first_line(exc)}") from exc
    finally:
        private.unlink(missing_ok=True)
        private.with_name(private.stem + "-inferred.onnx").unlink(missing_ok=True)


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute with fp32 inputs/outputs (the runtime feeds float32) and fp32 LayerNorm."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError as exc:
        raise missing_extra(exc.name or "onnx", "int8") from None
    model = onnx.load(str(src))
    model = convert_float_to_float16(model, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP32_OPS])
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

