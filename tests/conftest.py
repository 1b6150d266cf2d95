"""Shared fixtures: tiny random models per family, their bundles, and the GLUE sample data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from models import FAMILIES, make_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random classifier directory per family."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: make_tiny_model(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_bundles(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One exported bundle per family, with a trained-format exit head on every layer."""
    from trtbert.exporter.export import ExportOptions, export_bundle
    from trtbert.modeling.heads import ExitHeads, HeadsConfig

    root = tmp_path_factory.mktemp("tiny-bundles")
    bundles = {}
    for family, model_dir in tiny_models.items():
        with_heads = root / f"{family}-model"
        make_tiny_model(family, with_heads)
        import torch

        torch.manual_seed(1)
        ExitHeads(HeadsConfig(readout="mean", layers=(1,), num_labels=2, hidden_size=32, model_type=family)).save(with_heads)
        bundles[family] = export_bundle(ExportOptions(model=str(with_heads), out=root / family)).bundle
    return bundles
