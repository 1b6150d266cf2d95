"""The training output directory: built in a temporary directory beside ``--out``, renamed into place;
``--overwrite`` replaces only a checkpoint trtbert wrote, never the model being trained."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trtbert.bundle.files import atomic_directory, check_replaceable, os_error
from trtbert.train.options import TrainOptions, TrainResult

log = logging.getLogger(__name__)

SUMMARY = "train_summary.json"


def check_out(options: TrainOptions, source: str | None = None) -> Path:
    """Refuse an ``--out`` that would destroy what trtbert did not write (an existing directory without
    ``--overwrite``, user files, the model being trained); return the resolved path."""
    out = Path(options.out).expanduser().resolve()
    protect = [source] if source is not None and Path(source).is_dir() else []
    check_replaceable(out, options.overwrite, protect)
    return out


def summary_json(result: TrainResult, options: TrainOptions) -> dict[str, Any]:
    """The content of ``train_summary.json``."""
    return {
        "task": result.task,
        "metric": result.metric,
        "metric_units": "points (x100)",
        "num_layers": result.num_layers,
        "options": options.to_json(),
        "epochs": [dict(asdict(e), dev=list(e.dev)) for e in result.epochs],
        "best_epoch": result.best_epoch,
        "best_dev": list(result.best),
        "train_seconds": round(result.seconds, 1),
        "train_examples": result.train_examples,
        "eval_examples": result.eval_examples,
    }


def write_checkpoint(out: Path, model: Any, tokenizer: Any, heads: Any, summary: dict[str, Any],
                     overwrite: bool = False, source: str | None = None) -> None:
    """Write model, tokenizer, heads and summary into ``out`` atomically (replacing a checkpoint trtbert
    wrote, if ``overwrite``); the summary is written last and marks the directory as trtbert's."""
    out.parent.mkdir(parents=True, exist_ok=True)
    protect = [source] if source is not None and Path(source).is_dir() else []
    try:
        with atomic_directory(out, overwrite=overwrite, protect=protect, label="train") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if heads is not None:
                heads.save(tmp)
            (tmp / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise os_error("write", out, exc) from exc
    log.info("wrote %s", out)
