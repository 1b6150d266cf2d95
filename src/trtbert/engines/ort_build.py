"""Offline ONNX Runtime builds of one stage graph: fuse, quantise (int8, int4) or convert to fp16, then
optimise for a provider.

Each step reads one ONNX file and writes one; ``OrtBuilder`` chains them for an engine set:

- ``fp32``: transformer fusions (``engines/fuse.py``: Attention, SkipLayerNormalization, BiasGelu) on the
  CPU, then ONNX Runtime's offline optimisation;
- ``int8``: fused, then int8 weights for ``MatMul`` and ``Attention`` (``engines/quantize.py``); ``static``
  (the default) fixes every activation scale from calibration texts, so a row's answer never depends on
  the rest of its batch; ``dynamic`` computes them per batch at run time (batch-dependent: the set records
  a warning);
- ``int4``: fused with separate Q/K/V projections, then weight-only ``MatMulNBits`` (block-wise scales,
  int8 compute with per-row activation scales);
- ``fp16`` (CUDA): fp16 weights and compute with fp32 I/O and LayerNorm.

Graphs are optimised offline and saved, so the runtime loads built sets with graph optimisation off
(``registry.py`` defaults ``optimization="disable"`` for built sets).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtbert.bundle import Stage
from trtbert.engines.calibrate import CalibrationData
from trtbert.engines.ort import PROVIDERS, OrtEngine, OrtOptions, provider_list, session_options
from trtbert.engines.quantize import (
    INT8_MODES,
    INT8_WEIGHTS,
    dynamic_inputs,
    make_static,
    quantize_dynamic_int8,
    quantize_nbits,
    resolve_weights,
)
from trtbert.errors import EngineError, first_line, missing_extra, ort_load_errors

log = logging.getLogger(__name__)

# Offline level per provider. "all" adds layout transforms tied to the build machine's CPU, and the
# TensorRT provider does its own fusions and cannot run ONNX Runtime's fused contrib ops.
OFFLINE_LEVEL = {"cpu": "extended", "cuda": "extended", "tensorrt": "basic"}
# Kept in fp32 by the fp16 conversion: LayerNorm overflows in fp16 (docs/design.md, TensorRT notes).
FP32_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization")
BATCH_DEPENDENT = ("dynamic int8 quantises activations with one scale per batch: a row's answer depends on "
                   "the other rows of its batch (run it with batch size 1, or build static int8)")
__all__ = ["INT8_MODES", "INT8_WEIGHTS", "OFFLINE_LEVEL", "OrtBuilder", "convert_fp16", "optimize_model",
           "quantize_int8"]


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


def quantize_int8(src: Path, dst: Path, weights: str = "qint8") -> None:
    """Dynamic int8 quantisation of ``MatMul``/``Attention`` weights, one scale per output channel
    (activations quantised at run time; :func:`make_static` fixes their scales)."""
    quantize_dynamic_int8(src, dst, weights, per_channel=True)


def _quantize(builder: OrtBuilder, src: Path, dst: Path) -> None:
    weights = resolve_weights(builder.int8_weights)
    if builder.per_channel:
        quantize_int8(src, dst, weights)
    else:
        quantize_dynamic_int8(src, dst, weights, per_channel=False)


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


def _step(directory: Path, step: str, src: Path) -> Path:
    """Where one build step writes its graph of ``src``: ``directory/step/<src's name>`` (so errors name
    the stage file)."""
    (Path(directory) / step).mkdir(exist_ok=True)
    return Path(directory) / step / src.name


class _Work:
    """What one build keeps between stage files: fused and quantised intermediates (static int8 prepares
    every file before calibrating), the calibrated ranges, and the fused-op counts."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.prepared: dict[str, tuple[Path, Path]] = {}  # source file -> (fused fp32, dynamic int8)
        self.ranges: dict[str, dict[str, tuple[float, float]]] | None = None
        self.fused: dict[str, int] = {}
        self.scales = 0

    def path(self, parent: Path, step: str, src: Path) -> Path:
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix=".prepare-", dir=parent))
        return _step(self.dir, f"{len(self.prepared):03d}-{step}", src)

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self.prepared = {}


@dataclass(frozen=True)
class OrtBuilder:
    """Builds one stage file for ONNX Runtime: ``fp32``, ``int8`` or ``int4`` (CPU), ``fp16`` (GPU).

    ``fuse``: transformer fusions (CPU only; ``num_heads``/``hidden_size`` from the manifest).
    ``int8_mode``: ``static`` (calibrated on ``calibration``, read from ``bundle``) or ``dynamic``.
    ``nbits_block``/``nbits_accuracy``: int4 block size and ``MatMulNBits`` accuracy level.
    """

    provider: str
    precision: str
    int8_weights: str = "auto"
    trt_cache_dir: str | None = None  # relative to the bundle root, for the TensorRT provider
    int8_mode: str = "static"
    fuse: bool = True
    num_heads: int = 0
    hidden_size: int = 0
    bundle: Path | None = None
    calibration: CalibrationData | None = None
    nbits_block: int = 32
    nbits_accuracy: int = 4
    per_channel: bool = True
    nbits_attention: str = "none"
    work: _Work = field(default_factory=_Work, compare=False, repr=False)

    backend = "ort"
    suffix = ".onnx"

    @property
    def fusing(self) -> bool:
        """Whether stage graphs are fused (the CPU provider with known head count)."""
        return self.fuse and self.provider == "cpu" and self.num_heads > 0 and self.hidden_size > 0

    def check(self) -> None:
        """Refuse combinations the provider cannot build, before any file is written."""
        if self.provider not in PROVIDERS:
            raise EngineError(f"unknown provider {self.provider!r}; choose one of {', '.join(PROVIDERS)}")
        if self.precision == "fp16" and self.provider == "cpu":
            raise EngineError("fp16 needs a GPU provider: use --provider cuda or tensorrt, or --int8 for the CPU")
        if self.precision in ("int8", "int4") and self.provider != "cpu":
            raise EngineError(f"{self.precision} runs on the CPU provider only, not {self.provider}; "
                              f"use --provider cpu --{self.precision}, or --fp16 on the GPU")
        if self.int8_mode not in INT8_MODES:
            raise EngineError(f"unknown int8 mode {self.int8_mode!r}; choose one of {', '.join(INT8_MODES)}")
        if self.static and (self.bundle is None or self.calibration is None):
            raise EngineError("static int8 needs calibration texts (internal: no calibration data given)")
        resolve_weights(self.int8_weights)
        provider_list(OrtOptions(provider=self.provider))  # raises naming onnxruntime-gpu if missing

    @property
    def static(self) -> bool:
        """Static (calibrated) int8."""
        return self.precision == "int8" and self.int8_mode == "static"

    def options(self) -> dict[str, Any]:
        """What the runtime needs to recreate the sessions (OrtOptions field names) and how it was built."""
        opts: dict[str, Any] = {"provider": self.provider, "optimization": "disable",
                                "offline_optimization": OFFLINE_LEVEL[self.provider]}
        if self.fusing:
            opts["fused"] = dict(self.work.fused)
        if self.precision == "int8":
            opts["int8_weights"] = resolve_weights(self.int8_weights)
            opts["int8_mode"] = self.int8_mode
            opts["per_channel"] = self.per_channel
            if self.static and self.calibration is not None:
                opts["calibration"] = self.calibration.describe()
            else:
                opts["batch_dependent"] = True
                opts["warning"] = BATCH_DEPENDENT
        if self.precision == "int4":
            opts.update(weight_bits=4, block_size=self.nbits_block, accuracy_level=self.nbits_accuracy)
        if self.provider == "tensorrt":
            opts["trt_fp16"] = self.precision == "fp16"
            if self.trt_cache_dir:
                opts["trt_cache_dir"] = self.trt_cache_dir
        return opts

    def warnings(self) -> list[str]:
        """What the user must know about the set (the batch dependence of dynamic int8)."""
        return [BATCH_DEPENDENT] if self.precision == "int8" and not self.static else []

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

    # --- building ---------------------------------------------------------------------------------------

    def _fused(self, src: Path, dst: Path, attention: str = "packed") -> Path:
        """``src`` fused into ``dst`` (or ``src`` itself when not fusing)."""
        if not self.fusing:
            return src
        from trtbert.engines.fuse import fuse_stage

        counts = fuse_stage(src, dst, self.num_heads, self.hidden_size, attention=attention)
        for op, n in counts.items():
            self.work.fused[op] = self.work.fused.get(op, 0) + n
        return dst

    def _prepare(self, src: Path, key: str, parent: Path) -> tuple[Path, Path]:
        """Fused fp32 and dynamic int8 graphs of one source file (kept for the build after calibration)."""
        if key not in self.work.prepared:
            fused = self._fused(src, self.work.path(parent, "fused", src))
            dynamic = self.work.path(parent, "int8", src)
            _quantize(self, fused, dynamic)
            self.work.prepared[key] = (fused, dynamic)
        return self.work.prepared[key]

    def _calibrate(self, parent: Path) -> dict[str, dict[str, tuple[float, float]]]:
        """Ranges of every stage file's quantised activations (prepares every file on first use)."""
        if self.work.ranges is None:
            from trtbert.bundle import load_bundle
            from trtbert.engines.calibrate import activation_ranges

            assert self.bundle is not None and self.calibration is not None
            bundle = load_bundle(self.bundle, verify="none")

            def prepare(src: Path) -> tuple[Path, list[str]]:
                fused, dynamic = self._prepare(src, str(src), parent)
                return fused, dynamic_inputs(dynamic)

            by_path = activation_ranges(bundle, self.calibration, prepare)
            self.work.ranges = {str(bundle.path(f)): r for f, r in by_path.items()}
        return self.work.ranges

    def build(self, src: Path, dst: Path, stage: Stage) -> None:
        """Write the built graph of ``src`` (one stage file) to ``dst``."""
        with tempfile.TemporaryDirectory(prefix=".build-", dir=dst.parent) as tmp:
            current = src
            if self.static:
                ranges = self._calibrate(dst.parent)
                _, dynamic = self._prepare(src, str(src), dst.parent)
                current = _step(tmp, "static", src)
                self.work.scales += make_static(dynamic, ranges[str(src)], current)
            elif self.precision == "int8":
                fused = self._fused(src, _step(tmp, "fused", src))
                current = _step(tmp, "int8", src)
                _quantize(self, fused, current)
            elif self.precision == "int4":
                fused = self._fused(src, _step(tmp, "fused", src), attention=self.nbits_attention)
                current = _step(tmp, "int4", src)
                quantize_nbits(fused, current, 4, self.nbits_block, self.nbits_accuracy)
            elif self.precision == "fp16" and self.provider == "cuda":
                # The TensorRT provider keeps the fp32 graph and builds in fp16 itself (trt_fp16).
                current = _step(tmp, "fp16", src)
                convert_fp16(src, current)
            else:
                current = self._fused(src, _step(tmp, "fused", src))
            optimize_model(current, dst, self.provider)

    def engine(self, path: Path, stage: Stage) -> OrtEngine:
        """An engine over a built file (still in the set's temporary directory), to check it."""
        cache = str(path.parent / Path(self.trt_cache_dir).name) if self.trt_cache_dir else None
        options = OrtOptions(provider=self.provider, optimization="disable", trt_cache_dir=cache,
                             trt_fp16=self.provider == "tensorrt" and self.precision == "fp16")
        return OrtEngine(path, stage.name, stage.inputs, stage.outputs, options)

    def close(self) -> None:
        """Delete the intermediates of the build."""
        self.work.close()
