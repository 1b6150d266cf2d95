"""The commands of ``trtbert``; each body maps flags onto an options dataclass and formats the result."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from trtbert import __version__
from trtbert.cli.params import EXIT_RULE, POSITIVE, SIZE, SIZE_OR_AUTO, AtLeast, Number, threads_option
from trtbert.errors import TrtbertError
from trtbert.sizes import format_size


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and writers clean up as on Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


class _Group(click.Group):
    """Click group whose errors are one line: ``error: ...`` on stderr and exit status 1."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        previous = None
        if standalone_mode and sys.platform != "win32":
            try:
                previous = signal.signal(signal.SIGTERM, _on_sigterm)
            except ValueError:  # not the main thread (e.g. an embedding test runner)
                previous = None
        try:
            rc = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            rc = exc.exit_code
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.ctx if isinstance(exc, click.UsageError) else None, standalone_mode)
            return None
        except TrtbertError as exc:
            _fail(str(exc), None, standalone_mode)
            return None
        except (click.exceptions.Abort, KeyboardInterrupt):
            _fail("interrupted", None, standalone_mode, code=130)
            return None
        except _Terminated:
            _fail("terminated", None, standalone_mode, code=143)
            return None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if standalone_mode:
            sys.exit(rc if isinstance(rc, int) else 0)
        return rc


def _fail(message: str, ctx: click.Context | None, standalone: bool, code: int = 1) -> None:
    text = " ".join(message.split())  # one line, whatever the message held
    hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
    click.echo(f"error: {text}{hint}", err=True)
    if standalone:
        sys.exit(code)
    raise SystemExit(code)


class _OwnRecords(logging.Filter):
    """The CLI shows trtbert's own records, and only errors of other libraries (ONNX Runtime's quantiser
    logs advice on the root logger for every stage)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("trtbert") or record.levelno >= logging.ERROR


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="trtbert")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug); warnings are always shown.")
def main(verbose: int) -> None:
    """Run BERT-family classifiers layer by layer under a memory cap, with early exit."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if verbose < 2 else
                                           "%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_OwnRecords())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_trtbert", False)]:
        root.removeHandler(old)
    handler._trtbert = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("trtbert").setLevel(level)
    logging.addLevelName(logging.WARNING, "warning")
    logging.addLevelName(logging.INFO, "info")


# --- commands -----------------------------------------------------------------------------------
# Each command imports its module inside its body, so `trtbert --help` needs no heavy package.


@main.command()
@click.option("--model", required=True, help="Hugging Face id, alias (bert-base, minilm, ...) or checkpoint directory.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--tokenizer", default=None, help="Tokenizer directory or Hugging Face id, when the checkpoint has none.")
@click.option("--opset", default=17, show_default=True, type=int, help="ONNX opset (17 keeps LayerNorm one op).")
@click.option("--exits", default="all", show_default=True, help="Layers with exit heads: all, none or 3,6,9.")
@click.option("--tolerance", default=None, type=Number(low=0),
              help="Max abs difference against PyTorch (default: the family's own, 1e-4).")
@click.option("--overwrite", is_flag=True, help="Replace a bundle trtbert wrote (never other files).")
def export(model: str, out: Path, tokenizer: str | None, opset: int, exits: str, tolerance: float | None,
           overwrite: bool) -> None:
    """Split MODEL into per-layer ONNX stages with exit heads, validate them, write a bundle."""
    from trtbert.exporter.export import ExportOptions, export_bundle, parse_exits

    options = ExportOptions(model=model, out=out, opset=opset, exits=parse_exits(exits), overwrite=overwrite,
                            tolerance=tolerance, tokenizer=tokenizer)
    result = export_bundle(options)  # notes (untrained classifier, no exit heads) are logged as warnings
    width = max(len(s.file) for s in result.stages)
    click.echo(f"{'stage':<12} {'file':<{width}} {'MiB':>8} {'max|diff|':>10}")
    for s in result.stages:
        click.echo(f"{s.name:<12} {s.file:<{width}} {s.nbytes / 2**20:>8.2f} {s.max_diff:>10.1e}")
    chain = ", ".join(f"{k}: {v:.1e}" for k, v in result.chain_diffs.items())
    click.echo(f"exits at layers {list(result.exit_layers)}; end-to-end max|diff| vs transformers {{{chain}}}")
    click.echo(f"wrote {result.bundle} ({format_size(result.total_bytes)}) in {result.seconds:.1f} s")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check every file's sha256.")
def inspect(bundle: Path, verify: bool) -> None:
    """Show a bundle's manifest: model, stages, sizes, exit heads, engine sets and their memory costs."""
    from trtbert.bundle import load_bundle
    from trtbert.describe import describe

    click.echo(describe(load_bundle(bundle, verify="full" if verify else "sizes")))


@main.command()
@click.option("--model", required=True, help="HF id, alias (minilm, bert-base ...) or checkpoint directory.")
@click.option("--task", required=True, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, mnli-mm, qnli, rte, wnli.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="GLUE data in the glue_data/<TASK>/*.tsv layout (default: HF datasets, needs network).")
@click.option("--dataset", default="nyu-mll/glue", show_default=True,
              help="Hugging Face dataset to read the task from when no --data-dir is given.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Checkpoint directory to write.")
@click.option("--objective", type=click.Choice(["joint", "two-stage", "heads-only", "distill"]), default="joint",
              show_default=True, help="How backbone and exit heads are trained.")
@click.option("--readout", type=click.Choice(["mean", "pooler", "layer-pooler"]), default="mean",
              show_default=True, help="What each exit head reads from its layer.")
@click.option("--layer-weights", type=click.Choice(["pabee", "uniform", "cost"]), default="pabee", show_default=True,
              help="Weights of the exits' losses: pabee (layer i weighs i), uniform, cost (by the layers an exit saves).")
@click.option("--epochs", default=3, show_default=True, type=POSITIVE)
@click.option("--lr", default=5e-5, show_default=True, type=Number(low=0, open_low=True),
              help="Backbone + classifier learning rate.")
@click.option("--head-lr", default=1e-3, show_default=True, type=Number(low=0, open_low=True),
              help="Exit heads' learning rate.")
@click.option("--batch-size", default=32, show_default=True, type=POSITIVE)
@click.option("--max-seq-len", default=128, show_default=True, type=POSITIVE)
@click.option("--limit", default=None, type=POSITIVE, help="Use the first N training rows.")
@click.option("--eval-limit", default=None, type=POSITIVE, help="Use the first N dev rows.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--no-heads", is_flag=True, help="Plain fine-tuning without exit heads (the baseline).")
@click.option("--overwrite", is_flag=True, help="Replace a checkpoint trtbert wrote (never other files).")
def train(model: str, task: str, data_dir: Path | None, dataset: str, out: Path, objective: str, readout: str,
          layer_weights: str, epochs: int, lr: float, head_lr: float, batch_size: int, max_seq_len: int, limit: int | None,
          eval_limit: int | None, seed: int, no_heads: bool, overwrite: bool) -> None:
    """Fine-tune MODEL on a GLUE task with an exit head per layer; write a HF checkpoint + heads."""
    from trtbert.train import TrainOptions
    from trtbert.train import train as run_training

    options = TrainOptions(model=model, task=task, out=out, data_dir=data_dir, dataset=dataset,
                           objective=objective, readout=readout, layer_weights=layer_weights,
                           heads=not no_heads, epochs=epochs, lr=lr,
                           head_lr=head_lr, batch_size=batch_size, max_seq_len=max_seq_len, limit=limit,
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
@click.option("--int8", "precision", flag_value="int8", help="int8 quantisation (ONNX Runtime CPU).")
@click.option("--int8-mode", type=click.Choice(["static", "dynamic"]), default="static", show_default=True,
              help="static: activation scales calibrated once (answers independent of batchmates); dynamic: "
                   "per batch at run time (batch-dependent).")
@click.option("--calibration-data", type=click.Path(path_type=Path), default=None,
              help="Static int8: texts to calibrate on, one per line (or two tab-separated: pairs).")
@click.option("--calibration-task", default=None,
              help="Static int8: calibrate on this GLUE task's train split (default: the shipped SST-2 sample).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="glue_data directory for --calibration-task (default $TRTBERT_GLUE_DIR).")
@click.option("--calibration-limit", default=256, show_default=True, type=POSITIVE, help="Calibration rows.")
@click.option("--no-fuse", is_flag=True, help="CPU: keep the exported graphs' ops (no Attention/SkipLayerNorm fusion).")
@click.option("--name", default=None, help="Engine set name (default: ort-cpu-fp32, ort-cpu-int8, trt-fp16 ...).")
@click.option("--max-batch", default=8, show_default=True, type=POSITIVE, help="TensorRT profile: largest batch.")
@click.option("--max-seq-len", default=None, type=POSITIVE, help="TensorRT profile: longest input (default: the model's).")
@click.option("--workspace", default="256MiB", show_default=True, type=SIZE, help="TensorRT workspace memory pool limit.")
@click.option("--trt-cache", is_flag=True, help="ONNX Runtime's TensorRT provider: keep an engine cache in the set.")
@click.option("--stream", is_flag=True,
              help="CPU: one shared session per layer structure, weights read per stage (fast streaming under a cap).")
@click.option("--overwrite", is_flag=True, help="Rebuild an existing engine set (the old one stays until the new is recorded).")
def build(bundle: Path, backend: str, provider: str, precision: str | None, int8_mode: str,
          calibration_data: Path | None, calibration_task: str | None, data_dir: Path | None,
          calibration_limit: int, no_fuse: bool, name: str | None, max_batch: int,
          max_seq_len: int | None, workspace: int | None, trt_cache: bool, stream: bool, overwrite: bool) -> None:
    """Build an engine set of BUNDLE, check every stage against its ONNX stage, record it in the manifest."""
    from trtbert.engines.build import BuildOptions, build_engines, format_checks

    precision = precision or ("fp16" if backend == "tensorrt" else "fp32")
    options = BuildOptions(bundle=bundle, backend=backend, provider=provider, precision=precision,
                           name=name, max_batch=max_batch, max_seq_len=max_seq_len,
                           workspace=workspace or 256 << 20, trt_cache=trt_cache,
                           stream=stream, overwrite=overwrite, progress=True, int8_mode=int8_mode,
                           calibration_data=calibration_data, calibration_task=calibration_task,
                           data_dir=data_dir, calibration_limit=calibration_limit, fuse=not no_fuse)
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
@click.option("--file", "file", default=None,
              help="Inputs, one per line: a text, or two tab-separated texts (a pair); '-' reads stdin.")
@click.option("--engines", default="onnx", show_default=True, help="Engine set to run (onnx: the exported graphs).")
@click.option("--memory-cap", default="auto", show_default=True, type=SIZE_OR_AUTO,
              help="Most bytes of stage engines resident at once, e.g. 64MiB; auto: fit the memory this "
                   "process has (cgroup limit, available memory); unlimited.")
@click.option("--exit", "exit_rule", default="default", show_default=True, type=EXIT_RULE,
              help="Exit rule: none, entropy:T, confidence:P, patience:K[,EPS], patience-confidence:K,P, "
                   "max-layers:N, budget:MS; default: the bundle's calibrated policy (else none).")
@click.option("--batch-size", default=8, show_default=True, type=POSITIVE)
@threads_option()
@click.option("--no-prefetch", is_flag=True, help="Do not load the next stage while the current one runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input, written as soon as it is computed.")
@click.option("--stats", "show_stats", is_flag=True, help="Print pool statistics and peak RSS to stderr.")
def run(bundle: Path, texts: tuple[str, ...], file: str | None, engines: str, memory_cap: int | str | None,
        exit_rule: str, batch_size: int, threads: int, no_prefetch: bool, as_json: bool, show_stats: bool) -> None:
    """Classify TEXT... (or the lines of --file) with BUNDLE, layer by layer under a memory cap."""
    from trtbert.cli.output import print_prediction, print_stats
    from trtbert.errors import UsageError
    from trtbert.runtime.runner import Runner
    from trtbert.runtime.text import InputLine, iter_inputs

    if bool(texts) == (file is not None):
        raise UsageError("give either TEXT arguments or --file PATH (one of them)")
    lines = iter_inputs(file) if file is not None else (
        InputLine(t, f"input {i}") for i, t in enumerate(texts, start=1))
    with Runner.from_bundle(bundle, engines=engines, memory_cap=memory_cap, exit=exit_rule, threads=threads,
                            prefetch=not no_prefetch, tune_allocator=True) as runner:
        layers = runner.bundle.manifest.model.num_layers
        for prediction in runner.predict_stream(lines, batch_size=batch_size):
            print_prediction(prediction, runner.labels, layers, as_json)
        if show_stats:
            print_stats(runner.stats())


@main.command(name="eval")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--task", required=True, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli.")
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="glue_data directory (<DIR>/<TASK>/dev.tsv); default $TRTBERT_GLUE_DIR, else the shipped "
                   "SST-2 sample (sst2 only), else the Hugging Face Hub.")
@click.option("--dataset", default="nyu-mll/glue", show_default=True, help="Hugging Face dataset (no --data-dir).")
@click.option("--split", default="dev", show_default=True, help="Split to report (MNLI dev reports matched and mismatched).")
@click.option("--engines", default="onnx", show_default=True, help="Engine set of the bundle.")
@click.option("--exit", "exit_rule", default=None, type=EXIT_RULE,
              help="Exit rule; default: the bundle's calibrated policy, else none.")
@click.option("--memory-cap", default="unlimited", show_default=True, type=SIZE_OR_AUTO,
              help="Bytes of engines resident at once (auto: fit this process's memory).")
@click.option("--batch-size", default=1, show_default=True, type=POSITIVE, help="Rows per batch (latency is per example).")
@click.option("--limit", type=POSITIVE, help="Evaluate only the first N examples.")
@threads_option()
@click.option("--sweep", "sweeps", multiple=True, help="RULE:V1,V2,... replayed from the full pass's logits (repeatable).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Write the speed-accuracy plot (PNG).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the report as JSON.")
@click.option("--calibrate", is_flag=True, help="Certify an exit policy on held-apart rows; write it into the bundle.")
@click.option("--max-disagreement", default=None, type=Number(0, 1),
              help="Calibrate for answers that differ from the full model's on at most this share of rows.")
@click.option("--max-drop", default=None, type=Number(low=0),
              help="Calibrate for at most this many points of metric drop (where a bound exists).")
@click.option("--delta", default=0.1, show_default=True, type=Number(0, 1, open_low=True),
              help="The certificate holds with probability at least 1 - delta.")
@click.option("--objective", type=click.Choice(["auto", "layers", "latency"]), default="auto", show_default=True,
              help="What calibration minimises (auto: latency under a memory cap, else layers).")
@click.option("--exit-families", default="confidence,entropy,patience,per-layer,learned,learned-cost", show_default=True,
              help="Rule families calibration may certify.")
@click.option("--fit-limit", default=0, show_default=True, type=AtLeast(0),
              help="Rows just before the calibration rows that shape per-layer and learned candidates (kept out "
                   "of the certificate; 0: a share of the calibration rows does).")
@click.option("--seed", default=0, show_default=True, type=int, help="Calibration's row split.")
@click.option("--calibration-split", default="train", show_default=True,
              help="Split to calibrate on (its last --calibration-limit rows), or dev-half.")
@click.option("--calibration-limit", default=2000, show_default=True, type=POSITIVE, help="Rows of the calibration split.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def eval_(bundle: Path, task: str, data_dir: Path | None, dataset: str, split: str, engines: str,
          exit_rule: str | None, memory_cap: int | str | None, batch_size: int, limit: int | None, threads: int,
          sweeps: tuple[str, ...], plot_path: Path | None, json_path: Path | None, calibrate: bool,
          max_disagreement: float | None, max_drop: float | None, delta: float, objective: str,
          exit_families: str, fit_limit: int, seed: int, calibration_split: str, calibration_limit: int,
          quiet: bool) -> None:
    """Evaluate BUNDLE on a GLUE task: metric, latency, peak memory and exits, against the full model."""
    from trtbert.eval.evaluate import EvalOptions, evaluate
    from trtbert.eval.report import check_output, format_report, plot, write_json

    check_output(json_path)
    check_output(plot_path)
    options = EvalOptions(
        bundle=bundle, task=task, data_dir=data_dir, dataset=dataset, split=split, engines=engines,
        exit=None if exit_rule == "default" else exit_rule, memory_cap=memory_cap, batch_size=batch_size,
        limit=limit, threads=threads, sweeps=sweeps, calibrate=calibrate, max_disagreement=max_disagreement,
        max_drop=max_drop, delta=delta, objective=objective, calibration_split=calibration_split,
        families=tuple(f.strip() for f in exit_families.split(",") if f.strip()), fit_limit=fit_limit, seed=seed,
        calibration_limit=calibration_limit, progress=not quiet, tune_allocator=True,
    )
    report = evaluate(options)
    click.echo(format_report(report))
    if json_path:
        write_json(report, json_path)
    if plot_path:
        plot([report], plot_path)
        click.echo(f"plot written to {plot_path}")
