"""``eval --calibrate``: choose the bundle's default exit policy on held-apart rows and record it.

The numerical work lives in :mod:`trtbert.eval.sweep` (and the certified calibration beside it); this
module checks the targets, calls it on the calibration rows' full-pass logits, and writes the policy
into the manifest under the bundle's lock.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtbert import bundle as B
from trtbert.data.tasks import Task
from trtbert.errors import UsageError

OBJECTIVES = ("auto", "layers", "latency")
DEFAULT_MAX_DROP = 0.5


def check_targets(max_disagreement: float | None, max_drop: float | None, delta: float, objective: str) -> None:
    """Refuse targets that are not finite numbers in range, before any work."""
    if max_disagreement is not None and not (math.isfinite(max_disagreement) and 0 <= max_disagreement <= 1):
        raise UsageError(f"--max-disagreement must be a share between 0 and 1, got {max_disagreement}")
    if max_drop is not None and not (math.isfinite(max_drop) and max_drop >= 0):
        raise UsageError(f"--max-drop must be a finite number of points >= 0, got {max_drop}")
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise UsageError(f"--delta must be between 0 and 1, got {delta}")
    if objective not in OBJECTIVES:
        raise UsageError(f"unknown --objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


@dataclass(frozen=True)
class CalibrationReport:
    """What calibration chose, on which rows, and what it promises."""

    rule: str
    task: str
    split: str
    examples: int
    engines: str
    objective: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready, as stored in the manifest's exit policy."""
        return {"rule": self.rule, "task": self.task, "split": self.split, "examples": self.examples,
                "engines": self.engines, "objective": self.objective, **self.details}


def calibrate_bundle(runner: Any, task: Task, logits: np.ndarray, times: np.ndarray, labels: np.ndarray,
                     options: Any) -> CalibrationReport:
    """Choose the policy on the calibration rows and write it into the bundle's manifest."""
    from trtbert.eval.sweep import calibrate

    manifest = runner.bundle.manifest
    max_drop = options.max_drop if options.max_drop is not None else DEFAULT_MAX_DROP
    result = calibrate(task, logits, labels, manifest.exit_layers, manifest.model.num_layers, max_drop)
    objective = options.objective if options.objective != "auto" else (
        "latency" if runner.pool.memory_cap is not None else "layers")
    report = CalibrationReport(
        rule=result.rule, task=task.name, split=options.calibration_split, examples=result.examples,
        engines=options.engines, objective=objective,
        details={"score": result.score, "full_score": result.full_score, "avg_layers": result.avg_layers,
                 "max_drop": result.max_drop,
                 "best_per_rule": {k: dataclasses.asdict(v) for k, v in result.best_per_rule.items()}},
    )
    B.replace_policy(runner.bundle.root, {"rule": report.rule, "calibration": report.to_json()})
    return report
