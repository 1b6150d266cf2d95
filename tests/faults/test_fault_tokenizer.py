"""Issue 9, item 2: ``export`` refuses a checkpoint without tokenizer files (unless ``--tokenizer PATH|HF-ID``
gives one) and a tokenizer whose vocabulary does not match the model's embedding table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from faultkit import assert_bundle_verifies, assert_ok, assert_one_line_error, cli, fast_wordpiece

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _strip_tokenizer(directory: Path) -> Path:
    for name in TOKENIZER_FILES:
        (directory / name).unlink(missing_ok=True)
    return directory


def _small_tokenizer(directory: Path) -> Path:
    """A valid fast WordPiece tokenizer with 20 tokens (the tiny model's table has more rows)."""
    return fast_wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great", "and", "i",
                           "loved", "it", "a", "dull", "film", "no", "story", "good", "bad"], directory)


@pytest.fixture
def bare_ck(model_dir: Path, tmp_path: Path) -> Path:
    """The tiny checkpoint as ``model.save_pretrained`` alone leaves it: no tokenizer files."""
    return _strip_tokenizer(Path(shutil.copytree(model_dir, tmp_path / "bare")))


def _vocab_size(bundle: Path) -> int:
    data = json.loads((bundle / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
    return len(data["model"]["vocab"])


def test_checkpoint_without_tokenizer_is_refused(bare_ck: Path, tmp_path: Path) -> None:
    """Item 2: exporting a checkpoint saved without tokenizer files exits 1 naming the tokenizer; no bundle."""
    out = tmp_path / "out"
    result = cli("export", "--model", bare_ck, "--out", out)
    assert_one_line_error(result, r"tokenizer")
    assert not out.exists(), "a bundle was written from a checkpoint without a tokenizer"


def test_tokenizer_option_supplies_the_tokenizer(bare_ck: Path, model_dir: Path, tmp_path: Path) -> None:
    """Item 2: ``--tokenizer PATH`` gives the missing tokenizer; the bundle's vocabulary is the model's."""
    out = tmp_path / "out"
    assert_ok(cli("export", "--model", bare_ck, "--out", out, "--tokenizer", model_dir))
    assert_bundle_verifies(out)
    config = json.loads((bare_ck / "config.json").read_text())
    assert _vocab_size(out) == config["vocab_size"]


def test_tokenizer_vocabulary_must_match_the_embedding_table(model_dir: Path, tmp_path: Path) -> None:
    """Item 2: a checkpoint whose tokenizer has fewer tokens than the embedding table is refused."""
    ck = _strip_tokenizer(Path(shutil.copytree(model_dir, tmp_path / "ck")))
    small = _small_tokenizer(tmp_path / "small")
    for name in TOKENIZER_FILES:
        if (small / name).exists():
            shutil.copy(small / name, ck / name)
    out = tmp_path / "out"
    result = cli("export", "--model", ck, "--out", out)
    assert_one_line_error(result, r"vocab|embedding")
    assert not out.exists()


def test_tokenizer_option_with_wrong_vocabulary_is_refused(bare_ck: Path, tmp_path: Path) -> None:
    """Item 2: ``--tokenizer PATH`` whose vocabulary does not match the model is refused, naming the vocabulary."""
    out = tmp_path / "out"
    result = cli("export", "--model", bare_ck, "--out", out, "--tokenizer", _small_tokenizer(tmp_path / "small"))
    assert_one_line_error(result, r"vocab|embedding")
    assert not out.exists()
