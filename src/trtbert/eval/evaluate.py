"""``trtbert eval``: task metric, latency, memory and exits of a bundle, against its own full model.

Timing is fair: a few untimed batches warm the engines up, then each batch runs the full model (every
layer: its latency, its metric, and the per-layer logits and times that decide every sweep point) and
the exit rule for real, back to back, alternating which goes first, so a noisy minute hits both;
latencies are reported as mean / p50 / p90 / p99 and the wall speed-up is the ratio of the means
(``--exit none`` comes out at 1.00x). Sweep points are replayed from the full pass's logits (no extra
pass): their latency is the full pass's time to each row's exit layer. Never imports torch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtbert import bundle as B
from trtbert.data.glue import HF_DATASET, Example, load_split, resolve_data_dir, split_path
from trtbert.data.metrics import main_score
from trtbert.data.tasks import Task, get_task
from trtbert.errors import DataError, UsageError
from trtbert.eval.calibration import CalibrationReport, calibrate_bundle, check_targets
from trtbert.eval.candidates import DEFAULT_TOLERANCE, oracle_exits
from trtbert.eval.sweep import SweepPoint, parse_sweep, replay
from trtbert.memory import peak_rss
from trtbert.runtime.exits import Budget, as_rule, exit_layers_for
from trtbert.runtime.runner import FullPass, Runner
from trtbert.runtime.text import normalise_inputs

log = logging.getLogger(__name__)

DEV_HALF = "dev-half"  # calibrate on the first half of the reported split, report on the second
WARMUP_BATCHES = 3


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate. ``exit`` None uses the bundle's calibrated policy (else ``none``)."""

    bundle: Path
    task: str
    data_dir: Path | None = None
    dataset: str = HF_DATASET
    split: str = "dev"
    engines: str = B.SOURCE_SET
    exit: str | None = None
    memory_cap: int | str | None = None
    batch_size: int = 1
    limit: int | None = None
    threads: int = 0
    sweeps: tuple[str, ...] = ()
    calibrate: bool = False
    max_disagreement: float | None = None
    max_drop: float | None = None
    delta: float = 0.1
    objective: str = "auto"
    families: tuple[str, ...] = ()  # rule families calibration may certify (empty: all)
    seed: int = 0
    calibration_split: str = "train"
    calibration_limit: int = 2000
    fit_limit: int = 0  # rows before the calibration rows that shape candidates (kept out of the bound)
    progress: bool = True
    tune_allocator: bool = False  # the CLI turns it on (a process-wide setting; see trtbert.memory)

    def __post_init__(self) -> None:
        for name in ("batch_size", "calibration_limit"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)!r}")
        if not isinstance(self.fit_limit, int) or self.fit_limit < 0:
            raise UsageError(f"--fit-limit must be 0 or more rows, got {self.fit_limit!r}")
        from trtbert.eval.certify import FAMILIES

        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown:
            raise UsageError(f"unknown exit families {unknown}; choose from {', '.join(FAMILIES)}")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be at least 1, got {self.limit}")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise UsageError(f"--threads must be 0 (one per core) or more, got {self.threads!r}")
        check_targets(self.max_disagreement, self.max_drop, self.delta, self.objective)


@dataclass(frozen=True)
class Latency:
    """Per-example latency in ms."""

    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, latencies_ms: Sequence[float]) -> Latency:
        """mean / p50 / p90 / p99 of per-example latencies."""
        x = np.asarray(latencies_ms, dtype=np.float64)
        if x.size == 0:
            return cls(0.0, 0.0, 0.0, 0.0)
        return cls(float(x.mean()), *(float(np.percentile(x, q)) for q in (50, 90, 99)))


@dataclass(frozen=True)
class TaskReport:
    """One task's evaluation (MNLI dev: matched, with mismatched beside it)."""

    task: str
    split: str
    metric: str
    exit_rule: str
    engines: str
    memory_cap_mib: float | None
    score: float
    full_score: float
    num_layers: int
    avg_exit_layer: float
    layer_speedup: float
    wall_speedup: float
    latency_ms: Latency
    full_latency_ms: Latency
    peak_rss_mib: float
    peak_pool_mib: float
    exit_histogram: dict[int, int]
    examples: int
    disagreement: float
    oracle_layers: float
    sweep: tuple[SweepPoint, ...] = ()
    mismatched: TaskReport | None = None
    calibration: CalibrationReport | None = None

    @property
    def full_point(self) -> dict[str, float]:
        """The full model as a point of the speed-accuracy plane."""
        return {"avg_layers": float(self.num_layers), "score": self.full_score}

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values (what ``--json`` writes)."""
        out = dataclasses.asdict(self)
        out["full_point"] = self.full_point
        out["exit_histogram"] = {int(k): int(v) for k, v in self.exit_histogram.items()}
        if self.mismatched is None:
            out.pop("mismatched")
        if self.calibration is None:
            out.pop("calibration")
        else:
            out["calibration"] = self.calibration.to_json()
        return out


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


def items_of(examples: Sequence[Example]) -> list[str | tuple[str, str]]:
    """Runner inputs of examples (texts, or pairs)."""
    return [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples]


def labels_of(examples: Sequence[Example]) -> np.ndarray:
    """Gold labels (ids, or scores for regression)."""
    return np.asarray([e.label for e in examples])


def _bar(n: int, desc: str, progress: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=n, desc=desc, unit="row", leave=False, disable=not progress)


@dataclass(frozen=True)
class Passes:
    """Both passes over one split: every exit layer's logits and times (full model), the exit rule's
    predictions, and the per-example latency of each."""

    logits: np.ndarray  # (exits, rows, labels)
    exits_ms: np.ndarray  # (exits, rows): ms from the start of a row's batch to each exit layer
    predictions: tuple[Any, ...]
    full_ms: tuple[float, ...]
    exit_ms: tuple[float, ...]
    pooled: np.ndarray | None = None  # (exits, rows, hidden), for rules that read the hidden state


def run_passes(runner: Runner, rule: str, items: list[Any], batch_size: int, progress: bool = False,
               desc: str = "eval") -> Passes:
    """The full model and ``rule`` on every batch, interleaved (ABBA order), after a warm-up."""
    runner.rule = runner.resolve_rule(rule)
    pooled = runner.rule.needs_hidden
    for s in range(0, min(len(items), WARMUP_BATCHES * batch_size), batch_size):  # untimed warm-up
        runner.layer_logits(items[s:s + batch_size], batch_size=batch_size)
        runner.predict(items[s:s + batch_size], batch_size=batch_size)
    logits, times, hidden, predictions, full_ms, exit_ms = [], [], [], [], [], []
    with _bar(len(items), desc, progress) as bar:
        for n, s in enumerate(range(0, len(items), batch_size)):
            chunk = items[s:s + batch_size]
            for first in ((True, False) if n % 2 == 0 else (False, True)):
                t0 = time.perf_counter()
                if first:
                    got = runner.full_pass(chunk, batch_size=batch_size, pooled=pooled)
                    logits.append(got.logits)
                    times.append(got.exits_ms)
                    if pooled:
                        hidden.append(got.pooled)
                    full_ms += [(time.perf_counter() - t0) * 1e3 / len(chunk)] * len(chunk)
                else:
                    predictions += runner.predict(chunk, batch_size=batch_size)
                    exit_ms += [(time.perf_counter() - t0) * 1e3 / len(chunk)] * len(chunk)
            bar.update(len(chunk))
    return Passes(np.concatenate(logits, axis=1), np.concatenate(times, axis=1), tuple(predictions),
                  tuple(full_ms), tuple(exit_ms), np.concatenate(hidden, axis=1) if pooled else None)


def full_pass(runner: Runner, items: list[Any], batch_size: int, progress: bool = False,
              desc: str = "full model") -> FullPass:
    """Every exit layer's logits, times and pooled hidden states, with no early exit (one pass)."""
    parts = []
    with _bar(len(items), desc, progress) as bar:
        for s in range(0, len(items), batch_size):
            parts.append(runner.full_pass(items[s:s + batch_size], batch_size=batch_size, pooled=True))
            bar.update(len(items[s:s + batch_size]))
    return FullPass(np.concatenate([p.logits for p in parts], axis=1),
                    np.concatenate([p.exits_ms for p in parts], axis=1),
                    np.concatenate([p.pooled for p in parts], axis=1))


def _load(task: Task, split: str, data_dir: Path | None, limit: int | None, dataset: str) -> list[Example]:
    examples = load_split(task, split, data_dir, limit=limit, dataset=dataset)
    if not examples:
        raise DataError(f"{task.name} {split} has no examples")
    source = str(split_path(task, split, data_dir)) if data_dir is not None else f"{dataset} {task.hf_config} {split} row"
    normalise_inputs(items_of(examples), where=[f"{source}:{e.line}" if data_dir is not None else f"{source} {e.line}"
                                               for e in examples])  # an empty text is named by file:line
    return examples


def evaluate(options: EvalOptions) -> TaskReport:
    """Evaluate a bundle on a GLUE task (calibrating its exit policy first when asked)."""
    task = get_task(options.task)
    bundle = B.load_bundle(options.bundle, verify="none")
    check_labels(task, bundle.manifest)
    problem = bundle.manifest.model.problem_type
    sweeps = [rule for text in options.sweeps for rule in parse_sweep(text, problem)]
    if options.exit is not None:
        as_rule(options.exit, problem)
    data_dir = resolve_data_dir(task, options.data_dir)
    examples = _load(task, options.split, data_dir, options.limit, options.dataset)
    calibration_examples: list[Example] | None = None
    fit_examples: list[Example] = []
    if options.calibrate:
        if options.calibration_split == DEV_HALF:
            half = len(examples) // 2
            calibration_examples, examples = examples[:half], examples[half:]
        else:
            rows = _load(task, options.calibration_split, data_dir, None, options.dataset)
            calibration_examples = rows[-options.calibration_limit:]
            if options.fit_limit:
                fit_examples = rows[-(options.calibration_limit + options.fit_limit):-options.calibration_limit]
    with Runner.from_bundle(options.bundle, engines=options.engines, memory_cap=options.memory_cap,
                            exit="none", threads=options.threads, tune_allocator=options.tune_allocator) as runner:
        calibration = None
        if calibration_examples is not None:
            cal = full_pass(runner, items_of(calibration_examples), options.batch_size, options.progress,
                            "calibration rows")
            fit = full_pass(runner, items_of(fit_examples), options.batch_size, options.progress,
                            "fit rows") if fit_examples else None
            calibration = calibrate_bundle(runner, task, cal, labels_of(calibration_examples), options, fit,
                                           labels_of(fit_examples) if fit_examples else None)
            runner.reload_policy()
        policy = B.load_bundle(options.bundle, verify="none").manifest.exit_policy or {}
        rule = options.exit or (calibration.rule if calibration else None) or policy.get("rule") or "none"
        rule = runner.resolve_rule(rule).text
        report = _report(runner, task, examples, rule, sweeps, options)
        if task.name == "mnli" and options.split == "dev":
            mismatched = _load(get_task("mnli-mm"), "dev", data_dir, options.limit, options.dataset)
            report = dataclasses.replace(report, mismatched=_report(runner, get_task("mnli-mm"), mismatched, rule,
                                                                   sweeps, options))
    report = dataclasses.replace(report, calibration=calibration, peak_rss_mib=peak_rss() / 2**20)
    log.info("%s %s: %s %.2f (full %.2f), %.2fx fewer layers, %.2fx wall, p50 %.1f ms", task.name, rule,
             report.metric, report.score, report.full_score, report.layer_speedup, report.wall_speedup,
             report.latency_ms.p50)
    return report


def _report(runner: Runner, task: Task, examples: list[Example], rule: str, sweeps: list[str],
            options: EvalOptions) -> TaskReport:
    items, labels = items_of(examples), labels_of(examples)
    manifest = runner.bundle.manifest
    exit_layers, num_layers = manifest.exit_layers, manifest.model.num_layers
    passes = run_passes(runner, rule, items, options.batch_size, options.progress, f"{task.name} {rule}")
    logits = passes.logits
    full_score = main_score(task, logits[-1], labels)
    chosen = np.asarray([p.exit_layer for p in passes.predictions])
    outputs = np.asarray([p.logits for p in passes.predictions])
    if not isinstance(runner.rule, Budget):
        offline = exit_layers_for(runner.rule, logits, exit_layers, hidden=passes.pooled)
        if not np.array_equal(offline, chosen):
            log.warning("online exits (avg %.3f) differ from the offline replay (avg %.3f)", chosen.mean(),
                        np.mean(offline))
    values, counts = np.unique(chosen, return_counts=True)
    latency, full_latency = Latency.of(passes.exit_ms), Latency.of(passes.full_ms)
    points = []
    index = {layer: i for i, layer in enumerate(exit_layers)}
    for sweep_rule in sweeps:
        point = replay(task, logits, labels, exit_layers, sweep_rule, num_layers)
        at = exit_layers_for(sweep_rule, logits, exit_layers)
        wall = float(np.mean(passes.exits_ms[[index[int(c)] for c in at], np.arange(len(at))]))
        points.append(dataclasses.replace(point, wall_ms=wall))
    final = logits[-1]
    if task.is_regression:  # "the same answer" within the tolerance calibration certifies with
        differ = np.abs(outputs[:, 0] - final[:, 0]) > DEFAULT_TOLERANCE
    else:
        differ = outputs.argmax(-1) != final.argmax(-1)
    oracle = np.asarray(exit_layers)[oracle_exits(logits)[0]]
    stats = runner.stats()
    return TaskReport(
        task=task.name, split=options.split, metric=task.metric, exit_rule=rule, engines=options.engines,
        memory_cap_mib=None if runner.pool.memory_cap is None else runner.pool.memory_cap / 2**20,
        score=main_score(task, outputs, labels), full_score=full_score, num_layers=num_layers,
        avg_exit_layer=float(chosen.mean()), layer_speedup=num_layers / float(chosen.mean()),
        wall_speedup=full_latency.mean / latency.mean if latency.mean else 0.0,
        latency_ms=latency, full_latency_ms=full_latency, peak_rss_mib=peak_rss() / 2**20,
        peak_pool_mib=stats.peak_bytes / 2**20, exit_histogram={int(v): int(c) for v, c in zip(values, counts)},
        examples=len(examples), disagreement=float(differ.mean()),
        oracle_layers=float(oracle.mean()), sweep=tuple(points),
    )


def sweep_points(report: TaskReport) -> list[SweepPoint]:
    """The sweep points of a report (for plotting)."""
    return list(report.sweep)
