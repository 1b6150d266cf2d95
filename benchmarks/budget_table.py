"""budget:MS against the full model's p50: share of rows reaching the last exit, mean and p90 latency.

    python benchmarks/budget_table.py runs/bundles/minilm-sst2 [--engines onnx] [--memory-cap unlimited]
        [--rows 300] [--multipliers 0.5,1,2] [--data-dir ../shared/data/glue]

One process: the full model (``--exit none``) and each budget run row by row, interleaved (for each
row: the full model, then every budget), after a warm-up of 20 rows, so a noisy minute hits all of them.
The budgets are multiples of the full model's p50 measured in a first pass over the same rows. "Rows whose
own full-model run fits" is the share of rows whose full-model latency in the same run is within the budget:
the most a per-request budget can let through to the last exit without overrunning (latency grows with the
input's length, so at 1x p50 the longer rows cannot finish in time).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from trtbert.data.glue import load_split, resolve_data_dir
    from trtbert.runtime.exits import parse_rule
    from trtbert.runtime.runner import Runner

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--engines", default="onnx")
    ap.add_argument("--memory-cap", default="unlimited")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--multipliers", default="0.5,1,2")
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args()
    texts = [e.text_a for e in load_split("sst2", "dev", resolve_data_dir("sst2", args.data_dir), limit=args.rows)]
    with Runner.from_bundle(args.bundle, engines=args.engines, memory_cap=args.memory_cap, exit="none",
                            tune_allocator=True) as runner:
        last = runner.exit_layers[-1]

        def once(rule: object, text: str) -> tuple[float, int]:
            runner.rule = rule
            start = time.perf_counter()
            p = runner.predict([text], batch_size=1)[0]
            return (time.perf_counter() - start) * 1e3, p.exit_layer

        none = parse_rule("none")
        for text in texts[:20]:
            once(none, text)
        p50 = statistics.median(once(none, t)[0] for t in texts)
        budgets = [float(m) * p50 for m in args.multipliers.split(",")]
        rules = [parse_rule(f"budget:{b:.3f}") for b in budgets]
        for text in texts[:20]:
            for rule in rules:
                once(rule, text)
        full, runs = [], {b: [] for b in budgets}
        for text in texts:
            full.append(once(none, text)[0])
            for b, rule in zip(budgets, rules):
                runs[b].append(once(rule, text))
        print(f"full model: p50 {statistics.median(full):.2f} ms, mean {statistics.fmean(full):.2f} ms "
              f"(first pass p50 {p50:.2f} ms); {len(texts)} SST-2 dev rows, {args.engines} @ {args.memory_cap}")
        print("| budget | x p50 | rows reaching the last exit | rows whose own full-model run fits | mean ms | p90 ms "
              "| mean within budget |")
        print("|---|---|---|---|---|---|---|")
        full_ms = np.array(full)
        for m, b in zip(args.multipliers.split(","), budgets):
            ms = np.array([r[0] for r in runs[b]])
            exits = np.array([r[1] for r in runs[b]])
            print(f"| {b:.2f} ms | {m} | {100 * np.mean(exits == last):.1f}% | {100 * np.mean(full_ms <= b):.1f}% | {ms.mean():.2f} | "
                  f"{np.percentile(ms, 90):.2f} | {'yes' if ms.mean() <= b else 'no'} |")


if __name__ == "__main__":
    main()
