"""Certified exit policies: Learn-then-Test over exit rules replayed on one full pass's logits.

:func:`certify_policy` returns a policy whose risk on unseen rows from the calibration rows'
distribution is at most ``eps`` with probability at least ``1 - delta`` over the draw of those rows,
or "keep the full model" and how many rows a certificate would need. Pure numpy (the device has no scipy).

How (Angelopoulos et al. 2021, "Learn then Test"; CALM, Schuster et al. 2022, for early exit):

1. Rows are shuffled with ``seed`` and split: a fit part (``fit_fraction``; or separate rows passed
   as ``fit_logits``) and a certification part. Only the certification rows enter the bound.
2. Each family is a path of candidate rules ordered from safe (runs more layers) to aggressive:
   ``confidence`` and ``entropy`` thresholds, ``patience`` K (regression: K and EPS, ordered by their
   risk on the fit part), ``per-layer`` confidence thresholds (one per exit layer, from a logistic
   fit per layer of "this layer's answer is final" on the log-odds of the top probability, on the
   fit part; the path is the target error ``lambda`` of every layer) and ``learned`` (a logistic
   model per layer over confidence and agreement features, fitted on the fit part; the path is the
   probability threshold Q). Fitted shapes never see the certification rows.
3. One family is chosen on the fit part alone (with 2-fold cross-fitting for the fitted families):
   the one whose path reaches the lowest cost before its fit-part risk passes the rate that the
   certification part could certify. Choosing among families on the certification rows would
   spend the level ``delta`` once per family.
4. Fixed-sequence testing on the certification rows: walk the chosen path, test "risk > eps" at
   each candidate at the full level ``delta`` and stop at the first p-value above ``delta``. All
   candidates before the stop are certified jointly, so the cheapest of them (``objective``: mean
   exit layer, or expected latency from ``costs_ms``) is returned.

Risks (the loss of a row under a policy):

- ``disagreement``: the answer at the exit differs from the full model's (regression:
  ``|value at exit - final value| > tolerance``, default 0.1 on the label's scale). A 0/1 loss:
  exact binomial p-value ``P(Bin(n, eps) <= errors)``.
- ``accuracy-drop``: ``1[exit wrong and full right] - 1[exit right and full wrong]`` in [-1, 1], whose
  mean is exactly the accuracy lost against the full model on the same rows; mapped to [0, 1] and
  tested with the Waudby-Smith-Ramdas betting p-value (valid for any bounded loss, tight when most
  losses are 0). Only accuracy decomposes over rows: Matthews, F1, Pearson and Spearman do not, so
  for those tasks (and regression) the certificate falls back to ``disagreement`` at the same
  ``eps`` and says so in its ``note``.

The oracle (reported, never certified): per row the first exit layer from which the answer equals
the final one at every later exit layer (``oracle_avg_layers``), and the looser first exit layer
whose answer equals the final one (``oracle_first_match_avg_layers``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trtbert.errors import UsageError
from trtbert.eval import bounds as Bd
from trtbert.eval.candidates import (DEFAULT_TOLERANCE, FITTED, CandidatePath, agreement, answers, build_path,
                                     expected_latency, loss_table, oracle_exits)
from trtbert.runtime.exits import ExitRule, exit_layers_for, parse_rule

__all__ = ["CertifiedPolicy", "Certificate", "FamilyResult", "certify_policy", "agreement", "answers",
           "expected_latency", "loss_table", "oracle_exits"]

RISKS = ("disagreement", "accuracy-drop")
FAMILIES = ("confidence", "entropy", "patience", "per-layer", "learned", "learned-cost")
OBJECTIVES = ("layers", "latency")


@dataclass(frozen=True)
class Certificate:
    """What is certified: ``risk <= eps`` on unseen rows with probability ``>= 1 - delta``.

    ``rows`` certification rows (the only ones the bound uses), ``fit_rows`` rows that shaped the
    candidates. ``empirical_risk`` and ``pvalue`` are the policy's on the certification rows;
    ``upper_bound`` its one-sided ``1 - delta`` bound there, as if it had been fixed in advance
    (the guarantee itself is ``eps``). ``test``: ``binomial`` or ``wsr``.
    """

    risk: str
    eps: float
    delta: float
    test: str
    rows: int
    fit_rows: int
    empirical_risk: float
    upper_bound: float
    pvalue: float
    note: str = ""


@dataclass(frozen=True)
class FamilyResult:
    """A family's cheapest certified candidate on the certification rows (each family tested on its
    own at ``delta``; only the chosen family's certificate is the policy's)."""

    family: str
    rule: str
    params: dict[str, Any] | None
    certified: bool
    avg_layers: float
    expected_latency_ms: float | None
    empirical_risk: float
    pvalue: float | None  # None when nothing certified (the full model is kept)
    accepted: int  # candidates certified before the walk stopped
    candidates: int


@dataclass(frozen=True)
class CertifiedPolicy:
    """The result of :func:`certify_policy`. ``rule`` is ``none`` when nothing certifies; then
    ``rows_needed`` says how many certification rows the first failing candidate would have needed
    at its observed risk (None: its risk is at least ``eps``), ``rows_needed_zero_errors`` how many
    any candidate needs at the very least."""

    rule: str
    params: dict[str, Any] | None
    family: str
    certified: bool
    certificate: Certificate
    objective: str
    avg_layers: float
    layer_speedup: float
    expected_latency_ms: float | None
    full_latency_ms: float | None
    oracle_avg_layers: float
    oracle_first_match_avg_layers: float
    oracle_latency_ms: float | None
    per_family: dict[str, FamilyResult]
    rows_needed: int | None
    rows_needed_zero_errors: int
    seed: int
    notes: tuple[str, ...] = field(default=())

    def to_rule(self, problem_type: str | None = None) -> ExitRule:
        """The runnable rule (the learned exit gets its parameters)."""
        return parse_rule(self.rule, problem_type, self.params)

    def policy_json(self) -> dict[str, Any]:
        """The manifest's ``exit_policy``: ``rule`` and ``params`` rebuild the rule
        (:func:`trtbert.runtime.exits.rule_from_policy`); the rest records the certificate."""
        out: dict[str, Any] = {"rule": self.rule}
        if self.params is not None:
            out["params"] = self.params
        out["certificate"] = asdict(self.certificate)
        out.update({
            "certified": self.certified, "family": self.family, "objective": self.objective,
            "avg_layers": self.avg_layers, "layer_speedup": self.layer_speedup,
            "expected_latency_ms": self.expected_latency_ms, "full_latency_ms": self.full_latency_ms,
            "oracle_avg_layers": self.oracle_avg_layers,
            "oracle_first_match_avg_layers": self.oracle_first_match_avg_layers,
            "oracle_latency_ms": self.oracle_latency_ms,
            "rows_needed": self.rows_needed, "rows_needed_zero_errors": self.rows_needed_zero_errors,
            "seed": self.seed, "notes": list(self.notes),
            "per_family": {k: {kk: vv for kk, vv in asdict(v).items() if kk != "params"}
                           for k, v in self.per_family.items()},
        })
        return out


# --- testing ------------------------------------------------------------------------------------------


def _pvalue(loss: np.ndarray, risk: str, eps: float, delta: float) -> float:
    if risk == "disagreement":
        return Bd.binomial_pvalue(int(round(loss.sum())), loss.size, eps)
    return Bd.wsr_pvalue((loss + 1.0) / 2.0, (eps + 1.0) / 2.0, delta)


def _upper_bound(loss: np.ndarray, risk: str, delta: float) -> float:
    if risk == "disagreement":
        return Bd.binomial_upper_bound(int(round(loss.sum())), loss.size, delta)
    lo, hi = -1.0, 1.0  # the smallest eps that WSR would certify
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if _pvalue(loss, risk, mid, delta) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def _critical_rate(rows: int, eps: float, delta: float) -> float:
    """The largest observed 0/1 rate that ``rows`` certification rows would certify (-inf: none)."""
    if rows == 0 or Bd.binomial_pvalue(0, rows, eps) > delta:
        return -math.inf
    k = 0
    while Bd.binomial_pvalue(k + 1, rows, eps) <= delta:
        k += 1
    return k / rows


@dataclass
class _Walk:
    accepted: list[int]
    pvalues: list[float]
    risks: list[float]
    costs: np.ndarray


def _walk(exits: np.ndarray, losses: np.ndarray, cost_of: np.ndarray, risk: str, eps: float,
          delta: float) -> _Walk:
    rows = np.arange(exits.shape[1])
    accepted, pvalues, risks = [], [], []
    for j in range(len(exits)):
        loss = losses[exits[j], rows]
        p = _pvalue(loss, risk, eps, delta)
        pvalues.append(p)
        risks.append(float(loss.mean()))
        if not p <= delta:
            break
        accepted.append(j)
    return _Walk(accepted, pvalues, risks, cost_of[exits].mean(axis=1))


def _best(walk: _Walk) -> int | None:
    if not walk.accepted:
        return None
    return min(walk.accepted, key=lambda j: (walk.costs[j], walk.risks[j], j))


# --- the entry point ------------------------------------------------------------------------------------


def _check(logits: np.ndarray, exit_layers: Sequence[int], num_layers: int, risk: str, eps: float,
           delta: float, families: Sequence[str], objective: str, costs_ms: Sequence[float] | None,
           fit_fraction: float) -> None:
    if logits.ndim != 3 or logits.shape[0] != len(exit_layers) or logits.shape[1] == 0:
        raise UsageError(f"logits must be (exit layers={len(exit_layers)}, rows >= 1, labels), got {logits.shape}")
    if list(exit_layers) != sorted(set(exit_layers)) or exit_layers[-1] > num_layers:
        raise UsageError(f"exit layers {list(exit_layers)} must increase and end at most at layer {num_layers}")
    if risk not in RISKS:
        raise UsageError(f"unknown risk {risk!r}; use one of: {', '.join(RISKS)}")
    if not 0.0 < eps < 1.0 or not 0.0 < delta < 1.0:
        raise UsageError(f"eps and delta must be between 0 and 1, got eps={eps} and delta={delta}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise UsageError(f"unknown exit rule families {unknown}; use some of: {', '.join(FAMILIES)}")
    if objective not in OBJECTIVES:
        raise UsageError(f"unknown objective {objective!r}; use one of: {', '.join(OBJECTIVES)}")
    if costs_ms is not None and (len(costs_ms) != len(exit_layers) or min(costs_ms) < 0):
        raise UsageError(f"costs_ms needs one non-negative cost per exit layer ({len(exit_layers)}), got {list(costs_ms)}")
    if objective == "latency" and costs_ms is None:
        raise UsageError("objective 'latency' needs costs_ms: each exit segment's cost in ms")
    if not 0.0 < fit_fraction < 1.0:
        raise UsageError(f"fit_fraction must be between 0 and 1, got {fit_fraction}")


def certify_policy(
    logits: np.ndarray,
    exit_layers: Sequence[int],
    num_layers: int,
    *,
    risk: str = "disagreement",
    eps: float,
    delta: float = 0.1,
    families: Sequence[str] = FAMILIES,
    objective: str = "layers",
    costs_ms: Sequence[float] | None = None,
    seed: int = 0,
    labels: np.ndarray | None = None,
    task: Any = None,
    tolerance: float = DEFAULT_TOLERANCE,
    fit_fraction: float = 0.4,
    hidden: np.ndarray | None = None,
    fit_logits: np.ndarray | None = None,
    fit_hidden: np.ndarray | None = None,
    fit_labels: np.ndarray | None = None,
) -> CertifiedPolicy:
    """Certify the cheapest exit policy whose ``risk`` on unseen rows is at most ``eps`` (a
    fraction: 0.01 is 1% of rows, or 1 accuracy point) with probability ``>= 1 - delta``.

    ``logits``: a full pass over the calibration rows, ``(len(exit_layers), rows, labels)``;
    ``labels``: their gold labels (``accuracy-drop`` only); ``task``: a :class:`~trtbert.data.tasks.Task`
    or its name (decides whether accuracy is the metric). ``costs_ms``: per exit layer, the cost of
    the segment from the previous exit layer (the first: from the start, embeddings included), for
    ``objective="latency"`` and for the reported expected latency. ``hidden``: each exit layer's
    pooled hidden states ``(len(exit_layers), rows, hidden)`` (:func:`~trtbert.runtime.exits.mean_pool`);
    with them the learned exit also reads the hidden state (classification). ``fit_logits`` (and
    ``fit_hidden``, ``fit_labels``): rows kept apart from both training and certification to fit the
    per-layer and learned shapes and choose the family; without them the calibration rows are
    split (``fit_fraction`` to fit). Deterministic given ``seed``.
    """
    logits = np.asarray(logits)
    families = tuple(dict.fromkeys(families))
    if costs_ms is None and "learned-cost" in families and len(families) > 1:
        families = tuple(f for f in families if f != "learned-cost")  # it prices segments it was not given
    _check(logits, exit_layers, num_layers, risk, eps, delta, families, objective, costs_ms, fit_fraction)
    for name, h, lg in (("hidden", hidden, logits), ("fit_hidden", fit_hidden, fit_logits)):
        if h is not None and (lg is None or np.ndim(h) != 3 or np.shape(h)[:2] != np.shape(lg)[:2]):
            raise UsageError(f"{name} must be (exit layers, rows, hidden) matching its logits, got {np.shape(h)}")
    if (hidden is None) != (fit_hidden is None) and fit_logits is not None:
        raise UsageError("pass hidden states for both the calibration rows and the fit rows, or for neither")
    regression = logits.shape[-1] == 1
    risk, families, notes = _applicable(risk, families, regression, task, eps, labels, logits.shape[1])
    if regression:
        hidden = fit_hidden = None
    rows = _split(logits, labels, hidden, families, regression, seed, fit_fraction, fit_logits, fit_labels, fit_hidden)
    cert_losses = loss_table(rows.cert, risk, rows.cert_labels, tolerance)
    fit_risk = risk if (risk == "disagreement" or rows.fit_labels is not None) else "disagreement"
    fit_losses = loss_table(rows.fit, fit_risk, rows.fit_labels, tolerance) if rows.fit.shape[1] else None
    positions = np.asarray(exit_layers, dtype=np.float64)
    cum_ms = None if costs_ms is None else np.cumsum(np.asarray(costs_ms, dtype=np.float64))
    cost_of = cum_ms if cum_ms is not None and objective == "latency" else positions

    paths = {f: build_path(f, rows.fit, rows.fit_hidden, exit_layers, fit_losses, tolerance, costs_ms) for f in families}
    chosen = families[0] if len(families) == 1 else _choose(
        families, paths, rows, exit_layers, fit_losses, cost_of, eps, delta, tolerance, costs_ms=costs_ms)
    per_family: dict[str, FamilyResult] = {}
    walks: dict[str, tuple[_Walk, np.ndarray]] = {}
    last = len(exit_layers) - 1
    for f, path in paths.items():
        exits = path.exits(rows.cert, rows.cert_hidden)
        walk = _walk(exits, cert_losses, cost_of, risk, eps, delta)
        walks[f] = (walk, exits)
        j = _best(walk)
        ex = exits[j] if j is not None else np.full(rows.cert.shape[1], last)
        per_family[f] = FamilyResult(
            family=f, rule=path.texts[j] if j is not None else "none",
            params=path.params if j is not None else None, certified=j is not None,
            avg_layers=float(positions[ex].mean()),
            expected_latency_ms=None if cum_ms is None else float(cum_ms[ex].mean()),
            empirical_risk=walk.risks[j] if j is not None else 0.0,
            pvalue=walk.pvalues[j] if j is not None else None,
            accepted=len(walk.accepted), candidates=len(path.texts))

    walk, exits = walks[chosen]
    j = _best(walk)
    ex = exits[j] if j is not None else np.full(rows.cert.shape[1], last)
    rule_text, params = (paths[chosen].texts[j], paths[chosen].params) if j is not None else ("none", None)
    if j is not None:  # the runnable rule must make exactly the decisions that were certified
        replayed = exit_layers_for(parse_rule(rule_text, params=params), rows.cert, exit_layers, hidden=rows.cert_hidden)
        if not np.array_equal(replayed, positions[ex].astype(np.int64)):
            raise RuntimeError(f"the replay of {rule_text} differs from the exits it was certified with")
    loss = cert_losses[ex, np.arange(rows.cert.shape[1])]
    certificate = Certificate(
        risk=risk, eps=eps, delta=delta, test="binomial" if risk == "disagreement" else "wsr",
        rows=int(rows.cert.shape[1]), fit_rows=int(rows.fit.shape[1]),
        empirical_risk=float(loss.mean()) if loss.size else 0.0,
        upper_bound=_upper_bound(loss, risk, delta) if loss.size else 1.0,
        pvalue=_pvalue(loss, risk, eps, delta) if j is not None else 1.0, note="; ".join(notes))
    rows_needed: int | None = None
    if j is None:  # the first candidate that failed, at its observed risk
        stop = len(walk.accepted)
        rows_needed = Bd.rows_needed(eps, delta, max(walk.risks[stop], 0.0) if stop < len(walk.risks) else 0.0)
    stable, first = oracle_exits(logits, tolerance)
    avg = float(positions[ex].mean())
    return CertifiedPolicy(
        rule=rule_text, params=params, family=chosen if j is not None else "none", certified=j is not None,
        certificate=certificate, objective=objective, avg_layers=avg, layer_speedup=num_layers / avg,
        expected_latency_ms=None if cum_ms is None else float(cum_ms[ex].mean()),
        full_latency_ms=None if cum_ms is None else float(cum_ms[-1]),
        oracle_avg_layers=float(positions[stable].mean()),
        oracle_first_match_avg_layers=float(positions[first].mean()),
        oracle_latency_ms=None if cum_ms is None else float(cum_ms[stable].mean()),
        per_family=per_family, rows_needed=rows_needed, rows_needed_zero_errors=Bd.rows_needed(eps, delta),
        seed=seed, notes=tuple(notes))


def _applicable(risk: str, families: tuple[str, ...], regression: bool, task: Any, eps: float,
                labels: np.ndarray | None, rows: int) -> tuple[str, tuple[str, ...], list[str]]:
    """The risk and families that apply to this model and task, and notes on what was changed."""
    notes: list[str] = []
    if risk == "accuracy-drop":
        metric = getattr(task, "metric", None)
        if isinstance(task, str):
            from trtbert.data.tasks import get_task

            metric = get_task(task).metric
        if regression or (metric is not None and metric != "accuracy"):
            notes.append(f"the {metric or 'regression'} metric has no per-row decomposition, so no valid bound of "
                         f"its drop exists; certified disagreement with the full model at eps={eps:g} instead")
            risk = "disagreement"
        elif labels is None or len(labels) != rows:
            raise UsageError("risk 'accuracy-drop' needs the calibration rows' labels (one per row)")
    if regression:
        dropped = [f for f in families if f not in ("patience", "learned", "learned-cost")]
        if dropped:
            notes.append(f"families {dropped} need class probabilities; regression uses patience and learned")
        families = tuple(f for f in families if f in ("patience", "learned", "learned-cost"))
        if not families:
            raise UsageError("a regression model can be certified with the patience or learned families only")
    return risk, families, notes


@dataclass
class _Rows:
    fit: np.ndarray
    fit_hidden: np.ndarray | None
    fit_labels: np.ndarray | None
    cert: np.ndarray
    cert_hidden: np.ndarray | None
    cert_labels: np.ndarray | None


def _split(logits: np.ndarray, labels: np.ndarray | None, hidden: np.ndarray | None, families: tuple[str, ...],
           regression: bool, seed: int, fit_fraction: float, fit_logits: np.ndarray | None,
           fit_labels: np.ndarray | None, fit_hidden: np.ndarray | None) -> _Rows:
    """Shuffle with ``seed``; fit rows (given apart, or ``fit_fraction`` of the calibration rows when
    a family needs fitting or a choice) and certification rows."""
    rng = np.random.default_rng(seed)
    n = logits.shape[1]
    order = rng.permutation(n)

    def take(a: np.ndarray | None, idx: np.ndarray, axis: int = 1) -> np.ndarray | None:
        return None if a is None else np.take(np.asarray(a), idx, axis=axis)

    if fit_logits is not None:
        fit_logits = np.asarray(fit_logits)
        if fit_logits.ndim != 3 or fit_logits.shape[0] != logits.shape[0] or fit_logits.shape[2] != logits.shape[2]:
            raise UsageError(f"fit_logits {fit_logits.shape} must match the calibration logits {logits.shape} "
                             "except in rows")
        fit_order = rng.permutation(fit_logits.shape[1])
        return _Rows(fit_logits[:, fit_order], take(fit_hidden, fit_order), take(fit_labels, fit_order, 0),
                     logits[:, order], take(hidden, order), take(labels, order, 0))
    needs_fit = len(families) > 1 or any(f in FITTED for f in families) or (regression and "patience" in families)
    cut = int(round(fit_fraction * n)) if needs_fit else 0
    a, b = order[:cut], order[cut:]
    return _Rows(logits[:, a], take(hidden, a), take(labels, a, 0), logits[:, b], take(hidden, b), take(labels, b, 0))


def _choose(families: Sequence[str], paths: dict[str, CandidatePath], rows: _Rows, exit_layers: Sequence[int],
            fit_losses: np.ndarray | None, cost_of: np.ndarray, eps: float, delta: float, tolerance: float,
            folds: int = 3, costs_ms: Sequence[float] | None = None) -> str:
    """The family to certify, chosen on the fit rows only: the lowest cost its path reaches while its
    fit-part risk stays within what the certification rows could certify (averaged over levels from
    half to twice that rate, to steady the estimate on few rows). Fitted families are scored
    cross-fitted (``folds`` folds: fitted on the others, scored on each)."""
    fit, fit_hidden = rows.fit, rows.fit_hidden
    if fit_losses is None or fit.shape[1] < 2 * folds:
        return families[0]
    critical = _critical_rate(rows.cert.shape[1], eps, delta)
    if not math.isfinite(critical):
        return families[0]
    levels = critical * np.array([0.5, 0.75, 1.0, 1.5, 2.0])
    index = np.arange(fit.shape[1])
    parts = np.array_split(index, folds)
    scores = {}
    for f in families:
        if f in FITTED:
            exits = np.zeros((len(paths[f].texts), fit.shape[1]), dtype=np.int16)
            for part in parts:
                rest = np.setdiff1d(index, part)
                built = build_path(f, fit[:, rest], None if fit_hidden is None else fit_hidden[:, rest], exit_layers,
                                   None, tolerance, costs_ms)
                exits[:, part] = built.exits(fit[:, part], None if fit_hidden is None else fit_hidden[:, part])
        else:
            exits = paths[f].exits(fit, fit_hidden)
        risks = np.array([fit_losses[e, index].mean() for e in exits])
        costs = cost_of[exits].mean(axis=1)
        over = np.cumsum(risks[None, :] > levels[:, None], axis=1) == 0  # the walk has not stopped yet
        scores[f] = float(np.mean([min(float(cost_of[-1]), *costs[ok]) if ok.any() else float(cost_of[-1])
                                   for ok in over]))
    return min(families, key=lambda f: (scores[f], families.index(f)))
