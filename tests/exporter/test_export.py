"""Export: every family validates, stages chain to the transformers logits, ALBERT writes one layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from models import FAMILIES, SENTENCES, make_tiny_model
from trtbert import bundle as B
from trtbert.errors import ExportError, ModelError, UsageError
from trtbert.exporter.export import ExportOptions, export_bundle, parse_exits
from trtbert.modeling.heads import ExitHeads, HeadsConfig


def run_chain(root: Path, ids: np.ndarray, mask: np.ndarray, token_types: np.ndarray) -> dict[int, np.ndarray]:
    """Run the bundle's ONNX stages by hand (independent of the exporter's own validation)."""
    manifest = B.load_bundle(root).manifest
    table = np.load(root / B.WORD_EMBEDDINGS)
    sessions = {s.file: ort.InferenceSession(str(root / s.file)) for s in manifest.stages}
    available = {B.INPUT_IDS: ids, B.ATTENTION_MASK: mask, B.TOKEN_TYPE_IDS: token_types, B.INPUTS_EMBEDS: table[ids]}
    logits = {}
    for stage in manifest.stages:
        feeds = {t.name: available[t.name] for t in stage.inputs}
        outs = dict(zip([t.name for t in stage.outputs], sessions[stage.file].run(None, feeds)))
        if B.HIDDEN in outs:
            available[B.HIDDEN] = outs[B.HIDDEN]
        if B.HIDDEN_OUT in outs:
            available[B.HIDDEN] = outs[B.HIDDEN_OUT]
        if B.LOGITS in outs:
            logits[stage.layer] = outs[B.LOGITS]
    return logits


@pytest.mark.parametrize("family", FAMILIES)
def test_chain_matches_transformers(family: str, tiny_models: dict[str, Path], tiny_bundles: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models[family]))
    enc = tok(SENTENCES[:3], padding=True, return_tensors="np")
    token_types = enc.get("token_type_ids", np.zeros_like(enc["input_ids"]))
    logits = run_chain(tiny_bundles[family], enc["input_ids"], enc["attention_mask"], token_types)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bundles[family].parent / f"{family}-model")).eval()
    kwargs = {k: torch.from_numpy(v) for k, v in enc.items() if k != "token_type_ids" or family in ("bert", "albert")}
    with torch.no_grad():
        out = model(**kwargs, output_hidden_states=True)
    assert set(logits) == {1, 2}
    np.testing.assert_allclose(logits[2], out.logits.numpy(), atol=1e-4)
    heads = ExitHeads.load(tiny_bundles[family].parent / f"{family}-model").eval()
    with torch.no_grad():
        expected = heads.head(1)(out.hidden_states[1], torch.from_numpy(enc["attention_mask"]))
    np.testing.assert_allclose(logits[1], expected.numpy(), atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_manifest_describes_the_model(family: str, tiny_bundles: dict[str, Path]) -> None:
    bundle = B.load_bundle(tiny_bundles[family])
    m = bundle.manifest
    assert m.model.model_type == family and m.model.num_layers == 2 and m.model.hidden_size == 32
    assert m.exit_layers == (1, 2)
    assert [s.layer for s in m.layers] == [1, 2]
    assert all(v <= 1e-4 for v in m.export["stage_max_diff"].values())
    assert B.TOKENIZER_JSON in m.files and B.WORD_EMBEDDINGS in m.files
    layer = m.layers[0]
    assert [t.name for t in layer.inputs] == [B.HIDDEN, B.ATTENTION_MASK]
    assert layer.inputs[0].shape == ("batch", "sequence", 32)


def test_manifest_round_trip(tiny_bundles: dict[str, Path]) -> None:
    manifest = B.load_bundle(tiny_bundles["bert"]).manifest
    again = B.Manifest.from_json(json.loads(json.dumps(manifest.to_json())))
    assert again == manifest


def test_albert_writes_its_shared_layer_once(tiny_bundles: dict[str, Path]) -> None:
    m = B.load_bundle(tiny_bundles["albert"]).manifest
    assert {s.file for s in m.layers} == {"onnx/layer_01.onnx"}
    layer_files = [f for f in m.files if f.startswith("onnx/layer_")]
    assert layer_files == ["onnx/layer_01.onnx"]
    assert [s.name for s in m.stages if s.kind == B.HEAD] == ["head_01", "head_02"]
    bert = B.load_bundle(tiny_bundles["bert"]).manifest
    assert len({s.file for s in bert.layers}) == 2


@pytest.mark.parametrize("readout", ["pooler", "layer-pooler"])
@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_other_readouts_export(family: str, readout: str, tmp_path: Path) -> None:
    model_dir = make_tiny_model(family, tmp_path / "model")
    ExitHeads(HeadsConfig(readout=readout, layers=(1,), num_labels=2, hidden_size=32, model_type=family)).save(model_dir)
    result = export_bundle(ExportOptions(model=str(model_dir), out=tmp_path / "bundle"))
    assert result.exit_layers == (1, 2)
    assert max(result.chain_diffs.values()) <= 1e-4


def test_regression_model_exports(tmp_path: Path) -> None:
    model_dir = make_tiny_model("bert", tmp_path / "model", num_labels=1)
    result = export_bundle(ExportOptions(model=str(model_dir), out=tmp_path / "bundle"))
    m = B.load_bundle(result.bundle).manifest
    assert m.model.problem_type == B.REGRESSION and len(m.model.labels) == 1


def test_without_heads_exports_final_exit_only(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    result = export_bundle(ExportOptions(model=str(tiny_models["bert"]), out=tmp_path / "b"))
    assert result.exit_layers == (2,)
    assert any("final exit only" in n for n in result.notes)


def test_exits_selection(tiny_bundles: dict[str, Path], tmp_path: Path) -> None:
    model_dir = tiny_bundles["bert"].parent / "bert-model"
    none = export_bundle(ExportOptions(model=str(model_dir), out=tmp_path / "none", exits="none"))
    assert none.exit_layers == (2,)
    with pytest.raises(UsageError, match="beyond the model's 2 layers"):
        export_bundle(ExportOptions(model=str(model_dir), out=tmp_path / "x", exits=(5,)))
    assert parse_exits("3, 6,9") == (3, 6, 9)
    with pytest.raises(UsageError):
        parse_exits("three")


def test_untrained_exit_is_refused(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no trained exit head for layer\(s\) \[1\]"):
        export_bundle(ExportOptions(model=str(tiny_models["bert"]), out=tmp_path / "x", exits=(1,)))


def test_failed_validation_leaves_nothing(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match="validation against PyTorch failed") as info:
        export_bundle(ExportOptions(model=str(tiny_models["bert"]), out=out, tolerance=0.0))
    assert "layer_01" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unknown_model_type_lists_supported(tmp_path: Path) -> None:
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ModelError, match="'gpt2' is not supported; supported: albert, bert, distilbert, roberta"):
        export_bundle(ExportOptions(model=str(tmp_path / "gpt2"), out=tmp_path / "out"))


def test_bad_opset_is_refused_before_loading(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="opset 99 cannot be produced"):
        export_bundle(ExportOptions(model=str(tiny_models["bert"]), out=tmp_path / "x", opset=99))
