"""The pool's policy as a pure function: sizes, execution order, cap and how often each engine runs in,
which engines stay pinned, whether a one-ahead prefetch fits, and the most bytes the plan can hold.

Plain numbers in, a :class:`Plan` out; the pool (``runtime/pool.py``) only carries it out.

- A cap below ``shared`` + the largest engine is refused (:class:`MemoryCapError`, with the numbers
  and the fix).
- A cap that holds everything pins everything: no reloads after the first pass.
- In between, engines are pinned in order of benefit (how often they run, per byte; with early exit
  layer k runs at least as often as layer k+1, so ties go to the engine used first), as long as the
  rest can still stream: the room left must hold the largest streamed engine in use at once with the
  next one being prefetched. If no plan with prefetch fits, the plan streams without prefetch.
- Eviction among streamed engines: the one whose next use is farthest (Belady).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trtbert.errors import MemoryCapError
from trtbert.sizes import format_size


@dataclass(frozen=True)
class Plan:
    """What the pool keeps resident. ``bound`` is the most bytes (``shared`` included) the plan can
    hold at any instant; it never exceeds ``cap``."""

    cap: int | None
    shared: int
    pinned: tuple[str, ...]
    streamed: tuple[str, ...]
    prefetch: bool
    bound: int

    def fits(self, resident: int, extra: int) -> bool:
        """Whether ``extra`` more bytes fit beside ``resident`` (engine bytes, ``shared`` not included)."""
        return self.cap is None or self.shared + resident + extra <= self.cap


def stream_room(order: Sequence[str], sizes: Mapping[str, int], pinned: set[str], prefetch: bool) -> int:
    """Bytes the streamed engines need at once: the one running plus (with prefetch) the next one."""
    room = 0
    for i, key in enumerate(order):
        need = {key} - pinned
        if prefetch and i + 1 < len(order):
            need |= {order[i + 1]} - pinned
        room = max(room, sum(sizes[k] for k in need))
    return room


def make_plan(
    sizes: Mapping[str, int],
    order: Sequence[str],
    cap: int | None,
    shared: int = 0,
    use_rate: Mapping[str, float] | None = None,
    prefetch: bool = True,
    names: Mapping[str, str] | None = None,
) -> Plan:
    """Plan residency for engines ``sizes`` (bytes each) used in ``order`` (keys, repeats allowed) under
    ``cap`` bytes (None: unlimited), ``shared`` bytes held whatever is loaded. ``use_rate``: the share of
    requests that reach each engine (default 1 for all). ``names`` label engines in errors."""
    names = names or {}
    keys = list(dict.fromkeys(order))
    if set(keys) != set(sizes):
        raise ValueError(f"order uses {sorted(set(keys))} but sizes has {sorted(sizes)}")
    total = sum(sizes.values())
    if cap is None or shared + total <= cap:
        return Plan(cap, shared, tuple(keys), (), prefetch, shared + total)
    largest = max(keys, key=lambda k: sizes[k])
    if shared + sizes[largest] > cap:
        held = f" + {format_size(shared)} the set shares" if shared else ""
        raise MemoryCapError(
            f"memory cap {format_size(cap)} is below {names.get(largest, largest)} "
            f"({format_size(sizes[largest])}{held}); raise --memory-cap or build with --int8"
        )
    rate = {k: 1.0 if use_rate is None else float(use_rate.get(k, 1.0)) for k in keys}
    first = {k: i for i, k in enumerate(keys)}
    by_benefit = sorted(keys, key=lambda k: (-rate[k], first[k]))
    if not by_benefit:  # pragma: no cover - no engines
        return Plan(cap, shared, (), (), prefetch, shared)
    for with_prefetch in ((True, False) if prefetch else (False,)):
        if shared + stream_room(order, sizes, set(), with_prefetch) > cap:
            continue
        pinned: set[str] = set()
        for key in by_benefit:
            trial = pinned | {key}
            if shared + sum(sizes[k] for k in trial) + stream_room(order, sizes, trial, with_prefetch) <= cap:
                pinned = trial
        bound = shared + sum(sizes[k] for k in pinned) + stream_room(order, sizes, pinned, with_prefetch)
        return Plan(cap, shared, tuple(k for k in keys if k in pinned), tuple(k for k in keys if k not in pinned),
                    with_prefetch, bound)
    raise AssertionError("unreachable: the largest engine alone fits")  # pragma: no cover


def next_use(order: Sequence[str], key: str, position: int) -> int:
    """Positions from ``position`` until ``key`` is used again in a cyclic pass (``len(order)`` if never)."""
    n = len(order)
    for step in range(1, n + 1):
        if order[(position + step) % n] == key:
            return step
    return n


def eviction_order(order: Sequence[str], candidates: Sequence[str], position: int) -> list[str]:
    """Streamed engines to evict first: farthest next use first (Belady's rule)."""
    return sorted(candidates, key=lambda k: next_use(order, k, position), reverse=True)
