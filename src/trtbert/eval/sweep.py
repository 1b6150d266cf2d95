"""Sweeps and calibration: every threshold of a rule decided from one full pass's per-layer logits.

The logits of all exit layers, ``(exit layers, rows, labels)``, fix what any exit rule would do, so a
sweep replays rules over them (:func:`trtbert.runtime.exits.exit_layers_for`, the same decision the
runner makes online) instead of running the model once per threshold. Pure numpy.

:func:`calibrate` is the old best-of-grid pick: the metric it shows on the calibration rows is not a
promise for unseen rows (picking the best of ~50 thresholds overfits them). The certified choice is
:func:`trtbert.eval.certify.certify_policy`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trtbert.data.metrics import main_score
from trtbert.data.tasks import Task
from trtbert.errors import UsageError
from trtbert.runtime.exits import ExitRule, exit_layers_for, logits_at_exit, parse_rule

CALIBRATED_RULES = ("entropy", "patience", "confidence")


@dataclass(frozen=True)
class SweepPoint:
    """One rule's outcome over a set of examples."""

    rule: str
    score: float
    avg_layers: float
    layer_speedup: float
    histogram: dict[int, int]
    wall_ms: float | None = None  # measured mean latency, when the point was run for real


def replay(task: Task, logits: np.ndarray, labels: np.ndarray, exit_layers: Sequence[int], rule: str | ExitRule,
           num_layers: int, hidden: np.ndarray | None = None) -> SweepPoint:
    """Score ``rule`` over full-pass logits without running the model again. A rule object carries
    what its text cannot (a learned exit's parameters); ``hidden``: each exit layer's pooled hidden
    states ``(exit layers, rows, hidden)``, for a learned exit that reads them."""
    chosen = exit_layers_for(rule, logits, exit_layers, hidden=hidden)
    score = main_score(task, logits_at_exit(logits, exit_layers, chosen), labels)
    avg = float(chosen.mean())
    values, counts = np.unique(chosen, return_counts=True)
    return SweepPoint(rule=str(rule), score=score, avg_layers=avg, layer_speedup=num_layers / avg,
                      histogram={int(v): int(c) for v, c in zip(values, counts)})


def parse_sweep(text: str, problem_type: str | None = None) -> list[str]:
    """``entropy:0.1,0.2,0.4`` -> one rule per value. Rules with two numbers separate them with ``/``:
    ``patience-confidence:2/0.9,3/0.9``."""
    name, sep, values = text.strip().partition(":")
    if not sep or not values.strip():
        raise UsageError(f"cannot read --sweep {text!r}: write it as RULE:V1,V2,... (e.g. entropy:0.1,0.2,0.4)")
    rules = [f"{name}:{v.strip().replace('/', ',')}" for v in values.split(",") if v.strip()]
    for rule in rules:
        parse_rule(rule, problem_type)  # one clear error for a malformed value
        if name.strip().lower() == "budget":
            raise UsageError("budget rules depend on measured time and cannot be swept offline; run them with --exit")
    return rules


def default_grid(name: str, num_exits: int, num_labels: int) -> list[str]:
    """The thresholds calibration tries for one rule family."""
    if name == "entropy":
        top = math.log(max(num_labels, 2))
        return [f"entropy:{top * q:.4g}" for q in np.linspace(0.02, 0.98, 49)]
    if name == "confidence":
        return [f"confidence:{p:.4g}" for p in np.linspace(1.0 / max(num_labels, 2) + 0.01, 0.999, 49)]
    if name == "patience":
        return [f"patience:{k}" for k in range(1, max(num_exits, 2))]
    raise UsageError(f"no calibration grid for rule {name!r}; calibrated rules: {', '.join(CALIBRATED_RULES)}")


@dataclass(frozen=True)
class Calibration:
    """The chosen rule and what it did on the calibration split."""

    rule: str
    score: float
    full_score: float
    avg_layers: float
    max_drop: float
    examples: int
    best_per_rule: dict[str, SweepPoint]


def best_of_grid(task: Task, logits: np.ndarray, labels: np.ndarray, exit_layers: Sequence[int], num_layers: int,
              max_drop: float, rules: Sequence[str] = CALIBRATED_RULES) -> Calibration:
    """The uncertified baseline: the rule and threshold with the fewest average layers whose metric
    stays within ``max_drop`` points of the full model on these very rows (ties: the higher metric). Picking
    the best of many thresholds overfits the rows it sees (promised 0.5 points, lost 3 on unseen rows);
    ``eval --calibrate`` certifies instead (:mod:`trtbert.eval.certify`). Kept to measure against."""
    if max_drop < 0:
        raise UsageError(f"--max-drop must be at least 0 points, got {max_drop}")
    full = main_score(task, logits[-1], labels)
    best_per_rule: dict[str, SweepPoint] = {}
    for name in rules:
        if task.is_regression and name != "patience":
            continue
        grid = default_grid(name, len(exit_layers), task.num_labels)
        if task.is_regression:
            grid = [f"patience:{k},{eps:g}" for k in range(1, max(len(exit_layers), 2)) for eps in (0.05, 0.1, 0.2, 0.4)]
        for rule in grid:
            point = replay(task, logits, labels, exit_layers, rule, num_layers)
            if point.score < full - max_drop:
                continue
            current = best_per_rule.get(name)
            if current is None or (point.avg_layers, -point.score) < (current.avg_layers, -current.score):
                best_per_rule[name] = point
    full_point = SweepPoint("none", full, float(exit_layers[-1]), num_layers / exit_layers[-1], {exit_layers[-1]: len(labels)})
    best = min(best_per_rule.values(), key=lambda p: (p.avg_layers, -p.score), default=full_point)
    return Calibration(rule=best.rule, score=best.score, full_score=full, avg_layers=best.avg_layers,
                       max_drop=max_drop, examples=len(labels), best_per_rule=best_per_rule)
