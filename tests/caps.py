"""Memory caps for tests, from the costs a bundle recorded (what the pool counts): each engine's bytes
while resident and while loading, and what its set shares."""

from __future__ import annotations

from pathlib import Path


def _set(bundle: Path, engines: str):
    from trtbert.bundle import load_bundle

    b = load_bundle(bundle, verify="none")
    return b, b.engine_set(engines)


def costs(bundle: Path, engines: str = "onnx") -> tuple[dict[str, int], int]:
    """Recorded resident cost of each stage's engine (by stage name) and what the set shares."""
    b, es = _set(bundle, engines)
    per_stage = {}
    for s in b.manifest.stages:
        c = es.costs[es.stage_files[s.name]]
        per_stage[s.name] = c["host"] + c.get("device", 0)
    return per_stage, sum(es.shared.values())


def loading_costs(bundle: Path, engines: str = "onnx") -> dict[str, int]:
    """Recorded cost of each stage's engine while it loads (its peak)."""
    b, es = _set(bundle, engines)
    out = {}
    for s in b.manifest.stages:
        c = es.costs[es.stage_files[s.name]]
        out[s.name] = max(c["host"], c.get("peak", 0)) + c.get("device", 0)
    return out


def streaming_cap(bundle: Path, engines: str = "onnx") -> int:
    """A cap that holds the set's shared part and its largest engine while loading, but not every engine:
    it streams."""
    per_stage, shared = costs(bundle, engines)
    cap = shared + max(loading_costs(bundle, engines).values()) + 1
    assert cap < shared + sum(per_stage.values())
    return cap
