"""The engine lifecycle every backend shares, and the resources engines of one owner share.

An engine is one stage's compiled graph on one backend. ``load`` and ``unload`` are idempotent;
``infer`` takes and returns name -> ndarray dicts, checked at the boundary unless ``check=False`` (the
hot loop), and refuses to run while unloaded. Before reading its files, ``load`` checks that they are
the files verified when the bundle was opened (size, mtime, inode). ``cost`` is what the engine holds
while loaded, measured once at build time in a clean process (``engines/costs.py``) and recorded in the
manifest: the pool plans with it, before any load. The runtime's pool is the only caller of ``load``
and ``unload``.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtbert.bundle import FileStamp, TensorSpec
from trtbert.errors import EngineError
from trtbert.memory import release_freed_memory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cost:
    """Bytes an engine holds while loaded: ``host`` (process memory) and ``device`` (GPU memory: on a
    Jetson the same physical memory); ``peak`` is the most host memory it takes while loading.
    ``measured`` is False for an estimate (a set built before costs were recorded)."""

    host: int
    device: int = 0
    peak: int = 0
    measured: bool = True

    @property
    def total(self) -> int:
        """What counts against the memory cap while the engine is resident."""
        return self.host + self.device

    @property
    def loading(self) -> int:
        """What counts against the memory cap while the engine loads."""
        return max(self.peak, self.host) + self.device


class Shared:
    """What the engines of one owner (a runner, a build's check) share: template sessions, device
    scratch. Created and closed by that owner; nothing here is process-wide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[Any, Any] = {}

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """The item under ``key``, made once by ``make()``."""
        with self._lock:
            if key not in self._items:
                self._items[key] = make()
            return self._items[key]

    def close(self) -> None:
        """Drop every item (calling ``close``/``free`` where an item has one)."""
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for item in items:
            for name in ("close", "free"):
                if callable(getattr(item, name, None)):
                    getattr(item, name)()
                    break


class Engine(abc.ABC):
    """One stage's engine. Subclasses implement ``_load``, ``_unload`` and ``_infer``."""

    backend: str = "base"

    def __init__(self, path: Path, name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        self.path = Path(path)
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self._loaded = False
        self.load_seconds = 0.0
        self.cost: Cost | None = None  # recorded at build time; set by whoever creates the engine
        self.stamps: dict[Path, FileStamp] = {}  # the set's files as verified; checked before every load

    @property
    def loaded(self) -> bool:
        """Whether the engine is resident."""
        return self._loaded

    @property
    def file_size(self) -> int:
        """Size of the engine file on disk."""
        return self.path.stat().st_size

    @property
    def nbytes(self) -> int:
        """Bytes this engine counts against a memory cap while resident (its recorded cost; else twice
        its file)."""
        return self.cost.total if self.cost is not None else 2 * self.file_size

    @property
    def load_nbytes(self) -> int:
        """Bytes this engine counts against a memory cap while it loads."""
        return self.cost.loading if self.cost is not None else 2 * self.file_size

    def files(self) -> list[Path]:
        """Every file a load reads (the engine file; streamed engines add their template)."""
        return [self.path]

    def check_files(self) -> None:
        """Refuse files that changed on disk since they were verified (a rebuild or a copy mid-run)."""
        for path in self.files():
            stamp = self.stamps.get(path)
            if stamp is not None:
                stamp.check(path)

    def load(self) -> None:
        """Make the engine resident; a no-op if it already is."""
        if self._loaded:
            return
        if not self.path.is_file():
            raise EngineError(f"engine file {self.path} is missing; rebuild the engine set "
                              "(trtbert build ... --overwrite)")
        self.check_files()
        start = time.perf_counter()
        self._load()
        release_freed_memory()  # what loading freed (the graph read, weight copies) goes back now, not left in the heap
        self.load_seconds = time.perf_counter() - start
        self._loaded = True
        log.debug("loaded %s (%s) in %.1f ms", self.name, self.backend, self.load_seconds * 1e3)

    def unload(self) -> None:
        """Free the engine; a no-op if it is not loaded."""
        if not self._loaded:
            return
        self._unload()
        self._loaded = False
        release_freed_memory()

    def infer(self, feeds: dict[str, np.ndarray], check: bool = True) -> dict[str, np.ndarray]:
        """Run the stage on name -> array feeds; returns name -> array outputs."""
        if not self._loaded:
            raise EngineError(f"engine {self.name} is not loaded; the runtime pool loads engines before use")
        if check:
            self._check_feeds(feeds)
        return self._infer(feeds)

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        expected = {t.name: t for t in self.inputs}
        missing = sorted(set(expected) - set(feeds))
        extra = sorted(set(feeds) - set(expected))
        if missing or extra:
            raise EngineError(f"{self.name}: inputs missing {missing or '-'}, unexpected {extra or '-'}")
        for name, spec in expected.items():
            arr = feeds[name]
            if not isinstance(arr, np.ndarray):
                raise EngineError(f"{self.name}: input {name} is a {type(arr).__name__}, expected numpy.ndarray")
            if arr.dtype != np.dtype(spec.dtype):
                raise EngineError(f"{self.name}: input {name} is {arr.dtype}, expected {spec.dtype}")
            if arr.ndim != len(spec.shape):
                raise EngineError(f"{self.name}: input {name} has {arr.ndim} dims, expected shape {spec.shape}")
            for got, want in zip(arr.shape, spec.shape):
                if isinstance(want, int) and got != want:
                    raise EngineError(f"{self.name}: input {name} has shape {arr.shape}, expected {spec.shape}")

    def __enter__(self) -> Engine:
        self.load()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unload()

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "unloaded"
        return f"{type(self).__name__}({self.name!r}, {self.path.name}, {state})"

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _unload(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
