"""The ``trtbert`` command line: a click group whose commands map flags onto options and format results.

User errors (:class:`TrtbertError`) become one line on stderr and exit status 1; anything else is a bug
and keeps its traceback. Command bodies stay a few lines: the work lives in the library.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from trtbert import __version__
from trtbert.errors import TrtbertError
from trtbert.sizes import format_size


class _Group(click.Group):
    """Click group that turns :class:`TrtbertError` into one clear line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TrtbertError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="trtbert")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Run BERT-family classifiers layer by layer under a memory cap, with early exit."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("trtbert").setLevel(min(level, logging.INFO))


# --- commands -----------------------------------------------------------------------------------
# Each command imports its module inside its body, so `trtbert --help` needs no heavy package.


@main.command()
@click.option("--model", required=True, help="Hugging Face id, alias (bert-base, minilm, ...) or checkpoint directory.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset (17 keeps LayerNorm one op).")
@click.option("--exits", default="all", show_default=True, help="Layers with exit heads: all, none or 3,6,9.")
@click.option("--tolerance", default=1e-4, show_default=True, help="Max abs difference against PyTorch.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle.")
def export(model: str, out: Path, opset: int, exits: str, tolerance: float, overwrite: bool) -> None:
    """Split MODEL into per-layer ONNX stages with exit heads, validate them, write a bundle."""
    from trtbert.exporter.export import ExportOptions, export_bundle, parse_exits

    options = ExportOptions(model=model, out=out, opset=opset, exits=parse_exits(exits),
                            overwrite=overwrite, tolerance=tolerance)
    result = export_bundle(options)  # notes (untrained classifier, no exit heads) are logged as warnings
    click.echo(f"{'stage':<12} {'file':<24} {'MiB':>8} {'max|diff|':>10}")
    for s in result.stages:
        click.echo(f"{s.name:<12} {s.file:<24} {s.nbytes / 2**20:>8.2f} {s.max_diff:>10.1e}")
    chain = ", ".join(f"{k}: {v:.1e}" for k, v in result.chain_diffs.items())
    click.echo(f"exits at layers {list(result.exit_layers)}; end-to-end max|diff| vs transformers {{{chain}}}")
    click.echo(f"wrote {result.bundle} ({format_size(result.total_bytes)}) in {result.seconds:.1f} s")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check every file's sha256.")
def inspect(bundle: Path, verify: bool) -> None:
    """Show a bundle's manifest: model, stages, sizes, exit heads and engine sets."""
    from trtbert.bundle import load_bundle
    from trtbert.inspect import describe

    click.echo(describe(load_bundle(bundle, verify="full" if verify else "sizes")))


@main.command()
@click.option("--model", required=True, help="HF id, alias (minilm, bert-base ...) or checkpoint directory.")
@click.option("--task", required=True, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, mnli-mm, qnli, rte, wnli.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="GLUE data in the glue_data/<TASK>/*.tsv layout (default: HF datasets, needs network).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Checkpoint directory to write.")
@click.option("--objective", type=click.Choice(["joint", "two-stage", "heads-only", "distill"]), default="joint",
              show_default=True, help="How backbone and exit heads are trained.")
@click.option("--readout", type=click.Choice(["mean", "pooler", "layer-pooler"]), default="mean",
              show_default=True, help="What each exit head reads from its layer.")
@click.option("--epochs", default=3, show_default=True, type=int)
@click.option("--lr", default=5e-5, show_default=True, type=float, help="Backbone + classifier learning rate.")
@click.option("--head-lr", default=1e-3, show_default=True, type=float, help="Exit heads' learning rate.")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--max-seq-len", default=128, show_default=True, type=int)
@click.option("--limit", default=None, type=int, help="Use the first N training rows.")
@click.option("--eval-limit", default=None, type=int, help="Use the first N dev rows.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--no-heads", is_flag=True, help="Plain fine-tuning without exit heads (the baseline).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def train(model: str, task: str, data_dir: Path | None, out: Path, objective: str, readout: str, epochs: int,
          lr: float, head_lr: float, batch_size: int, max_seq_len: int, limit: int | None,
          eval_limit: int | None, seed: int, no_heads: bool, overwrite: bool) -> None:
    """Fine-tune MODEL on a GLUE task with an exit head per layer; write a HF checkpoint + heads."""
    from trtbert.train import TrainOptions
    from trtbert.train import train as run_training

    options = TrainOptions(model=model, task=task, out=out, data_dir=data_dir, objective=objective,
                           readout=readout, heads=not no_heads, epochs=epochs, lr=lr, head_lr=head_lr,
                           batch_size=batch_size, max_seq_len=max_seq_len, limit=limit,
                           eval_limit=eval_limit, seed=seed, overwrite=overwrite)
    result = run_training(options)
    click.echo(f"{'layer':>5} {result.metric + ' (best epoch ' + str(result.best_epoch) + ')':>28}")
    for layer, value in enumerate(result.best, start=1):
        click.echo(f"{layer:>5} {'-' if value is None else f'{value:.2f}':>28}")
    click.echo(f"wrote {result.out}: {result.train_examples} train / {result.eval_examples} dev examples, "
               f"{result.seconds:.0f} s")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["ort", "tensorrt"]), default="ort", show_default=True,
              help="ONNX Runtime (anywhere) or TensorRT through Polygraphy (NVIDIA GPU / Jetson).")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="ONNX Runtime execution provider the set is optimised for.")
@click.option("--fp16", "precision", flag_value="fp16",
              help="Half precision (GPU providers; the default of --backend tensorrt, else fp32).")
@click.option("--int8", "precision", flag_value="int8", help="Dynamic int8 quantisation (ONNX Runtime CPU).")
@click.option("--name", default=None, help="Engine set name (default: ort-cpu-fp32, ort-cpu-int8, trt-fp16 ...).")
@click.option("--max-batch", default=8, show_default=True, type=int, help="TensorRT profile: largest batch.")
@click.option("--max-seq-len", default=None, type=int, help="TensorRT profile: longest input (default: the model's).")
@click.option("--workspace", default="256MiB", show_default=True, help="TensorRT workspace memory pool limit.")
@click.option("--trt-cache", is_flag=True, help="ONNX Runtime's TensorRT provider: keep an engine cache in the set.")
@click.option("--stream", is_flag=True,
              help="CPU: one shared session per layer structure, weights read per stage (fast streaming under a cap).")
@click.option("--overwrite", is_flag=True, help="Rebuild an existing engine set.")
def build(bundle: Path, backend: str, provider: str, precision: str | None, name: str | None, max_batch: int,
          max_seq_len: int | None, workspace: str, trt_cache: bool, stream: bool, overwrite: bool) -> None:
    """Build an engine set of BUNDLE, check every stage against its ONNX stage, record it in the manifest."""
    from trtbert.engines.build import BuildOptions, build_engines, format_checks
    from trtbert.sizes import parse_size

    precision = precision or ("fp16" if backend == "tensorrt" else "fp32")
    options = BuildOptions(bundle=bundle, backend=backend, provider=provider, precision=precision,
                           name=name, max_batch=max_batch, max_seq_len=max_seq_len,
                           workspace=parse_size(workspace) or 256 << 20, trt_cache=trt_cache,
                           stream=stream, overwrite=overwrite, progress=True)
    result = build_engines(options)
    click.echo(format_checks(result.stages))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"built {result.name} ({result.backend} {result.precision}) in {result.bundle}: "
               f"{format_size(result.total_bytes)} (ONNX stages {format_size(result.source_bytes)}) "
               f"in {result.seconds:.1f} s")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("texts", nargs=-1)
@click.option("--file", "file", type=click.Path(path_type=Path), default=None,
              help="TSV file: one text per line, or two tab-separated columns (pairs).")
@click.option("--engines", default="onnx", show_default=True, help="Engine set to run (onnx: the exported graphs).")
@click.option("--memory-cap", default="unlimited", show_default=True,
              help="Most bytes of stage engines resident at once, e.g. 64MiB.")
@click.option("--exit", "exit_rule", default="default", show_default=True,
              help="Exit rule: none, entropy:T, confidence:P, patience:K[,EPS], patience-confidence:K,P, "
                   "max-layers:N, budget:MS; default: the bundle's policy (else none).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", default=0, show_default=True, type=click.IntRange(min=0), help="0: one per core.")
@click.option("--no-prefetch", is_flag=True, help="Do not load the next stage while the current one runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input line.")
@click.option("--stats", "show_stats", is_flag=True, help="Print pool statistics and peak RSS to stderr.")
def run(bundle: Path, texts: tuple[str, ...], file: Path | None, engines: str, memory_cap: str, exit_rule: str,
        batch_size: int, threads: int, no_prefetch: bool, as_json: bool, show_stats: bool) -> None:
    """Classify TEXT... (or the lines of --file) with BUNDLE, layer by layer under a memory cap."""
    import json

    from trtbert.engines.base import peak_rss
    from trtbert.errors import UsageError
    from trtbert.runtime.runner import Runner
    from trtbert.runtime.text import read_tsv
    from trtbert.sizes import parse_size

    if bool(texts) == (file is not None):
        raise UsageError("give either TEXT arguments or --file PATH (one of them)")
    inputs = read_tsv(file) if file is not None else list(texts)
    cap = parse_size(memory_cap)
    with Runner.from_bundle(bundle, engines=engines, memory_cap=cap, exit=exit_rule, threads=threads,
                            prefetch=not no_prefetch) as runner:
        predictions = runner.predict(inputs, batch_size=batch_size)
        stats = runner.stats()
    layers = runner.bundle.manifest.model.num_layers
    for p in predictions:
        if as_json:
            record: dict[str, Any] = {"text": p.text}
            if p.text_b is not None:
                record["text_b"] = p.text_b
            probs = None if p.probabilities is None else dict(zip(runner.labels, p.probabilities))
            record.update(label=p.label, probabilities=probs, exit_layer=p.exit_layer)
            if p.value is not None:
                record["value"] = p.value
            click.echo(json.dumps(record, ensure_ascii=False))
        else:
            answer = f"{p.value:.4f}" if p.value is not None else f"{p.label}\t{max(p.probabilities or (0.0,)):.4f}"
            text = p.text if p.text_b is None else f"{p.text} ||| {p.text_b}"
            click.echo(f"{answer}\texit {p.exit_layer}/{layers}\t{text}")
    if show_stats:
        click.echo(f"pool: cap {format_size(stats.memory_cap)}, peak {format_size(stats.peak_bytes)}, "
                   f"{stats.loads} loads ({stats.load_seconds:.2f} s), {stats.evictions} evictions, "
                   f"pinned {', '.join(stats.pinned) or '-'}; peak RSS {format_size(peak_rss())}", err=True)


@main.command(name="eval")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--task", required=True, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli.")
@click.option("--data-dir", type=click.Path(path_type=Path), help="glue_data directory (<DIR>/<TASK>/dev.tsv).")
@click.option("--split", default="dev", show_default=True, help="Split to report (MNLI dev reports matched and mismatched).")
@click.option("--engines", default="onnx", show_default=True, help="Engine set of the bundle.")
@click.option("--exit", "exit_rule", default=None, help="Exit rule; default: the bundle's calibrated policy, else none.")
@click.option("--memory-cap", default="unlimited", show_default=True, help="Bytes of engines resident at once.")
@click.option("--batch-size", default=1, show_default=True, help="Rows per batch (latency is per example).")
@click.option("--limit", type=int, help="Evaluate only the first N examples.")
@click.option("--threads", default=0, show_default=True, help="Intra-op threads (0: one per core).")
@click.option("--sweep", "sweeps", multiple=True, help="RULE:V1,V2,... evaluated from one full pass (repeatable).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Write the speed-accuracy plot (PNG).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the report as JSON.")
@click.option("--calibrate", is_flag=True, help="Choose the rule and threshold; write it into the bundle.")
@click.option("--max-drop", default=0.5, show_default=True, help="Points of metric calibration may lose.")
@click.option("--calibration-split", default="train", show_default=True,
              help="Split to calibrate on (its last --calibration-limit rows), or dev-half.")
@click.option("--calibration-limit", default=2000, show_default=True, help="Rows of the calibration split.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_(bundle: Path, task: str, data_dir: Path | None, split: str, engines: str, exit_rule: str | None,
          memory_cap: str, batch_size: int, limit: int | None, threads: int, sweeps: tuple[str, ...],
          plot_path: Path | None, json_path: Path | None, calibrate: bool, max_drop: float,
          calibration_split: str, calibration_limit: int, quiet: bool) -> None:
    """Evaluate BUNDLE on a GLUE task: metric, latency, peak memory and exits, against the full model."""
    from trtbert.eval.evaluate import EvalOptions, evaluate
    from trtbert.eval.report import check_output, format_report, plot, write_json

    check_output(json_path)
    check_output(plot_path)
    options = EvalOptions(
        bundle=bundle, task=task, data_dir=data_dir, split=split, engines=engines, exit=exit_rule,
        memory_cap=memory_cap, batch_size=batch_size, limit=limit, threads=threads, sweeps=sweeps,
        calibrate=calibrate, max_drop=max_drop, calibration_split=calibration_split,
        calibration_limit=calibration_limit, progress=not quiet,
    )
    report = evaluate(options)
    click.echo(format_report(report))
    if json_path:
        write_json(report, json_path)
    if plot_path:
        plot([report], plot_path)
        click.echo(f"plot written to {plot_path}")
