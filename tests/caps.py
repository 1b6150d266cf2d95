"""Memory caps for tests, from the resident costs a bundle recorded (the pool counts those)."""

from __future__ import annotations

from pathlib import Path


def costs(bundle: Path, engines: str = "onnx") -> tuple[dict[str, int], int]:
    """Recorded resident cost of each stage's engine (by stage name) and what the set shares."""
    from trtbert.bundle import load_bundle

    b = load_bundle(bundle, verify="none")
    es = b.engine_set(engines)
    per_stage = {s.name: sum(es.costs[es.stage_files[s.name]].values()) for s in b.manifest.stages}
    return per_stage, sum(es.shared.values())


def streaming_cap(bundle: Path, engines: str = "onnx") -> int:
    """A cap that holds the set's shared part and its largest engine, but not every engine: it streams."""
    per_stage, shared = costs(bundle, engines)
    cap = shared + max(per_stage.values()) + 1
    assert cap < shared + sum(per_stage.values())
    return cap
