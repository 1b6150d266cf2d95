"""Streamed ONNX Runtime engines: one shared session per graph structure, weights fed as inputs straight
from the page cache.

Creating an InferenceSession per stage costs 4-5 ms for an int8 bert-base layer and 17-31 ms for an
fp32 one (mostly packing the weights), more than the layer's compute at short inputs. Every BERT layer
has the same structure, so a build step turns each stage graph into

- a *template*: the graph with its weights turned into inputs (identical layers share one template,
  deduplicated by content hash; its session holds no weights and is created once), and
- a *weights file* per stage (``<stage>.weights``): the stage's tensors in the safetensors format
  (``__metadata__`` names the template), readable by any safetensors reader.

Loading a stage maps its weights file read-only and faults its pages in (``MAP_POPULATE``): no copy,
the pages are the page cache's; the arrays are views of the mapping, fed to the template session as
inputs. Unloading unmaps them. A load is about 0.3 ms for an int8 bert-base layer (0.6 ms fp32) instead
of a 0.7 ms (2.9 ms) read into fresh memory, and it runs on the pool's prefetch thread. What weights as
inputs cost is ONNX Runtime's weight pre-packing: a layer computes 1.2-1.4x slower than with its weights
as initializers (docs/performance.md has the per-layer breakdown). Any ORT stage graph works, fp32 or
quantised, so a streamed set can be derived from any ORT set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtbert.bundle import TensorSpec
from trtbert.engines.base import Engine, Shared
from trtbert.engines.ort import OrtEngine, OrtOptions, provider_list, session_options
from trtbert.errors import EngineError, first_line, missing_extra, ort_load_errors

log = logging.getLogger(__name__)

WEIGHT_PREFIX = "w"
FORMAT = "trtbert-stream/2"
LEGACY_MAGIC = b"TRTBW001"  # the hand-made format of earlier builds
MAX_HEADER = 100 << 20  # safetensors' own bound on the JSON header
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
          "BOOL": np.bool_}


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
    arrays = {renames[init.name]: numpy_helper.to_array(init) for init in moved}
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
    for name, array in arrays.items():
        graph.input.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
    for i, node in enumerate(graph.node):  # node names carry the source layer's path: normalise them
        node.name = f"n{i}"
    graph.name = "stage"
    template = model.SerializeToString(deterministic=True)
    template_name = f"template_{hashlib.sha256(template).hexdigest()[:12]}.onnx"
    if not (weights_path.parent / template_name).exists():
        (weights_path.parent / template_name).write_bytes(template)
    write_weights(weights_path, template_name, arrays)
    return template_name


def write_weights(path: Path, template: str, arrays: dict[str, np.ndarray]) -> None:
    """A safetensors file of ``arrays`` whose metadata names the template graph."""
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise missing_extra("safetensors", "export") from None
    tensors = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    save_file(tensors, str(path), metadata={"template": template, "format": FORMAT})


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """A weights file's safetensors header (tensor name -> dtype, shape, data offsets; ``__metadata__``)
    and where its data starts; every entry checked against the file's size."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head == LEGACY_MAGIC:
                raise EngineError(f"{path} is in the weights format of an older trtbert; rebuild the set "
                                  "(trtbert build ... --stream --overwrite)")
            if len(head) != 8:
                raise ValueError("shorter than its 8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > min(MAX_HEADER, size - 8):
                raise ValueError(f"header length {length} exceeds the file")
            header = json.loads(fh.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise EngineError(f"{path} is not a trtbert weights file (safetensors): {exc}; rebuild the engine set") from None
    start = 8 + length
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__", {}), dict):
        raise EngineError(f"{path} is not a trtbert weights file (safetensors): bad header; rebuild the engine set")
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(DTYPES[entry["dtype"]])
            shape = [int(d) for d in entry["shape"]]
            begin, end = (int(v) for v in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise EngineError(f"{path}: tensor {name} has a damaged entry {entry!r}; rebuild the engine set") from None
        if min(shape, default=0) < 0 or end - begin != dtype.itemsize * math.prod(shape) or begin < 0 \
                or start + end > size:
            raise EngineError(f"{path}: tensor {name} ({entry['dtype']} {shape}, bytes {begin}..{end}) does not fit "
                              f"the file ({size - start} data bytes); the file is truncated or damaged: rebuild the set")
    return header, start


def template_of(header: dict[str, Any], path: Path) -> str:
    """The template graph a weights file names."""
    template = header.get("__metadata__", {}).get("template")
    if not isinstance(template, str) or "/" in template or not template.endswith(".onnx"):
        raise EngineError(f"{path} names no template graph; rebuild the engine set")
    return template


def map_weights(path: Path) -> tuple[mmap.mmap, dict[str, np.ndarray], str]:
    """Map a weights file read-only with its pages faulted in; its arrays (views of the mapping, no copy)
    and its template's name. Close the mapping only after dropping every array."""
    header, start = read_header(path)
    template = template_of(header, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mapped = mmap.mmap(fd, 0, flags=flags, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    if not getattr(mmap, "MAP_POPULATE", 0) and hasattr(mapped, "madvise"):  # pragma: no cover - not Linux
        mapped.madvise(mmap.MADV_WILLNEED)
    data = np.frombuffer(mapped, dtype=np.uint8)
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        arrays[name] = data[start + begin: start + end].view(DTYPES[entry["dtype"]]).reshape(entry["shape"])
    del data
    return mapped, arrays, template


@dataclass(frozen=True)
class StreamedBuilder:
    """Wraps the ONNX Runtime builder: build the stage as usual (fp32, int8, int4), then split it
    into a shared template and a weights file. CPU only: on a GPU, feeding weights per run would copy
    them to the device on every inference."""

    inner: Any  # engines.ort_build.OrtBuilder
    shared: Shared = field(default_factory=Shared)
    backend = "ort-stream"
    suffix = ".weights"  # safetensors content

    def check(self) -> None:
        """Refuse what the inner builder refuses, and GPU providers."""
        if self.inner.provider != "cpu":
            raise EngineError(f"--stream is for the CPU provider (weights are fed from host memory), not "
                              f"{self.inner.provider}")
        if self.inner.precision == "int4":  # MatMulNBits re-packs weights fed as inputs on every run
            raise EngineError("int4 sets cannot stream: MatMulNBits with its weights as inputs ran 60 ms per "
                              "bert-base layer (1.6 ms resident); stream an int8 set instead")
        self.inner.check()

    def options(self) -> dict[str, Any]:
        """The inner builder's options: templates are optimised offline, so sessions load with it off."""
        return {**self.inner.options(), "streamed": True, "weights_format": FORMAT}

    def warnings(self) -> list[str]:
        """The inner builder's warnings."""
        return list(getattr(self.inner, "warnings", lambda: [])())

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
        """Drop the template sessions of the build's checks and the inner builder's intermediates."""
        self.shared.close()
        self.inner.close()


def template_session(path: Path, options: OrtOptions) -> Any:
    """An ONNX Runtime session over a template graph (no weights: a few KiB)."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), sess_options=session_options(options), providers=provider_list(options))
    except ort_load_errors() as exc:
        raise EngineError(f"cannot load template {path}: {first_line(exc)}; rebuild the engine set "
                          "(trtbert build ... --overwrite)") from exc


class StreamedEngine(OrtEngine):
    """A stage whose weights are mapped from its weights file on load and fed to a shared template session."""

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
        self._mapped: mmap.mmap | None = None
        self._template_name: str | None = None

    def files(self) -> list[Path]:
        """The weights file and its template."""
        if self._template_name is None:
            try:
                self._template_name = template_of(read_header(self.path)[0], self.path)
            except (OSError, EngineError):  # load() reports the damaged file
                return [self.path]
        return [self.path, self.path.parent / self._template_name]

    def _load(self) -> None:
        mapped, weights, template_name = map_weights(self.path)
        try:
            template = self.path.parent / template_name
            self._session = self.shared.get(("template", str(template), self.options),
                                            lambda: template_session(template, self.options))
            expected = {i.name for i in self._session.get_inputs()} - {t.name for t in self.inputs}
            if expected != set(weights):
                raise EngineError(f"{self.path} holds tensors {sorted(set(weights) ^ expected)} its template "
                                  f"{template_name} does not take (or lacks them); rebuild the engine set")
        except BaseException:
            weights.clear()
            mapped.close()
            self._session = None
            raise
        self._weights, self._mapped = weights, mapped

    def _unload(self) -> None:
        self._weights = {}
        self._session = None
        mapped, self._mapped = self._mapped, None
        if mapped is not None:
            try:
                mapped.close()
            except BufferError:  # a caller still holds a weight array: unmapped when the last one goes
                pass

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, {**feeds, **self._weights})
        return dict(zip(self._output_names, values))
