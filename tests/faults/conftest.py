"""Fixtures of the fault suite (issue 9): one tiny 3-layer BERT checkpoint with exit heads, its bundle
with an int8 and a streamed int8 engine set, a final-exit-only bundle and a tiny SST-2 in the GLUE
layout, all built once per session. Tests that change a bundle work on a copy (``bundle_copy``).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from faultkit import SENTENCES, STREAM, assert_ok, cli, fast_wordpiece, umask, write_sst2  # noqa: E402
from models import make_tiny_model  # noqa: E402

LAYERS = 3


def save_heads(directory: Path, layers: int = LAYERS) -> Path:
    """A (random) trained-format exit head on every layer but the last, as ``trtbert train`` saves them."""
    import torch

    for name in ("trtbert.modeling.heads", "trtbert.exporter.heads"):  # the module moves in a refactoring
        with contextlib.suppress(ImportError):
            heads = importlib.import_module(name)
            break
    else:  # pragma: no cover
        raise ImportError("no trtbert module defines ExitHeads")
    torch.manual_seed(1)
    config = heads.HeadsConfig(readout="mean", layers=tuple(range(1, layers)), num_labels=2, hidden_size=32,
                               model_type="bert")
    heads.ExitHeads(config).save(directory)
    return directory


@pytest.fixture(scope="session")
def fault_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="session")
def model_dir(fault_root: Path) -> Path:
    """A tiny random 3-layer BERT classifier with tokenizer files and exit heads on layers 1 and 2; its
    tokenizer's vocabulary matches its embedding table (whatever the transformers version)."""
    import json

    from models import _vocab

    with umask(0o022):
        directory = make_tiny_model("bert", fault_root / "model", layers=LAYERS)
        tokens = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        if len(tokens) != json.loads((directory / "config.json").read_text())["vocab_size"]:
            fast_wordpiece(_vocab(), directory)
        return save_heads(directory)


@pytest.fixture(scope="session")
def bundle(model_dir: Path, fault_root: Path) -> Path:
    """The exported bundle of ``model_dir`` with sets ort-cpu-int8 and ort-cpu-int8-stream (umask 022).
    Read-only for tests: copy it (``bundle_copy``) to change it."""
    out = fault_root / "bundle"
    with umask(0o022):
        assert_ok(cli("export", "--model", model_dir, "--out", out))
        assert_ok(cli("build", out, "--int8"))
        assert_ok(cli("build", out, "--int8", "--stream"))
    return out


@pytest.fixture(scope="session")
def stream_cap(bundle: Path) -> str:
    """The smallest ``--memory-cap`` (in KiB) that ``run`` accepts for the streamed set: under it the last
    layers are re-read for every input (checked with ``--stats`` where it reports its loads)."""
    def accepted(kib: int):
        result = cli("run", bundle, *SENTENCES[:2], "--engines", STREAM, "--memory-cap", f"{kib}KiB", "--stats",
                     "--batch-size", "1", "--exit", "none")
        return result if result.exit_code == 0 else None

    high = 16
    while not accepted(high):
        high *= 2
        assert high <= 1 << 20, "no memory cap up to 1 GiB is accepted for the streamed set"
    low = high // 2  # refused (or 8 KiB, never tried: too small for any stage)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if accepted(mid) else (mid, high)
    result = accepted(high)
    loads = re.search(r"(\d+) loads", result.stderr)
    if loads:  # 4 engines, 2 inputs one at a time: more than 4 loads means reloads
        assert int(loads.group(1)) > 4, f"--memory-cap {high}KiB does not force reloads: {result.stderr}"
    return f"{high}KiB"


@pytest.fixture
def bundle_copy(bundle: Path, tmp_path: Path) -> Path:
    """A private copy of ``bundle``."""
    dst = tmp_path / "bundle"
    shutil.copytree(bundle, dst)
    return dst


@pytest.fixture(scope="session")
def final_only_bundle(model_dir: Path, fault_root: Path) -> Path:
    """A bundle of the same checkpoint exported with the final exit only (``--exits none``)."""
    out = fault_root / "final-only"
    assert_ok(cli("export", "--model", model_dir, "--out", out, "--exits", "none"))
    return out


@pytest.fixture(scope="session")
def glue_dir(fault_root: Path) -> Path:
    return write_sst2(fault_root / "glue")
