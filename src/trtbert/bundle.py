"""The on-disk contract: manifest dataclasses, file and tensor names, checksums, atomic writes.

A bundle is a directory::

    bundle/
      manifest.json            written last, by atomic rename; the only hand-off between stages
      tokenizer/tokenizer.json (+ the model's other tokenizer files)
      onnx/word_embeddings.npy the word-embedding table, memory-mapped by the runtime (row gather)
      onnx/embeddings.onnx     position/type embeddings + LayerNorm
      onnx/layer_01.onnx ...   one graph per layer; emits its exit head's logits where it has one
      engines/<set>/...        per-stage engines built by ``trtbert build``

Every other module imports its names and paths from here; nobody else builds bundle paths.
A bundle is either complete (manifest present, every listed file present with its checksum)
or rejected by :func:`load_bundle` with one clear line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtbert.errors import BundleError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ONNX_DIR = "onnx"
ENGINES_DIR = "engines"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_JSON = f"{TOKENIZER_DIR}/tokenizer.json"
WORD_EMBEDDINGS = f"{ONNX_DIR}/word_embeddings.npy"
SOURCE_SET = "onnx"  # the exported fp32 graphs, runnable as they are by ONNX Runtime

# Tensor names shared by the exporter, the engines and the runtime.
INPUT_IDS = "input_ids"
TOKEN_TYPE_IDS = "token_type_ids"
ATTENTION_MASK = "attention_mask"
INPUTS_EMBEDS = "inputs_embeds"
HIDDEN = "hidden_states"
HIDDEN_OUT = "hidden_states_out"
LOGITS = "logits"

EMBEDDINGS, LAYER, HEAD = "embeddings", "layer", "head"
STAGE_KINDS = (EMBEDDINGS, LAYER, HEAD)
CLASSIFICATION, REGRESSION = "single_label_classification", "regression"


def stage_name(kind: str, layer: int | None = None) -> str:
    """Stage name: ``embeddings``, ``layer_01`` ... (layers are numbered from 1), ``head_01`` ..."""
    return kind if layer is None else f"{kind}_{layer:02d}"


def onnx_file(name: str) -> str:
    """Relative path of a stage's ONNX graph."""
    return f"{ONNX_DIR}/{name}.onnx"


def engine_dir(set_name: str) -> str:
    """Relative directory of an engine set."""
    return f"{ENGINES_DIR}/{set_name}"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype (numpy name) and shape (ints or symbolic names)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class FileEntry:
    """A file of the bundle, relative to its root, with its byte size and sha256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Stage:
    """One step of execution. ``layer`` is the 1-based depth for layers and heads, None for embeddings.

    ``exit`` says whether the stage emits exit logits. Several stages may share one ``file``
    (ALBERT's one layer serves every depth); memory is counted once per file.
    """

    name: str
    kind: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    layer: int | None = None
    exit: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know of the source model, without opening a weight file."""

    source: str
    revision: str | None
    model_type: str
    hidden_size: int
    embedding_size: int
    num_layers: int
    num_heads: int
    vocab_size: int
    max_positions: int
    problem_type: str
    labels: tuple[str, ...]
    uses_token_type_ids: bool
    pad_token_id: int


@dataclass(frozen=True)
class EngineSet:
    """Engines built for one backend and precision: stage name -> relative engine file."""

    name: str
    backend: str
    precision: str
    stage_files: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """The whole manifest.json."""

    model: ModelInfo
    stages: tuple[Stage, ...]
    files: dict[str, FileEntry]
    exit_layers: tuple[int, ...]
    heads: dict[str, Any] = field(default_factory=dict)
    engine_sets: dict[str, EngineSet] = field(default_factory=dict)
    exit_policy: dict[str, Any] | None = None
    export: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def layers(self) -> tuple[Stage, ...]:
        """Layer stages in execution order."""
        return tuple(s for s in self.stages if s.kind == LAYER)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for s in self.stages:
            if s.name == name:
                return s
        raise BundleError(f"bundle has no stage {name!r}; stages: {', '.join(s.name for s in self.stages)}")

    def head_for(self, layer: int) -> Stage | None:
        """The separate head stage of a layer, if the family keeps heads apart (ALBERT)."""
        for s in self.stages:
            if s.kind == HEAD and s.layer == layer:
                return s
        return None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """Parse a manifest dict; raises :class:`BundleError` on a wrong version or shape."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"manifest format version {version!r} is not supported (this trtbert reads version "
                f"{FORMAT_VERSION}); re-export the bundle with this trtbert"
            )
        try:
            return cls(
                model=ModelInfo(**{**data["model"], "labels": tuple(data["model"]["labels"])}),
                stages=tuple(_stage_from_json(s) for s in data["stages"]),
                files={k: FileEntry(**v) for k, v in data["files"].items()},
                exit_layers=tuple(data["exit_layers"]),
                heads=dict(data.get("heads") or {}),
                engine_sets={k: EngineSet(**v) for k, v in (data.get("engine_sets") or {}).items()},
                exit_policy=data.get("exit_policy"),
                export=dict(data.get("export") or {}),
                format_version=version,
            )
        except (KeyError, TypeError) as exc:
            raise BundleError(f"manifest is malformed ({type(exc).__name__}: {exc}); re-export the bundle") from None


def _stage_from_json(data: dict[str, Any]) -> Stage:
    tensors = lambda items: tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in items)  # noqa: E731
    return Stage(**{**data, "inputs": tensors(data["inputs"]), "outputs": tensors(data["outputs"])})


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(root: Path, rel: str) -> FileEntry:
    """Measure a file of a bundle being written."""
    path = root / rel
    return FileEntry(path=rel, size=path.stat().st_size, sha256=sha256_file(path))


@dataclass(frozen=True)
class Bundle:
    """A loaded, checked bundle: its root and manifest."""

    root: Path
    manifest: Manifest

    def path(self, rel: str) -> Path:
        """Absolute path of a file of the bundle."""
        return self.root / rel

    def file_size(self, rel: str) -> int:
        """Size of a listed file, from the manifest."""
        return self.manifest.files[rel].size

    def engine_set(self, name: str) -> EngineSet:
        """The engine set ``name``; ``onnx`` is the exported graphs themselves."""
        if name == SOURCE_SET:
            return EngineSet(
                name=SOURCE_SET, backend="ort", precision="fp32",
                stage_files={s.name: s.file for s in self.manifest.stages},
            )
        sets = self.manifest.engine_sets
        if name not in sets:
            built = ", ".join([SOURCE_SET, *sets]) or SOURCE_SET
            raise BundleError(
                f"bundle {self.root} has no engine set {name!r} (has: {built}); "
                f"build it with: trtbert build {self.root} --name {name} ..."
            )
        return sets[name]

    def verify(self, files: list[str] | None = None, checksums: bool = True) -> None:
        """Check that listed files exist with their size (and sha256); raise :class:`BundleError` if not."""
        entries = self.manifest.files
        for rel in files if files is not None else list(entries):
            entry = entries.get(rel)
            if entry is None:
                raise BundleError(f"bundle {self.root}: {rel} is not listed in the manifest; re-export the bundle")
            path = self.root / rel
            if not path.is_file():
                raise BundleError(f"bundle {self.root} is incomplete: {rel} is missing; re-export the bundle")
            if path.stat().st_size != entry.size:
                raise BundleError(
                    f"bundle {self.root} is corrupted: {rel} has {path.stat().st_size} bytes, "
                    f"the manifest says {entry.size}; re-export or rebuild it"
                )
            if checksums and sha256_file(path) != entry.sha256:
                raise BundleError(
                    f"bundle {self.root} is corrupted: {rel} does not match its sha256 in the manifest; "
                    "re-export or rebuild it"
                )

    def files_of_set(self, set_name: str) -> list[str]:
        """Files needed to run with one engine set (engines, word embeddings, tokenizer)."""
        engines = self.engine_set(set_name)
        wanted = set(engines.stage_files.values())
        wanted.update(f for f in self.manifest.files if f == WORD_EMBEDDINGS or f.startswith(TOKENIZER_DIR + "/"))
        return sorted(wanted)


def load_bundle(root: str | Path, verify: str = "full") -> Bundle:
    """Open a bundle and check it: manifest schema and version, every file present, checksums.

    ``verify`` is ``full`` (sizes and sha256 of every file), ``sizes`` or ``none``.
    """
    root = Path(root)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle {root} does not exist; create it with: trtbert export --model MODEL --out {root}")
    if not manifest_path.is_file():
        raise BundleError(
            f"{root} is not a complete bundle: {MANIFEST} is missing (an interrupted export?); re-export it"
        )
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} cannot be read ({exc}); re-export the bundle") from None
    if not isinstance(data, dict):
        raise BundleError(f"{manifest_path} is not a manifest object; re-export the bundle")
    bundle = Bundle(root=root, manifest=Manifest.from_json(data))
    if verify != "none":
        bundle.verify(checksums=verify == "full")
    return bundle


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write manifest.json atomically (temporary file, fsync, rename)."""
    atomic_write_text(root / MANIFEST, json.dumps(manifest.to_json(), indent=2) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file so that readers see either the old or the new content, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable(target: Path, overwrite: bool = False, need_bytes: int = 0) -> None:
    """Fail early, before any heavy work, if ``target`` cannot be written (exists, no permission, no space)."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise BundleError(f"{target} already exists; pass --overwrite to replace it")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise BundleError(f"cannot write to {parent}: {exc.strerror or exc}") from None
    free = shutil.disk_usage(parent).free
    if need_bytes and free < need_bytes:
        raise BundleError(
            f"not enough disk space in {parent}: {free / 2**20:.0f} MiB free, about {need_bytes / 2**20:.0f} MiB needed"
        )


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success rename it to ``target``.

    On any error (or interrupt) the temporary directory is removed and ``target`` is left as it was.
    """
    target = Path(target)
    check_writable(target, overwrite)
    parent = target.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    try:
        yield tmp
        if target.exists():
            old = parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
