"""Where a streamed layer's time goes: load (read or map), first touch, compute; bert-base shape (issue 12.3).

    python benchmarks/layer_breakdown.py [--workdir runs/bench-runtime] [--stage layer_02]
                                         [--sets ort-cpu-fp32,ort-cpu-int8] [--repeats 15] [--threads 2]

For one layer stage of each set (and its ``-stream`` twin), at 12 and 128 tokens (batch 1), interleaved,
``--repeats`` times, medians in ms:

* ``resident``: the layer's own session (weights as initializers, pre-packed), warm: the compute floor;
* ``session load``: creating that session, what a non-streamed set pays for every streamed load;
* ``read``: the old streamed load (PR 1's ``TRTBW001`` files): the weights read into fresh memory;
  ``run after read``: the first inference after it;
* ``map``: the new streamed load, the safetensors file mapped with ``MAP_POPULATE`` (no copy);
  ``run after map``: the first inference after it; ``map, no populate``: the first inference when the
  pages are faulted in by the kernels instead;
* ``inputs, warm``: the streamed layer run again with its weights already mapped (what weights as
  graph inputs cost: no pre-packing).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORKDIR = REPO / "runs" / "bench-runtime"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--stage", default="layer_02")
    parser.add_argument("--sets", default="ort-cpu-fp32,ort-cpu-int8")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from trtbert import bundle as B
    from trtbert.engines.base import Shared
    from trtbert.engines.ort import OrtEngine, OrtOptions
    from trtbert.engines.streamed import DTYPES, StreamedEngine, read_header
    from trtbert.memory import tune_allocator

    tune_allocator()
    bundle = B.load_bundle(args.workdir / "bundle", verify="none")
    stage = bundle.manifest.stage(args.stage)
    options = OrtOptions(optimization="disable", threads=args.threads)
    hidden = bundle.manifest.model.hidden_size
    rng = np.random.default_rng(0)
    feeds = {n: {B.HIDDEN: rng.standard_normal((1, n, hidden)).astype(np.float32),
                 B.ATTENTION_MASK: np.ones((1, n), np.int64)} for n in (12, 128)}
    results: dict = {}
    for name in args.sets.split(","):
        plain = bundle.engine_set(name)
        streamed = bundle.engine_set(f"{name}-stream")
        resident = OrtEngine(bundle.path(plain.stage_files[stage.name]), stage.name, stage.inputs, stage.outputs, options)
        shared = Shared()
        path = bundle.path(streamed.stage_files[stage.name])
        engine = StreamedEngine(path, stage.name, stage.inputs, stage.outputs, options, shared=shared)
        header, start = read_header(path)
        engine.load()  # creates the template session once (the set's shared part)
        session = engine._session
        for n, f in feeds.items():
            resident.load()
            for _ in range(3):
                resident.infer(f)
                engine.infer(f)
            resident.unload()
            times: dict[str, list[float]] = {k: [] for k in (
                "resident", "session load", "read", "run after read", "map", "run after map",
                "map, no populate: first run", "inputs, warm")}

            def clock(key: str, fn):  # noqa: ANN001, ANN202
                t0 = time.perf_counter()
                out = fn()
                times[key].append((time.perf_counter() - t0) * 1e3)
                return out

            for _ in range(args.repeats):
                clock("session load", resident.load)
                resident.infer(f)
                clock("resident", lambda: resident.infer(f))  # noqa: B023
                resident.unload()
                # the old load: every weight read into fresh memory
                def read():  # noqa: ANN202
                    buf = np.empty(path.stat().st_size - start, dtype=np.uint8)
                    with open(path, "rb") as fh:
                        fh.seek(start)
                        fh.readinto(memoryview(buf))
                    return {k: buf[e["data_offsets"][0]:e["data_offsets"][1]].view(
                        DTYPES[e["dtype"]]).reshape(e["shape"])
                        for k, e in header.items() if k != "__metadata__"}
                weights = clock("read", read)
                clock("run after read", lambda: session.run(None, {**f, **weights}))  # noqa: B023
                del weights
                engine.unload()
                clock("map", engine.load)
                clock("run after map", lambda: engine.infer(f))  # noqa: B023
                clock("inputs, warm", lambda: engine.infer(f))  # noqa: B023
                engine.unload()
                # map without populating: the kernels fault the pages in
                fd = os.open(path, os.O_RDONLY)
                mapped = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
                os.close(fd)
                data = np.frombuffer(mapped, dtype=np.uint8)
                lazy = {k: data[start + e["data_offsets"][0]: start + e["data_offsets"][1]].view(
                    DTYPES[e["dtype"]]).reshape(e["shape"])
                    for k, e in header.items() if k != "__metadata__"}
                clock("map, no populate: first run", lambda: session.run(None, {**f, **lazy}))  # noqa: B023
                del lazy, data
                mapped.close()
                engine.load()
            results[f"{name} @ {n} tokens"] = {k: statistics.median(v) for k, v in times.items()}
        engine.unload()
        shared.close()
    keys = list(next(iter(results.values())))
    print(f"{args.stage} of the bert-base bundle, batch 1, {args.threads} threads, medians of {args.repeats} (ms)\n")
    print("| set @ tokens | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for label, row in results.items():
        print(f"| {label} | " + " | ".join(f"{row[k]:.2f}" for k in keys) + " |")
    out = args.out or args.workdir / "layer-breakdown.json"
    out.write_text(json.dumps({"argv": sys.argv, "results": results}, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
