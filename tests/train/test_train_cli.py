"""``trtbert train`` through click's CliRunner: the summary table, and one-line errors with exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from trtbert.cli import main


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["train", *args])
    return result.exit_code, result.output


def test_cli_trains(tiny_models: dict[str, Path], glue_tiny: Path, tmp_path: Path) -> None:
    code, output = _run("--model", str(tiny_models["bert"]), "--task", "SST-2", "--data-dir", str(glue_tiny),
                        "--out", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "8", "--eval-limit", "6")
    assert code == 0, output
    assert "accuracy (best epoch 1)" in output and "6 dev examples" in output
    code, output = _run("--model", str(tiny_models["bert"]), "--task", "sst2", "--data-dir", str(glue_tiny),
                        "--out", str(tmp_path / "out"), "--epochs", "1")
    assert code == 1 and "already exists; pass --overwrite" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "sst3"], "unknown task 'sst3'; known tasks: cola, sst2"),
        (["--task", "cola"], "CoLA/train.tsv not found; expected the GLUE layout"),
        (["--task", "sst2", "--objective", "heads-only", "--no-heads"], "--no-heads trains no exit heads"),
        (["--task", "sst2", "--epochs", "0"], "epochs must be at least 1"),
    ],
)
def test_cli_bad_input(args: list[str], message: str, tiny_models: dict[str, Path], glue_tiny: Path,
                       tmp_path: Path) -> None:
    code, output = _run("--model", str(tiny_models["bert"]), "--data-dir", str(glue_tiny),
                        "--out", str(tmp_path / "out"), *args)
    assert code == 1 and f"error: " in output and message in output, output
    assert "Traceback" not in output


def test_cli_malformed_row_and_bad_label(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "glue" / "SST-2"
    data.mkdir(parents=True)
    (data / "train.tsv").write_text("sentence\tlabel\ngood \t1\nbad row\n", encoding="utf-8")
    (data / "dev.tsv").write_text("sentence\tlabel\ngood \t7\n", encoding="utf-8")
    code, output = _run("--model", str(tiny_models["bert"]), "--task", "sst2", "--data-dir", str(tmp_path / "glue"),
                        "--out", str(tmp_path / "out"))
    assert code == 1 and "train.tsv:3: expected 2 tab-separated fields, found 1" in output
    (data / "train.tsv").write_text("sentence\tlabel\ngood \t1\n", encoding="utf-8")
    code, output = _run("--model", str(tiny_models["bert"]), "--task", "sst2", "--data-dir", str(tmp_path / "glue"),
                        "--out", str(tmp_path / "out"))
    assert code == 1 and "dev.tsv:2: label '7' is not a sst2 label" in output


def test_cli_heads_only_refuses_model_without_classifier(glue_tiny: Path, tmp_path: Path) -> None:
    from models import make_tiny_model
    from transformers import AutoModelForSequenceClassification

    base = tmp_path / "base"
    make_tiny_model("bert", base)
    AutoModelForSequenceClassification.from_pretrained(str(base)).bert.save_pretrained(str(base))  # a BertModel
    code, output = _run("--model", str(base), "--task", "sst2", "--data-dir", str(glue_tiny),
                        "--out", str(tmp_path / "out"), "--objective", "heads-only")
    assert code == 1 and "heads-only needs a fine-tuned sequence classifier" in output and "BertModel" in output
