"""Per-stage time estimates for the budget rule.

``budget:MS`` runs, for each request, the deepest exit whose expected latency fits in MS. The expected
latency is built from warm, measured costs: each stage's compute time (the running median of its last
runs, for inputs of about the same length: lengths are bucketed by powers of two), the tokenisation
time, and the stage's load time when its engine is not resident (under a cap the pool streams it). The
first estimates come from the compute times recorded when the set was built, so a layer the budget has
never let run still has a sound estimate, and every warm run keeps them current. Medians, not the last
run: one slow moment of the machine does not cut the next requests short.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from statistics import median

WINDOW = 31  # runs per (stage, length bucket) the median is taken over
RECORDED_TOKENS = 16  # the recorded compute times are for one input of 16 tokens


def bucket(tokens: int) -> int:
    """The length bucket of a batch of ``tokens`` tokens (rows x sequence): the next power of two."""
    return 1 << max(0, int(tokens) - 1).bit_length()


class StageClock:
    """Warm compute, tokenisation and load time estimates (ms)."""

    def __init__(self, recorded_ms: Mapping[str, float] | None = None) -> None:
        self.recorded = {k: float(v) for k, v in (recorded_ms or {}).items() if v > 0}
        self._compute: dict[tuple[str, int], deque[float]] = {}
        self._load: dict[str, deque[float]] = {}

    def observe(self, stage: str, tokens: int, compute_ms: float, load_ms: float | None = None) -> None:
        """Record one warm run of ``stage`` on ``tokens`` tokens, and its load time if it was loaded for it."""
        self._compute.setdefault((stage, bucket(tokens)), deque(maxlen=WINDOW)).append(compute_ms)
        if load_ms is not None:
            self._load.setdefault(stage, deque(maxlen=WINDOW)).append(load_ms)

    def compute_ms(self, stage: str, tokens: int) -> float:
        """Expected compute time of ``stage`` on ``tokens`` tokens."""
        b = bucket(tokens)
        runs = self._compute.get((stage, b))
        if runs:
            return median(runs)
        nearest = [(abs(k - b), k, r) for (s, k), r in self._compute.items() if s == stage and r]
        if nearest:  # the closest length measured, scaled linearly (an overestimate for shorter inputs)
            _, k, r = min(nearest)
            return median(r) * max(1.0, b / k)
        return self.recorded.get(stage, 0.0) * max(1.0, b / RECORDED_TOKENS)

    def load_ms(self, stage: str) -> float:
        """Expected load time of ``stage`` (0 until it has been loaded once)."""
        runs = self._load.get(stage)
        return median(runs) if runs else 0.0

    def expected(self, stages: Sequence[str], tokens: int, resident: Mapping[str, bool]) -> float:
        """Expected ms to run ``stages`` on ``tokens`` tokens, loading those not ``resident``."""
        return sum(self.compute_ms(s, tokens) + (0.0 if resident.get(s, True) else self.load_ms(s)) for s in stages)
