"""Backend registry: turn an engine set of a bundle into one :class:`Engine` per stage file.

``make_engine`` builds an engine from explicit paths (what build checks and cost measurement use on
files not yet in a bundle); ``create_engine`` resolves a bundle's set, attaches the recorded cost and
the verified file stamps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from trtbert.bundle import SOURCE_SET, Bundle, EngineSet, Stage
from trtbert.engines.base import Cost, Engine, Shared
from trtbert.errors import EngineError

EngineFactory = Callable[[Path, Stage, dict[str, Any], Shared], Engine]


def ort_options(recorded: dict[str, Any], built: bool = True, **overrides: Any) -> Any:
    """OrtOptions from what a set recorded, with the caller's overrides (threads ...) on top."""
    from trtbert.engines.ort import OrtOptions

    fields = set(OrtOptions.__dataclass_fields__)
    options = {k: v for k, v in recorded.items() if k in fields}
    if built:
        options.setdefault("optimization", "disable")  # built sets are optimised offline
    return OrtOptions(**{**options, **{k: v for k, v in overrides.items() if k in fields}})


def _ort(path: Path, stage: Stage, options: dict[str, Any], shared: Shared) -> Engine:
    from trtbert.engines.ort import OrtEngine

    return OrtEngine(path, stage.name, stage.inputs, stage.outputs, options["ort"])


def _streamed(path: Path, stage: Stage, options: dict[str, Any], shared: Shared) -> Engine:
    from trtbert.engines.streamed import StreamedEngine

    return StreamedEngine(path, stage.name, stage.inputs, stage.outputs, options["ort"], shared=shared)


def _tensorrt(path: Path, stage: Stage, options: dict[str, Any], shared: Shared) -> Engine:
    from trtbert.engines.tensorrt import TrtEngine

    return TrtEngine(path, stage.name, stage.inputs, stage.outputs)


BACKENDS: dict[str, EngineFactory] = {"ort": _ort, "ort-stream": _streamed, "tensorrt": _tensorrt}


def make_engine(backend: str, path: Path, stage: Stage, recorded: dict[str, Any], shared: Shared | None = None,
                built: bool = True, **overrides: Any) -> Engine:
    """The engine of ``stage`` for ``backend`` over the file ``path`` (not loaded)."""
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise EngineError(f"backend {backend!r} is not known to this trtbert (known: {', '.join(BACKENDS)}); "
                          "upgrade trtbert or rebuild the set") from None
    options = {"ort": ort_options(recorded, built, **overrides) if backend.startswith("ort") else None}
    return factory(Path(path), stage, options, shared or Shared())


def recorded_cost(engine_set: EngineSet, key: str, file_size: int) -> Cost:
    """The cost a set recorded for one engine file, or an estimate (twice the file) when none was."""
    cost = engine_set.costs.get(key)
    if cost is None:
        return Cost(host=2 * file_size, device=0, peak=2 * file_size, measured=False)
    return Cost(host=int(cost.get("host", 0)), device=int(cost.get("device", 0)), peak=int(cost.get("peak", 0)))


def create_engine(bundle: Bundle, engines: EngineSet, stage: Stage, shared: Shared | None = None,
                  **overrides: Any) -> Engine:
    """The engine of ``stage`` in engine set ``engines`` (not loaded), with its recorded cost and the
    stamps of the files the bundle verified."""
    if stage.name not in engines.stage_files:
        raise EngineError(f"engine set {engines.name!r} has no engine for stage {stage.name}; rebuild it")
    recorded = dict(engines.options)
    if recorded.get("trt_cache_dir"):  # recorded relative to the bundle, so the bundle can move
        recorded["trt_cache_dir"] = str(bundle.path(recorded["trt_cache_dir"]))
    key = engines.stage_files[stage.name]
    engine = make_engine(engines.backend, bundle.path(key), stage, recorded, shared,
                         built=engines.name != SOURCE_SET, **overrides)
    entry = bundle.manifest.files.get(key)
    engine.cost = recorded_cost(engines, key, entry.size if entry is not None else engine.file_size)
    engine.stamps = {bundle.path(rel): stamp for rel, stamp in bundle.stamps.items()}
    return engine
