"""The pool's policy as a pure function: sizes, execution order, cap and how often each engine runs in,
which engines stay pinned, whether a one-ahead prefetch fits, and the most bytes the plan can hold.

Plain numbers in, a :class:`Plan` out; the pool (``runtime/pool.py``) only carries it out. Each engine
has two sizes: what it holds while resident, and (``loading``, at least as much) what it takes while it
loads (a session reads its graph and packs its weights before dropping the copies).

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


def stream_room(order: Sequence[str], sizes: Mapping[str, int], pinned: set[str], prefetch: bool,
                loading: Mapping[str, int] | None = None) -> int:
    """Bytes the streamed engines need at once: the one running (resident) plus, with prefetch, the next
    one while it loads; without prefetch, the one loading alone."""
    loading = loading or sizes
    room = 0
    for i, key in enumerate(order):
        if key not in pinned:
            room = max(room, loading[key])
        if prefetch and i + 1 < len(order):
            nxt = order[i + 1]
            need = (sizes[key] if key not in pinned else 0) + (loading[nxt] if nxt not in pinned and nxt != key else 0)
            room = max(room, need)
    return room


def pinned_load_room(sizes: Mapping[str, int], loading: Mapping[str, int], pinned: set[str]) -> int:
    """Extra bytes a pinned engine takes while it loads (its first load) beyond what it holds after."""
    return max((loading[k] - sizes[k] for k in pinned), default=0)


def make_plan(
    sizes: Mapping[str, int],
    order: Sequence[str],
    cap: int | None,
    shared: int = 0,
    use_rate: Mapping[str, float] | None = None,
    prefetch: bool = True,
    names: Mapping[str, str] | None = None,
    loading: Mapping[str, int] | None = None,
) -> Plan:
    """Plan residency for engines ``sizes`` (resident bytes each; ``loading``: bytes while loading, default
    the same) used in ``order`` (keys, repeats allowed) under ``cap`` bytes (None: unlimited), ``shared``
    bytes held whatever is loaded. ``use_rate``: the share of requests that reach each engine (default 1
    for all). ``names`` label engines in errors."""
    names = names or {}
    keys = list(dict.fromkeys(order))
    if set(keys) != set(sizes):
        raise ValueError(f"order uses {sorted(set(keys))} but sizes has {sorted(sizes)}")
    loading = {k: max(sizes[k], (loading or sizes).get(k, sizes[k])) for k in keys}
    total = sum(sizes.values())
    everything = shared + total + pinned_load_room(sizes, loading, set(keys))
    if cap is None or everything <= cap:
        return Plan(cap, shared, tuple(keys), (), prefetch, everything)
    largest = max(keys, key=lambda k: loading[k])
    if shared + loading[largest] > cap:
        held = f" + {format_size(shared)} the set shares" if shared else ""
        peak = f", {format_size(loading[largest])} while loading" if loading[largest] > sizes[largest] else ""
        raise MemoryCapError(
            f"memory cap {format_size(cap)} is below {names.get(largest, largest)} "
            f"({format_size(sizes[largest])}{peak}{held}); raise --memory-cap or build with --int8"
        )
    rate = {k: 1.0 if use_rate is None else float(use_rate.get(k, 1.0)) for k in keys}
    first = {k: i for i, k in enumerate(keys)}
    by_benefit = sorted(keys, key=lambda k: (-rate[k], first[k]))
    if not by_benefit:  # pragma: no cover - no engines
        return Plan(cap, shared, (), (), prefetch, shared)
    def need(pinned: set[str], with_prefetch: bool) -> int:
        room = max(stream_room(order, sizes, pinned, with_prefetch, loading), pinned_load_room(sizes, loading, pinned))
        return shared + sum(sizes[k] for k in pinned) + room

    for with_prefetch in ((True, False) if prefetch else (False,)):
        if need(set(), with_prefetch) > cap:
            continue
        pinned: set[str] = set()
        for key in by_benefit:
            if need(pinned | {key}, with_prefetch) <= cap:
                pinned = pinned | {key}
        return Plan(cap, shared, tuple(k for k in keys if k in pinned), tuple(k for k in keys if k not in pinned),
                    with_prefetch, need(pinned, with_prefetch))
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
