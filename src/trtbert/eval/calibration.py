"""``eval --calibrate``: certify the bundle's default exit policy on held-apart rows and record it.

The numerical work is :func:`trtbert.eval.certify.certify_policy` (Learn-then-Test: fixed-sequence
testing over each rule family's thresholds, ordered from safe to aggressive, with exact binomial or
betting bounds). This module chooses the risk from the options, measures each exit segment's cost
on this device with this engine set and cap (for the latency objective, and recorded with the
policy), calls it, and writes the policy into the manifest under the bundle's lock.

Risk: ``--max-disagreement P`` certifies the share of answers that differ from the full model's;
``--max-drop POINTS`` certifies the accuracy drop where the metric is accuracy (a per-row loss makes a
valid bound), and falls back to disagreement at the same fraction elsewhere (Matthews, F1 and
correlations have no per-row decomposition), saying so in the certificate's note. Without either, 1%
disagreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtbert import bundle as B
from trtbert.data.tasks import Task
from trtbert.errors import UsageError

OBJECTIVES = ("auto", "layers", "latency")
DEFAULT_MAX_DISAGREEMENT = 0.01


def check_targets(max_disagreement: float | None, max_drop: float | None, delta: float, objective: str) -> None:
    """Refuse targets that are not finite numbers in range, before any work."""
    if max_disagreement is not None and not (math.isfinite(max_disagreement) and 0 <= max_disagreement <= 1):
        raise UsageError(f"--max-disagreement must be a share between 0 and 1, got {max_disagreement}")
    if max_drop is not None and not (math.isfinite(max_drop) and 0 <= max_drop <= 100):
        raise UsageError(f"--max-drop must be a finite number of points between 0 and 100, got {max_drop}")
    if max_disagreement is not None and max_drop is not None:
        raise UsageError("give --max-disagreement or --max-drop, not both")
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise UsageError(f"--delta must be between 0 and 1, got {delta}")
    if objective not in OBJECTIVES:
        raise UsageError(f"unknown --objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


@dataclass(frozen=True)
class CalibrationReport:
    """What calibration certified, on which rows, and the policy as recorded in the manifest."""

    rule: str
    certified: bool
    task: str
    split: str
    examples: int
    engines: str
    objective: str
    policy: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (the learned model's parameters left out: they are in the manifest)."""
        return {"rule": self.rule, "certified": self.certified, "task": self.task, "split": self.split,
                "examples": self.examples, "engines": self.engines, "objective": self.objective,
                **{k: v for k, v in self.policy.items() if k not in ("rule", "params")}}


def risk_target(task: Task, max_disagreement: float | None, max_drop: float | None) -> tuple[str, float]:
    """The risk certified and its bound (a fraction of rows, or of accuracy)."""
    if max_drop is not None:
        return ("accuracy-drop" if task.metric == "accuracy" else "disagreement"), max_drop / 100.0
    return "disagreement", DEFAULT_MAX_DISAGREEMENT if max_disagreement is None else max_disagreement


def segment_costs(exits_ms: np.ndarray) -> list[float]:
    """Measured ms of each exit segment (start to the first exit layer, then exit to exit): medians over
    the rows of a full pass run with this engine set under this cap (loads of streamed stages included)."""
    cum = np.median(np.asarray(exits_ms, dtype=np.float64), axis=1)
    return [float(c) for c in np.diff(np.concatenate([[0.0], cum]))]


def calibrate_bundle(runner: Any, task: Task, full: Any, labels: np.ndarray, options: Any,
                     fit: Any = None, fit_labels: np.ndarray | None = None) -> CalibrationReport:
    """Certify a policy on the calibration rows' full pass (``full``: :class:`~trtbert.runtime.runner.FullPass`,
    and optionally separate ``fit`` rows that shape the candidates) and write it into the manifest."""
    from trtbert.eval.certify import FAMILIES, certify_policy

    manifest = runner.bundle.manifest
    risk, eps = risk_target(task, options.max_disagreement, options.max_drop)
    objective = options.objective if options.objective != "auto" else (
        "latency" if runner.pool.memory_cap is not None else "layers")
    costs = segment_costs(full.exits_ms)
    families = tuple(options.families or FAMILIES)
    result = certify_policy(
        full.logits, manifest.exit_layers, manifest.model.num_layers, risk=risk, eps=eps, delta=options.delta,
        families=families, objective=objective, costs_ms=costs, seed=options.seed,
        labels=labels if risk == "accuracy-drop" else None, task=task, hidden=full.pooled,
        fit_logits=None if fit is None else fit.logits, fit_hidden=None if fit is None else fit.pooled,
        fit_labels=fit_labels,
    )
    policy = result.policy_json()
    policy.update(task=task.name, split=options.calibration_split, examples=int(full.logits.shape[1]),
                  fit_examples=0 if fit is None else int(fit.logits.shape[1]), engines=options.engines,
                  memory_cap=runner.pool.memory_cap, segment_costs_ms=costs)
    report = CalibrationReport(rule=result.rule, certified=result.certified, task=task.name,
                               split=options.calibration_split, examples=int(full.logits.shape[1]),
                               engines=options.engines, objective=objective, policy=policy)
    B.replace_policy(runner.bundle.root, policy)
    return report
