"""Sweep replays of rules that their text alone cannot rebuild (a learned exit reading hidden states)."""

from __future__ import annotations

import numpy as np

from trtbert.data.tasks import get_task
from trtbert.eval.sweep import replay
from trtbert.runtime.exits import exit_layers_for, parse_rule
from trtbert.runtime.learned import LearnedExit

LAYERS = (1, 2, 3)


def test_replay_takes_a_rule_object_and_hidden_states() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 80, 2)) * np.array([1.0, 2.0, 3.0])[:, None, None]
    hidden = rng.normal(size=(3, 80, 5))
    labels = rng.integers(0, 2, 80)
    rule = parse_rule("learned:0.5", params=LearnedExit.fit(logits, LAYERS, hidden=hidden).to_json())
    point = replay(get_task("sst2"), logits, labels, LAYERS, rule, 3, hidden=hidden)
    chosen = exit_layers_for(rule, logits, LAYERS, hidden=hidden)
    assert point.rule == "learned:0.5" and point.avg_layers == chosen.mean()
    assert sum(point.histogram.values()) == 80
    assert replay(get_task("sst2"), logits, labels, LAYERS, "confidence:0.9", 3).rule == "confidence:0.9"
