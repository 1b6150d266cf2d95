"""The runner against transformers, against the offline exit replay, and batched against one by one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FAMILIES, LAYERS, TEXTS
from trtbert.errors import BundleError, UsageError
from trtbert.runtime.exits import entropy, exit_layers_for, parse_rule
from trtbert.runtime.runner import Runner


@pytest.mark.parametrize("family", FAMILIES)
def test_no_exit_matches_transformers(rt_models: dict[str, Path], rt_bundles: dict[str, Path], family: str) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(rt_models[family])).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(rt_models[family]))
    pairs = list(zip(TEXTS[:4], TEXTS[4:8]))
    cases = [(TEXTS, (TEXTS,)), (pairs, ([a for a, _ in pairs], [b for _, b in pairs]))]
    if family == "roberta":  # the tiny RoBERTa has one token type but a BERT tokenizer (type 1 in pairs)
        cases = cases[:1]
    with Runner.from_bundle(rt_bundles[family], exit="none") as runner:
        for items, args in cases:
            got = runner.predict(items, batch_size=3)
            enc = tokenizer(*args, padding=True, truncation=True, max_length=64, return_tensors="pt")
            with torch.no_grad():
                want = model(**enc).logits.numpy()
            assert np.abs(np.array([p.logits for p in got]) - want).max() < 1e-4
            assert [p.exit_layer for p in got] == [LAYERS] * len(items)
            assert [p.label_id for p in got] == want.argmax(-1).tolist()
            assert all(p.label == f"LABEL_{p.label_id}" and abs(sum(p.probabilities) - 1) < 1e-6 for p in got)
            assert all(p.timings["total"] > 0 and "layer_03" in p.timings for p in got)
        layers = runner.layer_logits(TEXTS, batch_size=4)
        assert layers.shape == (3, len(TEXTS), 2)
        assert np.abs(layers[-1] - np.array([p.logits for p in runner.predict(TEXTS)])).max() < 1e-4


def _split_threshold(values: np.ndarray) -> float:
    """A threshold between two neighbouring values far from both (so float noise cannot flip a decision)."""
    v = np.sort(values.ravel())
    gaps = np.diff(v)
    middle = slice(len(v) // 4, 3 * len(v) // 4)
    i = int(np.argmax(gaps[middle])) + len(v) // 4
    return float((v[i] + v[i + 1]) / 2)


@pytest.mark.parametrize("family", ["bert", "albert", "distilbert"])
def test_online_exits_equal_offline_replay(rt_bundles: dict[str, Path], family: str) -> None:
    with Runner.from_bundle(rt_bundles[family]) as runner:
        full = runner.layer_logits(TEXTS, batch_size=4)
        probs = np.exp(full - full.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        rules = [f"entropy:{_split_threshold(entropy(full[:2])):.6f}",
                 f"confidence:{_split_threshold(probs[:2].max(-1)):.6f}", "patience:1", "max-layers:2", "none",
                 f"patience-confidence:1,{_split_threshold(probs[:2].max(-1)):.6f}"]
        seen = set()
        for rule in rules:
            want = exit_layers_for(rule, full, runner.exit_layers)
            runner.rule = parse_rule(rule)
            for batch_size in (1, 4):
                got = [p.exit_layer for p in runner.predict(TEXTS, batch_size=batch_size)]
                assert got == want.tolist(), (rule, batch_size)
            seen.update(want.tolist())
        assert len(seen) >= 2


def test_batch_equals_one_at_a_time(rt_bundles: dict[str, Path]) -> None:
    bundle = rt_bundles["bert"]
    with Runner.from_bundle(bundle) as probe:
        full = probe.layer_logits(TEXTS, batch_size=1)
    rule = f"entropy:{_split_threshold(entropy(full[0])):.6f}"
    with Runner.from_bundle(bundle, exit=rule) as runner:
        one = [runner.predict(t)[0] for t in TEXTS]
        batched = runner.predict(TEXTS, batch_size=len(TEXTS))
    assert len({p.exit_layer for p in one}) >= 2, "rows should exit at different layers"
    for a, b in zip(one, batched):
        assert (a.exit_layer, a.label, a.text) == (b.exit_layer, b.label, b.text)
        assert np.abs(np.array(a.logits) - np.array(b.logits)).max() < 1e-5


def test_regression_bundle(regression_bundle: Path) -> None:
    with Runner.from_bundle(regression_bundle, exit="patience:1,1000") as runner:
        got = runner.predict(TEXTS[:3])
        assert all(p.value is not None and p.label is None and p.probabilities is None for p in got)
        assert [p.exit_layer for p in got] == [2, 2, 2]
    with pytest.raises(UsageError, match="regression"):
        Runner.from_bundle(regression_bundle, exit="entropy:0.3")


def test_budget_and_default_rules(rt_bundles: dict[str, Path]) -> None:
    with Runner.from_bundle(rt_bundles["bert"], exit="budget:0") as runner:
        assert {p.exit_layer for p in runner.predict(TEXTS)} == {1}
    with Runner.from_bundle(rt_bundles["bert"], exit="budget:100000") as runner:
        assert {p.exit_layer for p in runner.predict(TEXTS)} == {LAYERS}
    with Runner.from_bundle(rt_bundles["bert"], exit="default") as runner:  # no policy in the manifest: none
        assert runner.rule.text == "none"


def test_refuses_changed_files_and_missing_sets(rt_bundles: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(rt_bundles["bert"], copy)
    with pytest.raises(BundleError, match="trtbert build"):
        Runner.from_bundle(copy, engines="int8")
    layer = copy / "onnx" / "layer_02.onnx"
    data = bytearray(layer.read_bytes())
    data[-1] ^= 0xFF
    layer.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        Runner.from_bundle(copy)
    with pytest.raises(BundleError, match="does not exist"):
        Runner.from_bundle(tmp_path / "nothing")
