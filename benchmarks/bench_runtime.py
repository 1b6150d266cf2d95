"""trtbert's runtime against transformers and a single-graph ONNX Runtime model (bert-base shape).

    python benchmarks/make_bert_base.py                       # once: model, bundle, full.onnx
    python benchmarks/bench_runtime.py [--engines onnx,NAME] [--memory-cap 64MiB,unlimited]
                                       [--sentences 200] [--long 40] [--threads 2] [--soak 10000]

Batch 1, ``--threads`` intra-op threads, no early exit (``--exit none``). Every (system, inputs) pair
runs in its own subprocess, so its peak RSS (VmHWM) is its own:

* ``transformers``: ``BertForSequenceClassification`` in PyTorch (fp32, ``torch.inference_mode``);
* ``ort-single``: the whole classifier as one ONNX Runtime session (``full.onnx``);
* ``trtbert <set> @ <cap>``: ``Runner.from_bundle(bundle, engines=<set>, memory_cap=<cap>, exit="none")``.

Inputs: the first ``--sentences`` CoLA dev sentences (4th column of ``dev.tsv``), and ``--long`` texts
of exactly 128 tokens. Latency is end to end (text in, logits out, tokenisation included) per input,
after ``--warmup`` untimed inputs. ``--soak N`` also runs N short inputs through trtbert (first engine
set, ``--soak-cap``) and reports RSS at the start, middle and end. Results are printed as a table and
written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from inputs import cola_sentences, long_texts

from trtbert.memory import current_rss, peak_rss

WORKDIR = Path(__file__).resolve().parents[1] / "runs" / "bench-runtime"  # under the repository
MIB = 1024**2


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": statistics.median(ordered), "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "mean_ms": statistics.fmean(ordered), "n": len(ordered)}


# --- one system in its own process ---------------------------------------------------------------------


def _system(args: argparse.Namespace):
    """Load one system; returns (predict one text, extra info callable)."""
    if args.system == "transformers":
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(args.threads)
        tok = AutoTokenizer.from_pretrained(str(args.workdir / "model"))
        model = AutoModelForSequenceClassification.from_pretrained(str(args.workdir / "model")).eval()

        def run(text: str):
            with torch.inference_mode():
                return model(**tok(text, return_tensors="pt", truncation=True, max_length=512)).logits.numpy()

        return run, dict
    if args.system == "ort-single":
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(args.workdir / "bundle" / "tokenizer" / "tokenizer.json"))
        tok.enable_truncation(512)
        tok.no_padding()
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(str(args.workdir / "full.onnx"), so, providers=["CPUExecutionProvider"])

        def run(text: str):
            enc = tok.encode(text)
            feeds = {"input_ids": np.array([enc.ids], dtype=np.int64),
                     "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
                     "token_type_ids": np.array([enc.type_ids], dtype=np.int64)}
            return session.run(["logits"], feeds)[0]

        return run, dict
    from trtbert.runtime.runner import Runner

    runner = Runner.from_bundle(args.workdir / "bundle", engines=args.engines, memory_cap=args.cap, exit="none",
                                threads=args.threads)

    def run(text: str):
        return runner.predict([text], batch_size=1)[0]

    def info() -> dict:
        s = runner.stats()
        return {"pool_peak_mib": s.peak_bytes / MIB, "loads": s.loads, "evictions": s.evictions,
                "load_s": s.load_seconds, "wait_s": s.wait_seconds, "prefetch_hits": s.prefetch_hits,
                "pinned": list(s.pinned), "over_cap": s.over_cap}

    return run, info


def child(args: argparse.Namespace) -> None:
    """Runs in its own process: load one system, time it on one input group, print one JSON line."""
    if args.inputs == "cola":
        texts = cola_sentences(args.sentences)
    elif args.inputs == "seq128":
        texts = long_texts(args.workdir / "bundle" / "tokenizer" / "tokenizer.json", args.long)
    else:  # soak: short inputs, cycled
        base = cola_sentences(1000)
        texts = [base[i % len(base)] for i in range(args.soak)]
    start = time.perf_counter()
    run, info = _system(args)
    load_s = time.perf_counter() - start
    for text in texts[:args.warmup]:
        run(text)
    times, rss = [], {}
    marks = {0: "start", len(texts) // 2: "middle", len(texts) - 1: "end"}
    for i, text in enumerate(texts):
        t0 = time.perf_counter()
        run(text)
        times.append((time.perf_counter() - t0) * 1e3)
        if args.inputs == "soak" and i in marks:
            rss[marks[i]] = current_rss() / MIB
    result = {"system": args.label, "inputs": args.inputs, "load_s": load_s, **_summary(times),
              "peak_rss_mib": peak_rss() / MIB, **info()}
    if rss:
        result["rss_mib"] = rss
    print(json.dumps(result))


# --- the parent: spawn, collect, tabulate -------------------------------------------------------------------


def spawn(args: argparse.Namespace, system: str, label: str, inputs: str, engines: str = "onnx",
          cap: str = "unlimited") -> dict:
    cmd = [sys.executable, __file__, "--child", "--system", system, "--label", label, "--inputs", inputs,
           "--engines", engines, "--cap", cap, "--workdir", str(args.workdir), "--threads", str(args.threads),
           "--sentences", str(args.sentences), "--long", str(args.long), "--warmup", str(args.warmup),
           "--soak", str(args.soak)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return {"system": label, "inputs": inputs, "error": out.stderr.strip().splitlines()[-1:]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {label:<28} {inputs:<7} median {result['median_ms']:8.1f} ms  p90 {result['p90_ms']:8.1f} ms  "
          f"peak RSS {result['peak_rss_mib']:7.1f} MiB", file=sys.stderr, flush=True)
    return result


def table(results: list[dict]) -> str:
    by = {(r["system"], r["inputs"]): r for r in results if "error" not in r}
    lines = [f"| system | inputs | median ms | p90 ms | peak RSS MiB | latency vs transformers | latency vs ort-single "
             f"| RSS vs transformers | RSS vs ort-single | pool |", "|" + "---|" * 10]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['system']} | {r['inputs']} | failed: {r['error']} |")
            continue
        tf, single = by.get(("transformers", r["inputs"])), by.get(("ort-single", r["inputs"]))
        ratio = lambda key, ref: f"{r[key] / ref[key]:.2f}x" if ref else "-"  # noqa: E731
        pool = (f"{r['loads']} loads, {r['evictions']} evictions, peak {r['pool_peak_mib']:.0f} MiB"
                if "loads" in r else "")
        lines.append(f"| {r['system']} | {r['inputs']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {ratio('median_ms', tf)} | {ratio('median_ms', single)} | "
                     f"{ratio('peak_rss_mib', tf)} | {ratio('peak_rss_mib', single)} | {pool} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--engines", default="onnx", help="Comma-separated engine sets of the bundle.")
    parser.add_argument("--memory-cap", default="64MiB,unlimited", help="Comma-separated caps.")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--long", type=int, default=40, help="How many 128-token inputs.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--soak", type=int, default=0, help="Also run N short inputs through trtbert.")
    parser.add_argument("--soak-cap", default="unlimited")
    parser.add_argument("--skip-baselines", action="store_true", help="Only the trtbert rows.")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: WORKDIR/results.json).")
    # child-process arguments
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--label", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--cap", default="unlimited", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if not (args.workdir / "bundle" / "manifest.json").is_file() or not (args.workdir / "full.onnx").is_file():
        sys.exit(f"no benchmark inputs in {args.workdir}; run: python benchmarks/make_bert_base.py --workdir {args.workdir}")
    results = []
    for inputs in ("cola", "seq128"):
        if not args.skip_baselines:
            results.append(spawn(args, "transformers", "transformers", inputs))
            results.append(spawn(args, "ort-single", "ort-single", inputs))
        for engines in args.engines.split(","):
            for cap in args.memory_cap.split(","):
                results.append(spawn(args, "trtbert", f"trtbert {engines} @ {cap}", inputs, engines, cap))
    if args.soak:
        engines = args.engines.split(",")[0]
        results.append(spawn(args, "trtbert", f"trtbert {engines} @ {args.soak_cap}", "soak", engines, args.soak_cap))
    print(table([r for r in results if r.get("inputs") != "soak"]))
    for r in results:
        if r.get("inputs") == "soak" and "error" not in r:
            print(f"\nsoak: {r['system']}, {r['n']} short inputs: RSS start {r['rss_mib']['start']:.1f} MiB, "
                  f"middle {r['rss_mib']['middle']:.1f} MiB, end {r['rss_mib']['end']:.1f} MiB; peak RSS "
                  f"{r['peak_rss_mib']:.1f} MiB; median {r['median_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms")
    out = args.out or args.workdir / "results.json"
    out.write_text(json.dumps({"argv": sys.argv, "results": results}, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
