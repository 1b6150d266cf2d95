"""Exit rules: pure numpy functions over the logits of the layers that have an exit head.

Every rule is vectorised over the rows of a batch: :meth:`ExitRule.step` takes one exit layer's
logits ``(rows, labels)`` and returns which rows stop there, keeping what it needs of the earlier
layers in an :class:`ExitState` (one counter and one previous prediction per row). The runner calls
it online, after each exit layer; :func:`exit_layers_for` replays it over a full
``(exit layers, rows, labels)`` array, which is what evaluation sweeps use. The last layer always ends.

Rules (``parse_rule`` reads them from text):

- ``none``: run every layer;
- ``entropy:T``: stop when the entropy of the softmax (nats) is below ``T`` (DeeBERT);
- ``confidence:P``: stop when the top probability is at least ``P``;
- ``patience:K``: stop when the predicted label has stayed the same for ``K`` consecutive exit layers
  after the first one, i.e. at the ``K+1``-th equal prediction in a row (PABEE);
- ``patience:K[,EPS]`` on regression bundles: the same, "the same" meaning ``|Δ value| < EPS``
  (default ``EPS`` = 0.1);
- ``patience-confidence:K,P``: stop at the ``K``-th consecutive exit layer that is confident
  (top probability ≥ ``P``) and predicts the same label as the confident layer before it;
- ``max-layers:N``: stop at the deepest exit layer not deeper than ``N`` (or the first exit layer,
  if every exit is deeper);
- ``budget:MS``: a latency budget per request: stop at the last exit layer whose cumulative time
  (measured) fits in ``MS`` milliseconds (the first exit layer at least);
- ``confidence-per-layer:P1,P2,...``: one confidence threshold per exit layer, in the order of the
  bundle's exit layers; ``off`` (or a missing value past the end of the list) never stops at that
  layer. Certified calibration (:mod:`trtbert.eval.certify`) writes these;
- ``learned[:Q]``: BERxiT's "learning to exit": a small logistic model per exit layer predicts, from
  the layer's confidence and its agreement with the earlier exit layers, whether the answer already
  equals the final one; stop when that probability is at least ``Q`` (default 0.5). Its parameters
  are plain JSON (:class:`trtbert.runtime.learned.LearnedExit`), stored in the manifest's exit policy
  next to the rule text: build it with :func:`rule_from_policy` or ``parse_rule(text, params=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtbert.errors import UsageError

REGRESSION = "regression"
DEFAULT_REGRESSION_EPS = 0.1
RULES = ("none", "entropy:T", "confidence:P", "patience:K[,EPS]", "patience-confidence:K,P", "max-layers:N",
         "budget:MS", "confidence-per-layer:P1,P2,...", "learned[:Q]")


# --- pure functions over logits -------------------------------------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64 for stable thresholds."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the softmax of each row: ``(..., labels) -> (...)``."""
    p = softmax(logits)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=-1)


def max_probability(logits: np.ndarray) -> np.ndarray:
    """Top softmax probability of each row: ``(..., labels) -> (...)``."""
    return softmax(logits).max(axis=-1)


# --- state and context ----------------------------------------------------------------------------


@dataclass
class ExitState:
    """What a rule remembers per row between exit layers: a counter and the previous prediction.

    Rules that need more history (per-layer thresholds, the learned exit) keep named per-row arrays in
    ``memory`` (first axis: rows), created on their first step; :meth:`keep` selects them with the rows.
    """

    count: np.ndarray  # (rows,) int64
    prev: np.ndarray  # (rows,) float64: previous label id or value; nan before the first exit layer
    memory: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def start(cls, rows: int) -> ExitState:
        """Fresh state for ``rows`` rows."""
        return cls(np.zeros(rows, dtype=np.int64), np.full(rows, np.nan))

    def keep(self, rows: np.ndarray) -> ExitState:
        """The state of the rows selected by ``rows`` (a boolean mask or indices)."""
        return ExitState(self.count[rows], self.prev[rows], {k: v[rows] for k, v in self.memory.items()})

    def put(self, rows: np.ndarray, sub: ExitState) -> None:
        """Write back the state ``sub`` of the rows ``rows`` (the inverse of :meth:`keep`)."""
        self.count[rows], self.prev[rows] = sub.count, sub.prev
        for key, value in sub.memory.items():
            if key not in self.memory:
                self.memory[key] = np.zeros((len(self.count),) + value.shape[1:], dtype=value.dtype)
            self.memory[key][rows] = value

    def seen(self, rows: int) -> np.ndarray:
        """How many exit layers each row had passed before this one; counts this one (call once per step)."""
        before = self.memory.get("seen")
        if before is None:
            before = np.zeros(rows, dtype=np.int64)
        self.memory["seen"] = before + 1
        return before


@dataclass(frozen=True)
class LayerContext:
    """Where the run stands at an exit layer.

    ``elapsed_ms`` is the time spent on the request so far; ``next_elapsed_ms`` the (estimated)
    cumulative time once the next exit layer is reached (None at the last exit layer). ``pooled``:
    the layer's hidden output averaged over each row's tokens (:func:`mean_pool`), ``(rows, hidden)``,
    given to rules with ``needs_hidden`` (a learned exit that reads it) and None otherwise.
    """

    layer: int
    next_layer: int | None
    elapsed_ms: float = 0.0
    next_elapsed_ms: float | None = None
    pooled: np.ndarray | None = None


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """A layer's hidden output ``(rows, tokens, hidden)`` averaged over each row's real tokens
    (``attention_mask`` ``(rows, tokens)``, 1 for a token), in float64: ``(rows, hidden)``."""
    mask = np.asarray(attention_mask, dtype=np.float64)[:, :, None]
    total = (np.asarray(hidden, dtype=np.float64) * mask).sum(axis=1)
    return total / np.maximum(mask.sum(axis=1), 1.0)


# --- rules ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExitRule:
    """Base rule: never exits early. Subclasses override :meth:`step`."""

    text: str = "none"
    classification_only = False
    needs_hidden = False  # True: the rule reads LayerContext.pooled (the runner must fill it)

    def check(self, problem_type: str) -> None:
        """Raise :class:`UsageError` if the rule cannot apply to a bundle of ``problem_type``."""
        if self.classification_only and problem_type == REGRESSION:
            raise UsageError(
                f"exit rule {self.text!r} needs class probabilities but this bundle is a regression model; "
                "use patience:K,EPS, max-layers:N or budget:MS"
            )

    def step(self, state: ExitState, logits: np.ndarray, ctx: LayerContext) -> np.ndarray:
        """Rows (bool ``(rows,)``) that stop at this exit layer; updates ``state`` in place."""
        return np.zeros(len(logits), dtype=bool)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Entropy(ExitRule):
    """Stop when the softmax entropy is below ``threshold`` (DeeBERT)."""

    threshold: float = 0.0
    classification_only = True

    def step(self, state: ExitState, logits: np.ndarray, ctx: LayerContext) -> np.ndarray:
        return entropy(logits) < self.threshold


@dataclass(frozen=True)
class Confidence(ExitRule):
    """Stop when the top probability reaches ``threshold``."""

    threshold: float = 1.0
    classification_only = True

    def step(self, state: ExitState, logits: np.ndarray, ctx: LayerContext) -> np.ndarray:
        return max_probability(logits) >= self.threshold


@dataclass(frozen=True)
class Patience(ExitRule):
    """Stop when the prediction is unchanged for ``patience`` exit layers after the first (PABEE).

    For regression, unchanged means ``|Δ value| < eps``; for classification, the same label.
    """

    patience: int = 1
    eps: float | None = None

    def step(self, state: ExitState, logits: np.ndarray, ctx: LayerContext) -> np.ndarray:
        if logits.shape[-1] == 1:  # regression: one value per row
            current = logits[:, 0].astype(np.float64)
            eps = DEFAULT_REGRESSION_EPS if self.eps is None else self.eps
            same = np.abs(current - state.prev) < eps  # nan (first layer) compares False
        else:
            current = logits.argmax(axis=-1).astype(np.float64)
            same = current == state.prev
        state.count[:] = np.where(same, state.count + 1, 0)
        state.prev[:] = current
        return state.count >= self.patience


@dataclass(frozen=True)
class PatienceConfidence(ExitRule):
    """Stop at the ``patience``-th consecutive confident exit layer (top probability ≥ ``threshold``)
    predicting the same label."""

    patience: int = 1
    threshold: float = 1.0
    classification_only = True

    def step(self, state: ExitState, logits: np.ndarray, ctx: LayerContext) -> np.ndarray:
        probs = softmax(logits)
        label = probs.argmax(axis=-1).astype(np.float64)
        confident = probs.max(axis=-1) >= self.threshold
        continues = confident & ((label == state.prev) | (state.count == 0))
        state.count[:] = np.where(continues, state.count + 1, np.where(confident, 1, 0))
        state.prev[:] = np.where(confident, label, np.nan)
        return state.count >= self.patience


@dataclass(frozen=True)
class MaxLayers(ExitRule):
    """Stop at the deepest exit layer not deeper than ``layers`` (or the first exit layer)."""

    layers: int = 1

    def step(self, state: ExitState, logits: np.ndarray, ctx: LayerContext) -> np.ndarray:
        stop = ctx.layer >= self.layers or (ctx.next_layer is not None and ctx.next_layer > self.layers)
        return np.full(len(logits), stop, dtype=bool)


@dataclass(frozen=True)
class Budget(ExitRule):
    """Stop at the last exit layer whose cumulative time fits in ``ms`` milliseconds."""

    ms: float = math.inf

    def step(self, state: ExitState, logits: np.ndarray, ctx: LayerContext) -> np.ndarray:
        nxt = ctx.next_elapsed_ms
        stop = ctx.elapsed_ms >= self.ms or (nxt is not None and nxt > self.ms)
        return np.full(len(logits), stop, dtype=bool)


@dataclass(frozen=True)
class ConfidencePerLayer(ExitRule):
    """Stop when the top probability reaches the threshold of this exit layer.

    ``thresholds[i]`` applies to the ``i``-th exit layer a row reaches (the bundle's exit layers in
    order); ``inf`` (written ``off``) and exit layers past the end of the tuple never stop early.
    """

    thresholds: tuple[float, ...] = ()
    classification_only = True

    def step(self, state: ExitState, logits: np.ndarray, ctx: LayerContext) -> np.ndarray:
        index = state.seen(len(logits))
        table = np.asarray(self.thresholds + (math.inf,), dtype=np.float64)
        limit = table[np.minimum(index, len(self.thresholds))]
        return max_probability(logits) >= limit


def per_layer_text(thresholds: Sequence[float]) -> str:
    """The rule text of per-layer confidence thresholds: ``confidence-per-layer:0.97,0.9,off``."""
    values = ["off" if not math.isfinite(t) or t > 1.0 else f"{t:.12g}" for t in thresholds]
    return "confidence-per-layer:" + ",".join(values)


# --- parsing ---------------------------------------------------------------------------------------


def _number(rule: str, text: str, kind: type, low: float | None = None, high: float | None = None) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"exit rule {rule!r}: {text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise UsageError(f"exit rule {rule!r}: {text} must be {bounds}")
    return value


def parse_rule(text: str, problem_type: str | None = None, params: Mapping[str, Any] | None = None) -> ExitRule:
    """Read an exit rule such as ``entropy:0.3`` or ``patience:2``; :class:`UsageError` if malformed.

    With ``problem_type``, also refuse a rule that the bundle cannot apply (``entropy`` on regression).
    ``params`` are the JSON parameters a ``learned`` rule needs (the manifest's ``exit_policy["params"]``).
    """
    raw = text
    text = text.strip().lower().replace(" ", "")
    name, _, args = text.partition(":")
    parts = args.split(",") if args else []
    if name == "confidence-per-layer":
        return _per_layer(raw, parts, problem_type)
    if name == "learned":
        from trtbert.runtime.learned import learned_rule

        if any(p == "" for p in parts):
            raise UsageError(f"cannot read exit rule {raw!r}: write it as learned, learned:Q or learned:Q1,Q2,...")
        values = [_number(raw, p, float, 0.0, 1.0) for p in parts]
        threshold: float | tuple[float, ...] | None = (None if not values else values[0] if len(values) == 1
                                                       else tuple(values))
        rule = learned_rule(text, threshold, params)
        if problem_type is not None:
            rule.check(problem_type)
        return rule
    expected = {"none": 0, "entropy": 1, "confidence": 1, "patience": (1, 2), "patience-confidence": 2,
                "max-layers": 1, "budget": 1}
    if name not in expected:
        raise UsageError(f"unknown exit rule {raw!r}; use one of: {', '.join(RULES)}")
    want = expected[name]
    counts = want if isinstance(want, tuple) else (want,)
    if len(parts) not in counts or any(p == "" for p in parts):
        usage = next(r for r in RULES if r.split(":")[0] == name)
        raise UsageError(f"cannot read exit rule {raw!r}: write it as {usage}")
    rule: ExitRule
    if name == "none":
        rule = ExitRule("none")
    elif name == "entropy":
        rule = Entropy(text, _number(raw, parts[0], float, 0.0))
    elif name == "confidence":
        rule = Confidence(text, _number(raw, parts[0], float, 0.0, 1.0))
    elif name == "patience":
        eps = _number(raw, parts[1], float, 0.0) if len(parts) == 2 else None
        rule = Patience(text, int(_number(raw, parts[0], int, 1)), eps)
    elif name == "patience-confidence":
        rule = PatienceConfidence(text, int(_number(raw, parts[0], int, 1)), _number(raw, parts[1], float, 0.0, 1.0))
    elif name == "max-layers":
        rule = MaxLayers(text, int(_number(raw, parts[0], int, 1)))
    else:
        rule = Budget(text, _number(raw, parts[0], float, 0.0))
    if problem_type is not None:
        rule.check(problem_type)
        if isinstance(rule, Patience) and rule.eps is not None and problem_type != REGRESSION:
            raise UsageError(f"exit rule {raw!r}: EPS applies to regression bundles only; use patience:{rule.patience}")
    return rule


def _per_layer(raw: str, parts: list[str], problem_type: str | None) -> ExitRule:
    if not parts or any(p == "" for p in parts):
        raise UsageError(f"cannot read exit rule {raw!r}: write it as confidence-per-layer:P1,P2,... "
                         "(one threshold per exit layer; off never stops there)")
    values = tuple(math.inf if p == "off" else _number(raw, p, float, 0.0, 1.0) for p in parts)
    rule = ConfidencePerLayer(per_layer_text(values), values)
    if problem_type is not None:
        rule.check(problem_type)
    return rule


def as_rule(rule: str | ExitRule | None, problem_type: str | None = None,
            params: Mapping[str, Any] | None = None) -> ExitRule:
    """An :class:`ExitRule` from a rule, its text (with a learned rule's ``params``), or None (``none``)."""
    if rule is None:
        return ExitRule("none")
    if isinstance(rule, ExitRule):
        if problem_type is not None:
            rule.check(problem_type)
        return rule
    return parse_rule(rule, problem_type, params)


def rule_from_policy(policy: Mapping[str, Any] | None, problem_type: str | None = None) -> ExitRule:
    """The rule of a manifest's ``exit_policy`` (``{"rule": text, "params": {...} or absent, ...}``);
    ``none`` without a policy."""
    if not policy or not policy.get("rule"):
        return ExitRule("none")
    return parse_rule(str(policy["rule"]), problem_type, policy.get("params"))


# --- offline replay --------------------------------------------------------------------------------


def exit_layers_for(
    rule: str | ExitRule,
    logits: np.ndarray,
    exit_layers: Sequence[int],
    cumulative_ms: Sequence[float] | np.ndarray | None = None,
    hidden: np.ndarray | None = None,
) -> np.ndarray:
    """Each row's exit layer (1-based depth) under ``rule``, from all exit layers' logits.

    ``logits`` is ``(len(exit_layers), rows, labels)``; ``cumulative_ms`` (needed by ``budget``) is the
    time to reach each exit layer from the start of a request, ``(len(exit_layers),)`` or
    ``(len(exit_layers), rows)``; ``hidden`` (needed by rules with ``needs_hidden``) each exit layer's
    pooled hidden states ``(len(exit_layers), rows, hidden)``. The runner makes the same decision online.
    """
    rule = as_rule(rule)
    logits = np.asarray(logits)
    if logits.ndim != 3 or logits.shape[0] != len(exit_layers):
        raise UsageError(f"logits must be (exit layers={len(exit_layers)}, rows, labels), got {logits.shape}")
    if isinstance(rule, Budget) and cumulative_ms is None:
        raise UsageError("the budget rule needs the cumulative time to each exit layer (cumulative_ms)")
    if rule.needs_hidden and hidden is None:
        raise UsageError(f"exit rule {rule.text!r} reads each exit layer's pooled hidden state; pass hidden "
                         "(exit layers, rows, hidden) from the full pass")
    if hidden is not None and (np.ndim(hidden) != 3 or np.shape(hidden)[:2] != logits.shape[:2]):
        raise UsageError(f"hidden must be (exit layers, rows, hidden) = {logits.shape[:2]} + (hidden,), "
                         f"got {np.shape(hidden)}")
    if not rule.needs_hidden:
        hidden = None
    rows = logits.shape[1]
    times = None if cumulative_ms is None else np.broadcast_to(
        np.asarray(cumulative_ms, dtype=np.float64).reshape(len(exit_layers), -1), (len(exit_layers), rows))
    state = ExitState.start(rows)
    chosen = np.full(rows, exit_layers[-1], dtype=np.int64)
    active = np.ones(rows, dtype=bool)
    for i, layer in enumerate(exit_layers):
        last = i == len(exit_layers) - 1
        nxt = None if last else exit_layers[i + 1]
        pooled = None if hidden is None else np.asarray(hidden[i])
        if times is None:
            done = rule.step(state, logits[i], LayerContext(layer, nxt, pooled=pooled))
        else:  # time differs per row: decide row by row (the budget rule only reads the context)
            done = np.zeros(rows, dtype=bool)
            for r in range(rows):
                ctx = LayerContext(layer, nxt, float(times[i, r]), None if last else float(times[i + 1, r]),
                                   None if pooled is None else pooled[r:r + 1])
                sub = state.keep(np.array([r]))
                done[r] = rule.step(sub, logits[i, r:r + 1], ctx)[0]
                state.put(np.array([r]), sub)
        newly = active & (done | last)
        chosen[newly] = layer
        active &= ~newly
    return chosen


def logits_at_exit(logits: np.ndarray, exit_layers: Sequence[int], chosen: np.ndarray) -> np.ndarray:
    """The logits ``(rows, labels)`` each row had at its exit layer ``chosen`` (from :func:`exit_layers_for`)."""
    index = {layer: i for i, layer in enumerate(exit_layers)}
    rows = np.arange(logits.shape[1])
    return np.asarray(logits)[[index[int(c)] for c in chosen], rows]
