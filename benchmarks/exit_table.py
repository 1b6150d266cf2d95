"""The seed project's table for one bundle and task: full model vs each exit rule at its calibrated threshold.

Calibrates once (``trtbert eval --calibrate``: the best threshold of every rule within ``--max-drop``
points on a split kept apart from the reported one), then evaluates the full model and each rule in
its own process (clean peak RSS), and prints a markdown table: metric, layer speed-up, wall speed-up,
latency and peak RSS.

    python benchmarks/exit_table.py runs/minilm-sst2-bundle --task sst2 \
        --data-dir ../shared/data/glue --max-drop 0.5 --calibration-split train
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def trtbert_eval(bundle: Path, args: argparse.Namespace, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "trtbert", "eval", str(bundle), "--task", args.task, "--quiet",
               "--json", str(out), "--threads", str(args.threads), "--engines", args.engines,
               "--memory-cap", args.memory_cap, *extra]
        if args.data_dir:
            cmd += ["--data-dir", str(args.data_dir)]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--task", required=True)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--engines", default="onnx")
    parser.add_argument("--memory-cap", default="unlimited")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--max-drop", type=float, default=0.5)
    parser.add_argument("--calibration-split", default="train")
    parser.add_argument("--calibration-limit", type=int, default=2000, help="rows from the end of the split")
    parser.add_argument("--json", type=Path, help="write all reports here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"  # calibration writes the manifest: work on a copy
        shutil.copytree(args.bundle, bundle)
        calibrated = trtbert_eval(bundle, args, ["--calibrate", "--max-drop", str(args.max_drop),
                                                 "--calibration-split", args.calibration_split,
                                                 "--calibration-limit", str(args.calibration_limit)])
        cal = calibrated["calibration"]
        rules = {name: point["rule"] for name, point in cal["best_per_rule"].items()}
        report_split_examples = calibrated["examples"]
        # dev-half reports on the second half of dev: every row of the table must use the same rows
        same_rows = ["--calibrate", "--max-drop", str(args.max_drop), "--calibration-split", "dev-half"] \
            if args.calibration_split == "dev-half" else []
        reports = {"full model": trtbert_eval(bundle, args, ["--exit", "none", *same_rows])}
        for name in ("entropy", "patience", "confidence"):
            if name in rules:
                reports[name] = trtbert_eval(bundle, args, ["--exit", rules[name], *same_rows])
    full = reports["full model"]
    print(f"\n{args.task} {full['split']} ({report_split_examples} examples), engines {args.engines}, "
          f"cap {args.memory_cap}; thresholds calibrated on {cal['examples']} {cal['split']} examples, "
          f"max drop {args.max_drop} points\n")
    print(f"| rule | {full['metric']} | Δ | layers | layer speed-up | wall speed-up | p50 ms | mean ms | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in reports.items():
        wall = full["latency_ms"]["mean"] / r["latency_ms"]["mean"]
        print(f"| {r['exit_rule']} | {r['score']:.2f} | {r['score'] - full['score']:+.2f} | {r['avg_exit_layer']:.2f} | "
              f"{r['layer_speedup']:.2f}x | {wall:.2f}x | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['mean']:.1f} | "
              f"{r['peak_rss_mib']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"calibration": cal, "reports": reports}, indent=2))


if __name__ == "__main__":
    main()
