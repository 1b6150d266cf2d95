"""Streamed ONNX Runtime engines: one shared session per graph structure, weights fed as inputs.

Creating an InferenceSession per stage per inference costs ~20 ms a layer (docs/design.md), more than a
layer's compute at short inputs. Every BERT layer has the same structure, so a build step turns each
stage graph into

- a *template*: the graph with its weights turned into inputs (identical layers share one template,
  deduplicated by content hash; its session holds no weights and is created once), and
- a *weights file* per stage: a small JSON header and the stage's tensors, 64-byte aligned.

Loading a stage then only reads its weights into memory (what the pool counts); unloading drops
them. Any ORT stage graph works, fp32 or int8, so a streamed set can be derived from any ORT set.

Weights-file layout: ``b"TRTBW001"``, an 8-byte little-endian header length, the UTF-8 JSON header
``{"template": "<file>", "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}]}`` and the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtbert.bundle import TensorSpec
from trtbert.engines.base import Engine, Shared
from trtbert.engines.ort import OrtEngine, OrtOptions, provider_list, session_options
from trtbert.errors import EngineError, first_line, ort_load_errors

log = logging.getLogger(__name__)

MAGIC = b"TRTBW001"
ALIGN = 64
WEIGHT_PREFIX = "w"


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def split_weights(onnx_path: Path, weights_path: Path) -> str:
    """Write a stage's weights file and its template (deduplicated, beside it); returns the template name.

    Every initializer that is not an int64 constant (shapes, axes) becomes a graph input named
    ``w000``, ``w001`` ... in initializer order.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    moved = [init for init in graph.initializer if init.data_type != onnx.TensorProto.INT64]
    renames = {init.name: f"{WEIGHT_PREFIX}{i:03d}" for i, init in enumerate(moved)}
    arrays = [(renames[init.name], numpy_helper.to_array(init)) for init in moved]
    kept = [init for init in graph.initializer if init.name not in renames]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for output in graph.output:
        if output.name in renames:  # pragma: no cover - a graph returning a weight as is
            raise EngineError(f"{onnx_path}: output {output.name} is a weight; cannot stream it")
    for name, array in arrays:
        graph.input.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
    for i, node in enumerate(graph.node):  # node names carry the source layer's path: normalise them
        node.name = f"n{i}"
    graph.name = "stage"
    template = model.SerializeToString(deterministic=True)
    template_name = f"template_{hashlib.sha256(template).hexdigest()[:12]}.onnx"
    if not (weights_path.parent / template_name).exists():
        (weights_path.parent / template_name).write_bytes(template)
    _write_weights(weights_path, template_name, arrays)
    return template_name


def _write_weights(path: Path, template: str, arrays: list[tuple[str, np.ndarray]]) -> None:
    entries, offset = [], 0
    for name, array in arrays:
        entries.append({"name": name, "dtype": array.dtype.name, "shape": list(array.shape),
                        "offset": offset, "nbytes": int(array.nbytes)})
        offset = _align(offset + array.nbytes)
    header = json.dumps({"template": template, "tensors": entries}).encode("utf-8")
    start = _align(len(MAGIC) + 8 + len(header))
    with open(path, "wb") as fh:
        fh.write(MAGIC + struct.pack("<Q", len(header)) + header)
        for entry, (_, array) in zip(entries, arrays):
            fh.seek(start + entry["offset"])
            fh.write(np.ascontiguousarray(array).tobytes())
        fh.truncate(start + offset)


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a weights file and where its data starts."""
    with open(path, "rb") as fh:
        magic = fh.read(len(MAGIC))
        if magic != MAGIC:
            raise EngineError(f"{path} is not a trtbert weights file; rebuild the engine set")
        try:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length).decode("utf-8"))
            if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
                raise ValueError("no tensor list")
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise EngineError(f"{path} has a damaged header ({exc}); rebuild the engine set") from exc
    return header, _align(len(MAGIC) + 8 + length)


@dataclass(frozen=True)
class StreamedBuilder:
    """Wraps the ONNX Runtime builder: build the stage as usual (fp32 optimised or int8), then split it
    into a shared template and a weights file. CPU only: on a GPU, feeding weights per run would copy
    them to the device on every inference."""

    inner: Any  # engines.ort_build.OrtBuilder
    shared: Shared = field(default_factory=Shared)
    backend = "ort-stream"
    suffix = ".weights"

    def check(self) -> None:
        """Refuse what the inner builder refuses, and GPU providers."""
        if self.inner.provider != "cpu":
            raise EngineError(f"--stream is for the CPU provider (weights are fed from host memory), not "
                              f"{self.inner.provider}")
        self.inner.check()

    def options(self) -> dict[str, Any]:
        """The inner builder's options: templates are optimised offline, so sessions load with it off."""
        return {**self.inner.options(), "streamed": True}

    def versions(self) -> dict[str, str]:
        """Library versions that produced the files."""
        return self.inner.versions()

    def build(self, src: Path, dst: Path, stage: Any) -> None:
        """Build ``src`` with the inner builder, then split it into ``dst`` (+ its template)."""
        built = dst.with_suffix(".built.onnx")
        try:
            self.inner.build(src, built, stage)
            split_weights(built, dst)
        finally:
            built.unlink(missing_ok=True)

    def engine(self, path: Path, stage: Any) -> Engine:
        """An engine to check the built stage with."""
        fields = set(OrtOptions.__dataclass_fields__)
        options = OrtOptions(**{k: v for k, v in self.options().items() if k in fields})
        return StreamedEngine(path, stage.name, stage.inputs, stage.outputs, options, shared=self.shared)

    def close(self) -> None:
        """Drop the template sessions of the build's checks."""
        self.shared.close()


def template_session(path: Path, options: OrtOptions) -> Any:
    """An ONNX Runtime session over a template graph (no weights: a few hundred KiB)."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), sess_options=session_options(options), providers=provider_list(options))
    except ort_load_errors() as exc:
        raise EngineError(f"cannot load template {path}: {first_line(exc)}; rebuild the engine set "
                          "(trtbert build ... --overwrite)") from exc


class StreamedEngine(OrtEngine):
    """A stage whose weights are read from its weights file on load and fed to a shared template session."""

    backend = "ort-stream"

    def __init__(
        self,
        path: Path,
        name: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        options: OrtOptions | None = None,
        shared: Shared | None = None,
    ) -> None:
        super().__init__(path, name, inputs, outputs, options)
        self.shared = shared or Shared()
        self._weights: dict[str, np.ndarray] = {}
        self._template_name: str | None = None

    def files(self) -> list[Path]:
        """The weights file and its template."""
        if self._template_name is None:
            try:
                self._template_name = str(read_header(self.path)[0]["template"])
            except (OSError, EngineError, ValueError, KeyError):  # load() reports the damaged file
                return [self.path]
        return [self.path] + ([self.path.parent / self._template_name] if self._template_name else [])

    def _load(self) -> None:
        header, start = read_header(self.path)
        template = self.path.parent / header["template"]
        self._session = self.shared.get(("template", str(template), self.options),
                                        lambda: template_session(template, self.options))
        buffer = np.empty(self.file_size - start, dtype=np.uint8)
        with open(self.path, "rb") as fh:
            fh.seek(start)
            if fh.readinto(memoryview(buffer)) != buffer.nbytes:
                raise EngineError(f"{self.path} is truncated; rebuild the engine set")
        weights = {}
        for t in header["tensors"]:
            raw = buffer[t["offset"]: t["offset"] + t["nbytes"]]
            weights[t["name"]] = raw.view(np.dtype(t["dtype"])).reshape(t["shape"])
        self._weights = weights

    def _unload(self) -> None:
        self._weights = {}
        self._session = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, {**feeds, **self._weights})
        return dict(zip(self._output_names, values))
