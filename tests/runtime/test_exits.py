"""Exit rules against direct per-row loops over per-layer logits (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trtbert.errors import UsageError
from trtbert.runtime import exits as X

EXIT_LAYERS = (1, 2, 3, 4, 5, 6)


def _logits(rows: int = 64, labels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Few labels and a growing scale: predictions repeat and sharpen with depth, so rules fire at various layers.
    scale = np.linspace(0.5, 4.0, len(EXIT_LAYERS))[:, None, None]
    return (rng.normal(size=(len(EXIT_LAYERS), rows, labels)) * scale).astype(np.float32)


def _probs(row: np.ndarray) -> list[float]:
    e = [math.exp(float(v) - float(max(row))) for v in row]
    return [v / sum(e) for v in e]


def _expected(logits: np.ndarray, decide) -> list[int]:
    """Each row's exit: the first layer where ``decide(history of that row)`` holds, else the last."""
    out = []
    for r in range(logits.shape[1]):
        chosen = EXIT_LAYERS[-1]
        for i, layer in enumerate(EXIT_LAYERS):
            if decide([logits[j, r] for j in range(i + 1)], i):
                chosen = layer
                break
        out.append(chosen)
    return out


def _argmax(row: np.ndarray) -> int:
    return max(range(len(row)), key=lambda k: row[k])


def _entropy(row: np.ndarray) -> float:
    return -sum(p * math.log(p) for p in _probs(row) if p > 0)


def _patience(history: list[np.ndarray], k: int) -> bool:
    run = 0
    for a, b in zip(history, history[1:]):
        run = run + 1 if _argmax(a) == _argmax(b) else 0
    return run >= k


def _patience_confidence(history: list[np.ndarray], k: int, p: float) -> bool:
    run, prev = 0, None
    for row in history:
        label, conf = _argmax(row), max(_probs(row))
        if conf >= p and (run == 0 or label == prev):
            run += 1
        elif conf >= p:
            run = 1
        else:
            run = 0
        prev = label if conf >= p else None
    return run >= k


CASES = {
    "entropy:0.6": lambda h, i: _entropy(h[-1]) < 0.6,
    "entropy:0.2": lambda h, i: _entropy(h[-1]) < 0.2,
    "confidence:0.8": lambda h, i: max(_probs(h[-1])) >= 0.8,
    "patience:1": lambda h, i: _patience(h, 1),
    "patience:2": lambda h, i: _patience(h, 2),
    "patience-confidence:2,0.6": lambda h, i: _patience_confidence(h, 2, 0.6),
    "max-layers:3": lambda h, i: EXIT_LAYERS[i] >= 3,
    "none": lambda h, i: False,
}


@pytest.mark.parametrize("rule", list(CASES))
def test_rule_matches_direct_computation(rule: str) -> None:
    logits = _logits()
    got = X.exit_layers_for(rule, logits, EXIT_LAYERS)
    want = _expected(logits, CASES[rule])
    assert got.tolist() == want
    if rule not in ("none", "max-layers:3"):
        assert len(set(want)) > 1, "the case should make rows exit at different layers"


def test_patience_is_pabee() -> None:
    # label sequence 0, 0 -> patience:1 exits at layer 2; 0,1,1,1 -> patience:2 exits at layer 4
    a = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])
    b = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    logits = np.stack([a, b], axis=1)  # (layers, rows, labels)
    assert X.exit_layers_for("patience:1", logits, EXIT_LAYERS).tolist() == [2, 3]
    assert X.exit_layers_for("patience:2", logits, EXIT_LAYERS).tolist() == [5, 4]


def test_max_layers_uses_the_deepest_exit_not_beyond() -> None:
    layers = (2, 4, 6, 12)
    logits = np.zeros((4, 3, 2))
    assert X.exit_layers_for("max-layers:5", logits, layers).tolist() == [4, 4, 4]
    assert X.exit_layers_for("max-layers:1", logits, layers).tolist() == [2, 2, 2]
    assert X.exit_layers_for("max-layers:99", logits, layers).tolist() == [12, 12, 12]


def test_budget_uses_cumulative_times() -> None:
    logits = np.zeros((len(EXIT_LAYERS), 2, 2))
    cumulative = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert X.exit_layers_for("budget:35", logits, EXIT_LAYERS, cumulative).tolist() == [3, 3]
    assert X.exit_layers_for("budget:5", logits, EXIT_LAYERS, cumulative).tolist() == [1, 1]
    assert X.exit_layers_for("budget:1000", logits, EXIT_LAYERS, cumulative).tolist() == [6, 6]
    per_row = np.array(cumulative)[:, None] * np.array([1.0, 2.0])[None, :]
    assert X.exit_layers_for("budget:45", logits, EXIT_LAYERS, per_row).tolist() == [4, 2]
    with pytest.raises(UsageError, match="cumulative"):
        X.exit_layers_for("budget:45", logits, EXIT_LAYERS)


def test_regression_patience_on_value_changes() -> None:
    values = np.array([[1.0, 1.05, 1.3, 1.32, 1.33, 2.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]).T[:, :, None]
    assert X.exit_layers_for("patience:1", values, EXIT_LAYERS).tolist() == [2, 6]  # default eps 0.1
    assert X.exit_layers_for("patience:2,0.05", values, EXIT_LAYERS).tolist() == [5, 6]
    assert X.exit_layers_for("patience:1,2", values, EXIT_LAYERS).tolist() == [2, 2]


def test_logits_at_exit() -> None:
    logits = _logits(rows=5)
    chosen = X.exit_layers_for("patience:1", logits, EXIT_LAYERS)
    picked = X.logits_at_exit(logits, EXIT_LAYERS, chosen)
    for r, layer in enumerate(chosen):
        assert np.array_equal(picked[r], logits[EXIT_LAYERS.index(layer), r])


@pytest.mark.parametrize("text, message", [
    ("entropy", "entropy:T"),
    ("entropy:", "entropy:T"),
    ("entropy:abc", "not a number"),
    ("entropy:-1", "at least 0"),
    ("confidence:1.5", "between 0 and 1"),
    ("patience:0", "at least 1"),
    ("patience:1.5", "not an integer"),
    ("patience:1,2,3", "patience:K"),
    ("patience-confidence:2", "patience-confidence:K,P"),
    ("max-layers:x", "not an integer"),
    ("budget:nan", "budget"),
    ("fastest", "unknown exit rule"),
])
def test_malformed_rules(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        X.parse_rule(text)


def test_rules_the_bundle_cannot_apply() -> None:
    for text in ("entropy:0.3", "confidence:0.9", "patience-confidence:2,0.9"):
        with pytest.raises(UsageError, match="regression"):
            X.parse_rule(text, "regression")
    with pytest.raises(UsageError, match="EPS applies to regression"):
        X.parse_rule("patience:2,0.1", "single_label_classification")
    for text in ("none", "patience:2,0.1", "max-layers:2", "budget:10"):
        X.parse_rule(text, "regression")
    assert isinstance(X.parse_rule(" Entropy:0.3 "), X.Entropy)


def test_entropy_and_confidence_helpers() -> None:
    uniform = np.zeros((1, 4))
    assert X.entropy(uniform)[0] == pytest.approx(math.log(4))
    assert X.max_probability(uniform)[0] == pytest.approx(0.25)


# --- per-layer thresholds, the learned exit, hidden states ------------------------------------------------


def _online(rule: X.ExitRule, logits: np.ndarray, hidden: np.ndarray | None = None) -> list[int]:
    """The runner's loop: rows that stop leave the batch, and the state keeps only the rows that go on."""
    rows = logits.shape[1]
    state, active = X.ExitState.start(rows), np.arange(rows)
    exits = [0] * rows
    for i, layer in enumerate(EXIT_LAYERS):
        last = i == len(EXIT_LAYERS) - 1
        pooled = None if hidden is None else hidden[i, active]
        ctx = X.LayerContext(layer, None if last else EXIT_LAYERS[i + 1], pooled=pooled)
        done = rule.step(state, logits[i, active], ctx) | last
        for r in active[done]:
            exits[int(r)] = layer
        state, active = state.keep(~done), active[~done]
        if not len(active):
            break
    return exits


def test_confidence_per_layer_matches_direct_computation() -> None:
    logits = _logits(rows=200, labels=3, seed=2)
    thresholds = [0.9, 0.8, math.inf, 0.6, 0.5]
    rule = X.parse_rule("confidence-per-layer:0.9,0.8,off,0.6,0.5")
    assert rule.text == "confidence-per-layer:0.9,0.8,off,0.6,0.5" and isinstance(rule, X.ConfidencePerLayer)
    want = _expected(logits, lambda h, i: i < len(thresholds) and max(_probs(h[-1])) >= thresholds[i])
    got = X.exit_layers_for(rule, logits, EXIT_LAYERS)
    assert got.tolist() == want and len(set(want)) > 2 and 3 not in want
    assert _online(rule, logits) == want
    # fewer values than exit layers: the rest never stop early
    short = X.exit_layers_for("confidence-per-layer:0.99", logits, EXIT_LAYERS)
    assert set(short.tolist()) <= {1, 6}
    assert X.per_layer_text([0.97, math.inf, 2.0]) == "confidence-per-layer:0.97,off,off"


@pytest.mark.parametrize("text, message", [
    ("confidence-per-layer", "confidence-per-layer:P1,P2"),
    ("confidence-per-layer:0.9,,0.8", "confidence-per-layer:P1,P2"),
    ("confidence-per-layer:1.5", "between 0 and 1"),
    ("confidence-per-layer:x", "not a number"),
    ("learned", "needs the learned model's parameters"),
    ("learned:0.9", "needs the learned model's parameters"),
    ("learned:2", "between 0 and 1"),
    ("learned:0.9,0.8", "needs the learned model's parameters"),  # one threshold per exit layer: learned-cost
    ("learned:0.9,", "learned:Q1,Q2"),
])
def test_malformed_new_rules(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        X.parse_rule(text)


def test_per_layer_rule_refuses_regression() -> None:
    with pytest.raises(UsageError, match="regression"):
        X.parse_rule("confidence-per-layer:0.9", "regression")


def test_online_equals_offline_for_stateful_rules() -> None:
    from trtbert.runtime.learned import LearnedExit

    logits = _logits(rows=300, labels=3, seed=4)
    hidden = np.random.default_rng(5).normal(size=(len(EXIT_LAYERS), 300, 8))
    model = LearnedExit.fit(logits, EXIT_LAYERS)
    with_hidden = LearnedExit.fit(logits, EXIT_LAYERS, hidden=hidden)
    rules = [X.parse_rule("patience:2"), X.parse_rule("patience-confidence:2,0.6"),
             X.parse_rule("confidence-per-layer:0.95,0.9,0.85,0.8,0.7"),
             X.parse_rule("learned:0.4", params=model.to_json()),  # answers agree with the last by chance here
             X.parse_rule("learned:0.4", params=with_hidden.to_json())]
    for rule in rules:
        h = hidden if rule.needs_hidden else None
        offline = X.exit_layers_for(rule, logits, EXIT_LAYERS, hidden=h).tolist()
        assert _online(rule, logits, h) == offline, rule.text
        assert len(set(offline)) > 1, rule.text


def test_a_rule_reading_hidden_states_needs_them() -> None:
    from trtbert.runtime.learned import LearnedExit

    logits = _logits(rows=50, seed=6)
    hidden = np.random.default_rng(0).normal(size=(len(EXIT_LAYERS), 50, 4))
    rule = X.parse_rule("learned:0.5", params=LearnedExit.fit(logits, EXIT_LAYERS, hidden=hidden).to_json())
    assert rule.needs_hidden and not X.parse_rule("confidence:0.9").needs_hidden
    with pytest.raises(UsageError, match="pooled hidden state"):
        X.exit_layers_for(rule, logits, EXIT_LAYERS)
    with pytest.raises(UsageError, match="hidden must be"):
        X.exit_layers_for(rule, logits, EXIT_LAYERS, hidden=hidden[:, :10])
    with pytest.raises(UsageError, match="pooled hidden states"):
        _online(rule, logits)  # a runner that does not pass them


def test_budget_replay_keeps_per_row_memory() -> None:
    """With per-row times the replay decides row by row; rules with memory must still see every layer."""
    logits = _logits(rows=40, seed=7)
    rule = "confidence-per-layer:0.95,0.9,0.85,0.8,0.7"
    assert X.exit_layers_for(rule, logits, EXIT_LAYERS, np.ones((len(EXIT_LAYERS), 40))).tolist() == \
        X.exit_layers_for(rule, logits, EXIT_LAYERS).tolist()


def test_mean_pool_ignores_padding() -> None:
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    assert X.mean_pool(hidden, mask).tolist() == [[1.0, 2.0], [6.0, 7.0]]
    assert X.mean_pool(hidden, np.zeros((2, 3))).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_rule_from_policy() -> None:
    from trtbert.runtime.learned import LearnedExit

    assert X.rule_from_policy(None).text == "none"
    assert X.rule_from_policy({"rule": "confidence:0.9"}).text == "confidence:0.9"
    logits = _logits(rows=60, seed=8)
    params = LearnedExit.fit(logits, EXIT_LAYERS).to_json()
    rule = X.rule_from_policy({"rule": "learned:0.8", "params": params, "certificate": {}})
    assert rule.text == "learned:0.8" and rule.threshold == 0.8
    assert X.as_rule("learned", params=params).threshold == 0.5
    with pytest.raises(UsageError, match="parameters"):
        X.rule_from_policy({"rule": "learned:0.8"})
