"""The engine pool under a memory cap, with real ONNX Runtime engines on small bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caps import costs, loading_costs
from conftest import TEXTS
from trtbert.bundle import load_bundle
from trtbert.errors import MemoryCapError
from trtbert.runtime.exits import parse_rule
from trtbert.runtime.runner import Runner
from trtbert.sizes import format_size


def _sizes(bundle: Path) -> dict[str, int]:
    """Recorded resident costs by stage (the pool counts these, measured at build/export time)."""
    return costs(bundle)[0]


def _loaded(runner: Runner) -> set[str]:
    """Stages (first user of each engine file) whose engine is loaded, seen from the engines themselves."""
    return {e.name for e in runner.pool._engines.values() if e.loaded}


def test_cap_below_largest_stage_is_refused(rt_bundles: dict[str, Path]) -> None:
    sizes, shared = costs(rt_bundles["bert"])
    loading = loading_costs(rt_bundles["bert"])
    largest = max(loading, key=loading.get)
    with pytest.raises(MemoryCapError) as err:
        Runner.from_bundle(rt_bundles["bert"], memory_cap=shared + loading[largest] - 1)
    message = str(err.value)
    cap = format_size(shared + loading[largest] - 1)
    assert message.startswith(f"memory cap {cap} is below {largest} ({format_size(sizes[largest])}")
    assert "raise --memory-cap or build with --int8" in message and "\n" not in message


def test_unlimited_keeps_everything_resident(rt_bundles: dict[str, Path]) -> None:
    with Runner.from_bundle(rt_bundles["albert"]) as runner:  # ALBERT: 3 layers share one file
        runner.predict(TEXTS, batch_size=4)
        first = runner.stats()
        runner.predict(TEXTS, batch_size=4)
        second = runner.stats()
        assert first.loads == 5  # embeddings, the shared layer, 3 heads: a shared file counts once
        assert second.loads == first.loads and second.evictions == 0
        assert set(second.resident) == {"embeddings", "layer_01", "head_01", "head_02", "head_03"}
        assert set(second.resident) == _loaded(runner)
    assert not any(e.loaded for e in runner.pool._engines.values())  # closed: every engine freed


@pytest.mark.parametrize("prefetch", [True, False])
def test_cap_between_largest_and_total_streams_within_the_cap(wide_bundle: Path, prefetch: bool) -> None:
    with Runner.from_bundle(wide_bundle, prefetch=prefetch) as runner:
        want = [p.logits for p in runner.predict(TEXTS, batch_size=3)]
        sizes = runner.pool.sizes()  # recorded when the bundle was exported
        loading = loading_costs(wide_bundle)
        shared = runner.stats().shared_bytes
        # room for embeddings, layer_01 and two streamed layers (one running, one loading beside it)
        cap = shared + sizes["embeddings"] + sizes["layer_01"] + 2 * max(loading.values())
        assert shared + max(loading.values()) < cap < shared + sum(sizes.values())
        runner.pool.set_memory_cap(cap)
        for _ in range(2):
            got = [p.logits for p in runner.predict(TEXTS, batch_size=3)]
            assert np.abs(np.array(got) - np.array(want)).max() < 1e-5
            stats = runner.stats()
            assert set(stats.resident) == _loaded(runner) and stats.resident_bytes <= cap
        assert stats.evictions > 0 and stats.peak_bytes <= cap and stats.over_cap == 0
        # the earliest stages are pinned and load no more; the streamed ones reload on every pass
        assert stats.pinned[:2] == ("embeddings", "layer_01") and "layer_06" not in stats.pinned
        loads = stats.loads_by_stage
        assert loads["embeddings"] == loads["layer_01"] == 1 and loads["layer_06"] >= 5
        if prefetch:
            assert stats.prefetch_hits > 0


def test_capped_from_the_start(wide_bundle: Path) -> None:
    sizes, shared = costs(wide_bundle)
    cap = int(shared + max(loading_costs(wide_bundle).values()) * 2.5)
    with Runner.from_bundle(wide_bundle, memory_cap=cap) as runner:
        for _ in range(3):
            runner.predict(TEXTS, batch_size=4)
        stats = runner.stats()
    assert stats.over_cap == 0 and stats.resident_bytes <= cap
    assert stats.pinned[0] == "embeddings" and "layer_06" not in stats.pinned


def test_prefetch_on_exit_leaves_nothing_unaccounted(wide_bundle: Path) -> None:
    with Runner.from_bundle(wide_bundle) as runner:
        runner.predict(TEXTS[:1])  # every layer loads once (and is measured): now they can be prefetched
        sizes = loading_costs(wide_bundle)
        cap = runner.stats().shared_bytes + sizes["embeddings"] + 2 * max(sizes.values())
        runner.pool.set_memory_cap(cap)
        runner.predict(TEXTS[:1])  # a pass under the cap: layer_01 and layer_02 are no longer resident
        runner.rule = parse_rule("max-layers:1")
        before = runner.stats()
        for _ in range(3):
            assert {p.exit_layer for p in runner.predict(TEXTS[:2], batch_size=1)} == {1}
            runner.pool.join_prefetch()  # a started prefetch finishes: then the books must balance
            stats = runner.stats()
            assert set(stats.resident) == _loaded(runner) and stats.resident_bytes <= cap
        assert stats.peak_bytes <= cap
        assert stats.prefetches > before.prefetches  # layer_02 was prefetched beside layer_01, then not used
