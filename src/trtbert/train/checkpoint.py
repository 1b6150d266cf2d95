"""The training output directory: built in a temporary directory beside ``--out``, renamed into place."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trtbert.errors import UsageError
from trtbert.train.options import TrainOptions, TrainResult

log = logging.getLogger(__name__)

SUMMARY = "train_summary.json"


def check_out(options: TrainOptions) -> Path:
    """Refuse an existing ``--out`` unless ``--overwrite``; return the resolved path."""
    out = Path(options.out).expanduser().resolve()
    if out.exists() and not options.overwrite:
        raise UsageError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory")
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


def write_checkpoint(out: Path, model: Any, tokenizer: Any, heads: Any, summary: dict[str, Any]) -> None:
    """Write model, tokenizer, heads and summary into ``out`` atomically (replacing it if it exists)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()  # unlike tempfile.mkdtemp (0700), keeps the umask's usual permissions
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if heads is not None:
            heads.save(tmp)
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s", out)
