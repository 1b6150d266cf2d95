"""Fake TensorRT and CUDA runtime, so that trtbert's TensorRT glue and the real Polygraphy above it run on a CPU.

Only the two missing lowest layers are fake:

* ``fake_trt.cudart.FakeCudart`` replaces libcudart under Polygraphy's real ``polygraphy.cuda`` (as the
  ctypes handle of its ``Cuda`` wrapper): host memory stands in for the device, every allocation is tracked;
* ``fake_trt.tensorrt`` is imported as ``tensorrt`` (8.6 or 10.x API) and runs the engines' math with ONNX Runtime.

Everything above (Polygraphy's ``TrtRunner``, ``EngineFromBytes``, ``DeviceArray``, ``Stream``, its builder
loaders, and trtbert's ``engines/tensorrt.py``) is the real code. TensorRT itself is not run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from fake_trt import tensorrt as fake_tensorrt
from fake_trt.cudart import FakeCudart

__all__ = ["FakeCudart", "assert_released", "fake_tensorrt", "install", "uninstall", "write_engine"]


def _reset_polygraphy_imports() -> None:
    """Forget the tensorrt module Polygraphy's lazy imports have cached, so that the next use imports
    whatever ``sys.modules["tensorrt"]`` is then (the fake during a test, the real one or none after)."""
    for name, module in list(sys.modules.items()):
        if not name.startswith("polygraphy") or module is None:
            continue
        for value in list(vars(module).values()):
            if type(value).__name__ == "LazyModule":
                cached = value.__dict__.get("module")
                if cached is not None and getattr(cached, "__name__", "").split(".")[-1] == "tensorrt":
                    object.__setattr__(value, "module", None)


def install(monkeypatch: Any, version: str = "10.3.0", capacity: int | None = None) -> FakeCudart:
    """Install a fake device under ``polygraphy.cuda`` and the fake ``tensorrt`` (as ``version``) for one test."""
    import polygraphy.cuda.cuda as pcuda
    from polygraphy.backend.trt import util as trt_util

    device = FakeCudart(capacity)
    wrapper = pcuda.Cuda.__new__(pcuda.Cuda)  # the real wrapper class, without loading libcudart
    wrapper.handle = device
    monkeypatch.setattr(pcuda, "G_CUDA", wrapper)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)
    monkeypatch.setattr(trt_util, "TRT_LOGGER", None)  # Polygraphy's logger subclasses tensorrt.ILogger
    fake_tensorrt.configure(version, device)
    _reset_polygraphy_imports()
    return device


def uninstall() -> None:
    """Undo what ``install`` did beyond the monkeypatch (call before the monkeypatch is undone)."""
    _reset_polygraphy_imports()
    fake_tensorrt.configure("10.3.0", None)


def write_engine(onnx_path: Path, dst: Path, profiles: dict[str, tuple[tuple[int, ...], ...]], **options: Any) -> Path:
    """Write a fake serialized engine of the ONNX graph at ``onnx_path`` (see ``make_engine_bytes``)."""
    dst.write_bytes(fake_tensorrt.make_engine_bytes(Path(onnx_path).read_bytes(), profiles, **options))
    return dst


def assert_released(device: FakeCudart) -> None:
    """No device memory, stream or queued work left, and no CUDA error on the way."""
    device.synchronize_all()
    assert device.errors == [], device.errors
    assert device.allocations == {}, f"device memory still allocated: {device.live()}"
    assert device.streams == {}, f"streams not destroyed: {sorted(device.streams)}"
