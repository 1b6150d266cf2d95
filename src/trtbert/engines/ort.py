"""ONNX Runtime engines: one InferenceSession per stage, created on load and released on unload.

Providers: ``cpu`` (always), ``cuda`` and ``tensorrt`` where the installed onnxruntime has them.
Many sessions live in one process, so their thread pools never spin-wait (docs/design.md: 14 spinning
per-session pools ran 3x slower). ONNX Runtime's global thread pool is not used: once it exists,
every session in the process must opt into it, which breaks any other library's sessions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtbert.bundle import TensorSpec
from trtbert.engines.base import Engine
from trtbert.errors import EngineError, first_line, ort_load_errors

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
OPT_LEVELS = ("disable", "basic", "extended", "all")

@dataclass(frozen=True)
class OrtOptions:
    """How sessions are created. ``optimization`` is the graph optimisation done at load time:
    ``disable`` for graphs already optimised offline by ``trtbert build``."""

    provider: str = "cpu"
    threads: int = 0  # 0: one per core
    optimization: str = "extended"
    mem_arena: bool = False
    trt_cache_dir: str | None = None
    trt_fp16: bool = False


def available_providers() -> list[str]:
    """Short names of the providers the installed onnxruntime offers."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in have]


def session_options(options: OrtOptions) -> Any:
    """SessionOptions for one stage session."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if options.optimization not in OPT_LEVELS:
        raise EngineError(f"unknown graph optimisation {options.optimization!r}; choose one of {', '.join(OPT_LEVELS)}")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[options.optimization]
    so.enable_cpu_mem_arena = options.mem_arena
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    return so


def provider_list(options: OrtOptions) -> list[Any]:
    """The providers argument for InferenceSession, refusing ones this onnxruntime lacks."""
    if options.provider not in PROVIDERS:
        raise EngineError(f"unknown provider {options.provider!r}; choose one of {', '.join(PROVIDERS)}")
    if options.provider not in available_providers():
        raise EngineError(
            f"this onnxruntime has no {PROVIDERS[options.provider]} (it has: {', '.join(available_providers())}); "
            "install onnxruntime-gpu for cuda/tensorrt"
        )
    providers: list[Any] = []
    if options.provider == "tensorrt":
        trt: dict[str, Any] = {"trt_fp16_enable": options.trt_fp16}
        if options.trt_cache_dir:
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=options.trt_cache_dir,
                       trt_timing_cache_enable=True)
        providers.append((PROVIDERS["tensorrt"], trt))
    if options.provider in ("cuda", "tensorrt"):
        providers.append(PROVIDERS["cuda"])
    providers.append(PROVIDERS["cpu"])
    return providers


class OrtEngine(Engine):
    """A stage run by an ONNX Runtime InferenceSession."""

    backend = "ort"

    def __init__(
        self,
        path: Path,
        name: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        options: OrtOptions | None = None,
    ) -> None:
        super().__init__(path, name, inputs, outputs)
        self.options = options or OrtOptions()
        self._session: Any = None
        self._output_names = [t.name for t in outputs]

    def _load(self) -> None:
        import onnxruntime as ort

        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=session_options(self.options), providers=provider_list(self.options)
            )
        except ort_load_errors() as exc:  # a damaged or foreign file: rebuild; anything else is a bug
            raise EngineError(f"cannot load {self.path}: {first_line(exc)}; rebuild the engine set "
                              "(trtbert build ... --overwrite) or re-export the bundle") from exc
        got = {i.name for i in self._session.get_inputs()}
        want = {t.name for t in self.inputs}
        if got != want:
            self._session = None
            raise EngineError(f"{self.path} has inputs {sorted(got)}, the manifest says {sorted(want)}; rebuild it")

    def _unload(self) -> None:
        self._session = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values))
