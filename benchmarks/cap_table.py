"""The memory cap measured from outside: for caps from the largest stage up to unlimited, pool peak,
plan bound, RSS growth above the process baseline against the stated bound, loads and latency.

    python benchmarks/cap_table.py runs/bundles/minilm-sst2 --engines onnx [--caps 14MiB,20MiB,...]
        [--data-dir ../shared/data/glue] [--rows 64] [--batch-size 4]

Each cap runs in its own process (so its peak RSS is its own): the runner is opened, the backend is
initialised (one engine loaded and freed), that RSS is the baseline; then ``--rows`` SST-2 dev sentences
run three times with ``--exit none``. The bound is ``cap (plan bound when unlimited) + activations(batch, longest input) +
allocator slack`` (trtbert.runtime.runner.rss_bound). Without --caps: the smallest cap the set accepts,
then 1.25x, 1.5x, 2x, 3x of it, and unlimited.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys, time
from trtbert import Runner
from trtbert.memory import current_rss, peak_rss, reset_peak_rss, release_freed_memory
from trtbert.runtime.runner import rss_bound
bundle, engines, cap, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
texts = json.loads(sys.stdin.read())
with Runner.from_bundle(bundle, engines=engines, memory_cap=None if cap == "unlimited" else int(cap), exit="none",
                        tune_allocator=True) as r:
    smallest = min(r.pool._engines.values(), key=lambda e: e.nbytes)
    smallest.load(); smallest.unload(); release_freed_memory()
    r.encoder.encode(texts)
    base = current_rss()
    reset_peak_rss()
    start = time.perf_counter()
    for _ in range(3):
        r.predict(texts, batch_size=batch)
    ms = (time.perf_counter() - start) * 1e3 / (3 * len(texts))
    s = r.stats()
    seq = int(r.encoder.encode(texts).input_ids.shape[1])
    print(json.dumps({"cap": s.memory_cap, "plan": s.plan_bound, "peak_pool": s.peak_bytes, "over_cap": s.over_cap,
                      "loads": s.loads, "evictions": s.evictions, "pinned": len(s.pinned),
                      "grow": peak_rss() - base, "bound": rss_bound(s.memory_cap or s.plan_bound, r.bundle.manifest.model, batch, seq, r.allocator_slack),
                      "base": base, "ms": ms}))
"""
MiB = 2**20


def _texts(data_dir: Path | None, rows: int) -> list[str]:
    from trtbert.data.glue import load_split, resolve_data_dir

    return [e.text_a for e in load_split("sst2", "dev", resolve_data_dir("sst2", data_dir), limit=rows)]


def _smallest_cap(bundle: str, engines: str) -> int:
    from trtbert.bundle import load_bundle
    from trtbert.engines.registry import recorded_cost

    b = load_bundle(bundle, verify="none")
    es = b.engine_set(engines)
    loading = max(recorded_cost(es, f, b.file_size(f)).loading for f in set(es.stage_files.values()))
    return loading + sum(es.shared.values()) + 64 * 1024


def main() -> None:
    from trtbert.sizes import parse_size

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--engines", default="onnx")
    ap.add_argument("--caps", default=None, help="comma-separated sizes (default: from the smallest accepted)")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    if args.caps:
        caps = [None if c.strip() == "unlimited" else parse_size(c) for c in args.caps.split(",")]
    else:
        low = _smallest_cap(args.bundle, args.engines)
        caps = [low, int(low * 1.25), int(low * 1.5), 2 * low, 3 * low, None]
    texts = json.dumps(_texts(args.data_dir, args.rows))
    rows = []
    print("| cap MiB | pinned | loads | evictions | pool peak MiB | plan bound MiB | over_cap | RSS growth MiB | "
          "bound MiB | within | ms/row |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for cap in caps:
        out = subprocess.run([sys.executable, "-c", PROBE, args.bundle, args.engines,
                              "unlimited" if cap is None else str(cap), str(args.batch_size)],
                             input=texts, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"| {cap} | error: {out.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(out.stdout)
        rows.append(r)
        capstr = "unlimited" if cap is None else f"{cap / MiB:.1f}"
        print(f"| {capstr} | {r['pinned']} | {r['loads']} | {r['evictions']} | {r['peak_pool'] / MiB:.1f} | "
              f"{r['plan'] / MiB:.1f} | {r['over_cap']} | {r['grow'] / MiB:.1f} | {r['bound'] / MiB:.1f} | "
              f"{'yes' if r['grow'] <= r['bound'] and (cap is None or r['peak_pool'] <= cap) else 'NO'} | "
              f"{r['ms']:.1f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
