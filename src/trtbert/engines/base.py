"""The engine lifecycle every backend shares.

An engine is one stage's compiled graph on one backend. ``load`` and ``unload`` are idempotent;
``nbytes`` is measured when the engine loads (never below its file size); ``infer`` takes and returns
name -> ndarray dicts, checked at the boundary unless ``check=False`` (the hot loop), and refuses to
run while unloaded. The runtime's pool is the only caller of ``load`` and ``unload``.
"""

from __future__ import annotations

import abc
import ctypes
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from trtbert.bundle import TensorSpec
from trtbert.errors import EngineError

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_LOAD_LOCK = threading.Lock()  # loads are serialised so that their RSS deltas do not overlap


def current_rss() -> int:
    """Resident set size of this process in bytes (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> None:
    """Hand memory freed by an unloaded engine back to the OS (glibc keeps freed heap otherwise,
    and a streaming process's RSS would creep up over thousands of loads)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (``VmHWM``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Engine(abc.ABC):
    """One stage's engine. Subclasses implement ``_load``, ``_unload`` and ``_infer``."""

    backend: str = "base"

    def __init__(self, path: Path, name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        self.path = Path(path)
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self._loaded = False
        self._nbytes = 0
        self.load_seconds = 0.0

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
        """Bytes this engine holds while loaded (measured at load; the file size before the first load)."""
        return self._nbytes if self._loaded or self._nbytes else self.file_size

    def load(self) -> None:
        """Make the engine resident; a no-op if it already is."""
        if self._loaded:
            return
        if not self.path.is_file():
            raise EngineError(f"engine file {self.path} is missing; rebuild the engine set")
        self._prepare()
        with _LOAD_LOCK:
            before = current_rss()
            start = time.perf_counter()
            self._load()
            self.load_seconds = time.perf_counter() - start
            self._nbytes = max(self.file_size, current_rss() - before)
            self._loaded = True
        log.debug("loaded %s (%s) in %.1f ms, %d bytes", self.name, self.backend, self.load_seconds * 1e3, self._nbytes)

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

    def _prepare(self) -> None:
        """Acquire what is shared with other engines (not counted in this engine's bytes)."""

    @abc.abstractmethod
    def _load(self) -> None: ...

    @abc.abstractmethod
    def _unload(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
