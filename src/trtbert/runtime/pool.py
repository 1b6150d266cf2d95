"""The engine pool: carries out the planner's plan (``runtime/planner.py``) with real engines.

The pool is the only caller of :meth:`Engine.load` and :meth:`Engine.unload`. Residency is keyed by
engine file, so a file shared by several stages (ALBERT's one layer) is loaded and counted once.
Every engine's bytes are its recorded cost (measured at build time), known before it is loaded: what
it holds while resident and, more, while it loads. A load is admitted only when the engines resident,
the loads in flight (at their loading size), what the set shares and the new engine together stay
within the cap, so the pool never holds more than the cap. To make room it
evicts streamed engines, the one used farthest in the future first; pinned engines stay.

``prefetch(position)`` loads the next stage on one worker thread while the current one computes,
when the plan has room for it; ``cancel_prefetch`` (on exit) drops one that has not started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from trtbert.engines.base import Engine
from trtbert.runtime.planner import Plan, eviction_order, make_plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolStats:
    """Counters of one pool since it was created (bytes are recorded engine costs).

    Engines are named by the first stage that uses their file. ``hits``: stages whose engine was already
    resident; ``prefetch_hits``: stages served by a prefetch; ``wait_seconds``: time stages waited for
    their engine; ``peak_bytes``: the most the pool held (``shared_bytes`` included). ``over_cap`` is
    always 0: admission makes exceeding the cap impossible (kept for reports that show it).
    """

    memory_cap: int | None
    loads: int
    evictions: int
    hits: int
    prefetches: int
    prefetch_hits: int
    prefetch_skipped: int
    prefetch_cancelled: int
    prefetch_wasted: int
    over_cap: int
    load_seconds: float
    wait_seconds: float
    peak_bytes: int
    resident_bytes: int
    shared_bytes: int
    plan_bound: int
    pinned: tuple[str, ...]
    resident: tuple[str, ...]
    loads_by_stage: dict[str, int]


class EnginePool:
    """Keeps stage engines resident under ``memory_cap`` bytes (None: unlimited).

    ``engines`` maps an engine key (its file) to its engine; ``order`` lists ``(stage name, key)`` for
    one full pass in execution order (keys may repeat); ``sizes`` gives each key's recorded resident
    bytes, ``loading`` its bytes while loading (default: the same) and ``shared`` the bytes the set holds
    once whatever is loaded (template sessions).
    """

    def __init__(
        self,
        engines: Mapping[str, Engine],
        order: Sequence[tuple[str, str]],
        sizes: Mapping[str, int],
        memory_cap: int | None = None,
        prefetch: bool = True,
        shared: int = 0,
        use_rate: Mapping[str, float] | None = None,
        loading: Mapping[str, int] | None = None,
    ) -> None:
        self._engines = dict(engines)
        self._order = [key for _, key in order]
        self._names: dict[str, str] = {}
        for name, key in order:
            self._names.setdefault(key, name)
        self._sizes = {key: int(sizes[key]) for key in self._engines}
        self._loading_sizes = {key: max(self._sizes[key], int((loading or sizes).get(key, sizes[key])))
                               for key in self._engines}
        self._shared = int(shared)
        self._use_rate = use_rate
        self._prefetch_wanted = prefetch
        self.plan: Plan = self._make_plan(memory_cap)
        self._cond = threading.Condition(threading.Lock())
        self._resident: dict[str, int] = {}  # key -> bytes, loads in flight included
        self._loading: set[str] = set()
        self._in_use: dict[str, int] = {}
        self._unused_prefetch: set[str] = set()
        self._position = 0
        self._worker: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._future_key: str | None = None
        self._closed = False
        self._counts = dict(loads=0, evictions=0, hits=0, prefetches=0, prefetch_hits=0, prefetch_skipped=0,
                            prefetch_cancelled=0, prefetch_wasted=0)
        self._loads_by_key: dict[str, int] = {}
        self._load_seconds = 0.0
        self._wait_seconds = 0.0
        self._peak = 0

    @property
    def memory_cap(self) -> int | None:
        """The cap the pool works under."""
        return self.plan.cap

    def _make_plan(self, cap: int | None) -> Plan:
        return make_plan(self._sizes, self._order, cap, self._shared, self._use_rate, self._prefetch_wanted,
                         names=self._names, loading=self._loading_sizes)

    # --- accounting (lock held) ---------------------------------------------------------------------

    def _total(self) -> int:
        return sum(self._resident.values())

    def _note_peak(self) -> None:
        self._peak = max(self._peak, self._shared + self._total())

    def _evict(self, key: str) -> None:
        self._engines[key].unload()
        del self._resident[key]
        self._counts["evictions"] += 1
        if key in self._unused_prefetch:
            self._unused_prefetch.discard(key)
            self._counts["prefetch_wasted"] += 1
        log.debug("evicted %s", self._names[key])

    def _make_room(self, need: int, protect: str, pinned_too: bool = False) -> bool:
        """Evict idle engines (streamed ones, farthest next use first) until ``need`` fits."""
        if self.plan.fits(self._total(), need):
            return True
        idle = [k for k in self._resident if k != protect and k not in self._loading and not self._in_use.get(k)]
        streamed = [k for k in idle if k not in self.plan.pinned]
        victims = eviction_order(self._order, streamed, self._position)
        if pinned_too:
            victims += eviction_order(self._order, [k for k in idle if k in self.plan.pinned], self._position)
        for key in victims:
            if self.plan.fits(self._total(), need):
                break
            self._evict(key)
        return self.plan.fits(self._total(), need)

    # --- loading ---------------------------------------------------------------------------------------

    def _load(self, key: str, prefetched: bool) -> None:
        """Load ``key`` (its bytes are already reserved)."""
        engine = self._engines[key]
        try:
            engine.load()
        except BaseException:
            with self._cond:
                self._resident.pop(key, None)
                self._loading.discard(key)
                self._cond.notify_all()
            raise
        with self._cond:
            self._loading.discard(key)
            self._resident[key] = self._sizes[key]  # loaded: from its loading size down to its resident one
            self._counts["loads"] += 1
            self._loads_by_key[key] = self._loads_by_key.get(key, 0) + 1
            self._counts["prefetches"] += prefetched
            self._load_seconds += engine.load_seconds
            if prefetched:
                self._unused_prefetch.add(key)
            self._cond.notify_all()

    def _prefetch_job(self, key: str) -> None:
        try:
            self._load(key, prefetched=True)
        except Exception as exc:  # noqa: BLE001 - the demand load of the same stage raises it in the caller
            log.debug("prefetch of %s failed: %s", self._names[key], exc)

    def acquire(self, position: int) -> Engine:
        """The loaded engine of the stage at ``position`` of the pass, marked in use until :meth:`release`."""
        key = self._order[position]
        start = time.perf_counter()
        waited = False
        with self._cond:
            self._position = position
            while True:
                if self._closed:
                    raise RuntimeError("the engine pool is closed")
                if key in self._loading:
                    waited = True
                    self._cond.wait()
                    continue
                if key in self._resident:
                    self._in_use[key] = self._in_use.get(key, 0) + 1
                    if key in self._unused_prefetch:
                        self._unused_prefetch.discard(key)
                        self._counts["prefetch_hits"] += 1
                    elif not waited:
                        self._counts["hits"] += 1
                    self._wait_seconds += time.perf_counter() - start
                    return self._engines[key]
                if self._make_room(self._loading_sizes[key], key, pinned_too=True):
                    break
                if self._loading:  # a prefetch in flight holds room: let it finish, then evict it
                    waited = True
                    self._cond.wait()
                    continue
                raise RuntimeError(  # the plan guarantees room; reaching this is a bug
                    f"engine pool: no room for {self._names[key]} ({self._loading_sizes[key]} bytes) under the cap "
                    f"{self.plan.cap} with {sorted(self._names[k] for k in self._resident)} in use")
            self._resident[key] = self._loading_sizes[key]
            self._loading.add(key)
            self._note_peak()
        self._load(key, prefetched=False)
        with self._cond:
            self._in_use[key] = self._in_use.get(key, 0) + 1
            self._wait_seconds += time.perf_counter() - start
        return self._engines[key]

    def release(self, position: int) -> None:
        """The stage at ``position`` has finished with its engine."""
        key = self._order[position]
        with self._cond:
            self._in_use[key] = max(0, self._in_use.get(key, 0) - 1)

    def prefetch(self, position: int) -> None:
        """Start loading the stage at ``position`` in the background, if the plan prefetches and there is room."""
        if not self.plan.prefetch or position >= len(self._order):
            return
        key = self._order[position]
        with self._cond:
            if self._closed or key in self._resident or (self._future is not None and not self._future.done()):
                return
            if not self._make_room(self._loading_sizes[key], key):
                self._counts["prefetch_skipped"] += 1
                return
            self._resident[key] = self._loading_sizes[key]
            self._loading.add(key)
            self._note_peak()
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trtbert-prefetch")
            self._future, self._future_key = self._worker.submit(self._prefetch_job, key), key

    def cancel_prefetch(self) -> None:
        """Drop a prefetch that has not started (a started one finishes and stays counted)."""
        with self._cond:
            future, key = self._future, self._future_key
            if future is not None and key is not None and future.cancel():
                self._resident.pop(key, None)
                self._loading.discard(key)
                self._counts["prefetch_cancelled"] += 1
                self._cond.notify_all()
                self._future = self._future_key = None

    def join_prefetch(self) -> None:
        """Wait until a prefetch in flight (if any) has finished and been counted."""
        with self._cond:
            future = self._future
        if future is not None:
            try:
                future.result()
            except Exception:  # noqa: BLE001 - cancelled, or failed: the demand load reports failures
                pass

    def set_memory_cap(self, memory_cap: int | None) -> None:
        """Change the cap: re-plan (refusing a cap that cannot hold the largest engine), evict down to
        it, restart the peak."""
        self.join_prefetch()
        with self._cond:
            self.plan = self._make_plan(memory_cap)
            for key in eviction_order(self._order, [k for k in self._resident if k not in self.plan.pinned],
                                      self._position):
                if self.plan.fits(self._total(), 0) and not (self._in_use.get(key)):
                    break
                if not self._in_use.get(key):
                    self._evict(key)
            self._make_room(0, "", pinned_too=True)
            self._peak = self._shared + self._total()

    def loads_of(self, key: str) -> int:
        """How many times the engine file ``key`` has been loaded."""
        with self._cond:
            return self._loads_by_key.get(key, 0)

    def is_resident(self, key: str) -> bool:
        """Whether the engine file ``key`` is loaded (or loading)."""
        with self._cond:
            return key in self._resident

    def sizes(self) -> dict[str, int]:
        """Bytes the pool counts per engine (named by its first stage), as recorded."""
        return {self._names[k]: v for k, v in self._sizes.items()}

    # --- reporting and shutdown --------------------------------------------------------------------------

    def stats(self) -> PoolStats:
        """A snapshot of the counters."""
        with self._cond:
            order = list(dict.fromkeys(self._order))
            return PoolStats(
                memory_cap=self.plan.cap, **self._counts, over_cap=0, load_seconds=self._load_seconds,
                wait_seconds=self._wait_seconds, peak_bytes=self._peak, resident_bytes=self._shared + self._total(),
                shared_bytes=self._shared, plan_bound=self.plan.bound,
                pinned=tuple(self._names[k] for k in order if k in self.plan.pinned),
                resident=tuple(self._names[k] for k in order if k in self._resident),
                loads_by_stage={self._names[k]: n for k, n in self._loads_by_key.items()},
            )

    def close(self) -> None:
        """Wait for a prefetch in flight, then unload every engine. Idempotent."""
        self.cancel_prefetch()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        with self._cond:
            self._closed = True
            for key in list(self._resident):
                self._engines[key].unload()
            self._resident.clear()
            self._loading.clear()
            self._cond.notify_all()

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
