"""Backend registry: turn an engine set of a bundle into one :class:`Engine` per stage file."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trtbert.bundle import SOURCE_SET, Bundle, EngineSet, Stage
from trtbert.engines.base import Engine
from trtbert.errors import EngineError

EngineFactory = Callable[[Bundle, EngineSet, Stage, dict[str, Any]], Engine]


def _ort_options(bundle: Bundle, engines: EngineSet, overrides: dict[str, Any]) -> Any:
    """OrtOptions from what the set recorded, with the caller's overrides (threads ...) on top."""
    from trtbert.engines.ort import OrtOptions

    fields = set(OrtOptions.__dataclass_fields__)
    recorded = {k: v for k, v in engines.options.items() if k in fields}
    if engines.name != SOURCE_SET:
        recorded.setdefault("optimization", "disable")  # built sets are optimised offline
    if recorded.get("trt_cache_dir"):  # recorded relative to the bundle, so the bundle can move
        recorded["trt_cache_dir"] = str(bundle.path(recorded["trt_cache_dir"]))
    return OrtOptions(**{**recorded, **{k: v for k, v in overrides.items() if k in fields}})


def _ort_factory(bundle: Bundle, engines: EngineSet, stage: Stage, overrides: dict[str, Any]) -> Engine:
    from trtbert.engines.ort import OrtEngine

    path = bundle.path(engines.stage_files[stage.name])
    return OrtEngine(path, stage.name, stage.inputs, stage.outputs, _ort_options(bundle, engines, overrides))


def _streamed_factory(bundle: Bundle, engines: EngineSet, stage: Stage, overrides: dict[str, Any]) -> Engine:
    from trtbert.engines.streamed import StreamedEngine

    path = bundle.path(engines.stage_files[stage.name])
    return StreamedEngine(path, stage.name, stage.inputs, stage.outputs, _ort_options(bundle, engines, overrides))


def _tensorrt_factory(bundle: Bundle, engines: EngineSet, stage: Stage, overrides: dict[str, Any]) -> Engine:
    from trtbert.engines.tensorrt import TrtEngine

    return TrtEngine(bundle.path(engines.stage_files[stage.name]), stage.name, stage.inputs, stage.outputs)


BACKENDS: dict[str, EngineFactory] = {
    "ort": _ort_factory,
    "ort-stream": _streamed_factory,
    "tensorrt": _tensorrt_factory,
}


def create_engine(bundle: Bundle, engines: EngineSet, stage: Stage, **overrides: Any) -> Engine:
    """The engine of ``stage`` in engine set ``engines`` (not loaded yet)."""
    try:
        factory = BACKENDS[engines.backend]
    except KeyError:
        raise EngineError(
            f"engine set {engines.name!r} uses backend {engines.backend!r}, which this trtbert does not know "
            f"(known: {', '.join(BACKENDS)})"
        ) from None
    if stage.name not in engines.stage_files:
        raise EngineError(f"engine set {engines.name!r} has no engine for stage {stage.name}; rebuild it")
    return factory(bundle, engines, stage, overrides)
