"""Every objective on every family's tiny model: loss falls, checkpoints reload, frozen means frozen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trtbert.modeling.heads import ExitHeads
from trtbert.train import TrainOptions, train
from trtbert.train import trainer as trainer_module

FAST = dict(epochs=3, batch_size=8, lr=1e-3, head_lr=3e-3, seed=3)
READOUT = {"bert": "mean", "roberta": "pooler", "albert": "layer-pooler", "distilbert": "pooler"}


def _state(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(model_dir)).state_dict()


def _falls(result, stage: str) -> bool:
    losses = [e.train_loss for e in result.epochs if e.stage == stage]
    return losses[-1] < losses[0]


@pytest.mark.parametrize("family", ["bert", "roberta", "albert", "distilbert"])
@pytest.mark.parametrize("objective", ["joint", "distill", "two-stage", "heads-only"])
def test_objective_trains_and_reloads(
    family: str, objective: str, tiny_models: dict[str, Path], glue_tiny: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "out"
    result = train(TrainOptions(model=str(tiny_models[family]), task="sst2", out=out, data_dir=glue_tiny,
                                objective=objective, readout=READOUT[family], **FAST))
    stages = {"joint": ["joint"], "distill": ["joint"], "two-stage": ["backbone", "heads"], "heads-only": ["heads"]}
    assert [e.stage for e in result.epochs] == [s for s in stages[objective] for _ in range(3)]
    assert all(_falls(result, stage) for stage in stages[objective])
    assert result.num_layers == 2 and len(result.best) == 2 and result.best[-1] is not None
    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert model.config.model_type == family and model.config.id2label == {0: "negative", 1: "positive"}
    heads = ExitHeads.load(out)
    assert heads is not None and heads.config.layers == (1,) and heads.config.readout == READOUT[family]
    assert (out / "train_summary.json").is_file() and (out / "tokenizer.json").is_file()
    if objective == "heads-only":  # the backbone and classifier are exactly the input's
        before, after = _state(tiny_models[family]), model.state_dict()
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before)


def test_two_stage_second_stage_freezes_backbone(
    tiny_models: dict[str, Path], glue_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshots: list[dict[str, torch.Tensor]] = []
    original = trainer_module._Run.cached_stage

    def spy(self, model, heads, epochs, bar):  # type: ignore[no-untyped-def]
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return original(self, model, heads, epochs, bar)

    monkeypatch.setattr(trainer_module._Run, "cached_stage", spy)
    out = tmp_path / "out"
    train(TrainOptions(model=str(tiny_models["bert"]), task="sst2", out=out, data_dir=glue_tiny,
                       objective="two-stage", **FAST))
    first_stage, saved = snapshots[0], _state(out)
    assert all(torch.equal(first_stage[k], saved[k]) for k in saved)
    assert not all(torch.equal(v, _state(tiny_models["bert"])[k]) for k, v in saved.items())  # stage 1 trained


def test_same_seed_same_weights(tiny_models: dict[str, Path], glue_tiny: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    def run(name: str, seed: int) -> dict[str, torch.Tensor]:
        train(TrainOptions(model=str(tiny_models["bert"]), task="sst2", out=tmp_path / name, data_dir=glue_tiny,
                           **{**FAST, "epochs": 1, "seed": seed}))
        return load_file(str(tmp_path / name / "trtbert_heads.safetensors"))

    a, b, c = run("a", 11), run("b", 11), run("c", 12)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("objective", ["joint", "distill"])
def test_regression_task(objective: str, glue_tiny: Path, tmp_path: Path) -> None:
    from models import make_tiny_model

    model = make_tiny_model("bert", tmp_path / "m", num_labels=1)
    result = train(TrainOptions(model=str(model), task="stsb", out=tmp_path / "out", data_dir=glue_tiny,
                                objective=objective, **FAST))
    assert result.metric == "pearson" and _falls(result, "joint")


def test_no_heads_is_plain_fine_tuning(tiny_models: dict[str, Path], glue_tiny: Path, tmp_path: Path) -> None:
    result = train(TrainOptions(model=str(tiny_models["distilbert"]), task="sst2", out=tmp_path / "out",
                                data_dir=glue_tiny, heads=False, **FAST))
    assert result.best[0] is None and result.best[-1] is not None
    assert ExitHeads.load(tmp_path / "out") is None


def test_layer_weights_sum_to_one_and_price_computation() -> None:
    from trtbert.train.exit_model import layer_weights

    for scheme in ("pabee", "uniform", "cost"):
        for layers in (1, 2, 6, 12):
            assert abs(sum(layer_weights(layers, scheme)) - 1.0) < 1e-12
    pabee, cost = layer_weights(6, "pabee"), layer_weights(6, "cost")
    assert pabee == sorted(pabee) and pabee[-1] == 6 / 21  # PABEE: later layers weigh more
    assert cost[:-1] == sorted(cost[:-1], reverse=True)  # cost: the exits that save more weigh more
    assert cost[0] == cost[-1] > pabee[0]  # ... and the final exit stays as strong as the first
    with pytest.raises(ValueError):
        layer_weights(6, "nope")


def test_layer_weights_change_training_and_are_recorded(tiny_models: dict[str, Path], glue_tiny: Path,
                                                        tmp_path: Path) -> None:
    import json

    from safetensors.torch import load_file

    def run(scheme: str) -> dict[str, torch.Tensor]:
        out = tmp_path / scheme
        train(TrainOptions(model=str(tiny_models["bert"]), task="sst2", out=out, data_dir=glue_tiny,
                           layer_weights=scheme, **{**FAST, "epochs": 1}))
        assert json.loads((out / "train_summary.json").read_text())["options"]["layer_weights"] == scheme
        return load_file(str(out / "trtbert_heads.safetensors"))

    pabee, cost = run("pabee"), run("cost")
    assert not all(torch.equal(pabee[k], cost[k]) for k in pabee)
    with pytest.raises(Exception, match="layer weights"):
        TrainOptions(model="m", task="sst2", out=tmp_path / "x", layer_weights="nope")
