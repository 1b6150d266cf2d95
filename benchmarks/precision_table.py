"""Each precision's task metric, its batch dependence and its speed, on one bundle (issue 10.2, issue 12).

    python benchmarks/precision_table.py runs/minilm-sst2-bundle --task sst2 [--data-dir ../shared/data/glue]
        [--sets onnx,ort-cpu-fp32,ort-cpu-int8,ort-cpu-int8-dynamic,ort-cpu-int4] [--build] [--limit N]

For every engine set: the task metric on the dev split with no early exit (the final layer's logits),
computed at batch 1; the same rows at batch 16 (mixed lengths, in file order): how many labels differ
and the largest probability difference (a row's answer must not depend on its batchmates); and the
median per-row latency at batch 1 (2 threads by default). Sets that are missing are built first with
``--build`` (int8 calibrated on the task's train split: ``--calibration-task``). Data: ``--data-dir``,
else ``$TRTBERT_GLUE_DIR``, else ``../shared/data/glue`` beside the repository, else the SST-2 sample
shipped with trtbert (200 dev rows; said in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SETS = "onnx,ort-cpu-fp32,ort-cpu-int8,ort-cpu-int8-dynamic,ort-cpu-int4"
BUILDS = {  # set name -> BuildOptions fields
    "ort-cpu-fp32": {},
    "ort-cpu-fp32-unfused": {"fuse": False},
    "ort-cpu-int8": {"precision": "int8"},
    "ort-cpu-int8-dynamic": {"precision": "int8", "int8_mode": "dynamic"},
    "ort-cpu-int8-unfused": {"precision": "int8", "fuse": False},
    "ort-cpu-int8-u8": {"precision": "int8", "int8_weights": "quint8"},
    "ort-cpu-int8-pt": {"precision": "int8", "int8_per_channel": False},
    "ort-cpu-int8-cal64": {"precision": "int8", "calibration_limit": 64},
    "ort-cpu-int8-dynamic-u8": {"precision": "int8", "int8_mode": "dynamic", "int8_weights": "quint8"},
    "ort-cpu-int8-cal1000": {"precision": "int8", "calibration_limit": 1000},
    "ort-cpu-int4": {"precision": "int4"},
    "ort-cpu-int4-b32": {"precision": "int4", "nbits_block": 32},
    "ort-cpu-int4-b64": {"precision": "int4", "nbits_block": 64},
    "ort-cpu-int4-a0": {"precision": "int4", "nbits_accuracy": 0},
    "ort-cpu-int4-mha": {"precision": "int4", "nbits_attention": "separate"},
    "ort-cpu-int4-b128": {"precision": "int4", "nbits_block": 128},
    "ort-cpu-int4-b32-mha": {"precision": "int4", "nbits_block": 32, "nbits_attention": "separate"},
    "ort-cpu-int4-b32-a0": {"precision": "int4", "nbits_block": 32, "nbits_accuracy": 0},
}


def glue_dir(given: Path | None) -> Path | None:
    """``--data-dir``, $TRTBERT_GLUE_DIR, ../shared/data/glue beside the repository; None: the shipped sample."""
    for candidate in (given, os.environ.get("TRTBERT_GLUE_DIR"), REPO.parent / "shared" / "data" / "glue"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def build(bundle: Path, name: str, args: argparse.Namespace) -> None:
    from trtbert.engines.build import BuildOptions, build_engines

    fields = dict(BUILDS[name])
    if args.stream and name.endswith("-stream"):
        fields = {**BUILDS[name[: -len("-stream")]], "stream": True}
    if fields.get("precision") == "int8" and fields.get("int8_mode", "static") == "static":
        fields = {"calibration_task": args.calibration_task or args.task, "data_dir": args.data_dir,
                  "calibration_limit": args.calibration_limit, **fields}
    result = build_engines(BuildOptions(bundle=bundle, name=name, overwrite=True, **fields))
    print(f"built {name}: {result.total_bytes / 2**20:.1f} MiB in {result.seconds:.0f} s", file=sys.stderr)


def measure(bundle: Path, name: str, texts: list, labels: list, task: str, threads: int) -> dict:
    from trtbert.data.metrics import score
    from trtbert.runtime.exits import softmax
    from trtbert.runtime.runner import Runner

    with Runner.from_bundle(bundle, engines=name, exit="none", threads=threads) as runner:
        one = runner.layer_logits(texts, batch_size=1)[-1]
        sixteen = runner.layer_logits(texts, batch_size=16)[-1]
        times = []
        for text in texts[: min(200, len(texts))]:
            t0 = time.perf_counter()
            runner.predict([text], batch_size=1)
            times.append((time.perf_counter() - t0) * 1e3)
    metrics = score(task, one, labels)
    p1, p16 = softmax(one), softmax(sixteen)
    return {"set": name, **metrics, "flips": int((one.argmax(-1) != sixteen.argmax(-1)).sum()),
            "max_prob_diff": float(np.abs(p1 - p16).max()), "median_ms": statistics.median(times[5:] or times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--sets", default=SETS)
    parser.add_argument("--build", action="store_true", help="Build the sets that are missing.")
    parser.add_argument("--rebuild", action="store_true", help="Rebuild every set listed (except onnx).")
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calibration-task", default=None, help="Task whose train split calibrates int8 (default --task).")
    parser.add_argument("--calibration-limit", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="First N dev rows.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default: beside the bundle).")
    args = parser.parse_args()
    from trtbert.bundle import load_bundle
    from trtbert.data.glue import SAMPLE_GLUE, load_split

    args.data_dir = glue_dir(args.data_dir)
    if args.data_dir is None:
        print(f"note: no GLUE data found (--data-dir, $TRTBERT_GLUE_DIR, ../shared/data/glue): using the SST-2 "
              f"sample shipped with trtbert ({SAMPLE_GLUE}), 200 dev rows", file=sys.stderr)
    examples = load_split(args.task, "dev", args.data_dir or SAMPLE_GLUE, limit=args.limit)
    texts = [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in examples]
    labels = [e.label for e in examples]
    names = [s for s in args.sets.split(",") if s]
    present = load_bundle(args.bundle, verify="none").manifest.engine_sets
    for name in names:
        if name != "onnx" and (args.rebuild or (args.build and name not in present)):
            build(args.bundle, name, args)
    rows = []
    for name in names:
        row = measure(args.bundle, name, texts, labels, args.task, args.threads)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    metric = [k for k in rows[0] if k not in ("set", "flips", "max_prob_diff", "median_ms")]
    ref = rows[0]
    print(f"\n{args.task} dev ({len(texts)} rows, {args.data_dir or SAMPLE_GLUE}), exit none, {args.threads} threads")
    print("| set | " + " | ".join(metric) + f" | Δ vs {ref['set']} | labels differing, batch 16 vs 1 | "
          "max prob diff, batch 16 vs 1 | median ms/row (batch 1) |")
    print("|---" * (len(metric) + 5) + "|")
    for r in rows:
        delta = r[metric[0]] - ref[metric[0]]
        print(f"| {r['set']} | " + " | ".join(f"{r[m]:.2f}" for m in metric) + f" | {delta:+.2f} | {r['flips']} of "
              f"{len(texts)} | {r['max_prob_diff']:.2e} | {r['median_ms']:.1f} |")
    out = args.out or args.bundle.parent / f"{args.bundle.name}-precision.json"
    out.write_text(json.dumps({"argv": sys.argv, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
