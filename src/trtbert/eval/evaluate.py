"""``trtbert eval``: task metric, latency, memory and exits of a bundle, against its own full model.

One pass runs every layer (the full model: its latency, its metric, and the per-layer logits that
decide every sweep point); a second pass runs the exit rule for real (its latency and exits).
Never imports torch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtbert import bundle as B
from trtbert.data.glue import Example, load_split
from trtbert.data.metrics import main_score
from trtbert.data.tasks import Task, get_task
from trtbert.engines.base import peak_rss
from trtbert.errors import DataError, UsageError
from trtbert.eval.sweep import Calibration, SweepPoint, calibrate, parse_sweep, replay
from trtbert.runtime.exits import as_rule
from trtbert.runtime.runner import Runner

log = logging.getLogger(__name__)

DEV_HALF = "dev-half"  # calibrate on the first half of the reported split, report on the second


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate. ``exit`` None uses the bundle's calibrated policy (else ``none``)."""

    bundle: Path
    task: str
    data_dir: Path | None = None
    split: str = "dev"
    engines: str = B.SOURCE_SET
    exit: str | None = None
    memory_cap: int | str | None = None
    batch_size: int = 1
    limit: int | None = None
    threads: int = 0
    sweeps: tuple[str, ...] = ()
    calibrate: bool = False
    max_drop: float = 0.5
    calibration_split: str = "train"
    calibration_limit: int = 2000
    progress: bool = True


@dataclass
class _Pass:
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """mean / p50 / p90 / p99 of per-example latencies, in ms."""
    x = np.asarray(latencies_ms, dtype=np.float64)
    if x.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    return {"mean": float(x.mean()), "p50": float(np.percentile(x, 50)),
            "p90": float(np.percentile(x, 90)), "p99": float(np.percentile(x, 99))}


def check_labels(task: Task, manifest: B.Manifest) -> None:
    """Refuse data whose labels do not match the bundle's (count, names, or problem type)."""
    model = manifest.model
    if task.is_regression != (model.problem_type == B.REGRESSION):
        kind = "regression" if task.is_regression else "classification"
        raise DataError(f"task {task.name} is {kind} but the bundle is {model.problem_type}; use a matching bundle")
    if task.is_regression:
        return
    if len(model.labels) != task.num_labels:
        raise DataError(
            f"task {task.name} has {task.num_labels} labels {list(task.labels)} but the bundle has "
            f"{len(model.labels)} {list(model.labels)}; evaluate it on a task it was trained for"
        )
    generic = all(name.upper() == f"LABEL_{i}" for i, name in enumerate(model.labels))
    if not generic and [n.lower() for n in model.labels] != [n.lower() for n in task.labels]:
        raise DataError(f"bundle labels {list(model.labels)} do not match task {task.name}'s labels {list(task.labels)}")


def _items(examples: Sequence[Example]) -> list[str | tuple[str, str]]:
    return [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples]


def _labels(examples: Sequence[Example]) -> np.ndarray:
    return np.asarray([e.label for e in examples])


def _batches(n: int, size: int, desc: str, progress: bool) -> Any:
    starts = range(0, n, size)
    if not progress:
        return starts
    from tqdm import tqdm

    return tqdm(starts, desc=desc, unit="batch", leave=False)


def full_pass(runner: Runner, items: list[Any], batch_size: int, progress: bool) -> tuple[np.ndarray, _Pass]:
    """Every exit layer's logits with no early exit, and the per-example latency of that full run."""
    record, parts = _Pass(), []
    start = time.perf_counter()
    for s in _batches(len(items), batch_size, "full model", progress):
        chunk = items[s:s + batch_size]
        t0 = time.perf_counter()
        parts.append(runner.layer_logits(chunk, batch_size=batch_size))
        record.latencies_ms += [(time.perf_counter() - t0) * 1e3 / len(chunk)] * len(chunk)
    record.seconds = time.perf_counter() - start
    return np.concatenate(parts, axis=1), record


def exit_pass(runner: Runner, rule: str, items: list[Any], batch_size: int, progress: bool) -> tuple[list[Any], _Pass]:
    """Predictions with ``rule`` run for real, and their per-example latency."""
    runner.rule = as_rule(rule, runner.bundle.manifest.model.problem_type)
    record, predictions = _Pass(), []
    start = time.perf_counter()
    for s in _batches(len(items), batch_size, rule, progress):
        chunk = items[s:s + batch_size]
        t0 = time.perf_counter()
        predictions += runner.predict(chunk, batch_size=batch_size)
        record.latencies_ms += [(time.perf_counter() - t0) * 1e3 / len(chunk)] * len(chunk)
    record.seconds = time.perf_counter() - start
    return predictions, record


def _load(task: Task, split: str, data_dir: Path | None, limit: int | None) -> list[Example]:
    examples = load_split(task, split, data_dir, limit=limit)
    if not examples:
        raise DataError(f"{task.name} {split} has no examples")
    return examples


def evaluate(options: EvalOptions) -> dict[str, Any]:
    """Evaluate a bundle on a GLUE task; returns the report dict (see README for its keys)."""
    task = get_task(options.task)
    if options.batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {options.batch_size}")
    bundle = B.load_bundle(options.bundle, verify="none")
    check_labels(task, bundle.manifest)
    problem = bundle.manifest.model.problem_type
    sweeps = [rule for text in options.sweeps for rule in parse_sweep(text, problem)]
    if options.exit is not None:
        as_rule(options.exit, problem)
    examples = _load(task, options.split, options.data_dir, options.limit)
    calibration_examples: list[Example] | None = None
    if options.calibrate:
        if options.calibration_split == DEV_HALF:
            half = len(examples) // 2
            calibration_examples, examples = examples[:half], examples[half:]
        else:
            rows = _load(task, options.calibration_split, options.data_dir, None)
            calibration_examples = rows[-options.calibration_limit:]
    with Runner.from_bundle(options.bundle, engines=options.engines, memory_cap=options.memory_cap,
                            exit="none", threads=options.threads) as runner:
        calibration = None
        if calibration_examples is not None:
            calibration = _calibrate(runner, task, calibration_examples, options)
            bundle = B.load_bundle(options.bundle, verify="none")
        rule = options.exit or calibration and calibration.rule or (bundle.manifest.exit_policy or {}).get("rule") or "none"
        report = _report(runner, task, examples, rule, sweeps, options)
        if task.name == "mnli" and options.split == "dev":
            mismatched = _load(get_task("mnli-mm"), "dev", options.data_dir, options.limit)
            report["mismatched"] = _report(runner, get_task("mnli-mm"), mismatched, rule, sweeps, options)
    if calibration is not None:
        report["calibration"] = _calibration_json(calibration, options)
    report["peak_rss_mib"] = peak_rss() / 2**20
    log.info("%s %s: %s %.2f (full %.2f), %.2fx fewer layers, %.2fx wall, p50 %.1f ms",
             task.name, rule, report["metric"], report["score"], report["full_score"], report["layer_speedup"],
             report["wall_speedup"], report["latency_ms"]["p50"])
    return report


def _report(runner: Runner, task: Task, examples: list[Example], rule: str, sweeps: list[str],
            options: EvalOptions) -> dict[str, Any]:
    items, labels = _items(examples), _labels(examples)
    manifest = runner.bundle.manifest
    exit_layers, num_layers = manifest.exit_layers, manifest.model.num_layers
    logits, full = full_pass(runner, items, options.batch_size, options.progress)
    full_score = main_score(task, logits[-1], labels)
    predictions, timed = exit_pass(runner, rule, items, options.batch_size, options.progress)
    chosen = np.asarray([p.exit_layer for p in predictions])
    outputs = np.asarray([p.logits for p in predictions])
    if not rule.startswith("budget"):
        offline = replay(task, logits, labels, exit_layers, rule, num_layers)
        if not np.isclose(offline.avg_layers, chosen.mean()):
            log.warning("online exits (avg %.3f) differ from the offline replay (avg %.3f)", chosen.mean(), offline.avg_layers)
    values, counts = np.unique(chosen, return_counts=True)
    latency = latency_summary(timed.latencies_ms)
    full_latency = latency_summary(full.latencies_ms)
    points = []
    for sweep_rule in sweeps:
        point = replay(task, logits, labels, exit_layers, sweep_rule, num_layers)
        _, record = exit_pass(runner, sweep_rule, items, options.batch_size, options.progress)
        points.append(dataclasses.replace(point, wall_ms=latency_summary(record.latencies_ms)["mean"]))
    stats = runner.stats()
    return {
        "task": task.name,
        "split": options.split,
        "metric": task.metric,
        "exit_rule": rule,
        "engines": options.engines,
        "memory_cap_mib": None if runner.pool.memory_cap is None else runner.pool.memory_cap / 2**20,
        "score": main_score(task, outputs, labels),
        "full_score": full_score,
        "num_layers": num_layers,
        "avg_exit_layer": float(chosen.mean()),
        "layer_speedup": num_layers / float(chosen.mean()),
        "wall_speedup": full_latency["mean"] / latency["mean"] if latency["mean"] else 0.0,
        "latency_ms": latency,
        "full_latency_ms": full_latency,
        "peak_rss_mib": peak_rss() / 2**20,
        "peak_pool_mib": stats.peak_bytes / 2**20,
        "exit_histogram": {int(v): int(c) for v, c in zip(values, counts)},
        "examples": len(examples),
        "sweep": [dataclasses.asdict(p) for p in points],
        "full_point": {"avg_layers": float(exit_layers[-1]), "score": full_score},
    }


def _calibrate(runner: Runner, task: Task, examples: list[Example], options: EvalOptions) -> Calibration:
    """Choose the rule on the calibration examples and write it into the bundle's manifest."""
    manifest = runner.bundle.manifest
    logits, _ = full_pass(runner, _items(examples), options.batch_size, options.progress)
    result = calibrate(task, logits, _labels(examples), manifest.exit_layers, manifest.model.num_layers, options.max_drop)
    policy = {"rule": result.rule, "calibration": _calibration_json(result, options)}
    current = B.load_bundle(options.bundle, verify="none").manifest
    B.write_manifest(Path(options.bundle), dataclasses.replace(current, exit_policy=policy))
    log.info("calibrated %s: %s (%.2f vs full %.2f on %d examples, %.2f layers); written to the manifest",
             task.name, result.rule, result.score, result.full_score, result.examples, result.avg_layers)
    return result


def _calibration_json(result: Calibration, options: EvalOptions) -> dict[str, Any]:
    return {
        "rule": result.rule, "score": result.score, "full_score": result.full_score,
        "avg_layers": result.avg_layers, "max_drop": result.max_drop, "examples": result.examples,
        "split": options.calibration_split, "task": options.task,
        "best_per_rule": {k: dataclasses.asdict(v) for k, v in result.best_per_rule.items()},
    }


def sweep_points(report: dict[str, Any]) -> list[SweepPoint]:
    """The sweep points of a report, as dataclasses (for plotting)."""
    return [SweepPoint(**{**p, "histogram": p["histogram"]}) for p in report.get("sweep", [])]
