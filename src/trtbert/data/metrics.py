"""GLUE metrics in numpy (no scipy, no sklearn), returned in points (x100) like the GLUE leaderboard.

- CoLA: Matthews correlation; SST-2, MNLI, QNLI, RTE, WNLI: accuracy;
- MRPC, QQP: F1 of the positive class (the main metric) and accuracy;
- STS-B: Pearson (the main metric) and Spearman (Pearson of the ranks, ties get their average rank).

A correlation that is undefined (a constant input) scores 0.0, as sklearn's Matthews does.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from trtbert.data.tasks import Task, get_task
from trtbert.errors import DataError


def _pair(predictions: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.shape != y.shape or p.ndim != 1:
        raise DataError(f"predictions {p.shape} and labels {y.shape} must be 1-D arrays of the same length")
    if p.size == 0:
        raise DataError("cannot score an empty set of predictions")
    return p, y


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Share of exact matches, in points."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y) * 100.0)


def f1(predictions: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of the ``positive`` class, in points (0 when there is no true positive)."""
    p, y = _pair(predictions, labels)
    tp = float(np.sum((p == positive) & (y == positive)))
    fp = float(np.sum((p == positive) & (y != positive)))
    fn = float(np.sum((p != positive) & (y == positive)))
    return 0.0 if tp == 0 else 100.0 * 2 * tp / (2 * tp + fp + fn)


def matthews(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation coefficient (multi-class form of Gorodkin 2004), in points."""
    p, y = _pair(predictions, labels)
    classes = np.union1d(p, y)
    conf = np.array([[np.sum((y == a) & (p == b)) for b in classes] for a in classes], dtype=np.float64)
    n = conf.sum()
    correct = np.trace(conf)
    pred_totals, true_totals = conf.sum(axis=0), conf.sum(axis=1)
    cov_pp = n * n - pred_totals @ pred_totals
    cov_tt = n * n - true_totals @ true_totals
    if cov_pp == 0 or cov_tt == 0:
        return 0.0
    return float(100.0 * (correct * n - pred_totals @ true_totals) / np.sqrt(cov_pp * cov_tt))


def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation, in points."""
    p, y = _pair(predictions, labels)
    p, y = p.astype(np.float64) - p.mean(), y.astype(np.float64) - y.mean()
    denom = np.sqrt((p @ p) * (y @ y))
    return 0.0 if denom == 0 else float(100.0 * (p @ y) / denom)


def rankdata(values: ArrayLike) -> np.ndarray:
    """1-based ranks with ties given their average rank (scipy's ``rankdata(method="average")``)."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], v.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation (Pearson of average ranks), in points."""
    p, y = _pair(predictions, labels)
    return pearson(rankdata(p), rankdata(y))


_METRICS = {"accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson, "spearman": spearman}


def predictions_from_logits(task: Task | str, logits: ArrayLike) -> np.ndarray:
    """Label ids (argmax) for classification, the scalar prediction for regression: ``(N, C) -> (N,)``."""
    task = get_task(task) if isinstance(task, str) else task
    x = np.asarray(logits)
    if x.ndim == 1:
        return x
    if task.is_regression:
        return x.reshape(x.shape[0], -1)[:, 0].astype(np.float64)
    return np.argmax(x, axis=-1)


def score(task: Task | str, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Every metric of ``task`` in points, e.g. ``{"f1": 88.1, "accuracy": 84.3}`` for MRPC.

    ``predictions`` are label ids, regression values, or raw logits ``(N, C)`` (argmax is taken).
    The main metric is ``task.metric``.
    """
    task = get_task(task) if isinstance(task, str) else task
    preds = predictions_from_logits(task, predictions)
    return {name: _METRICS[name](preds, labels) for name in task.metrics}


def main_score(task: Task | str, predictions: ArrayLike, labels: ArrayLike) -> float:
    """The task's main metric in points (Matthews for CoLA, F1 for MRPC/QQP, Pearson for STS-B ...)."""
    task = get_task(task) if isinstance(task, str) else task
    return score(task, predictions, labels)[task.metric]
