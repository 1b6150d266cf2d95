"""The on-disk contract: one package owns the bundle's names, manifest, files and stage chain.

A bundle is a directory::

    bundle/
      manifest.json            written last, by atomic rename; the only hand-off between stages
      tokenizer/tokenizer.json (+ the model's other tokenizer files)
      onnx/word_embeddings.npy the word-embedding table; the runtime reads only the input's rows
      onnx/embeddings.onnx     position/type embeddings + LayerNorm
      onnx/layer_01.onnx ...   one graph per layer; emits its exit head's logits where it has one
      engines/<set>.<id>/...   per-stage engines built by ``trtbert build`` (the manifest names the directory)

Every other module imports its names and paths from here; nobody else builds bundle paths. A bundle
is either complete (manifest present, every listed file present with its checksum) or rejected by
:func:`load_bundle` with one clear line. Modules: ``manifest`` (names, dataclasses, schema), ``files``
(atomic writes, overwrite rules, temporary areas, lock), ``store`` (open, verify, update), ``samples``
(the inputs every stage is checked on), ``chain`` (running the stages in order).
"""

from trtbert.bundle.files import (
    atomic_directory,
    atomic_write_text,
    check_replaceable,
    check_space,
    check_writable,
    clean_stale,
    locked,
    make_dir,
    no_space,
    os_error,
    sha256_file,
    tmp_name,
    work_area,
)
from trtbert.bundle.manifest import (
    ATTENTION_MASK,
    CLASSIFICATION,
    EMBEDDINGS,
    ENGINES_DIR,
    FORMAT_VERSION,
    HEAD,
    HIDDEN,
    HIDDEN_OUT,
    INPUT_IDS,
    INPUTS_EMBEDS,
    LAYER,
    LOGITS,
    MANIFEST,
    ONNX_DIR,
    PROBLEM_TYPES,
    REGRESSION,
    SOURCE_SET,
    STAGE_KINDS,
    TOKEN_TYPE_IDS,
    TOKENIZER_DIR,
    TOKENIZER_JSON,
    TRT_CACHE_DIR,
    WORD_EMBEDDINGS,
    WORK_DIR,
    EngineSet,
    FileEntry,
    Manifest,
    ModelInfo,
    Stage,
    TensorSpec,
    onnx_file,
    set_dir,
    stage_name,
)
from trtbert.bundle.store import (
    Bundle,
    FileStamp,
    file_entry,
    load_bundle,
    read_manifest,
    replace_policy,
    update_manifest,
    write_manifest,
)

__all__ = [
    "ATTENTION_MASK", "CLASSIFICATION", "EMBEDDINGS", "ENGINES_DIR", "FORMAT_VERSION", "HEAD", "HIDDEN",
    "HIDDEN_OUT", "INPUTS_EMBEDS", "INPUT_IDS", "LAYER", "LOGITS", "MANIFEST", "ONNX_DIR", "PROBLEM_TYPES",
    "REGRESSION", "SOURCE_SET", "STAGE_KINDS", "TOKENIZER_DIR", "TOKENIZER_JSON", "TOKEN_TYPE_IDS",
    "TRT_CACHE_DIR", "WORD_EMBEDDINGS", "WORK_DIR", "Bundle", "EngineSet", "FileEntry", "FileStamp", "Manifest", "ModelInfo", "Stage",
    "TensorSpec", "atomic_directory", "atomic_write_text", "check_replaceable", "check_space",
    "check_writable", "clean_stale", "file_entry", "load_bundle", "locked", "make_dir", "no_space", "onnx_file", "os_error",
    "read_manifest", "replace_policy", "set_dir", "sha256_file", "stage_name", "tmp_name", "update_manifest",
    "work_area", "write_manifest",
]
