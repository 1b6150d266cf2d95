"""Issue 10.2 from the outside: every ORT engine set gives each row the same answer whatever else is in its
batch. The same rows (mixed lengths) go through ``Runner`` at batch 1 and at batch 16, with an exit
rule that stops some rows at layer 1 and lets the rest run on: labels and exit layers must be identical
and probabilities equal to float rounding. Dynamic int8, which the build marks batch-dependent, is the
control: on rows whose batchmates differ a lot it does not hold."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from models import SENTENCES

# Mixed lengths: a 2-token text, the sentences, long ones (the tiny models read 64 positions).
TEXTS = ["good", *SENTENCES, " ".join(SENTENCES), "the movie , the plot , the actors", *[s.upper() for s in SENTENCES]]
KINDS = {  # set kind -> BuildOptions fields
    "fp32 (fused)": {},
    "fp32 unfused": {"fuse": False},
    "int8 static": {"precision": "int8"},
    "int8 static, streamed": {"precision": "int8", "stream": True},
    "fp32 streamed": {"stream": True},
    "int8 static, per tensor": {"precision": "int8", "int8_per_channel": False},
    "int4 (library only)": {"precision": "int4"},
}


@pytest.fixture(scope="module")
def built(tiny_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of the tiny bert and albert bundles with every set kind built."""
    from trtbert.engines.build import BuildOptions, build_engines

    out = {}
    for family in ("bert", "albert"):
        root = tmp_path_factory.mktemp("invariance") / family
        shutil.copytree(tiny_bundles[family], root)
        for i, fields in enumerate(KINDS.values()):
            build_engines(BuildOptions(bundle=root, name=f"kind{i}", **fields))
        build_engines(BuildOptions(bundle=root, name="dynamic", precision="int8", int8_mode="dynamic"))
        out[family] = root
    return out


def _threshold(root: Path, engines: str) -> str:
    """A confidence rule that some rows pass at layer 1 and others not, no row within 1e-3 of it."""
    from trtbert.runtime.exits import softmax
    from trtbert.runtime.runner import Runner

    with Runner.from_bundle(root, engines=engines, exit="none") as runner:
        first = softmax(runner.layer_logits(TEXTS, batch_size=1)[0]).max(axis=-1)
    values = np.sort(first)
    gaps = [(values[i + 1] - values[i], (values[i + 1] + values[i]) / 2) for i in range(len(values) - 1)]
    middle = [g for g in gaps if 0.25 * len(values) <= gaps.index(g) <= 0.75 * len(values)] or gaps
    gap, cut = max(middle)
    assert gap > 2e-3, "no clear threshold between the rows' layer-1 confidences"
    return f"confidence:{cut:.6f}"


def _answers(root: Path, engines: str, rule: str, batch: int) -> list:
    from trtbert.runtime.runner import Runner

    with Runner.from_bundle(root, engines=engines, exit=rule, memory_cap=None) as runner:
        return runner.predict(TEXTS, batch_size=batch)


@pytest.mark.parametrize("family", ["bert", "albert"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_answers_do_not_depend_on_batchmates(built: dict[str, Path], family: str, kind: str) -> None:
    root = built[family]
    engines = f"kind{list(KINDS).index(kind)}"
    rule = _threshold(root, engines)
    alone = _answers(root, engines, rule, batch=1)
    together = _answers(root, engines, rule, batch=16)
    assert len({p.exit_layer for p in alone}) > 1, "the rule should stop rows at different layers"
    assert [p.label for p in together] == [p.label for p in alone]
    assert [p.exit_layer for p in together] == [p.exit_layer for p in alone]
    np.testing.assert_allclose([p.probabilities for p in together], [p.probabilities for p in alone],
                               atol=1e-6, rtol=0)


def test_streamed_set_under_a_cap_answers_as_unlimited(built: dict[str, Path]) -> None:
    from caps import streaming_cap

    root = built["bert"]
    engines = f"kind{list(KINDS).index('int8 static, streamed')}"
    from trtbert.runtime.runner import Runner

    with Runner.from_bundle(root, engines=engines, exit="none", memory_cap=streaming_cap(root, engines)) as runner:
        capped = runner.layer_logits(TEXTS, batch_size=16)
        assert runner.stats().evictions > 0
    with Runner.from_bundle(root, engines=engines, exit="none") as runner:
        np.testing.assert_allclose(capped, runner.layer_logits(TEXTS, batch_size=1), atol=1e-6, rtol=0)


def test_dynamic_int8_is_the_batch_dependent_control(built: dict[str, Path]) -> None:
    from trtbert.runtime.runner import Runner

    loud = ["w1 w2 w3 " * 20]  # a long batchmate with other activation ranges
    with Runner.from_bundle(built["bert"], engines="dynamic", exit="none") as runner:
        alone = runner.layer_logits(TEXTS[:3], batch_size=1)
        mixed = runner.layer_logits(TEXTS[:3] + loud * 13, batch_size=16)[:, :3]
    assert np.abs(alone - mixed).max() > 1e-5
