"""Training options and results: frozen dataclasses, no torch (the CLI imports this module cheaply)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trtbert.errors import UsageError
from trtbert.modeling.checkpoint import READOUTS

OBJECTIVES = ("joint", "two-stage", "heads-only", "distill")
LAYER_WEIGHTS = ("pabee", "uniform", "cost")  # see train/exit_model.layer_weights


@dataclass(frozen=True)
class TrainOptions:
    """What ``trtbert train`` does. ``heads=False`` is plain fine-tuning (the baseline)."""

    model: str
    task: str
    out: Path
    data_dir: Path | None = None
    dataset: str = "nyu-mll/glue"  # Hugging Face dataset, read when no data_dir is given
    objective: str = "joint"
    readout: str = "mean"
    heads: bool = True
    epochs: int = 3
    lr: float = 5e-5  # backbone and the model's own classifier
    head_lr: float = 1e-3  # intermediate exit heads
    batch_size: int = 32
    max_seq_len: int = 128
    limit: int | None = None  # first N training rows
    eval_limit: int | None = None  # first N dev rows
    seed: int = 42
    overwrite: bool = False
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    distill_temperature: float = 2.0
    distill_alpha: float = 0.5  # weight of the soft (teacher) loss in "distill"
    layer_weights: str = "pabee"  # how the exits' losses are weighted (train/exit_model.layer_weights)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise UsageError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.layer_weights not in LAYER_WEIGHTS:
            raise UsageError(f"unknown layer weights {self.layer_weights!r}; choose one of {', '.join(LAYER_WEIGHTS)}")
        if self.readout not in READOUTS:
            raise UsageError(f"unknown read-out {self.readout!r}; choose one of {', '.join(READOUTS)}")
        if not self.heads and self.objective != "joint":
            raise UsageError(f"--no-heads trains no exit heads, so --objective {self.objective} makes no sense")
        for name in ("epochs", "batch_size", "max_seq_len"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not (math.isfinite(self.lr) and math.isfinite(self.head_lr)) or self.lr <= 0 or self.head_lr <= 0:
            raise UsageError(f"learning rates must be positive, got --lr {self.lr} --head-lr {self.head_lr}")

    def to_json(self) -> dict[str, Any]:
        """The options as JSON-ready values (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class EpochResult:
    """Dev metric of every exit after one epoch; ``dev[i]`` is layer ``i + 1`` (None: no exit there)."""

    epoch: int
    stage: str  # "joint" | "backbone" (two-stage, first stage) | "heads" (frozen backbone)
    dev: tuple[float | None, ...]
    train_loss: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced; also written to ``<out>/train_summary.json``."""

    out: Path
    task: str
    metric: str
    num_layers: int
    epochs: tuple[EpochResult, ...]
    best_epoch: int
    best: tuple[float | None, ...]  # dev metric per layer at the best epoch
    seconds: float
    train_examples: int
    eval_examples: int
