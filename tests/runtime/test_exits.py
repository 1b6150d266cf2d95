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
