"""Certified exit policies: the promise holds on unseen rows (simulated), the plumbing is right.

The coverage tests draw many calibration sets from a generative model of per-layer logits and
measure each certified policy's true risk on a large reference sample (100,000 rows from the same
model, standard error about 0.0007 at 5%): the rate of draws whose true risk exceeds ``eps`` must
stay near ``delta``, while the old best-of-grid pick exceeds it far more often.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trtbert.errors import UsageError
from trtbert.eval import certify as Ce
from trtbert.runtime.exits import exit_layers_for, rule_from_policy

LAYERS = (1, 2, 3, 4, 5, 6)
REFERENCE_ROWS = 100_000


def synth(rows: int, seed: int, labels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer logits ``(6, rows, labels)`` that sharpen and settle with depth, and gold labels
    (the full model is right about 85% of the time)."""
    rng = np.random.default_rng(seed)
    final = rng.normal(0.0, 3.0, size=(rows, labels))
    walk = np.cumsum(rng.normal(0.0, 1.0, size=(6, rows, labels))[::-1], axis=0)[::-1] * 0.6
    walk = walk - walk[-1]  # the last layer is the full model
    logits = np.linspace(0.4, 1.0, 6)[:, None, None] * final[None] + walk
    gold = np.where(rng.random(rows) < 0.85, logits[-1].argmax(-1), rng.integers(0, labels, rows))
    return logits, gold


def synth_regression(rows: int, seed: int) -> np.ndarray:
    """Per-layer values ``(6, rows, 1)`` converging to the final value, each row at its own speed."""
    rng = np.random.default_rng(seed)
    final = rng.normal(2.5, 1.2, size=rows)
    speed = rng.lognormal(0.0, 1.0, size=rows)  # some rows settle early, some late
    steps = rng.normal(0.0, 1.0, size=(6, rows)) * np.array([0.4, 0.2, 0.1, 0.05, 0.025, 0.0])[:, None] * speed[None]
    drift = np.cumsum(steps[::-1], axis=0)[::-1]
    return (final[None] + drift)[..., None]


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    return synth(REFERENCE_ROWS, 999)


def _true_risk(rule: object, logits: np.ndarray, losses: np.ndarray) -> float:
    exits = exit_layers_for(rule, logits, LAYERS)  # type: ignore[arg-type]
    return float(losses[exits - 1, np.arange(logits.shape[1])].mean())


def _best_of_grid(logits: np.ndarray, eps: float) -> str:
    """The old calibration: the threshold with the fewest layers whose empirical risk is within eps."""
    pred = logits.argmax(-1)
    best = ("none", math.inf)
    for p in np.linspace(0.5, 1.0, 50):
        exits = exit_layers_for(f"confidence:{p:.4f}", logits, LAYERS)
        if (pred[exits - 1, np.arange(logits.shape[1])] != pred[-1]).mean() <= eps and exits.mean() < best[1]:
            best = (f"confidence:{p:.4f}", exits.mean())
    return best[0]


def _limit(delta: float, draws: int) -> float:
    return delta + 2.5 * math.sqrt(delta * (1 - delta) / draws)


def test_certified_threshold_keeps_its_promise_where_best_of_grid_does_not(reference) -> None:
    logits, _ = reference
    losses = Ce.loss_table(logits, "disagreement")
    eps, delta, draws = 0.05, 0.1, 200
    certified = grid = 0
    for draw in range(draws):
        cal, _ = synth(1000, draw)
        result = Ce.certify_policy(cal, LAYERS, 6, eps=eps, delta=delta, families=("confidence",), seed=draw)
        assert result.certified and result.layer_speedup > 1.2
        certified += _true_risk(result.to_rule(), logits, losses) > eps
        grid += _true_risk(_best_of_grid(cal, eps), logits, losses) > eps
    assert certified / draws <= _limit(delta, draws), f"certified policies broke eps in {certified}/{draws} draws"
    assert grid / draws >= 0.25, f"best-of-grid broke eps in only {grid}/{draws} draws"


def test_fitted_families_keep_their_promise(reference) -> None:
    """Per-layer thresholds and the learned exit are shaped on the fit part, the family chosen there,
    and only the certification part enters the bound."""
    logits, _ = reference
    losses = Ce.loss_table(logits, "disagreement")
    eps, delta, draws = 0.05, 0.1, 100
    broken, speedups, chosen = 0, [], set()
    for draw in range(draws):
        cal, _ = synth(1000, 10_000 + draw)
        result = Ce.certify_policy(cal, LAYERS, 6, eps=eps, delta=delta, seed=draw,
                                   families=("confidence", "per-layer", "learned"))
        broken += _true_risk(result.to_rule(), logits, losses) > eps
        speedups.append(result.layer_speedup)
        chosen.add(result.family)
    assert broken / draws <= _limit(delta, draws), f"broke eps in {broken}/{draws} draws"
    assert np.mean(speedups) > 1.3 and chosen <= {"confidence", "per-layer", "learned"}


def test_accuracy_drop_keeps_its_promise(reference) -> None:
    logits, gold = reference
    losses = Ce.loss_table(logits, "accuracy-drop", gold)
    eps, delta, draws = 0.02, 0.1, 100
    broken, certified = 0, 0
    for draw in range(draws):
        cal, cal_gold = synth(1000, 20_000 + draw)
        result = Ce.certify_policy(cal, LAYERS, 6, risk="accuracy-drop", eps=eps, delta=delta, labels=cal_gold,
                                   task="sst2", families=("confidence",), seed=draw)
        assert result.certificate.risk == "accuracy-drop" and result.certificate.test == "wsr"
        certified += result.certified
        broken += _true_risk(result.to_rule(), logits, losses) > eps
    assert broken / draws <= _limit(delta, draws)
    assert certified >= draws // 2


def test_regression_patience_keeps_its_promise() -> None:
    reference = synth_regression(REFERENCE_ROWS, 999)
    losses = Ce.loss_table(reference, "disagreement", tolerance=0.1)
    eps, delta, draws = 0.05, 0.1, 60
    broken, speedups = 0, []
    for draw in range(draws):
        result = Ce.certify_policy(synth_regression(1000, draw), LAYERS, 6, eps=eps, delta=delta, seed=draw,
                                   families=("patience", "learned"), tolerance=0.1)
        assert result.certificate.test == "binomial"
        broken += _true_risk(result.to_rule("regression"), reference, losses) > eps
        speedups.append(result.layer_speedup)
    assert broken / draws <= _limit(delta, draws)
    assert np.mean(speedups) > 1.2


def test_too_few_rows_keep_the_full_model_and_say_how_many_are_needed() -> None:
    cal, _ = synth(100, 0)
    result = Ce.certify_policy(cal, LAYERS, 6, eps=0.01, families=("confidence",))
    assert not result.certified and result.rule == "none" and result.family == "none"
    assert result.avg_layers == 6 and result.layer_speedup == 1
    assert result.rows_needed_zero_errors == 230  # 0.99 ** 230 <= 0.1
    assert result.rows_needed is not None and result.rows_needed >= 230
    assert result.to_rule().text == "none"
    assert result.per_family["confidence"].pvalue is None


def test_deterministic_given_seed() -> None:
    cal, _ = synth(1500, 3)
    a = Ce.certify_policy(cal, LAYERS, 6, eps=0.05, seed=7)
    b = Ce.certify_policy(cal, LAYERS, 6, eps=0.05, seed=7)
    assert a == b
    assert json.dumps(a.policy_json()) == json.dumps(b.policy_json())


def test_certificate_fields_and_json_rebuild_the_rule() -> None:
    cal, _ = synth(2000, 4)
    result = Ce.certify_policy(cal, LAYERS, 6, eps=0.05, families=("learned",), fit_fraction=0.25)
    cert = result.certificate
    assert result.certified and result.family == "learned" and result.rule.startswith("learned:")
    assert cert.rows == 1500 and cert.fit_rows == 500
    assert cert.pvalue <= cert.delta and cert.empirical_risk <= cert.upper_bound
    assert cert.risk == "disagreement" and cert.eps == 0.05 and cert.delta == 0.1
    policy = json.loads(json.dumps(result.policy_json()))
    rule = rule_from_policy(policy, "single_label_classification")
    fresh, _ = synth(500, 5)
    assert np.array_equal(exit_layers_for(rule, fresh, LAYERS), exit_layers_for(result.to_rule(), fresh, LAYERS))
    assert set(policy["per_family"]) == {"learned"}
    assert policy["oracle_avg_layers"] <= result.avg_layers


def test_per_layer_rule_is_runnable_text() -> None:
    cal, _ = synth(2000, 6)
    result = Ce.certify_policy(cal, LAYERS, 6, eps=0.05, families=("per-layer",))
    assert result.certified and result.rule.startswith("confidence-per-layer:")
    assert result.params is None
    assert len(result.rule.partition(":")[2].split(",")) == len(LAYERS) - 1


def test_oracle() -> None:
    # labels per layer for three rows: settles at layer 4; matches first at 1 but flips; always final
    answers = np.array([[0, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1]]).T
    logits = np.stack([1 - answers, answers], axis=-1).astype(float) * 4.0
    stable, first = Ce.oracle_exits(logits)
    assert stable.tolist() == [1, 4, 0] and first.tolist() == [1, 0, 0]
    result = Ce.certify_policy(np.repeat(logits, 100, axis=1), LAYERS, 6, eps=0.5, families=("confidence",))
    assert result.oracle_avg_layers == pytest.approx((2 + 5 + 1) / 3)
    assert result.oracle_first_match_avg_layers == pytest.approx((2 + 1 + 1) / 3)


def test_latency_objective_prefers_cheap_layers() -> None:
    """Layers 4-6 are streamed (costly): minimising latency never costs more ms than minimising layers."""
    cal, _ = synth(3000, 8)
    costs = [1.0, 1.0, 1.0, 20.0, 20.0, 20.0]
    by_layers = Ce.certify_policy(cal, LAYERS, 6, eps=0.05, costs_ms=costs, seed=1)
    by_latency = Ce.certify_policy(cal, LAYERS, 6, eps=0.05, costs_ms=costs, objective="latency", seed=1)
    assert by_latency.objective == "latency" and by_latency.full_latency_ms == 63.0
    assert by_latency.expected_latency_ms <= by_layers.expected_latency_ms + 1e-9
    assert by_latency.oracle_latency_ms <= by_latency.expected_latency_ms
    assert Ce.expected_latency(np.array([0, 3, 5]), costs) == pytest.approx((1 + 23 + 63) / 3)


def test_metric_without_a_row_decomposition_falls_back_to_disagreement() -> None:
    cal, gold = synth(1000, 9)
    result = Ce.certify_policy(cal, LAYERS, 6, risk="accuracy-drop", eps=0.05, labels=gold, task="cola",
                               families=("confidence",))
    assert result.certificate.risk == "disagreement"
    assert "matthews" in result.certificate.note and "no per-row decomposition" in result.certificate.note


def test_separate_fit_rows_leave_every_calibration_row_to_the_bound() -> None:
    cal, _ = synth(1000, 10)
    fit, _ = synth(800, 11)
    result = Ce.certify_policy(cal, LAYERS, 6, eps=0.05, fit_logits=fit)
    assert result.certificate.rows == 1000 and result.certificate.fit_rows == 800


def test_hidden_states_feed_the_learned_exit() -> None:
    """When the pooled hidden state carries the final answer, the learned exit uses it to stop earlier."""
    rows = 3000
    logits, _ = synth(rows, 12)
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    final_margin = logits[-1, :, 1] - logits[-1, :, 0]
    hidden = rng.normal(size=(6, rows, 16)) + final_margin[None, :, None] * direction[None, None, :] * 0.5
    plain = Ce.certify_policy(logits, LAYERS, 6, eps=0.03, families=("learned",))
    with_hidden = Ce.certify_policy(logits, LAYERS, 6, eps=0.03, families=("learned",), hidden=hidden)
    assert with_hidden.to_rule().needs_hidden and not plain.to_rule().needs_hidden
    assert with_hidden.avg_layers < plain.avg_layers - 0.2
    assert with_hidden.params["hidden"] == "mean-pool"


@pytest.mark.parametrize("kwargs, message", [
    ({"risk": "f1"}, "unknown risk"),
    ({"eps": 0.0}, "eps and delta"),
    ({"delta": 1.0}, "eps and delta"),
    ({"families": ("fastest",)}, "unknown exit rule families"),
    ({"objective": "latency"}, "needs costs_ms"),
    ({"costs_ms": [1.0, 2.0]}, "one non-negative cost per exit layer"),
    ({"risk": "accuracy-drop", "task": "sst2"}, "needs the calibration rows' labels"),
    ({"fit_fraction": 1.0}, "fit_fraction"),
    ({"hidden": np.zeros((6, 3, 4))}, "hidden must be"),
])
def test_bad_arguments(kwargs: dict, message: str) -> None:
    cal, _ = synth(50, 0)
    args = {"eps": 0.05, **kwargs}
    with pytest.raises(UsageError, match=message):
        Ce.certify_policy(cal, LAYERS, 6, **args)


def test_regression_drops_probability_families_and_says_so() -> None:
    result = Ce.certify_policy(synth_regression(1500, 1), LAYERS, 6, eps=0.05)
    assert set(result.per_family) == {"patience", "learned"}
    assert any("class probabilities" in note for note in result.notes)
    with pytest.raises(UsageError, match="patience or learned"):
        Ce.certify_policy(synth_regression(100, 1), LAYERS, 6, eps=0.05, families=("confidence",))


def test_learned_cost_prices_computation_and_replays_exactly() -> None:
    """The cost-aware learned family asks for less certainty where stopping saves more (before an
    expensive, streamed part), and the rule it certifies replays to the same exits online and offline."""
    from trtbert.runtime.exits import exit_layers_for, parse_rule

    rng = np.random.default_rng(3)
    layers = 6
    rows = 3000
    truth = rng.integers(0, 2, rows)
    strength = np.linspace(0.3, 2.5, layers)
    logits = np.stack([rng.normal(size=(rows, 2)) + s * np.eye(2)[truth] * 2 for s in strength])
    cheap_then_streamed = [1.0, 1.0, 8.0, 8.0, 8.0, 8.0]  # the first two layers pinned, the rest streamed
    from trtbert.eval.certify import certify_policy

    by_latency = certify_policy(logits, tuple(range(1, layers + 1)), layers, eps=0.05, delta=0.1,
                                families=("learned", "learned-cost"), objective="latency",
                                costs_ms=cheap_then_streamed, seed=0)
    by_layers = certify_policy(logits, tuple(range(1, layers + 1)), layers, eps=0.05, delta=0.1,
                               families=("learned",), objective="layers", costs_ms=cheap_then_streamed, seed=0)
    assert by_latency.certified and by_layers.certified
    assert by_latency.expected_latency_ms <= by_layers.expected_latency_ms + 1e-9
    if by_latency.family == "learned-cost":
        rule = parse_rule(by_latency.rule, params=by_latency.params)
        q = [rule.threshold_at(layer) for layer in range(1, layers)]
        assert q[1] <= q[2]  # stopping before the streamed part is cheaper in certainty
        exits = exit_layers_for(rule, logits, tuple(range(1, layers + 1)))
        assert exits.min() >= 1 and exits.max() <= layers
