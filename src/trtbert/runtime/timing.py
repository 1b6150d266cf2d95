"""Per-stage time estimates for the budget rule, and the budget's bank of unused time.

Estimates are warm compute times (a stage's run without its load or the wait for it), started from
the times recorded at build time and kept current with an exponential moving average of every warm
run; a stage that is not resident adds its measured load time. Within a request the estimate of the
stages still to run is scaled by how fast the request's earlier stages ran against their estimates
(longer inputs, a busy machine), so a layer the budget cut off keeps a sound estimate.

``budget:MS`` semantics: each request aims to finish within MS, and the mean latency over requests
stays within MS. A request that finishes early banks the time it did not use, and a later one may
spend it to reach one more exit (the bank holds at most one budget, and is spent by overruns too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

EMA = 0.2  # weight of the newest warm measurement
FACTOR_RANGE = (0.25, 8.0)  # how far a request's speed may move its remaining estimates


class StageClock:
    """Warm compute and load time estimates (ms) per stage, and the budget bank."""

    def __init__(self, recorded_ms: Mapping[str, float] | None = None) -> None:
        self.compute_ms: dict[str, float] = {k: float(v) for k, v in (recorded_ms or {}).items() if v > 0}
        self.load_ms: dict[str, float] = {}
        self.bank_ms = 0.0

    def observe(self, stage: str, compute_ms: float, load_ms: float | None = None) -> None:
        """Record one run of ``stage``: its compute time, and its load time if it was loaded for it."""
        old = self.compute_ms.get(stage)
        self.compute_ms[stage] = compute_ms if old is None else (1 - EMA) * old + EMA * compute_ms
        if load_ms is not None:
            prev = self.load_ms.get(stage)
            self.load_ms[stage] = load_ms if prev is None else (1 - EMA) * prev + EMA * load_ms

    def estimate(self, stages: Sequence[str], resident: Mapping[str, bool], done: Mapping[str, float]) -> float:
        """Predicted ms to run ``stages`` next. ``resident[stage]``: its engine is loaded (no load cost);
        ``done``: this request's measured compute ms of stages already run (scales the estimate)."""
        known = [s for s in done if s in self.compute_ms]
        predicted = sum(self.compute_ms[s] for s in known)
        factor = sum(done[s] for s in known) / predicted if predicted > 0 else 1.0
        factor = min(max(factor, FACTOR_RANGE[0]), FACTOR_RANGE[1])
        fallback = (sum(done.values()) / len(done)) if done else 0.0
        total = 0.0
        for s in stages:
            total += self.compute_ms[s] * factor if s in self.compute_ms else fallback
            if not resident.get(s, True):
                total += self.load_ms.get(s, 0.0)
        return total

    def settle(self, budget_ms: float, latency_ms: float) -> None:
        """A request with ``budget_ms`` took ``latency_ms``: bank what it saved (or pay what it overran)."""
        self.bank_ms = min(max(self.bank_ms + budget_ms - latency_ms, -budget_ms), budget_ms)
