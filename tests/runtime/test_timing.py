"""The budget rule's estimates: warm medians per length bucket, recorded times first, loads apart."""

from __future__ import annotations

from pathlib import Path

from conftest import TEXTS
from trtbert.runtime.runner import Runner
from trtbert.runtime.timing import StageClock, bucket


def test_buckets_are_powers_of_two() -> None:
    assert [bucket(n) for n in (1, 2, 3, 16, 17, 512)] == [1, 2, 4, 16, 32, 512]


def test_medians_ignore_a_slow_moment_and_recorded_times_come_first() -> None:
    clock = StageClock({"layer_01": 2.0})
    assert clock.compute_ms("layer_01", 16) == 2.0  # recorded at build time, 16 tokens
    assert clock.compute_ms("layer_01", 64) == 8.0  # scaled up for a longer input until measured
    for ms in (3.0, 3.1, 2.9, 250.0, 3.0):  # one slow moment of the machine
        clock.observe("layer_01", 16, ms)
    assert clock.compute_ms("layer_01", 16) == 3.0
    assert clock.compute_ms("layer_01", 32) == 6.0  # nearest measured bucket, scaled
    clock.observe("layer_02", 16, 4.0, load_ms=20.0)
    assert clock.expected(["layer_01", "layer_02"], 16, {"layer_02": False}) == 3.0 + 4.0 + 20.0
    assert clock.expected(["layer_01", "layer_02"], 16, {"layer_02": True}) == 7.0


def test_a_layer_the_budget_cut_off_keeps_its_estimate(rt_bundles: dict[str, Path]) -> None:
    from trtbert.runtime.exits import parse_rule
    from trtbert.runtime.timing import WINDOW

    with Runner.from_bundle(rt_bundles["bert"], exit="none") as runner:
        texts = [TEXTS[0]] * 4  # one length: one bucket of estimates (fewer runs than would move the medians)
        n = int(runner.encoder.encode(texts[:1]).attention_mask.sum())
        runner.predict(texts[:1], batch_size=1)  # every engine loaded: no load time in the estimates
        known = {"tokenize": 0.5, "embeddings": 1.0, "layer_01": 1.0, "layer_02": 1.0, "layer_03": 1.0,
                 "(between stages)": 0.0}
        for stage, ms in known.items():  # warm medians, as many runs of a steady machine would give
            for _ in range(WINDOW):
                runner.clock.observe(stage, n, ms)
        first = runner._expected(0, runner.exit_layers[0], n)
        assert first == 2.5 and runner._expected(0, runner.exit_layers[1], n) == 3.5
        runner.rule = parse_rule("budget:3.0")  # layer 2 would end at 3.5 ms: it never fits
        cut = runner.predict(texts, batch_size=1)
        assert {p.exit_layer for p in cut} == {runner.exit_layers[0]}  # the later layers no longer run ...
        assert runner.clock.compute_ms("layer_02", n) == 1.0  # ... and their estimates stay
        runner.rule = parse_rule("budget:4.0")
        assert {p.exit_layer for p in runner.predict(texts, batch_size=1)} == {runner.exit_layers[1]}
        runner.rule = parse_rule("budget:100")
        assert {p.exit_layer for p in runner.predict(texts, batch_size=1)} == {runner.exit_layers[-1]}
