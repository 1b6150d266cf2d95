"""Runtime fixtures: tiny bundles (3 layers, an exit at every layer) per family, built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import FAMILIES, SENTENCES, make_tiny_model  # noqa: E402

LAYERS = 3
WIDE_LAYERS = 6
# Mixed lengths; the long one is cut at the tiny models' 64 positions.
TEXTS = [*SENTENCES, "the movie", " ".join(SENTENCES * 2)]


def _with_heads(model_type: str, directory: Path, num_labels: int = 2, layers: int = LAYERS, hidden: int = 32) -> Path:
    import torch

    from trtbert.modeling.heads import ExitHeads, HeadsConfig

    torch.manual_seed(1)
    config = HeadsConfig(readout="mean", layers=tuple(range(1, layers)), num_labels=num_labels,
                         hidden_size=hidden, model_type=model_type)
    ExitHeads(config).save(directory)
    return directory


def _export(model_dir: Path, out: Path) -> Path:
    from trtbert.exporter.export import ExportOptions, export_bundle

    return export_bundle(ExportOptions(model=str(model_dir), out=out)).bundle


@pytest.fixture(scope="session")
def rt_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random classifier per family with 3 layers and a (random) exit head on layers 1 and 2."""
    root = tmp_path_factory.mktemp("rt-models")
    return {f: _with_heads(f, make_tiny_model(f, root / f, layers=LAYERS)) for f in FAMILIES}


@pytest.fixture(scope="session")
def rt_bundles(rt_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundle of each of ``rt_models``: an exit at layers 1, 2 and 3."""
    root = tmp_path_factory.mktemp("rt-bundles")
    return {f: _export(d, root / f) for f, d in rt_models.items()}


@pytest.fixture(scope="session")
def regression_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT regression bundle (one output) with exits at every layer."""
    root = tmp_path_factory.mktemp("rt-regression")
    model = _with_heads("bert", make_tiny_model("bert", root / "model", num_labels=1, layers=LAYERS), num_labels=1)
    return _export(model, root / "bundle")


@pytest.fixture(scope="session")
def wide_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-layer BERT bundle whose layers (3 MiB files) dwarf allocator noise in measured sizes: for cap tests."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from models import _tokenizer, _vocab

    root = tmp_path_factory.mktemp("rt-wide")
    model_dir = root / "model"
    model_dir.mkdir()
    tok = _tokenizer(model_dir)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(_vocab()), hidden_size=256, num_hidden_layers=WIDE_LAYERS, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=72, pad_token_id=tok.pad_token_id,
                        num_labels=2)
    BertForSequenceClassification(config).save_pretrained(str(model_dir))
    _with_heads("bert", model_dir, layers=WIDE_LAYERS, hidden=256)
    return _export(model_dir, root / "bundle")

