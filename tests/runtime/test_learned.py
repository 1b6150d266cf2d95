"""The learned exit: features against direct loops, the logistic fit against scikit-learn, JSON round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trtbert.errors import UsageError
from trtbert.runtime import learned as Le
from trtbert.runtime.exits import ExitState, exit_layers_for, parse_rule

LAYERS = (1, 2, 3, 4)


def _logits(rows: int = 400, labels: int = 2, seed: int = 0) -> np.ndarray:
    """Logits that settle with depth, so that agreement with the last layer is learnable."""
    rng = np.random.default_rng(seed)
    final = rng.normal(0, 2.0, size=(rows, labels))
    noise = rng.normal(0, 1.0, size=(len(LAYERS), rows, labels)) * np.array([1.5, 1.0, 0.5, 0.0])[:, None, None]
    return final[None] * np.array([0.5, 0.7, 0.9, 1.0])[:, None, None] + noise


def test_classification_features_match_a_direct_loop() -> None:
    logits = _logits(rows=30, labels=3, seed=1)
    got = Le.feature_matrix(logits, Le.CLASSIFICATION)
    assert got.shape == (len(LAYERS), 30, len(Le.FEATURES[Le.CLASSIFICATION]))
    for r in range(30):
        run, prev_label, prev_probs, total = 0, None, None, np.zeros(3)
        for i in range(len(LAYERS)):
            z = logits[i, r]
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            order = np.argsort(-p)
            c = int(order[0])
            run = run + 1 if c == prev_label else 0
            total = total + np.log(p)
            others = np.delete(total, c)
            want = [p[c], p[c] - p[order[1]], -(p * np.log(p)).sum() / math.log(3),
                    math.log(p[c]) - math.log(p[order[1]]), run,
                    1 / 3 if prev_probs is None else prev_probs[c], (total[c] - others.max()) / (i + 1)]
            assert got[i, r] == pytest.approx(want, rel=1e-9, abs=1e-12)
            prev_label, prev_probs = c, p


def test_regression_features() -> None:
    values = np.array([[1.0, 1.5, 1.55, 1.56], [0.0, 1.0, 2.0, 2.0]]).T[:, :, None]
    got = Le.feature_matrix(values, Le.REGRESSION, tolerance=0.1)
    np.testing.assert_allclose(got[:, 0], [[1.0, 0, 0, 0], [1.5, 0.5, 0, 0], [1.55, 0.05, 0.5, 1],
                                           [1.56, 0.01, 0.05, 2]], atol=1e-12)
    assert got[:, 1, 3].tolist() == [0, 0, 0, 1]


def test_layer_model_matches_scikit_learn() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)) * [1.0, 5.0, 0.2] + [0, 3, 1]
    y = (x @ [1.0, -0.3, 4.0] + rng.normal(size=500) > 1).astype(float)
    model = Le.LayerModel.fit(x, y, l2=1.0)
    z = (x - x.mean(0)) / x.std(0)
    ref = linear_model.LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(z, y)  # same penalty: 1/2 |w|^2
    assert model.probability(x) == pytest.approx(ref.predict_proba(z)[:, 1], abs=1e-6)


def test_hidden_weights_fold_the_standardisation() -> None:
    rng = np.random.default_rng(1)
    rows, width = 300, 5
    hidden = rng.normal(size=(rows, width)) * 3 + 2
    label = rng.integers(0, 3, rows)
    x = rng.normal(size=(rows, 2))
    y = (rng.random(rows) < 0.7).astype(float)
    model = Le.LayerModel.fit(x, y, hidden=hidden, label=label, labels=3, hidden_l2=0.5)
    assert np.asarray(model.hidden_weights).shape == (3, width)
    # the same model by hand, in standardised coordinates
    h = (hidden - hidden.mean(0)) / hidden.std(0)
    onehot = np.eye(3)[label] - 1 / 3
    z = np.hstack([(x - x.mean(0)) / x.std(0), (onehot[:, :, None] * h[:, None, :]).reshape(rows, -1), np.ones((rows, 1))])
    w = Le._newton(z, y, np.concatenate([[1.0, 1.0], np.full(3 * width, 0.5), [1e-8]]))
    assert model.probability(x, hidden, label) == pytest.approx(1 / (1 + np.exp(-z @ w)), abs=1e-9)


def test_fit_learns_when_answers_are_final() -> None:
    logits = _logits(rows=2000)
    model = Le.LearnedExit.fit(logits, LAYERS)
    q = model.replay(logits)
    answers = logits.argmax(-1)
    final = answers == answers[-1]
    assert q.shape == (len(LAYERS), 2000) and (q[-1] == 0).all() and model.models[-1] is None
    for i in range(len(LAYERS) - 1):  # higher predicted probability where the answer is final
        assert q[i][final[i]].mean() > q[i][~final[i]].mean() + 0.05


def test_json_round_trip_keeps_every_decision() -> None:
    logits = _logits(rows=600, labels=3, seed=2)
    hidden = np.random.default_rng(3).normal(size=(len(LAYERS), 600, 6)) + logits[-1].argmax(-1)[None, :, None]
    for model in (Le.LearnedExit.fit(logits, LAYERS), Le.LearnedExit.fit(logits, LAYERS, hidden=hidden)):
        text = json.dumps(model.to_json())
        again = Le.LearnedExit.from_json(json.loads(text))
        assert again == model
        assert np.array_equal(again.replay(logits, hidden), model.replay(logits, hidden))
        rule = parse_rule("learned:0.8", params=json.loads(text))
        h = hidden if rule.needs_hidden else None
        assert np.array_equal(exit_layers_for(rule, logits, LAYERS, hidden=h),
                              np.argmax(np.vstack([model.replay(logits, h)[:-1] >= 0.8, np.ones((1, 600), bool)]), 0) + 1)


def test_regression_model() -> None:
    rng = np.random.default_rng(4)
    final = rng.normal(2.5, 1.0, 800)
    values = (final[None] + rng.normal(size=(4, 800)) * np.array([0.5, 0.2, 0.05, 0.0])[:, None])[..., None]
    model = Le.LearnedExit.fit(values, LAYERS, tolerance=0.1)
    assert model.problem == Le.REGRESSION and not model.uses_hidden
    rule = parse_rule("learned:0.9", "regression", model.to_json())
    assert rule.text == "learned:0.9"
    with pytest.raises(UsageError, match="regression"):
        parse_rule("learned:0.9", "single_label_classification", model.to_json())
    with pytest.raises(UsageError, match="classification models only"):
        Le.LearnedExit.fit(values, LAYERS, hidden=np.zeros((4, 800, 3)))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="other/9"), "format"),
    (lambda d: d.update(features=["max_prob"]), "features"),
    (lambda d: d["models"][0].update(weights=[1.0]), "weights"),
    (lambda d: d.update(exit_layers=[1, 2]), "layer models"),
    (lambda d: d.pop("problem"), "problem"),
])
def test_bad_parameters_are_refused(change, message: str) -> None:
    params = Le.LearnedExit.fit(_logits(rows=100), LAYERS).to_json()
    change(params)
    with pytest.raises(UsageError, match=message):
        Le.LearnedExit.from_json(params)


def test_a_model_for_other_exit_layers_is_refused() -> None:
    model = Le.LearnedExit.fit(_logits(rows=100), LAYERS)
    with pytest.raises(UsageError, match="exit layers"):
        model.probabilities(ExitState.start(3), np.zeros((3, 2)), layer=7)


def test_wide_hidden_states_keep_their_principal_components() -> None:
    rng = np.random.default_rng(5)
    rows, width = 200, 40
    hidden = rng.normal(size=(rows, width)) @ rng.normal(size=(width, width))
    label = rng.integers(0, 2, rows)
    x = rng.normal(size=(rows, 1))
    y = (hidden[:, 0] * np.where(label == 1, 1, -1) > 0).astype(float)
    model = Le.LayerModel.fit(x, y, hidden=hidden, label=label, hidden_l2=1.0, hidden_width=8)
    assert np.asarray(model.hidden_weights).shape == (2, width)  # raw space, whatever was fitted
    h = (hidden - hidden.mean(0)) / hidden.std(0)
    basis = np.linalg.svd(h, full_matrices=False)[2][:8].T
    z = np.hstack([(x - x.mean(0)) / x.std(0), np.where(label == 1, 1.0, -1.0)[:, None] * (h @ basis), np.ones((rows, 1))])
    w = Le._newton(z, y, np.concatenate([[1.0], np.full(8, 1.0), [1e-8]]))
    assert model.probability(x, hidden, label) == pytest.approx(1 / (1 + np.exp(-z @ w)), abs=1e-9)
