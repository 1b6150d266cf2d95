"""The pool's policy as a pure function: plain numbers in, a plan out (no engines, no files)."""

from __future__ import annotations

import itertools

import pytest

from trtbert.errors import MemoryCapError
from trtbert.runtime.planner import eviction_order, make_plan, next_use, stream_room

MiB = 2**20
ORDER = ["emb", "l1", "l2", "l3", "l4"]
SIZES = {"emb": 2 * MiB, "l1": 10 * MiB, "l2": 10 * MiB, "l3": 10 * MiB, "l4": 12 * MiB}


def test_unlimited_or_roomy_cap_pins_everything() -> None:
    for cap in (None, sum(SIZES.values()) + 3 * MiB):
        plan = make_plan(SIZES, ORDER, cap, shared=3 * MiB)
        assert plan.pinned == tuple(ORDER) and plan.streamed == ()
        assert plan.bound == sum(SIZES.values()) + 3 * MiB


def test_cap_below_largest_plus_shared_is_refused_with_the_numbers() -> None:
    with pytest.raises(MemoryCapError, match=r"memory cap 14\.0 MiB is below layer_04 \(12\.0 MiB \+ 3\.0 MiB"):
        make_plan(SIZES, ORDER, 14 * MiB, shared=3 * MiB, names={"l4": "layer_04"})


def test_earliest_engines_pinned_rest_stream_with_prefetch_room() -> None:
    plan = make_plan(SIZES, ORDER, 34 * MiB)
    # emb and l1 (run by every request) pinned; with l3 pinned too, l2 and l4 stream one at a time
    assert plan.pinned == ("emb", "l1", "l3") and plan.streamed == ("l2", "l4") and plan.prefetch
    assert plan.bound == 2 * MiB + 10 * MiB + 10 * MiB + 12 * MiB <= 34 * MiB
    tighter = make_plan(SIZES, ORDER, 30 * MiB)  # only emb beside two streamed layers (running + next)
    assert tighter.pinned == ("emb",) and tighter.prefetch and tighter.bound <= 30 * MiB


def test_without_room_to_prefetch_the_plan_streams_one_at_a_time() -> None:
    plan = make_plan(SIZES, ORDER, 13 * MiB)
    assert not plan.prefetch and plan.bound <= 13 * MiB
    assert plan.pinned == ()  # pinning emb (2) + the largest streamed (12) would exceed 13


def test_use_rate_pins_what_runs_most() -> None:
    rate = {"emb": 1.0, "l1": 1.0, "l2": 0.4, "l3": 0.9, "l4": 0.1}  # an odd model: l3 runs more than l2
    plan = make_plan(SIZES, ORDER, 40 * MiB, use_rate=rate)
    assert "l3" in plan.pinned and "l2" not in plan.pinned


@pytest.mark.parametrize("cap_mib", range(15, 60, 3))
@pytest.mark.parametrize("prefetch", [True, False])
def test_bound_never_exceeds_the_cap(cap_mib: int, prefetch: bool) -> None:
    cap = cap_mib * MiB
    plan = make_plan(SIZES, ORDER, cap, shared=2 * MiB, prefetch=prefetch)
    assert plan.bound <= cap
    pinned = set(plan.pinned)
    # the worst moment: every pinned engine resident, the largest streamed pair (running + prefetched)
    assert 2 * MiB + sum(SIZES[k] for k in pinned) + stream_room(ORDER, SIZES, pinned, plan.prefetch) <= cap


def test_shared_files_count_once() -> None:
    order = ["emb", "layer", "layer", "layer", "head1", "head2"]  # ALBERT: one layer file at every depth
    sizes = {"emb": MiB, "layer": 8 * MiB, "head1": MiB // 4, "head2": MiB // 4}
    plan = make_plan(sizes, order, 11 * MiB)
    assert plan.pinned == ("emb", "layer", "head1", "head2")


def test_eviction_farthest_next_use_first() -> None:
    order = ["a", "b", "c", "d"]
    assert next_use(order, "a", 0) == 4 and next_use(order, "c", 0) == 2
    assert eviction_order(order, ["b", "c", "d"], position=1) == ["b", "d", "c"]


def test_plans_are_consistent_over_many_random_sizes() -> None:
    import random

    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(2, 8)
        keys = [f"k{i}" for i in range(n)]
        sizes = {k: rng.randint(1, 50) * MiB for k in keys}
        shared = rng.randint(0, 5) * MiB
        order = keys + [rng.choice(keys) for _ in range(rng.randint(0, 3))]
        cap = rng.randint(max(sizes.values()) + shared, sum(sizes.values()) + shared + 10 * MiB)
        plan = make_plan(sizes, order, cap, shared=shared)
        assert plan.bound <= cap
        assert set(plan.pinned) | set(plan.streamed) == set(keys)
        assert not set(plan.pinned) & set(plan.streamed)
    assert list(itertools.islice(iter(ORDER), 1)) == ["emb"]
