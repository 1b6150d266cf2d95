"""The manifest: file and tensor names, the dataclasses of ``manifest.json``, and its schema check.

Parsing validates every field's type and names the one that is wrong ("manifest.json: stages[2].inputs
must be a list"), so a hand-edited or damaged manifest is one clear line, never a traceback.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trtbert.errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ONNX_DIR = "onnx"
ENGINES_DIR = "engines"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_JSON = f"{TOKENIZER_DIR}/tokenizer.json"
WORD_EMBEDDINGS = f"{ONNX_DIR}/word_embeddings.npy"
SOURCE_SET = "onnx"  # the exported fp32 graphs, runnable as they are by ONNX Runtime
WORK_DIR = ".trtbert-tmp"  # the bundle's one temporary area (builds in progress); never listed
TRT_CACHE_DIR = "trt_cache"  # ONNX Runtime's TensorRT engine cache inside a set, written at run time

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
PROBLEM_TYPES = (CLASSIFICATION, REGRESSION)


def stage_name(kind: str, layer: int | None = None) -> str:
    """Stage name: ``embeddings``, ``layer_01`` ... (layers are numbered from 1), ``head_01`` ..."""
    return kind if layer is None else f"{kind}_{layer:02d}"


def onnx_file(name: str) -> str:
    """Relative path of a stage's ONNX graph."""
    return f"{ONNX_DIR}/{name}.onnx"


def set_dir(name: str, generation: str) -> str:
    """Relative directory of one build of an engine set: ``engines/<name>/<generation>``.

    Each build writes a new generation and the manifest switches to it in one atomic rename, so a kill
    at any instant leaves the old or the new set complete and recorded; the next writer removes
    generations the manifest does not reference."""
    return f"{ENGINES_DIR}/{name}/{generation}"


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
    """Engines built for one backend and precision: stage name -> relative engine file.

    ``files`` lists every file the set reads (engines, templates, caches it ships), so each is verified;
    ``costs`` is each engine file's resident cost measured at build time (``{"host": bytes, "device":
    bytes}``), and ``shared`` what the set holds once however many of its engines are loaded.
    """

    name: str
    backend: str
    precision: str
    stage_files: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    costs: dict[str, dict[str, int]] = field(default_factory=dict)
    shared: dict[str, int] = field(default_factory=dict)
    directory: str | None = None


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
    def from_json(cls, data: Any) -> Manifest:
        """Parse and validate a manifest dict; :class:`BundleError` naming the first wrong field."""
        return _parse_manifest(data)


# --- schema -------------------------------------------------------------------------------------------


class _Bad(Exception):
    """A field of the manifest is wrong: ``where`` names it."""

    def __init__(self, where: str, want: str) -> None:
        super().__init__(f"{where} must be {want}")


def _get(data: dict[str, Any], key: str, where: str, check: Callable[[Any, str], Any], default: Any = ...) -> Any:
    if key not in data:
        if default is ...:
            raise _Bad(f"{where}.{key}".lstrip("."), "present")
        return default
    return check(data[key], f"{where}.{key}".lstrip("."))


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(where, "an object")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _Bad(where, "a string")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _int(value: Any, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _Bad(where, f"an integer >= {low}")
    return value


def _pos(value: Any, where: str) -> int:
    return _int(value, where, 1)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Bad(where, "true or false")
    return value


def _one_of(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    """A check that the value is one of ``choices``."""
    def check(value: Any, where: str) -> str:
        if _str(value, where) not in choices:
            raise _Bad(where, f"one of {', '.join(choices)}")
        return value
    return check


def _list(value: Any, where: str, item: Callable[[Any, str], Any], nonempty: bool = False) -> tuple[Any, ...]:
    if not isinstance(value, list) or (nonempty and not value):
        raise _Bad(where, "a non-empty list" if nonempty else "a list")
    return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))


def _tensor(value: Any, where: str) -> TensorSpec:
    d = _obj(value, where)

    def dim(v: Any, w: str) -> int | str:
        if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            return v
        raise _Bad(w, "a size or an axis name")

    return TensorSpec(_get(d, "name", where, _str), _get(d, "dtype", where, _str), _get(d, "shape", where,
                      lambda v, w: _list(v, w, dim)))


def _stage(value: Any, where: str) -> Stage:
    d = _obj(value, where)
    return Stage(
        name=_get(d, "name", where, _str), kind=_get(d, "kind", where, _one_of(STAGE_KINDS)), file=_get(d, "file", where, _str),
        inputs=_get(d, "inputs", where, lambda v, w: _list(v, w, _tensor, nonempty=True)),
        outputs=_get(d, "outputs", where, lambda v, w: _list(v, w, _tensor, nonempty=True)),
        layer=_get(d, "layer", where, lambda v, w: None if v is None else _pos(v, w), None),
        exit=_get(d, "exit", where, _bool, False),
    )


def _file(value: Any, where: str) -> FileEntry:
    d = _obj(value, where)
    digest = _get(d, "sha256", where, _str)
    if len(digest) != 64:
        raise _Bad(f"{where}.sha256", "a 64-digit hex sha256")
    return FileEntry(_get(d, "path", where, _str), _get(d, "size", where, _int), digest)


def _model(value: Any, where: str) -> ModelInfo:
    d = _obj(value, where)
    return ModelInfo(
        source=_get(d, "source", where, _str), revision=_get(d, "revision", where, _opt_str, None),
        model_type=_get(d, "model_type", where, _str), hidden_size=_get(d, "hidden_size", where, _pos),
        embedding_size=_get(d, "embedding_size", where, _pos), num_layers=_get(d, "num_layers", where, _pos),
        num_heads=_get(d, "num_heads", where, _pos), vocab_size=_get(d, "vocab_size", where, _pos),
        max_positions=_get(d, "max_positions", where, _pos),
        problem_type=_get(d, "problem_type", where, _one_of(PROBLEM_TYPES)),
        labels=_get(d, "labels", where, lambda v, w: _list(v, w, _str)),
        uses_token_type_ids=_get(d, "uses_token_type_ids", where, _bool),
        pad_token_id=_get(d, "pad_token_id", where, _int),
    )


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _Bad(where, "a number")
    return float(value)


def _cost(value: Any, where: str) -> dict[str, int]:
    d = _obj(value, where)
    return {k: _int(v, f"{where}.{k}") for k, v in d.items()}


def _engine_set(value: Any, where: str) -> EngineSet:
    d = _obj(value, where)
    return EngineSet(
        name=_get(d, "name", where, _str), backend=_get(d, "backend", where, _str),
        precision=_get(d, "precision", where, _str),
        stage_files={k: _str(v, f"{where}.stage_files.{k}") for k, v in _get(d, "stage_files", where, _obj).items()},
        options=_get(d, "options", where, _obj, {}), versions=_get(d, "versions", where, _obj, {}),
        validation={k: _float(v, f"{where}.validation.{k}") for k, v in _get(d, "validation", where, _obj, {}).items()},
        files=_get(d, "files", where, lambda v, w: _list(v, w, _str), ()),
        costs={k: _cost(v, f"{where}.costs.{k}") for k, v in _get(d, "costs", where, _obj, {}).items()},
        shared=_get(d, "shared", where, _cost, {}),
        directory=_get(d, "directory", where, _opt_str, None),
    )


def _parse_manifest(data: Any) -> Manifest:
    if not isinstance(data, dict):
        raise BundleError(f"{MANIFEST} is not a JSON object; re-export the bundle")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"manifest format version {version!r} is not supported (this trtbert reads version "
            f"{FORMAT_VERSION}); re-export the bundle with this trtbert"
        )
    try:
        manifest = Manifest(
            model=_get(data, "model", "", _model),
            stages=_get(data, "stages", "", lambda v, w: _list(v, w, _stage, nonempty=True)),
            files={k: _file(v, f"files.{k}") for k, v in _get(data, "files", "", _obj).items()},
            exit_layers=_get(data, "exit_layers", "", lambda v, w: _list(v, w, _pos, nonempty=True)),
            heads=_get(data, "heads", "", _obj, {}),
            engine_sets={k: _engine_set(v, f"engine_sets.{k}") for k, v in _get(data, "engine_sets", "", _obj, {}).items()},
            exit_policy=_get(data, "exit_policy", "", lambda v, w: None if v is None else _obj(v, w), None),
            export=_get(data, "export", "", _obj, {}),
            format_version=version,
        )
        _check_consistent(manifest)
    except _Bad as exc:
        raise BundleError(f"{MANIFEST} is malformed: {exc}; re-export the bundle") from None
    return manifest


def _check_consistent(m: Manifest) -> None:
    """Cross-field rules: embeddings first, layers numbered 1..N, exits on layers, files listed."""
    if m.stages[0].kind != EMBEDDINGS:
        raise _Bad("stages[0].kind", f"{EMBEDDINGS!r} (the chain starts with the embeddings)")
    depths = [s.layer for s in m.stages if s.kind == LAYER]
    if depths != list(range(1, m.model.num_layers + 1)):
        raise _Bad("stages", f"layers 1..{m.model.num_layers} in order (model.num_layers)")
    if list(m.exit_layers) != sorted(set(m.exit_layers)) or m.exit_layers[-1] != m.model.num_layers:
        raise _Bad("exit_layers", f"increasing layer numbers ending at the last layer ({m.model.num_layers})")
    for i, s in enumerate(m.stages):
        if s.file not in m.files:
            raise _Bad(f"stages[{i}].file", f"a file listed under files ({s.file!r} is not)")
    for name, es in m.engine_sets.items():
        missing = sorted({s.name for s in m.stages} - set(es.stage_files))
        if missing:
            raise _Bad(f"engine_sets.{name}.stage_files", f"an engine for every stage (missing {', '.join(missing)})")
        for rel in {*es.stage_files.values(), *es.files}:
            if rel not in m.files:
                raise _Bad(f"engine_sets.{name}", f"files listed under files ({rel!r} is not)")
