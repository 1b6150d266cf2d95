"""Each engine's resident cost, measured once in a clean process and recorded in the manifest.

The pool plans and admits engines with these figures, before any of them is loaded; memory measured
at run time (RSS deltas) is noise: 3.2-10.5 MiB for the same 3 MiB layer. The measurement:

- runs in a fresh ``python -m trtbert.engines.costs`` process (numpy + onnxruntime only, the
  allocator tuned as ``trtbert run`` tunes it under a cap), with the run-time defaults (one intra-op
  thread per core);
- warms the backend up (its one-off cost is the process baseline, reported apart);
- loads every engine once, so what the set shares (template sessions) is created: ``shared`` is the
  growth that stays after every engine is unloaded again;
- then, ``repeats`` times, loads each engine alone and runs it once on a (1, 16) input: ``host`` is
  the RSS it still holds after that (what it costs while resident), ``peak`` the largest RSS growth
  during the load and first inference (``VmHWM`` reset before each: transient copies made while
  loading count), ``us`` its warm compute time in microseconds (median of 5 runs, the budget rule's
  first estimate); ``device`` comes from the engine (TensorRT: weights, I/O and activation memory).
  Each figure is the largest of the repeats.

What the figures cover, and what they do not (activations of large batches, tokenisation), is said
in docs/memory.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from trtbert import bundle as B
from trtbert.errors import EngineError

log = logging.getLogger(__name__)

REPEATS = 3
SAMPLE_SEQ = 16


def _spec(engine_set: B.EngineSet, stages: tuple[B.Stage, ...], root: Path, rel_dir: str | None) -> dict[str, Any]:
    """What the measuring process needs: for each engine file its absolute path and one stage using it."""
    files: dict[str, dict[str, Any]] = {}
    for stage in stages:
        key = engine_set.stage_files[stage.name]
        path = root / (key[len(rel_dir) + 1:] if rel_dir and key.startswith(rel_dir + "/") else key)
        files.setdefault(key, {"path": str(path), "stage": dataclasses.asdict(stage)})
    return {"backend": engine_set.backend, "options": engine_set.options, "built": engine_set.name != B.SOURCE_SET,
            "files": files, "repeats": REPEATS}


def measure_costs(bundle: B.Bundle, engine_set: B.EngineSet, built: Path | None = None) -> B.EngineSet:
    """``engine_set`` with ``costs`` and ``shared`` measured in a clean process. ``built`` is where the
    set's files are while it is being built (else they are read from the bundle)."""
    spec = _spec(engine_set, bundle.manifest.stages, built or bundle.root, engine_set.directory if built else None)
    result = run_measurement(spec)
    return dataclasses.replace(engine_set, costs=result["costs"], shared=result["shared"])


def run_measurement(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the measuring process on ``spec``; its JSON answer."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("TRTBERT_FAULT", None)
    proc = subprocess.run([sys.executable, "-m", "trtbert.engines.costs"], input=json.dumps(spec), text=True,
                          capture_output=True, env=env, timeout=3600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EngineError(f"measuring the engines' memory failed in a clean process: {last}")
    return json.loads(proc.stdout)


def _feeds(stage: B.Stage, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for t in stage.inputs:
        shape = [1 if i == 0 else SAMPLE_SEQ if i == 1 else int(d) for i, d in enumerate(t.shape)]
        if np.dtype(t.dtype).kind in "iu":
            feeds[t.name] = np.ones(shape, dtype=t.dtype) if t.name == B.ATTENTION_MASK else np.zeros(shape, t.dtype)
        else:
            feeds[t.name] = rng.standard_normal(shape).astype(t.dtype)
    return feeds


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    """The measuring process's work (see the module docstring)."""
    from trtbert.engines.base import Shared
    from trtbert.engines.registry import make_engine
    from trtbert.memory import current_rss, peak_rss, release_freed_memory, reset_peak_rss, tune_allocator

    tune_allocator()
    rng = np.random.default_rng(0)
    shared = Shared()
    engines = {}
    for key, item in spec["files"].items():
        stage = _stage(item["stage"])
        engine = make_engine(spec["backend"], Path(item["path"]), stage, spec["options"], shared, built=spec["built"])
        engines[key] = (engine, _feeds(stage, rng))

    def cycle(engine: Any, feeds: dict[str, np.ndarray]) -> dict[str, int]:
        release_freed_memory()
        before = current_rss()
        exact = reset_peak_rss()
        engine.load()
        engine.infer(feeds)
        after = current_rss()
        peak = (peak_rss() if exact else after) - before
        times = []
        for _ in range(5):
            start = time.perf_counter()
            engine.infer(feeds)
            times.append(time.perf_counter() - start)
        device = int(getattr(engine, "device_nbytes", 0) or 0)
        engine.unload()
        release_freed_memory()
        resident = max(0, after - before)
        return {"host": resident, "peak": max(resident, peak), "device": device,
                "us": int(sorted(times)[2] * 1e6)}

    smallest = min(engines, key=lambda k: os.path.getsize(spec["files"][k]["path"]))
    for _ in range(2):  # warm-up: the backend's one-off cost is the baseline, not the first engine's
        cycle(*engines[smallest])
    shared.close()
    release_freed_memory()
    baseline = current_rss()
    for engine, feeds in engines.values():  # first pass: what the set shares is created once
        cycle(engine, feeds)
    release_freed_memory()
    shared_host = max(0, current_rss() - baseline)
    costs: dict[str, dict[str, int]] = {key: {"host": 0, "peak": 0, "device": 0, "us": 0} for key in engines}
    for _ in range(int(spec.get("repeats", REPEATS))):
        for key, (engine, feeds) in engines.items():
            for name, value in cycle(engine, feeds).items():
                costs[key][name] = max(costs[key][name], value)
    shared.close()
    return {"costs": costs, "shared": {"host": shared_host, "device": 0}, "baseline": baseline}


def _stage(data: dict[str, Any]) -> B.Stage:
    tensors = lambda items: tuple(B.TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in items)  # noqa: E731
    return B.Stage(**{**data, "inputs": tensors(data["inputs"]), "outputs": tensors(data["outputs"])})


def main() -> None:
    """``python -m trtbert.engines.costs``: read a spec (JSON) on stdin, print the costs (JSON)."""
    spec = json.loads(sys.stdin.read())
    print(json.dumps(_measure(spec)))


if __name__ == "__main__":
    main()
