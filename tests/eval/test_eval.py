"""`trtbert eval`: report keys, sweeps equal separate runs, calibration respects its drop, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from trtbert import bundle as B
from trtbert.cli import main
from trtbert.data.glue import SST2_SAMPLE
from trtbert.data.metrics import main_score
from trtbert.data.tasks import get_task
from trtbert.errors import DataError, UsageError
from trtbert.eval.evaluate import EvalOptions, evaluate
from trtbert.eval.sweep import best_of_grid, parse_sweep, replay

REPORT_KEYS = {"task", "metric", "score", "full_score", "num_layers", "avg_exit_layer", "layer_speedup",
               "wall_speedup", "latency_ms", "peak_rss_mib", "peak_pool_mib", "exit_histogram", "examples"}


@pytest.fixture(scope="module")
def glue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GLUE directory holding the shipped SST-2 sample as both train and dev."""
    root = tmp_path_factory.mktemp("glue")
    (root / "SST-2").mkdir()
    shutil.copy(SST2_SAMPLE, root / "SST-2" / "dev.tsv")
    shutil.copy(SST2_SAMPLE, root / "SST-2" / "train.tsv")
    return root


@pytest.fixture
def bundle(tiny_bundles: dict[str, Path], tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundles["bert"], target)
    return target


def test_report_has_every_key_and_consistent_numbers(bundle: Path, glue: Path) -> None:
    report = evaluate(EvalOptions(bundle=bundle, task="sst2", data_dir=glue, exit="entropy:0.69", progress=False))
    data = report.to_json()
    assert REPORT_KEYS <= set(data)
    assert set(data["latency_ms"]) == {"mean", "p50", "p90", "p99"}
    assert report.examples == sum(report.exit_histogram.values()) == 64
    assert report.num_layers == 2
    assert report.layer_speedup == pytest.approx(2 / report.avg_exit_layer)
    assert report.peak_rss_mib > 0 and report.peak_pool_mib > 0
    json.dumps(data)


def test_sweep_points_equal_separate_runs(bundle: Path, glue: Path) -> None:
    rules = ["entropy:0.6", "entropy:0.69", "confidence:0.52", "patience:1"]
    swept = evaluate(EvalOptions(bundle=bundle, task="sst2", data_dir=glue, progress=False,
                                 sweeps=("entropy:0.6,0.69", "confidence:0.52", "patience:1")))
    by_rule = {p.rule: p for p in swept.sweep}
    assert list(by_rule) == rules
    for rule in rules:
        alone = evaluate(EvalOptions(bundle=bundle, task="sst2", data_dir=glue, exit=rule, progress=False))
        assert by_rule[rule].score == pytest.approx(alone.score)
        assert by_rule[rule].avg_layers == pytest.approx(alone.avg_exit_layer)
        assert {int(k): v for k, v in by_rule[rule].histogram.items()} == alone.exit_histogram
        assert by_rule[rule].wall_ms > 0


def test_calibration_never_breaks_its_drop() -> None:
    task = get_task("sst2")
    rng = np.random.default_rng(0)
    for trial in range(20):
        labels = rng.integers(0, 2, size=200)
        # deeper layers are more often right: a realistic shape for exit heads
        logits = np.stack([rng.normal(size=(200, 2)) + 1.5 * (k / 6) * np.eye(2)[labels] for k in range(1, 7)])
        exit_layers = (1, 2, 3, 4, 5, 6)
        for max_drop in (0.0, 0.5, 2.0):
            result = best_of_grid(task, logits, labels, exit_layers, 6, max_drop)
            full = main_score(task, logits[-1], labels)
            again = replay(task, logits, labels, exit_layers, result.rule, 6)
            assert again.score >= full - max_drop - 1e-9, (trial, max_drop, result)
            assert again.avg_layers == pytest.approx(result.avg_layers)
            for point in result.best_per_rule.values():
                assert point.score >= full - max_drop - 1e-9


def test_calibrate_writes_the_default_policy(bundle: Path, glue: Path) -> None:
    report = evaluate(EvalOptions(bundle=bundle, task="sst2", data_dir=glue, calibrate=True, max_drop=1.0,
                                  calibration_split="dev-half", progress=False))
    policy = B.load_bundle(bundle).manifest.exit_policy
    assert policy and policy["rule"] == report.calibration.rule == report.exit_rule
    assert report.examples == 32 and policy["examples"] == 32
    assert policy["certificate"]["risk"] == "accuracy-drop" and policy["certificate"]["eps"] == 0.01
    assert policy["certificate"]["delta"] == 0.1 and policy["certificate"]["rows"] <= 32
    again = evaluate(EvalOptions(bundle=bundle, task="sst2", data_dir=glue, progress=False))
    assert again.exit_rule == policy["rule"]


def test_calibrated_learned_policy_runs_from_the_manifest(bundle: Path, glue: Path) -> None:
    from trtbert.runtime.runner import Runner

    evaluate(EvalOptions(bundle=bundle, task="sst2", data_dir=glue, calibrate=True, max_disagreement=0.5,
                         families=("learned",), calibration_split="train", calibration_limit=64, progress=False))
    policy = B.load_bundle(bundle).manifest.exit_policy
    assert policy["family"] == "learned" and policy["certificate"]["risk"] == "disagreement"
    if policy["certified"]:
        assert policy["rule"].startswith("learned") and "params" in policy
        with Runner.from_bundle(bundle) as runner:  # the default policy, parameters and all
            assert runner.rule.text == policy["rule"] and runner.rule.needs_hidden in (True, False)
            runner.predict(["a fine film", "a dull one"])
    else:
        assert policy["rule"] == "none" and policy["rows_needed_zero_errors"] > 0


def test_cli_eval_json_and_plot(bundle: Path, glue: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "report.json", tmp_path / "curve.png"
    result = CliRunner().invoke(main, ["eval", str(bundle), "--task", "sst2", "--data-dir", str(glue), "--quiet",
                                       "--sweep", "entropy:0.5,0.69", "--json", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "entropy:0.69" in result.output
    assert REPORT_KEYS <= set(json.loads(out.read_text()))
    assert png.read_bytes()[:4] == b"\x89PNG"


def one_line_error(args: list[str], text: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and text in lines[0], result.output


def test_bad_input(bundle: Path, glue: Path, tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    base = ["eval", str(bundle), "--data-dir", str(glue), "--quiet"]
    one_line_error(base + ["--task", "nope"], "unknown task 'nope'")
    one_line_error(base + ["--task", "sst2", "--split", "test2"], "unknown split 'test2'")
    one_line_error(base + ["--task", "cola"], "CoLA/dev.tsv")
    one_line_error(base + ["--task", "sst2", "--exit", "entropy"], "cannot read exit rule")
    one_line_error(base + ["--task", "sst2", "--sweep", "entropy"], "RULE:V1,V2")
    one_line_error(base + ["--task", "sst2", "--json", str(tmp_path / "missing-file" / "x" / "r.json")[:0] + "/proc/r.json"],
                   "cannot write to /proc")
    (glue / "MNLI").mkdir(exist_ok=True)
    (glue / "MNLI" / "dev_matched.tsv").write_text(
        "index\tsentence1\tsentence2\tgold_label\n0\ta cat\ta dog\tneutral\n", encoding="utf-8")
    one_line_error(base + ["--task", "mnli"], "task mnli has 3 labels")


def test_regression_bundle_refuses_entropy_and_classification_data(tmp_path: Path, glue: Path) -> None:
    from models import make_tiny_model
    from trtbert.exporter.export import ExportOptions, export_bundle

    model = make_tiny_model("bert", tmp_path / "m", num_labels=1)
    bundle = export_bundle(ExportOptions(model=str(model), out=tmp_path / "b")).bundle
    with pytest.raises(DataError, match="task sst2 is classification but the bundle is regression"):
        evaluate(EvalOptions(bundle=bundle, task="sst2", data_dir=glue, progress=False))
    with pytest.raises(UsageError, match="needs class probabilities"):
        parse_sweep("entropy:0.1,0.2", "regression")
