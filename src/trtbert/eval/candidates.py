"""Candidate exit policies for certification: per-row losses, and each rule family's path of
candidates ordered from safe (runs more layers) to aggressive, replayed over a full pass's logits.

A path's shape may be fitted (per-layer thresholds, the learned exit), on fit rows only; its
``exits(logits, hidden)`` then gives every candidate's exit position on any other rows. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtbert.runtime.exits import entropy, exit_layers_for, max_probability, parse_rule, per_layer_text
from trtbert.runtime.learned import LayerModel, LearnedExit

DEFAULT_TOLERANCE = 0.1
FITTED = ("per-layer", "learned", "learned-cost")  # families whose shape is learned on fit rows
GRID = np.linspace(36.0, 0.0, 721)  # safe -> aggressive: thresholds 1 - exp(-x) and the like (float64 ends near 37)
REGRESSION_EPS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)  # patience EPS grid, in units of the tolerance


# --- losses, costs, oracle ---------------------------------------------------------------------------


def answers(logits: np.ndarray) -> np.ndarray:
    """Each exit layer's answer ``(exit layers, rows)``: label id, or the value for regression."""
    logits = np.asarray(logits)
    return logits[..., 0].astype(np.float64) if logits.shape[-1] == 1 else logits.argmax(axis=-1)


def agreement(logits: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """``(exit layers, rows)``: does the answer at each exit layer equal the final one (regression:
    within ``tolerance``)."""
    a = answers(logits)
    if np.asarray(logits).shape[-1] == 1:
        return np.abs(a - a[-1][None]) <= tolerance
    return a == a[-1][None]


def loss_table(logits: np.ndarray, risk: str, labels: np.ndarray | None = None,
               tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """Per exit layer and row, the loss of stopping there ``(exit layers, rows)``: disagreement in
    {0, 1}, or the accuracy drop against the full model in {-1, 0, 1}."""
    if risk == "disagreement":
        return (~agreement(logits, tolerance)).astype(np.float64)
    a = answers(logits)
    right = a == np.asarray(labels)[None]
    return (~right & right[-1][None]).astype(np.float64) - (right & ~right[-1][None]).astype(np.float64)


def oracle_exits(logits: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the exit position (index into the exit layers) from which every later answer equals
    the final one, and the first position whose answer equals the final one."""
    agree = agreement(logits, tolerance)
    stable = np.flip(np.cumprod(np.flip(agree, 0), axis=0), 0).astype(bool)
    return stable.argmax(axis=0), agree.argmax(axis=0)


def expected_latency(exits: np.ndarray, costs_ms: Sequence[float]) -> float:
    """Mean over rows of the cumulative cost up to each row's exit position."""
    return float(np.cumsum(np.asarray(costs_ms, dtype=np.float64))[exits].mean())


# --- candidate paths ---------------------------------------------------------------------------------


@dataclass
class CandidatePath:
    """A family's candidates, safe -> aggressive; ``exits(logits)`` gives their exit positions
    ``(candidates, rows)`` on any rows, using only what was fitted on the fit part."""

    family: str
    texts: list[str]
    params: dict[str, Any] | None
    exits: Callable[[np.ndarray, np.ndarray | None], np.ndarray]  # (logits, pooled hidden or None)


def _first_stop(stop: np.ndarray) -> np.ndarray:
    """``stop (candidates, exit layers, rows)`` -> first exit position that stops (the last always does)."""
    stop = stop.copy()
    stop[:, -1] = True
    return stop.argmax(axis=1).astype(np.int16)


def _confidence_path(fit: np.ndarray, exit_layers: Sequence[int]) -> CandidatePath:
    labels = fit.shape[-1]
    texts = list(dict.fromkeys(f"confidence:{1 - (1 - 1 / labels) * math.exp(-x):.12g}" for x in GRID))
    values = np.array([parse_rule(t).threshold for t in texts])  # type: ignore[attr-defined]
    return CandidatePath("confidence", texts, None,
                 lambda lg, hid: _first_stop(max_probability(lg)[None] >= values[:, None, None]))


def _entropy_path(fit: np.ndarray, exit_layers: Sequence[int]) -> CandidatePath:
    top = math.log(fit.shape[-1])
    texts = list(dict.fromkeys(f"entropy:{top * math.exp(-x):.12g}" for x in GRID))
    values = np.array([parse_rule(t).threshold for t in texts])  # type: ignore[attr-defined]
    return CandidatePath("entropy", texts, None, lambda lg, hid: _first_stop(entropy(lg)[None] < values[:, None, None]))


def _replayed(texts: list[str], exit_layers: Sequence[int]) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
    index = {layer: i for i, layer in enumerate(exit_layers)}

    def exits(lg: np.ndarray, hid: np.ndarray | None = None) -> np.ndarray:
        return np.stack([np.vectorize(index.get)(exit_layers_for(t, lg, exit_layers)) for t in texts]).astype(np.int16)

    return exits


def _patience_path(fit: np.ndarray, exit_layers: Sequence[int], losses: np.ndarray | None,
                   tolerance: float) -> CandidatePath:
    count = len(exit_layers)
    if fit.shape[-1] != 1:
        texts = [f"patience:{k}" for k in range(max(count - 1, 1), 0, -1)]
        return CandidatePath("patience", texts, None, _replayed(texts, exit_layers))
    grid = [f"patience:{k},{tolerance * e:.6g}" for k in range(1, max(count, 2)) for e in REGRESSION_EPS]
    if losses is None or fit.shape[1] == 0:  # no fit rows: K from safe to aggressive at EPS = tolerance
        texts = [f"patience:{k},{tolerance:.6g}" for k in range(max(count - 1, 1), 0, -1)]
        return CandidatePath("patience", texts, None, _replayed(texts, exit_layers))
    # two parameters: order by risk on the fit part and keep the candidates that lower the layers
    ex = _replayed(grid, exit_layers)(fit, None)
    rows = np.arange(fit.shape[1])
    risk = np.array([losses[e, rows].mean() for e in ex])
    layers = np.asarray(exit_layers)[ex].mean(axis=1)
    texts, best = [], math.inf
    for j in sorted(range(len(grid)), key=lambda j: (risk[j], -layers[j])):
        if layers[j] < best:
            texts.append(grid[j])
            best = layers[j]
    return CandidatePath("patience", texts, None, _replayed(texts, exit_layers))


def _log_odds(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.clip(np.log(p) - np.log1p(-p), -40.0, 40.0)


def per_layer_thresholds(fit: np.ndarray, lambdas: Sequence[float], l2: float = 1e-2) -> list[tuple[float, ...]]:
    """Per-layer confidence thresholds for each target error ``lambda``: at exit layer ``i`` the
    top probability at which a logistic fit (on the fit rows) of "this answer is final" on the
    log-odds of the top probability reaches ``1 - lambda``; ``inf`` where confidence does not predict it."""
    agree = agreement(fit)
    x = _log_odds(max_probability(fit))
    out: list[list[float]] = [[] for _ in lambdas]
    for i in range(len(fit) - 1):
        m = LayerModel.fit(x[i][:, None], agree[i], l2=l2)
        slope = m.weights[0] / m.scale[0]
        intercept = m.bias - slope * m.mean[0]
        for j, lam in enumerate(lambdas):
            if slope <= 1e-9:
                out[j].append(math.inf)
                continue
            target = (math.log1p(-lam) - math.log(lam) - intercept) / slope
            out[j].append(float(0.5 * (1.0 + math.tanh(0.5 * target))))
    return [tuple(t) for t in out]


def _per_layer_path(fit: np.ndarray, exit_layers: Sequence[int]) -> CandidatePath:
    thresholds = per_layer_thresholds(fit, [math.exp(-x) for x in GRID if x > 0])
    texts = [per_layer_text(t) for t in thresholds]
    tables = np.array([parse_rule(t).thresholds for t in texts])  # type: ignore[attr-defined]
    tables = np.concatenate([tables, np.full((len(texts), 1), np.inf)], axis=1)[:, :len(exit_layers)]
    return CandidatePath("per-layer", texts, None,
                 lambda lg, hid: _first_stop(max_probability(lg)[None] >= tables[:, :, None]))


def _learned_path(fit: np.ndarray, fit_hidden: np.ndarray | None, exit_layers: Sequence[int],
                  tolerance: float) -> CandidatePath:
    model = LearnedExit.fit(fit, tuple(exit_layers), tolerance=tolerance, hidden=fit_hidden)
    texts = list(dict.fromkeys(f"learned:{1 - math.exp(-x):.12g}" for x in GRID if x > 0))
    values = np.array([float(t.partition(":")[2]) for t in texts])
    return CandidatePath("learned", texts, model.to_json(),
                 lambda lg, hid: _first_stop(model.replay(lg, hid)[None] >= values[:, None, None]))


def _learned_cost_path(fit: np.ndarray, fit_hidden: np.ndarray | None, exit_layers: Sequence[int],
                       tolerance: float, costs_ms: Sequence[float]) -> CandidatePath:
    """The learned exit with a threshold per exit layer that prices computation: stop at layer ``i``
    when the model's probability that the answer is final is at least ``1 - lam * saved_i``, where
    ``saved_i`` is the share of the full model's cost still ahead (loads of streamed layers included).
    Where stopping saves much (before a streamed part), less certainty is asked. Safe -> aggressive
    as ``lam`` grows."""
    model = LearnedExit.fit(fit, tuple(exit_layers), tolerance=tolerance, hidden=fit_hidden)
    cum = np.cumsum(np.asarray(costs_ms, dtype=np.float64))
    ahead = (cum[-1] - cum[:-1]) / max(cum[-1], 1e-9)  # share of the cost saved by stopping at each exit
    tables, texts = [], []
    for x in GRID:
        lam = math.exp(-x) * 4.0 if x > 0 else 4.0
        q = np.clip(1.0 - lam * ahead, 0.0, 1.0)
        text = "learned:" + ",".join(f"{v:.12g}" for v in q)
        if text not in texts:
            texts.append(text)
            tables.append([float(v) for v in text.partition(":")[2].split(",")] + [0.0])
    order = sorted(range(len(texts)), key=lambda j: -sum(tables[j]))  # most demanding (safest) first
    texts, table = [texts[j] for j in order], np.array([tables[j] for j in order])
    return CandidatePath("learned-cost", texts, model.to_json(),
                         lambda lg, hid: _first_stop(model.replay(lg, hid)[None] >= table[:, :, None]))


def build_path(family: str, fit: np.ndarray, fit_hidden: np.ndarray | None, exit_layers: Sequence[int],
           losses: np.ndarray | None, tolerance: float, costs_ms: Sequence[float] | None = None) -> CandidatePath:
    if family == "confidence":
        return _confidence_path(fit, exit_layers)
    if family == "entropy":
        return _entropy_path(fit, exit_layers)
    if family == "patience":
        return _patience_path(fit, exit_layers, losses, tolerance)
    if family == "per-layer":
        return _per_layer_path(fit, exit_layers)
    if family == "learned-cost":
        if costs_ms is None:
            raise ValueError("the learned-cost family needs each exit segment's cost")
        return _learned_cost_path(fit, fit_hidden, exit_layers, tolerance, costs_ms)
    return _learned_path(fit, fit_hidden, exit_layers, tolerance)
