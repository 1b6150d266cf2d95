"""The engine pool: which stage engines are resident, under a memory cap, with one-ahead prefetch.

The pool is the only caller of :meth:`Engine.load` and :meth:`Engine.unload`. Residency is keyed by
engine file, so a file shared by several stages (ALBERT's one layer) is loaded and counted once.

Policy:

- a cap below the largest single engine is refused up front (:class:`MemoryCapError`, with the fix);
- a cap that fits every engine keeps every engine resident: no reloads after the first pass;
- in between, the engines first used earliest in a pass are pinned (with early exit, layer k runs at
  least as often as layer k+1), as many as fit while leaving room for the largest stage that runs
  next to one prefetched stage; the others stream through the remaining room. A streamed engine is
  evicted when room is needed, the one whose next use is farthest first; pinned ones only as a last
  resort (when measured sizes turn out larger than planned);
- ``prefetch(position)`` loads the next stage on one worker thread while the current one computes; it
  only evicts streamed engines and is skipped when there is no room, and for an engine that has never
  loaded (its first load runs alone, so that its measured size is not inflated by the compute beside
  it). ``cancel_prefetch`` (on exit) drops a prefetch that has not started; one that has started
  finishes, is counted and may be evicted.

Sizes for planning come from the manifest (file sizes) until an engine has loaded once; from then on
the least of its measured ``nbytes``. Before an engine's first load the pool frees room for twice its
file size (sessions measure larger than their files), so that the measured size still fits. ``stats().peak_bytes`` is the most the pool ever held, counted
from those (reservations of loads in flight included). If an engine measures larger than planned so
that the engines in use exceed the cap, it runs with nothing else resident and ``over_cap`` counts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from trtbert.engines.base import Engine
from trtbert.errors import MemoryCapError
from trtbert.sizes import format_size

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_MMAP_THRESHOLD = 1 << 20
_allocator_tuned = False
FIRST_LOAD_HEADROOM = 2.0  # ONNX Runtime sessions measured 1.2-1.8x their file size once loaded


def return_freed_memory_to_os() -> bool:
    """Make glibc serve every allocation of 1 MiB or more with its own mapping, returned on free.

    By default glibc raises that threshold to the largest block freed so far (up to 32 MiB), so after
    the first evicted engine its weights are carved from the heap and, once freed, stay in the process:
    streaming bert-base under a 64 MiB cap then peaked at 364 MiB of RSS instead of 203 MiB. Called once
    per process by a capped pool; a no-op (False) where the C library is not glibc.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
    log.debug("glibc mmap threshold fixed at %d bytes: %s", _MMAP_THRESHOLD, _allocator_tuned)
    return _allocator_tuned


@dataclass(frozen=True)
class PoolStats:
    """Counters of one pool since it was created (bytes are measured engine sizes).

    Engines are named by the first stage that uses their file. ``hits``: stages whose engine was already
    resident; ``prefetch_hits``: stages served by a prefetch; ``over_cap``: loads that measured larger
    than planned and ran alone above the cap; ``wait_seconds``: time stages waited for their engine.
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
    pinned: tuple[str, ...]
    resident: tuple[str, ...]
    loads_by_stage: dict[str, int]


class EnginePool:
    """Keeps stage engines resident under ``memory_cap`` bytes (None: unlimited).

    ``engines`` maps an engine key (its file) to its engine; ``order`` lists ``(stage name, key)`` for
    one full pass in execution order (keys may repeat); ``sizes`` gives each key's planned bytes.
    """

    def __init__(
        self,
        engines: Mapping[str, Engine],
        order: Sequence[tuple[str, str]],
        sizes: Mapping[str, int],
        memory_cap: int | None = None,
        prefetch: bool = True,
    ) -> None:
        self._engines = dict(engines)
        self._order = [key for _, key in order]
        self._names = {}
        for name, key in order:
            self._names.setdefault(key, name)
        self._positions = {key: [i for i, k in enumerate(self._order) if k == key] for key in self._engines}
        self._first_use = sorted(self._engines, key=lambda k: self._positions[k][0])
        self._known = {key: int(sizes[key]) for key in self._engines}
        self.memory_cap = memory_cap
        self._prefetch_enabled = prefetch
        self._check_cap()
        if memory_cap is not None:
            return_freed_memory_to_os()
        self._cond = threading.Condition(threading.RLock())
        self._resident: dict[str, int] = {}  # key -> bytes counted (reservations of loads in flight too)
        self._loading: set[str] = set()
        self._in_use: dict[str, int] = {}
        self._unused_prefetch: set[str] = set()
        self._position = 0
        self._worker: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._future_key: str | None = None
        self._closed = False
        self._counts = dict(loads=0, evictions=0, hits=0, prefetches=0, prefetch_hits=0, prefetch_skipped=0,
                            prefetch_cancelled=0, prefetch_wasted=0, over_cap=0)
        self._measured: dict[str, int] = {}
        self._loads_by_key: dict[str, int] = {}
        self._warned = False
        self._load_seconds = 0.0
        self._wait_seconds = 0.0
        self._peak = 0
        self._pinned: set[str] = set()
        self._plan()

    # --- planning ----------------------------------------------------------------------------------

    def _check_cap(self) -> None:
        if self.memory_cap is None:
            return
        key = max(self._engines, key=lambda k: self._known[k])
        if self._known[key] > self.memory_cap:
            raise MemoryCapError(
                f"memory cap {format_size(self.memory_cap)} is below {self._names[key]} "
                f"({format_size(self._known[key])}); raise --memory-cap or build with --int8"
            )

    def _plan(self) -> None:
        """Choose the pinned engines: the longest prefix (by first use) that leaves room to stream."""
        total = sum(self._known.values())
        if self.memory_cap is None or total <= self.memory_cap:
            self._pinned = set(self._engines)
            return
        pinned: set[str] = set()
        for key in self._first_use:
            trial = pinned | {key}
            if sum(self._known[k] for k in trial) + self._stream_room(trial) > self.memory_cap:
                break
            pinned = trial
        if pinned != self._pinned:
            log.debug("pinned %s", [self._names[k] for k in self._first_use if k in pinned])
        self._pinned = pinned

    def _stream_room(self, pinned: set[str]) -> int:
        """Bytes needed by the streamed engines at once: one running plus (with prefetch) the next one."""
        room = 0
        n = len(self._order)
        for i, key in enumerate(self._order):
            need = {key} - pinned
            if self._prefetch_enabled and i + 1 < n:
                need |= {self._order[i + 1]} - pinned
            room = max(room, sum(self._known[k] for k in need))
        return room

    # --- accounting helpers (call with the lock held) ---------------------------------------------------

    def _total(self) -> int:
        return sum(self._resident.values())

    def _distance(self, key: str) -> int:
        n = len(self._order)
        return min((p - self._position) % n or n for p in self._positions[key])

    def _evictable(self, protect: set[str], allow_pinned: bool) -> list[str]:
        free = [k for k in self._resident if k not in self._loading and not self._in_use.get(k) and k not in protect]
        streamed = sorted((k for k in free if k not in self._pinned), key=self._distance, reverse=True)
        pinned = sorted((k for k in free if k in self._pinned), key=lambda k: self._positions[k][0], reverse=True)
        return streamed + (pinned if allow_pinned else [])

    def _evict(self, key: str) -> None:
        self._engines[key].unload()
        del self._resident[key]
        self._counts["evictions"] += 1
        if key in self._unused_prefetch:
            self._unused_prefetch.discard(key)
            self._counts["prefetch_wasted"] += 1
        log.debug("evicted %s", self._names[key])

    def _make_room(self, need: int, protect: set[str], allow_pinned: bool) -> bool:
        if self.memory_cap is None:
            return True
        for key in self._evictable(protect, allow_pinned):
            if self._total() + need <= self.memory_cap:
                break
            self._evict(key)
        return self._total() + need <= self.memory_cap

    # --- loading ---------------------------------------------------------------------------------------

    def _load(self, key: str, prefetched: bool) -> None:
        """Load ``key`` (its bytes are already reserved); then count its measured size."""
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
            # A measurement is the process's growth during the load: sometimes more than the engine holds
            # (allocator high-water marks). The least one is the tightest bound, and the one counted. A
            # prefetch runs beside a compute whose allocations it would count: its engine keeps the size
            # measured by an earlier load that ran alone (a prefetch never makes a first load).
            measured = self._known[key] if prefetched else engine.nbytes
            known = min(self._measured.get(key, measured), measured)
            self._measured[key] = known
            self._resident[key] = known
            self._counts["loads"] += 1
            self._loads_by_key[key] = self._loads_by_key.get(key, 0) + 1
            self._counts["prefetches"] += prefetched
            self._load_seconds += engine.load_seconds
            if prefetched:
                self._unused_prefetch.add(key)
            self._peak = max(self._peak, self._total())
            if known != self._known[key]:
                self._known[key] = known
                self._plan()
            self._cond.notify_all()
            if self.memory_cap is not None and self._total() > self.memory_cap:
                self._make_room(0, {key}, allow_pinned=True)
                if self._total() > self.memory_cap:
                    if prefetched:
                        self._evict(key)
                    else:
                        self._over_cap(key, known)

    def _over_cap(self, key: str, nbytes: int) -> None:
        self._counts["over_cap"] += 1
        if not self._warned:
            self._warned = True
            log.warning(
                "%s measured %s when loaded, which with the engines in use exceeds the memory cap %s; "
                "running it with nothing else resident (raise --memory-cap to avoid this)",
                self._names[key], format_size(nbytes), format_size(self.memory_cap))

    def _prefetch_job(self, key: str) -> None:
        try:
            self._load(key, prefetched=True)
        except Exception as exc:  # a demand load of the same stage will raise it in the caller
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
                need = self._known[key]
                if key not in self._measured:  # a first load: leave room for it to measure larger than its file
                    self._make_room(int(need * FIRST_LOAD_HEADROOM), {key}, allow_pinned=True)
                if not self._make_room(need, {key}, allow_pinned=True):
                    if self._loading:  # a prefetch in flight holds room: let it finish, then evict it
                        self._cond.wait()
                        continue
                    self._over_cap(key, need)  # only its own (measured) size is left: run it alone
                self._resident[key] = need
                self._loading.add(key)
                self._peak = max(self._peak, self._total())
                break
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
        """Start loading the stage at ``position`` in the background, if there is room and no load in flight."""
        if not self._prefetch_enabled or position >= len(self._order):
            return
        key = self._order[position]
        with self._cond:
            if self._closed or key in self._resident or (self._future is not None and not self._future.done()):
                return
            if key not in self._measured:  # an engine's first load runs alone, so that its size is measured cleanly
                return
            if not self._make_room(self._known[key], {key}, allow_pinned=False):
                self._counts["prefetch_skipped"] += 1
                return
            self._resident[key] = self._known[key]
            self._loading.add(key)
            self._peak = max(self._peak, self._total())
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
            except Exception:  # cancelled, or failed: the demand load reports failures  # noqa: BLE001
                pass

    def set_memory_cap(self, memory_cap: int | None) -> None:
        """Change the cap: refuse one below the largest engine, re-plan, evict down to it, restart the peak."""
        with self._cond:
            old = self.memory_cap
            self.memory_cap = memory_cap
            try:
                self._check_cap()
            except MemoryCapError:
                self.memory_cap = old
                raise
            if memory_cap is not None:
                return_freed_memory_to_os()
            self._plan()
            self._make_room(0, set(), allow_pinned=True)
            self._peak = self._total()

    def sizes(self) -> dict[str, int]:
        """Bytes the pool counts per engine (named by its first stage): measured once loaded, else planned."""
        with self._cond:
            return {self._names[k]: self._known[k] for k in self._first_use}

    # --- reporting and shutdown --------------------------------------------------------------------------

    def _resident_names(self) -> str:
        return ", ".join(f"{self._names[k]} ({format_size(v)})" for k, v in self._resident.items()) or "nothing"

    def stats(self) -> PoolStats:
        """A snapshot of the counters."""
        with self._cond:
            return PoolStats(
                memory_cap=self.memory_cap, **self._counts, load_seconds=self._load_seconds,
                wait_seconds=self._wait_seconds, peak_bytes=self._peak, resident_bytes=self._total(),
                pinned=tuple(self._names[k] for k in self._first_use if k in self._pinned),
                resident=tuple(self._names[k] for k in self._first_use if k in self._resident),
                loads_by_stage={self._names[k]: n for k, n in self._loads_by_key.items()},
            )

    def warm_up(self) -> float:
        """Load and unload the smallest engine once, outside the counters, so that the backend's one-off
        process cost (imports, thread pools) is not measured as the first engine's size. Returns seconds."""
        key = min(self._engines, key=lambda k: self._known[k])
        engine = self._engines[key]
        start = time.perf_counter()
        if not engine.loaded:
            engine.load()
            engine.unload()
        return time.perf_counter() - start

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
