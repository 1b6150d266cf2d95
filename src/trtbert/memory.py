"""Process memory: resident and peak bytes (psutil), handing freed heap back to the OS, and the memory
limit the process really has (cgroup v1/v2, available memory).

Nothing here changes the process unless asked: :func:`tune_allocator` is called by the CLI (or by a
library user who wants it), never implicitly by a library call.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameters
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20  # engines freed and reloaded (sessions per stage under a cap): give weights back
LARGE_MMAP_THRESHOLD = 32 << 20  # everything else: activations reuse the heap instead of fresh mappings
ARENA_MAX = 2


def current_rss() -> int:
    """Resident set size of this process in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (``VmHWM`` on Linux; ``ru_maxrss`` elsewhere, which
    macOS reports in bytes and Linux in KiB)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    import resource
    import sys

    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Restart the peak (``VmHWM``) from the current RSS (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def release_freed_memory() -> None:
    """Hand heap freed by an unloaded engine back to the OS (glibc keeps freed heap otherwise, and a
    streaming process's RSS would creep up over thousands of loads). A no-op where libc is not glibc."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def tune_allocator(mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Make glibc return engine memory to the OS when an engine is freed, and keep its heaps few.

    - Every allocation of ``mmap_threshold`` bytes or more gets its own mapping, returned on free. By
      default glibc raises that threshold to the largest block freed so far (up to 32 MiB), so after the
      first evicted engine its weights are carved from the heap and, once freed, stay in the process:
      streaming bert-base under a 64 MiB cap then peaked at 364 MiB of RSS instead of 203 MiB. The runner
      uses 1 MiB only where engines holding their own weights are freed and reloaded (session sets under
      a cap); elsewhere 32 MiB, so activations reuse heap instead of fresh mappings on every run (int8
      bert-base at 128 tokens: 116-126 ms with 1 MiB, 83 ms with 32 MiB).
    - At most 2 malloc arenas: each thread that allocates (ONNX Runtime's, the prefetch worker) would
      otherwise get its own heap, whose freed pages linger (MiniLM at a 25 MiB cap: 3.3 MiB above the
      bound with the default, within it with 2).

    This changes the whole process, so only the CLI calls it (``trtbert run``/``eval``), or a caller who
    opts in (``Runner.from_bundle(..., tune_allocator=True)``). Returns False where libc is not glibc.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(libc.mallopt(_M_ARENA_MAX, ARENA_MAX))


@dataclass(frozen=True)
class MemoryLimit:
    """The memory this process may use: the tightest of its cgroup limit and the memory available."""

    bytes: int
    source: str  # "cgroup v2 memory.max", "cgroup v1 memory.limit_in_bytes", "available memory"
    used: int  # the cgroup's current usage (or this process's RSS)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value < 1 << 60 else None  # v1 reports "no limit" as a huge number


def _cgroup_dirs(proc: Path) -> list[tuple[str, Path, Path]]:
    """(version, this process's memory cgroup directory, the hierarchy's mount point), from
    ``/proc/self/cgroup`` and ``/proc/self/mountinfo`` (v1, v2 and hybrid layouts)."""
    try:
        groups = (proc / "cgroup").read_text(encoding="ascii").splitlines()
        mounts = (proc / "mountinfo").read_text(encoding="ascii").splitlines()
    except OSError:
        return []
    v1: tuple[str, Path] | None = None
    v2: tuple[str, Path] | None = None
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point, fstype, options = fields[3], Path(fields[4]), tail[0], tail[2].split(",")
        if fstype == "cgroup2" and v2 is None:
            v2 = (root, point)
        elif fstype == "cgroup" and "memory" in options and v1 is None:
            v1 = (root, point)
    out = []
    for line in groups:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        mount = v2 if controllers == "" else v1 if "memory" in controllers.split(",") else None
        if mount is None:
            continue
        root, point = mount
        rel = path[len(root):] if root != "/" and path.startswith(root) else path
        out.append(("v2" if controllers == "" else "v1", point / rel.lstrip("/"), point))
    return out


def memory_limit(proc: Path = Path("/proc/self")) -> MemoryLimit:
    """How much more memory this process can use before the OOM killer or the cgroup stops it.

    Reads the memory cgroup (v2 ``memory.max``/``memory.current``, v1 ``memory.limit_in_bytes``/
    ``memory.usage_in_bytes``, walking up to the root) and the system's available memory; returns the
    tightest as the bytes still free.
    """
    import psutil

    best = MemoryLimit(int(psutil.virtual_memory().available), "available memory", current_rss())
    for version, directory, mount in _cgroup_dirs(proc):
        path = directory
        while True:
            if version == "v2":
                limit, used = _read_int(path / "memory.max"), _read_int(path / "memory.current")
                name = "cgroup v2 memory.max"
            else:
                limit, used = _read_int(path / "memory.limit_in_bytes"), _read_int(path / "memory.usage_in_bytes")
                name = "cgroup v1 memory.limit_in_bytes"
            if limit is not None:
                free = max(0, limit - (used or 0))
                if free < best.bytes:
                    best = MemoryLimit(free, f"{name} {limit / 2**20:.0f} MiB", used or 0)
            if path == mount or path.parent == path or mount not in path.parents:
                break
            path = path.parent
    return best
