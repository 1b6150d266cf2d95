"""A fake libcudart for Polygraphy's ``polygraphy.cuda`` module: host memory stands in for the device.

Polygraphy calls the CUDA runtime through a ``ctypes.CDLL`` handle (``Cuda.handle.cudaMalloc(...)``);
:class:`FakeCudart` is such a handle. Its functions take the same ctypes arguments and return CUDA
status codes, so Polygraphy's real ``DeviceArray``/``Stream`` code runs unchanged above it.

It is stricter than a GPU in the ways that find bugs:

* every allocation is tracked (with what made it), so a test can assert that nothing leaked;
* every device access is checked against a live allocation (an overrun or a freed pointer is an error);
* work queued on a stream (async copies, TensorRT executions) runs only when the stream is synchronised
  (or on a synchronous copy, a free, a stream's destruction), so reading results before a synchronise
  gives wrong data, as it can on a GPU with pinned memory;
* errors are returned as CUDA status codes *and* kept in :attr:`errors`, so a swallowed one still fails a test.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass

ALIGNMENT = 256  # cudaMalloc's guarantee
SUCCESS = 0
ERROR_INVALID_VALUE = 1
ERROR_MEMORY_ALLOCATION = 2
ERROR_INVALID_DEVICE_POINTER = 17
ERROR_INVALID_RESOURCE_HANDLE = 400
HOST_TO_HOST, HOST_TO_DEVICE, DEVICE_TO_HOST, DEVICE_TO_DEVICE, DEFAULT = range(5)


class DeviceError(RuntimeError):
    """A misuse of the fake device (raised inside; returned to callers as a CUDA status code)."""


@dataclass
class Allocation:
    """One live device allocation."""

    addr: int
    nbytes: int
    owner: str
    storage: ctypes.Array


def _value(arg: object) -> int:
    """The integer inside a ctypes argument (c_void_p, c_size_t, c_int) or a plain int."""
    value = getattr(arg, "value", arg)
    return int(value or 0)


class FakeCudart:
    """The device: allocations, streams, copies. One per test."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.allocations: dict[int, Allocation] = {}
        self.streams: dict[int, list[Callable[[], None]]] = {}
        self.errors: list[str] = []
        self.peak = 0
        self.mallocs = 0
        self.frees = 0
        self._next_stream = 0x5000
        self._lock = threading.RLock()

    # --- bookkeeping used by the fake TensorRT -------------------------------------------------------

    @property
    def used(self) -> int:
        """Bytes allocated now."""
        with self._lock:
            return sum(a.nbytes for a in self.allocations.values())

    def live(self) -> dict[str, int]:
        """Bytes allocated now, by owner."""
        by_owner: dict[str, int] = {}
        with self._lock:
            allocations = list(self.allocations.values())
        for a in allocations:
            by_owner[a.owner] = by_owner.get(a.owner, 0) + a.nbytes
        return by_owner

    def malloc(self, nbytes: int, owner: str) -> int:
        with self._lock:
            if nbytes < 0:
                raise DeviceError(f"cudaMalloc of {nbytes} bytes")
            if self.capacity is not None and self.used + nbytes > self.capacity:
                raise DeviceError(f"out of device memory: {nbytes} bytes asked, {self.capacity - self.used} free")
            if nbytes == 0:
                return 0
            storage = (ctypes.c_char * (nbytes + ALIGNMENT))()
            base = ctypes.addressof(storage)
            addr = (base + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
            self.allocations[addr] = Allocation(addr, nbytes, owner, storage)
            self.mallocs += 1
            self.peak = max(self.peak, self.used)
            return addr

    def free(self, addr: int) -> None:
        with self._lock:
            self.synchronize_all()  # cudaFree synchronises the device
            if addr == 0:
                return
            if addr not in self.allocations:
                raise DeviceError(f"cudaFree of {addr:#x}, which is not a live allocation")
            del self.allocations[addr]
            self.frees += 1

    def check(self, addr: int, nbytes: int, what: str) -> Allocation:
        """The live allocation holding ``[addr, addr + nbytes)``; a DeviceError otherwise."""
        with self._lock:
            return self._find(addr, nbytes, what)

    def _find(self, addr: int, nbytes: int, what: str) -> Allocation:
        for a in self.allocations.values():
            if a.addr <= addr < a.addr + a.nbytes or (nbytes == 0 and addr == a.addr):
                if addr + nbytes > a.addr + a.nbytes:
                    raise DeviceError(f"{what}: {nbytes} bytes at {addr:#x} overrun the allocation of "
                                      f"{a.nbytes} bytes at {a.addr:#x} ({a.owner})")
                return a
        raise DeviceError(f"{what}: {addr:#x} is not device memory (or was freed)")

    def is_device(self, addr: int) -> bool:
        with self._lock:
            return any(a.addr <= addr < a.addr + a.nbytes for a in self.allocations.values())

    def enqueue(self, stream: int, work: Callable[[], None]) -> None:
        """Queue ``work`` on ``stream`` (0: the legacy default stream, which runs it at once)."""
        with self._lock:
            if stream == 0:
                self.synchronize_all()
                work()
                return
            if stream not in self.streams:
                raise DeviceError(f"stream {stream:#x} does not exist")
            self.streams[stream].append(work)

    def synchronize(self, stream: int) -> None:
        with self._lock:
            queue = self.streams.get(stream)
            if queue is None:
                raise DeviceError(f"stream {stream:#x} does not exist")
            while queue:
                queue.pop(0)()

    def synchronize_all(self) -> None:
        with self._lock:
            for handle in list(self.streams):
                self.synchronize(handle)

    def _status(self, call: Callable[[], None]) -> int:
        try:
            call()
        except DeviceError as exc:
            self.errors.append(str(exc))
            return ERROR_INVALID_VALUE
        return SUCCESS

    # --- the libcudart functions Polygraphy calls --------------------------------------------------------

    def cudaMalloc(self, ptr_ref: object, nbytes: object) -> int:  # noqa: N802 (CUDA's names)
        def run() -> None:
            ptr_ref._obj.value = self.malloc(_value(nbytes), "cudaMalloc") or None  # type: ignore[attr-defined]

        return self._status(run)

    def cudaFree(self, ptr: object) -> int:  # noqa: N802
        return self._status(lambda: self.free(_value(ptr)))

    def _copy(self, dst: int, src: int, nbytes: int, kind: int) -> None:
        if kind not in (HOST_TO_DEVICE, DEVICE_TO_HOST, DEVICE_TO_DEVICE, HOST_TO_HOST):
            raise DeviceError(f"memcpy kind {kind} is not used by Polygraphy")
        if kind in (HOST_TO_DEVICE, DEVICE_TO_DEVICE):
            self.check(dst, nbytes, "memcpy destination")
        elif self.is_device(dst):
            raise DeviceError(f"memcpy kind {kind} has a device destination {dst:#x}")
        if kind in (DEVICE_TO_HOST, DEVICE_TO_DEVICE):
            self.check(src, nbytes, "memcpy source")
        elif self.is_device(src):
            raise DeviceError(f"memcpy kind {kind} has a device source {src:#x}")
        if nbytes:
            ctypes.memmove(dst, src, nbytes)

    def cudaMemcpy(self, dst: object, src: object, nbytes: object, kind: object) -> int:  # noqa: N802
        args = (_value(dst), _value(src), _value(nbytes), _value(kind))

        def run() -> None:
            self.synchronize_all()
            self._copy(*args)

        return self._status(run)

    def cudaMemcpyAsync(  # noqa: N802
        self, dst: object, src: object, nbytes: object, kind: object, stream: object
    ) -> int:
        args = (_value(dst), _value(src), _value(nbytes), _value(kind))

        def run() -> None:
            # Validate now (as CUDA does for bad pointers), copy when the stream runs.
            if args[3] in (HOST_TO_DEVICE, DEVICE_TO_DEVICE):
                self.check(args[0], args[2], "memcpyAsync destination")
            if args[3] in (DEVICE_TO_HOST, DEVICE_TO_DEVICE):
                self.check(args[1], args[2], "memcpyAsync source")
            self.enqueue(_value(stream), lambda: self._copy(*args))

        return self._status(run)

    def cudaStreamCreate(self, ptr_ref: object) -> int:  # noqa: N802
        with self._lock:
            self._next_stream += 0x10
            self.streams[self._next_stream] = []
            ptr_ref._obj.value = self._next_stream  # type: ignore[attr-defined]
        return SUCCESS

    def cudaStreamSynchronize(self, stream: object) -> int:  # noqa: N802
        return self._status(lambda: self.synchronize(_value(stream)))

    def cudaStreamDestroy(self, stream: object) -> int:  # noqa: N802
        def run() -> None:
            handle = _value(stream)
            self.synchronize(handle)  # pending work completes before the stream goes
            del self.streams[handle]

        return self._status(run)
