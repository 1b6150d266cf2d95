"""Tokenisation equals transformers' AutoTokenizer; bad input is refused; truncation warns once."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import TEXTS
from trtbert.bundle import load_bundle
from trtbert.errors import UsageError
from trtbert.runtime.text import TextEncoder, normalise_inputs, read_inputs


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_matches_autotokenizer(rt_bundles: dict[str, Path], family: str) -> None:
    from transformers import AutoTokenizer

    bundle = load_bundle(rt_bundles[family])
    encoder = TextEncoder.from_bundle(bundle)
    reference = AutoTokenizer.from_pretrained(str(bundle.path("tokenizer")))
    pairs = list(zip(TEXTS, reversed(TEXTS)))
    for items in (TEXTS, pairs):
        got = encoder.encode(items)
        args = (TEXTS, list(reversed(TEXTS))) if items is pairs else (TEXTS,)
        want = reference(*args, padding=True, truncation=True, max_length=bundle.manifest.model.max_positions,
                         return_tensors="np")
        assert np.array_equal(got.input_ids, want["input_ids"])
        assert np.array_equal(got.attention_mask, want["attention_mask"])
        assert np.array_equal(got.token_type_ids, want["token_type_ids"])
        full = reference(*args)["input_ids"]  # no truncation
        assert got.truncated.tolist() == [len(ids) > bundle.manifest.model.max_positions for ids in full]
        assert got.truncated.any() and not got.truncated.all()


def test_bad_inputs() -> None:
    for bad, message in [([], "no input"), (["fine", "   "], "input 2 is empty"), ([""], "input 1 is empty"),
                         ([("a", " ")], "empty"), (None, "no input"), (["\u200b\u200d"], "input 1 is empty"),
                         (["bad \udcff byte"], "not valid UTF-8")]:
        with pytest.raises(UsageError, match=message):
            normalise_inputs(bad)
    assert normalise_inputs("one text") == ["one text"]
    assert normalise_inputs(("a", "b")) == [("a", "b")]
    assert normalise_inputs([["a", "b"]]) == [("a", "b")]
    assert normalise_inputs(["a", ("b", "c")]) == ["a", ("b", "c")]  # texts and pairs mix (the README does)


def test_truncation_warns_once_per_run(rt_bundles: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    from trtbert.runtime.runner import Runner

    long = " ".join(TEXTS * 3)
    with Runner.from_bundle(rt_bundles["bert"]) as runner, caplog.at_level(logging.WARNING, logger="trtbert"):
        runner.predict([long, "the movie", long, long], batch_size=1)
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert warnings == ["3 of 4 inputs were longer than 64 tokens and were truncated"]


def test_read_inputs(tmp_path: Path) -> None:
    single = tmp_path / "single.tsv"
    single.write_text("\ufeffthe movie\n\na dull film\n", encoding="utf-8")  # a byte-order mark is dropped
    assert read_inputs(single) == ["the movie", "a dull film"]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a\tb\nc\td\n", encoding="utf-8")
    assert read_inputs(pairs) == [("a", "b"), ("c", "d")]
    mixed = tmp_path / "mixed.tsv"
    mixed.write_text("a\tb\nc\n", encoding="utf-8")
    with pytest.raises(UsageError, match="do not mix"):
        read_inputs(mixed)
    blank = tmp_path / "blank.tsv"
    blank.write_text("fine\n  \n", encoding="utf-8")
    with pytest.raises(UsageError, match="blank.tsv:2 is empty"):
        read_inputs(blank)
    with pytest.raises(UsageError, match="cannot read"):
        read_inputs(tmp_path / "missing.tsv")


def test_long_text_is_cut_before_tokenising_without_changing_truncation(rt_bundles: dict[str, Path]) -> None:
    encoder = TextEncoder.from_bundle(load_bundle(rt_bundles["roberta"]))
    huge = " ".join(TEXTS * 3000)  # ~100,000 words
    head, cut = encoder.cut(huge)
    assert cut and len(head) < len(huge) // 50
    assert encoder.encode([huge]).input_ids[0].tolist() == encoder._tok.encode(huge).ids  # the whole text's
    pair = encoder.encode([(huge, "the movie")])
    want = encoder._tok.encode(huge, "the movie")
    assert pair.input_ids[0].tolist() == want.ids and pair.truncated[0]
