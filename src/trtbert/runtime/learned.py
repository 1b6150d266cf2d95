"""A learned exit (BERxiT's "learning to exit"): per exit layer, a logistic model predicts whether the
answer at that layer already equals the final one; the rule stops when the prediction is at least Q.

Pure numpy, online and offline alike: :meth:`LearnedExit.probabilities` is called by the rule once per
exit layer with the rule's :class:`~trtbert.runtime.exits.ExitState` (which keeps the history the
features need), and :meth:`LearnedExit.replay` makes the same calls over a full pass's logits, so a
model fitted offline scores rows exactly as the runner will. The parameters are plain JSON
(:meth:`LearnedExit.to_json`), stored in the manifest's exit policy next to the rule text ``learned:Q``.

Features of a classification layer (``FEATURES[CLASSIFICATION]``): top probability, margin between
the top two probabilities, entropy over ``log(labels)``, the top-two log-probability gap, how many
exit layers in a row before this one predicted the same label, the previous exit layer's
probability of this label, and the mean over the exit layers so far of the log-probability gap of
this layer's label against the best other label (agreement weighted by confidence). Regression
(``FEATURES[REGRESSION]``): the value, ``|Δ value|`` to the previous exit layer and the one before,
and how many exit layers in a row changed by less than the tolerance.

Optionally (classification), the layer's pooled hidden state (:func:`~trtbert.runtime.exits.mean_pool`
of the layer's output, ``(rows, hidden)``) enters too, aligned with the layer's answer ``c``: the
model adds ``h . W[c] + b[c] - mean_k (h . W[k] + b[k])``, i.e. a linear probe, shrunk hard towards
zero, of whether the final layer will keep ``c``. Rules whose model reads it have ``needs_hidden``;
the runner then passes the pooled state in :class:`~trtbert.runtime.exits.LayerContext`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtbert.errors import UsageError
from trtbert.runtime.exits import REGRESSION, ExitRule, ExitState, LayerContext

CLASSIFICATION = "classification"
FEATURES = {
    CLASSIFICATION: ("max_prob", "margin", "entropy", "gap", "run", "prev_prob", "mean_gap"),
    REGRESSION: ("value", "delta", "delta_prev", "run"),
}
FORMAT = "trtbert-learned-exit/1"
_GAP_CLIP = 30.0
FEATURE_L2 = 1.0  # L2 penalty on the standardised features' weights
HIDDEN_L2 = 100.0  # L2 penalty on the standardised hidden state's weights (a strong prior: no probe)
HIDDEN_WIDTH = 512  # at most this many hidden-state weights per model are fitted (principal components beyond)


def _sigmoid(s: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * s))


def _classification_features(state: ExitState, logits: np.ndarray) -> np.ndarray:
    rows, labels = logits.shape
    z = np.asarray(logits, dtype=np.float64)
    logp = z - z.max(axis=-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=-1, keepdims=True))
    probs = np.exp(logp)
    order = np.argsort(-logp, axis=-1, kind="stable")
    top, second = order[:, 0], order[:, 1]
    r = np.arange(rows)
    p1, p2 = probs[r, top], probs[r, second]
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(probs > 0, probs * logp, 0.0).sum(axis=-1) / math.log(labels)
    gap = np.minimum(logp[r, top] - logp[r, second], _GAP_CLIP)
    label = top.astype(np.float64)
    run = np.where(label == state.prev, state.count + 1, 0)
    prev_probs = state.memory.get("prev_probs")
    prev_prob = np.full(rows, 1.0 / labels) if prev_probs is None else prev_probs[r, top]
    total = state.memory.get("sum_logp")
    total = logp if total is None else total + logp
    count = state.seen(rows) + 1  # exit layers so far, this one included
    others = total.copy()
    others[r, top] = -np.inf
    mean_gap = np.clip((total[r, top] - others.max(axis=-1)) / count, -_GAP_CLIP, _GAP_CLIP)
    state.count[:] = run
    state.prev[:] = label
    state.memory["prev_probs"] = probs
    state.memory["sum_logp"] = total
    return np.stack([p1, p1 - p2, ent, gap, run.astype(np.float64), prev_prob, mean_gap], axis=1)


def _regression_features(state: ExitState, logits: np.ndarray, tolerance: float) -> np.ndarray:
    value = np.asarray(logits, dtype=np.float64)[:, 0]
    rows = len(value)
    first = np.isnan(state.prev)
    delta = np.where(first, 0.0, np.abs(value - np.where(first, 0.0, state.prev)))
    delta_prev = state.memory.get("delta")
    delta_prev = np.zeros(rows) if delta_prev is None else delta_prev
    run = np.where(~first & (delta < tolerance), state.count + 1, 0)
    state.count[:] = run
    state.prev[:] = value
    state.memory["delta"] = delta
    return np.stack([value, delta, delta_prev, run.astype(np.float64)], axis=1)


def layer_features(state: ExitState, logits: np.ndarray, problem: str, tolerance: float = 0.1) -> np.ndarray:
    """Features ``(rows, len(FEATURES[problem]))`` of one exit layer's logits; updates ``state``."""
    if problem == REGRESSION:
        return _regression_features(state, logits, tolerance)
    return _classification_features(state, logits)


def feature_matrix(logits: np.ndarray, problem: str, tolerance: float = 0.1) -> np.ndarray:
    """Every exit layer's features ``(exit layers, rows, features)`` from a full pass's logits
    ``(exit layers, rows, labels)``: the same calls the rule makes online."""
    logits = np.asarray(logits)
    state = ExitState.start(logits.shape[1])
    return np.stack([layer_features(state, logits[i], problem, tolerance) for i in range(len(logits))])


def problem_of(logits: np.ndarray) -> str:
    """``regression`` for one output column, else ``classification``."""
    return REGRESSION if np.asarray(logits).shape[-1] == 1 else CLASSIFICATION


def _aligned(hidden: np.ndarray, label: np.ndarray, labels: int) -> np.ndarray:
    """``(rows, hidden)`` -> the hidden state in the coordinates of each row's answer: ``(e_c - 1/C) ⊗ h``
    (two labels: ``±h``, the sign of the answer)."""
    if labels == 2:
        return np.where(label == 1, 1.0, -1.0)[:, None] * hidden
    onehot = np.eye(labels)[label] - 1.0 / labels
    return (onehot[:, :, None] * hidden[:, None, :]).reshape(len(hidden), -1)


def _newton(z: np.ndarray, y: np.ndarray, penalty: np.ndarray, iterations: int = 100) -> np.ndarray:
    """L2-penalised logistic regression by Newton's method (IRLS); the last column of ``z`` is the bias."""
    w = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = _sigmoid(z @ w)
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if float(np.abs(step).max()) < 1e-7:
            break
    return w


@dataclass(frozen=True)
class LayerModel:
    """Logistic regression over standardised features, ``sigmoid(w . (x - mean) / scale + bias)``,
    plus, when ``hidden_weights`` ``(labels, hidden)`` is set, the aligned hidden-state term."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    hidden_weights: tuple[tuple[float, ...], ...] | None = None
    hidden_bias: tuple[float, ...] | None = None

    def logit(self, x: np.ndarray, hidden: np.ndarray | None = None, label: np.ndarray | None = None) -> np.ndarray:
        """``(rows, features) -> (rows,)`` log-odds that the answer is already final."""
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        s = z @ np.asarray(self.weights) + self.bias
        if self.hidden_weights is not None:
            if hidden is None or label is None:
                raise UsageError("this learned exit reads the layers' pooled hidden states, which were not given")
            per_label = np.asarray(hidden, dtype=np.float64) @ np.asarray(self.hidden_weights).T + np.asarray(self.hidden_bias)
            s = s + per_label[np.arange(len(s)), label] - per_label.mean(axis=1)
        return s

    def probability(self, x: np.ndarray, hidden: np.ndarray | None = None, label: np.ndarray | None = None) -> np.ndarray:
        """``(rows, features) -> (rows,)`` predicted probability that the answer is already final."""
        return _sigmoid(self.logit(x, hidden, label))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float = FEATURE_L2, hidden: np.ndarray | None = None,
            label: np.ndarray | None = None, labels: int = 2, hidden_l2: float = HIDDEN_L2,
            hidden_width: int = HIDDEN_WIDTH) -> LayerModel:
        """Fit by Newton's method with L2 penalties on the standardised weights (the bias is free).

        The standardised hidden state keeps its leading ``hidden_width`` principal components (per
        label when there are more than two), so that a wide model still fits in seconds; the
        stored weights are in the raw hidden space either way."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        parts, penalty = [(x - mean) / scale], [np.full(x.shape[1], float(l2))]
        if hidden is not None:
            h = np.asarray(hidden, dtype=np.float64)
            h_mean, h_scale = h.mean(axis=0), h.std(axis=0)
            h_scale = np.where(h_scale > 1e-12, h_scale, 1.0)
            h = (h - h_mean) / h_scale
            keep = max(1, hidden_width // (1 if labels == 2 else labels))
            basis = np.eye(h.shape[1])
            if h.shape[1] > keep:  # principal directions of the fit rows
                basis = np.linalg.svd(h, full_matrices=False)[2][:keep].T
            parts.append(_aligned(h @ basis, np.asarray(label), labels))
            penalty.append(np.full(parts[-1].shape[1], float(hidden_l2)))
        z = np.hstack(parts + [np.ones((len(x), 1))])
        w = _newton(z, y, np.concatenate(penalty + [np.array([1e-8])]))
        width = x.shape[1]
        hidden_weights = hidden_bias = None
        if hidden is not None:  # fold the basis and the standardisation into raw-space weights, a row per label
            u = w[width:-1]
            per_label = np.stack([-u, u]) if labels == 2 else u.reshape(labels, -1)
            raw = (per_label @ basis.T) / h_scale[None]
            hidden_weights = tuple(tuple(float(v) for v in row) for row in raw)
            hidden_bias = tuple(float(v) for v in -(raw @ h_mean))
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in scale),
                   tuple(float(v) for v in w[:width]), float(w[-1]), hidden_weights, hidden_bias)


@dataclass(frozen=True)
class LearnedExit:
    """Per exit layer a :class:`LayerModel` (None: never stop early there, e.g. the last layer)."""

    problem: str
    exit_layers: tuple[int, ...]
    models: tuple[LayerModel | None, ...]
    tolerance: float = 0.1  # regression: the answers are "equal" when |Δ value| <= tolerance

    @property
    def features(self) -> tuple[str, ...]:
        """Names of the features, in the order of each model's weights."""
        return FEATURES[self.problem]

    @property
    def uses_hidden(self) -> bool:
        """Whether the models read the layers' pooled hidden states."""
        return any(m is not None and m.hidden_weights is not None for m in self.models)

    def probabilities(self, state: ExitState, logits: np.ndarray, layer: int,
                      hidden: np.ndarray | None = None) -> np.ndarray:
        """Predicted probability ``(rows,)`` that each row's answer at exit layer ``layer`` is final."""
        x = layer_features(state, logits, self.problem, self.tolerance)
        if layer not in self.exit_layers:
            raise UsageError(f"the learned exit was fitted for exit layers {list(self.exit_layers)}, not layer "
                             f"{layer}; calibrate it again on this bundle")
        model = self.models[self.exit_layers.index(layer)]
        if model is None:
            return np.zeros(len(x))
        label = None if self.problem == REGRESSION else np.asarray(logits).argmax(axis=-1)
        return model.probability(x, hidden, label)

    def replay(self, logits: np.ndarray, hidden: np.ndarray | None = None) -> np.ndarray:
        """Predicted probabilities ``(exit layers, rows)`` over a full pass's logits (and pooled hidden
        states ``(exit layers, rows, hidden)`` when the model reads them)."""
        logits = np.asarray(logits)
        state = ExitState.start(logits.shape[1])
        return np.stack([self.probabilities(state, logits[i], layer, None if hidden is None else hidden[i])
                         for i, layer in enumerate(self.exit_layers)])

    @classmethod
    def fit(cls, logits: np.ndarray, exit_layers: tuple[int, ...], tolerance: float = 0.1,
            hidden: np.ndarray | None = None, l2: float = FEATURE_L2, hidden_l2: float = HIDDEN_L2) -> LearnedExit:
        """Fit one model per exit layer but the last, on whether each row's answer there equals its
        answer at the last exit layer (regression: within ``tolerance``). ``hidden``: the pooled hidden
        states ``(exit layers, rows, hidden)``, classification only."""
        logits = np.asarray(logits)
        problem = problem_of(logits)
        if hidden is not None and problem == REGRESSION:
            raise UsageError("the learned exit reads hidden states for classification models only")
        features = feature_matrix(logits, problem, tolerance)
        if problem == REGRESSION:
            final = logits[-1, :, 0]
            target = np.abs(logits[:, :, 0] - final[None]) <= tolerance
        else:
            answers = logits.argmax(axis=-1)
            target = answers == answers[-1][None]
        models: list[LayerModel | None] = []
        for i in range(len(exit_layers) - 1):
            if hidden is None:
                models.append(LayerModel.fit(features[i], target[i], l2=l2))
            else:
                models.append(LayerModel.fit(features[i], target[i], l2=l2, hidden=hidden[i],
                                             label=answers[i], labels=logits.shape[-1], hidden_l2=hidden_l2))
        models.append(None)
        return cls(problem, tuple(int(v) for v in exit_layers), tuple(models), float(tolerance))

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON parameters (the manifest's ``exit_policy["params"]``)."""
        def layer(m: LayerModel) -> dict[str, Any]:
            out: dict[str, Any] = {"mean": list(m.mean), "scale": list(m.scale), "weights": list(m.weights),
                                   "bias": m.bias}
            if m.hidden_weights is not None:
                out["hidden_weights"] = [list(row) for row in m.hidden_weights]
                out["hidden_bias"] = list(m.hidden_bias or ())
            return out

        return {"format": FORMAT, "problem": self.problem, "features": list(self.features),
                "exit_layers": list(self.exit_layers), "tolerance": self.tolerance,
                "hidden": "mean-pool" if self.uses_hidden else None,
                "models": [None if m is None else layer(m) for m in self.models]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LearnedExit:
        """Parameters written by :meth:`to_json`; :class:`UsageError` if they do not fit this version."""
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            problem = str(data["problem"])
            if problem not in FEATURES:
                raise ValueError(f"problem {problem!r}")
            if list(data["features"]) != list(FEATURES[problem]):
                raise ValueError(f"features {data['features']} differ from this version's {list(FEATURES[problem])}")
            layers = tuple(int(v) for v in data["exit_layers"])
            width = len(FEATURES[problem])
            models: list[LayerModel | None] = []
            for m in data["models"]:
                if m is None:
                    models.append(None)
                    continue
                hw = m.get("hidden_weights")
                model = LayerModel(tuple(map(float, m["mean"])), tuple(map(float, m["scale"])),
                                   tuple(map(float, m["weights"])), float(m["bias"]),
                                   None if hw is None else tuple(tuple(map(float, row)) for row in hw),
                                   None if hw is None else tuple(map(float, m["hidden_bias"])))
                if not len(model.mean) == len(model.scale) == len(model.weights) == width:
                    raise ValueError(f"a layer model has {len(model.weights)} weights, expected {width}")
                if hw is not None and (len({len(row) for row in hw}) != 1 or len(hw) != len(model.hidden_bias or ())):
                    raise ValueError("hidden weights must be one row per label, with one bias per label")
                models.append(model)
            if len(models) != len(layers):
                raise ValueError(f"{len(models)} layer models for {len(layers)} exit layers")
            return cls(problem, layers, tuple(models), float(data.get("tolerance", 0.1)))
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"cannot read the learned exit's parameters ({e}); calibrate again with "
                             "trtbert eval --calibrate") from None


@dataclass(frozen=True)
class Learned(ExitRule):
    """Stop when the learned model's probability that the answer is final reaches ``threshold`` (one
    value, or one per exit layer: a cost-aware policy asks for more certainty where stopping saves less)."""

    model: LearnedExit | None = None
    threshold: float | tuple[float, ...] = 0.5

    @property
    def needs_hidden(self) -> bool:  # type: ignore[override]
        return self.model is not None and self.model.uses_hidden

    def check(self, problem_type: str) -> None:
        if self.model is not None and (self.model.problem == REGRESSION) != (problem_type == REGRESSION):
            raise UsageError(f"exit rule {self.text!r} was learned for a {self.model.problem} model but this "
                             f"bundle is {problem_type}; calibrate it again on this bundle")

    def threshold_at(self, layer: int) -> float:
        """The threshold at exit layer ``layer``."""
        if isinstance(self.threshold, tuple):
            assert self.model is not None
            i = self.model.exit_layers.index(layer)
            return self.threshold[i] if i < len(self.threshold) else math.inf
        return self.threshold

    def step(self, state: ExitState, logits: np.ndarray, ctx: LayerContext) -> np.ndarray:
        assert self.model is not None
        return self.model.probabilities(state, logits, ctx.layer, ctx.pooled) >= self.threshold_at(ctx.layer)


def learned_rule(text: str, threshold: float | tuple[float, ...] | None, params: Mapping[str, Any] | None) -> Learned:
    """The rule ``learned[:Q]`` or ``learned:Q1,...,Qn`` (one threshold per exit layer but the last) with its
    parameters (see :func:`trtbert.runtime.exits.parse_rule`)."""
    if params is None:
        raise UsageError(f"exit rule {text!r} needs the learned model's parameters, which calibration stores in "
                         "the manifest's exit policy; run trtbert eval --calibrate first, or use the bundle's "
                         "default policy")
    model = LearnedExit.from_json(params)
    if isinstance(threshold, tuple):
        if len(threshold) != len(model.exit_layers) - 1:
            raise UsageError(f"exit rule {text!r} has {len(threshold)} thresholds; the learned exit has "
                             f"{len(model.exit_layers) - 1} exit layers before the last")
        return Learned("learned:" + ",".join(f"{q:.12g}" for q in threshold), model, threshold)
    q = 0.5 if threshold is None else threshold
    return Learned(f"learned:{q:.12g}", model, q)
