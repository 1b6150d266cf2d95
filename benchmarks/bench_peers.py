"""trtbert against the peer's best single graphs, bert-base shape, one run (issue 12).

    python benchmarks/bench_peers.py [--rounds 3] [--sentences 50] [--long 12] [--threads 2]
                                     [--data-dir ../shared/data/glue] [--systems ...] [--workdir runs/bench-runtime]

Prepares what is missing (``make_bert_base.py``'s random bert-base classifier, bundle and ``full.onnx``;
the peer graphs of ``peers.py``; every trtbert engine set the systems name), then measures every system
in its own process (peak RSS = that process's VmHWM), batch 1, ``--threads`` intra-op threads, no early
exit, end to end (text in, logits out, tokenisation included), medians after 5 untimed inputs:

* ``cola``: the first ``--sentences`` CoLA dev sentences; ``seq128``: ``--long`` texts of 128 tokens;
* ``--rounds`` rounds; in each, every system runs back to back with the peer's two runs at its precision
  (order alternating), so that a system and its reference see the same minute of a shared machine (the
  same graph measured 22 and 48 ms minutes apart here); each ratio is computed within such a trial
  against the peer's best at the same precision (fp32 rows against ``peer-fp32``, int8/int4 rows against ``peer-int8``; for latency the faster
  of its two runs, ONNX Runtime's default spinning threads or threads that sleep as trtbert's do: on a
  shared machine spinning costs the single graph up to 1.8x; for peak RSS the default run), and the
  table gives the median over rounds (of the medians and of the ratios) and the range of the ratios.

Systems are ``single:<graph file in the workdir>`` (``single-nospin:``: threads that do not spin) or
``trtbert:<engine set>@<memory cap>`` (``trtbert-heap32:``: with glibc's mmap threshold at 32 MiB instead
of the runtime's 1 MiB, a proposal for ``trtbert.memory``: activations of 1 MiB or more, at 128 tokens,
then come from the heap instead of fresh page-faulted mappings). Results go to
``--out`` (default ``<workdir>/peers.json``) and stdout as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from inputs import long_texts, short_sentences

REPO = Path(__file__).resolve().parents[1]
WORKDIR = REPO / "runs" / "bench-runtime"
MIB = 1024**2
SYSTEMS = ",".join([
    "single:peer-fp32.onnx", "single-nospin:peer-fp32.onnx", "single:peer-int8.onnx", "single-nospin:peer-int8.onnx",
    "single:full.onnx",
    "trtbert:onnx@unlimited", "trtbert:ort-cpu-fp32@unlimited", "trtbert-heap32:ort-cpu-fp32@unlimited",
    "trtbert:ort-cpu-int8@unlimited", "trtbert-heap32:ort-cpu-int8@unlimited", "trtbert:ort-cpu-int8-dynamic@unlimited",
    "trtbert:ort-cpu-int4@unlimited",
    "trtbert:ort-cpu-int8@64MiB", "trtbert:ort-cpu-int8-stream@64MiB", "trtbert:ort-cpu-int8-stream@16MiB",
    "trtbert:ort-cpu-fp32-stream@64MiB",
])
PEERS = {"fp32": "single:peer-fp32.onnx", "int8": "single:peer-int8.onnx"}


def precision(system: str) -> str:
    """fp32 or int8 (int4 sets are compared with the int8 peer: the best quantised single graph)."""
    name = system.split(":", 1)[1]
    return "int8" if "int8" in name or "int4" in name else "fp32"


def is_peer_variant(system: str, prec: str) -> bool:
    """Whether ``system`` is the peer's single graph at ``prec`` (spinning threads or not)."""
    kind, spec = system.split(":", 1)
    return kind in ("single", "single-nospin") and spec == PEERS[prec].split(":", 1)[1]


# --- one system in its own process -------------------------------------------------------------------


def _system(args: argparse.Namespace):
    kind, spec = args.system.split(":", 1)
    if kind in ("single", "single-nospin"):
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(args.workdir / "bundle" / "tokenizer" / "tokenizer.json"))
        tok.enable_truncation(512)
        tok.no_padding()
        so = ort.SessionOptions()  # what a user of the single graph gets: defaults, bounded threads
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        if kind == "single-nospin":  # as trtbert's sessions: threads sleep instead of spinning between runs
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(args.workdir / spec), so, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}

        def run(text: str):
            enc = tok.encode(text)
            feeds = {"input_ids": np.array([enc.ids], dtype=np.int64),
                     "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
                     "token_type_ids": np.array([enc.type_ids], dtype=np.int64)}
            return session.run(None, {k: v for k, v in feeds.items() if k in names})[0]

        return run, dict
    from trtbert.runtime.runner import Runner

    if kind == "trtbert-heap32":  # a proposal measured: glibc's mmap threshold at 32 MiB instead of 1 MiB
        import trtbert.memory

        trtbert.memory.MMAP_THRESHOLD = 32 << 20
    engines, cap = spec.split("@")
    runner = Runner.from_bundle(args.workdir / "bundle", engines=engines, memory_cap=cap, exit="none",
                                threads=args.threads, tune_allocator=True)

    def run(text: str):
        return runner.predict([text], batch_size=1)[0]

    run.runner = runner  # type: ignore[attr-defined]

    def info() -> dict:
        s = runner.stats()
        return {"pool_peak_mib": s.peak_bytes / MIB, "loads": s.loads, "evictions": s.evictions,
                "load_s": s.load_seconds, "wait_s": s.wait_seconds, "prefetch_hits": s.prefetch_hits,
                "pinned": list(s.pinned)}

    return run, info


def child(args: argparse.Namespace) -> None:
    """Load one system, time it on both input groups, print one JSON line."""
    from trtbert.memory import peak_rss

    groups = {"cola": short_sentences(args.sentences, args.data_dir)[0],
              "seq128": long_texts(args.workdir / "bundle" / "tokenizer" / "tokenizer.json", args.long,
                                   data_dir=args.data_dir)}
    start = time.perf_counter()
    run, info = _system(args)
    result: dict = {"system": args.system, "load_s": time.perf_counter() - start}
    for group, texts in groups.items():
        for text in texts[:args.warmup]:
            run(text)
        before = info()
        times, stages = [], {}
        for text in texts:
            t0 = time.perf_counter()
            out = run(text)
            times.append((time.perf_counter() - t0) * 1e3)
            for stage, ms in getattr(out, "timings", {}).items():
                stages.setdefault(stage, []).append(ms)
        result[group] = statistics.median(times)
        if "loads" in before:
            after = info()
            result[f"{group}_loads_per_input"] = (after["loads"] - before["loads"]) / len(texts)
            result[f"{group}_wait_ms_per_input"] = (after["wait_s"] - before["wait_s"]) * 1e3 / len(texts)
            result[f"{group}_stage_ms"] = {k: statistics.median(v) for k, v in stages.items() if k != "total"}
    result.update(peak_rss_mib=peak_rss() / MIB, **info())
    print(json.dumps(result))


# --- preparation --------------------------------------------------------------------------------------


def build_options(name: str) -> dict:
    """BuildOptions fields of the default set names used here."""
    fields: dict = {"name": name}
    for p in ("int8", "int4"):
        if f"-{p}" in name:
            fields["precision"] = p
    if "-dynamic" in name:
        fields["int8_mode"] = "dynamic"
    if name.endswith("-stream"):
        fields["stream"] = True
    if "-unfused" in name:
        fields["fuse"] = False
    return fields


def prepare(args: argparse.Namespace, systems: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_bert_base
    from peers import make_peer_graphs

    model_dir, bundle, full = args.workdir / "model", args.workdir / "bundle", args.workdir / "full.onnx"
    if not (model_dir / "config.json").is_file():
        make_bert_base.make_model(model_dir)
    if not (bundle / "manifest.json").is_file():
        from trtbert.exporter.export import ExportOptions, export_bundle

        export_bundle(ExportOptions(model=str(model_dir), out=bundle, overwrite=True))
    if not full.is_file():
        make_bert_base.make_single_graph(model_dir, full)
    make_peer_graphs(full, args.workdir)
    from trtbert.bundle import load_bundle
    from trtbert.engines.build import BuildOptions, build_engines

    present = load_bundle(bundle, verify="none").manifest.engine_sets
    for system in systems:
        kind, spec = system.split(":", 1)
        name = spec.split("@")[0]
        if kind.startswith("trtbert") and name != "onnx" and (name not in present or name in args.rebuild.split(",")):
            result = build_engines(BuildOptions(bundle=bundle, overwrite=True, **build_options(name)))
            present = load_bundle(bundle, verify="none").manifest.engine_sets
            print(f"built {name}: {result.total_bytes / MIB:.1f} MiB in {result.seconds:.0f} s", file=sys.stderr)


# --- the parent ---------------------------------------------------------------------------------------


def spawn(args: argparse.Namespace, system: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--system", system, "--workdir", str(args.workdir),
           "--threads", str(args.threads), "--sentences", str(args.sentences), "--long", str(args.long),
           "--warmup", str(args.warmup)]
    if args.data_dir:
        cmd += ["--data-dir", str(args.data_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        return {"system": system, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {system:<40} cola {result['cola']:7.1f} ms  seq128 {result['seq128']:7.1f} ms  "
          f"peak RSS {result['peak_rss_mib']:6.0f} MiB", file=sys.stderr, flush=True)
    return result


def reference(round_: dict[str, dict], prec: str, key: str) -> float | None:
    """The peer's best in one round: the faster of its variants (threads spinning or not) for a latency,
    the default peer for peak RSS."""
    variants = [PEERS[prec]] if key == "peak_rss_mib" else [s for s in round_ if is_peer_variant(s, prec)]
    values = [round_[v][key] for v in variants if v in round_ and "error" not in round_[v]]
    return min(values) if values else None


def summarise(rounds: list[dict[str, dict]], systems: list[str]) -> list[dict]:
    """Per system: medians over rounds, and the per-round ratios to the peer's best at the same precision."""
    rows = []
    for system in systems:
        got = [r[system] for r in rounds if "error" not in r.get(system, {"error": 1})]
        row_rounds = len(got)
        if not got:
            rows.append({"system": system, "error": next((r[system]["error"] for r in rounds if system in r), "?")})
            continue
        row: dict = {"system": system, "precision": precision(system), "rounds": len(got)}
        for key in ("cola", "seq128", "peak_rss_mib"):
            row[key] = statistics.median(g[key] for g in got)
            ratios = []
            for r in rounds:
                ref = reference(r, precision(system), key)
                if ref and system in r and "error" not in r[system]:
                    ratios.append(r[system][key] / ref)
            if ratios:
                row[f"{key}_ratio"] = statistics.median(ratios)
                row[f"{key}_ratio_range"] = (min(ratios), max(ratios))
        for key in ("cola_loads_per_input", "seq128_loads_per_input", "pool_peak_mib", "cola_wait_ms_per_input",
                    "seq128_wait_ms_per_input"):
            if key in got[0]:
                row[key] = statistics.median(g[key] for g in got)
        for key in ("cola_stage_ms", "seq128_stage_ms"):
            if key in got[0]:
                row[key] = {k: statistics.median(g[key][k] for g in got) for k in got[0][key]}
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| system | cap | cola ms | vs peer | seq128 ms | vs peer | peak RSS MiB | vs peer | loads/input (cola) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kind, spec = r["system"].split(":", 1)
        name, cap = (spec.split("@") + ["–"])[:2]
        label = (f"trtbert `{name}`" + (", mmap threshold 32 MiB" if kind == "trtbert-heap32" else "")
                 if kind.startswith("trtbert") else
                 f"single graph `{name}`" + (", threads not spinning" if kind == "single-nospin" else ""))
        if "error" in r:
            lines.append(f"| {label} | {cap} | failed: {r['error']} |")
            continue

        def ratio(key: str) -> str:
            if f"{key}_ratio" not in r:
                return "–"
            lo, hi = r[f"{key}_ratio_range"]
            return f"{r[f'{key}_ratio']:.2f}x ({lo:.2f}-{hi:.2f})" if r["rounds"] > 1 else f"{r[f'{key}_ratio']:.2f}x"

        loads = f"{r['cola_loads_per_input']:.1f}" if "cola_loads_per_input" in r else ""
        lines.append(f"| {label} | {cap} | {r['cola']:.1f} | {ratio('cola')} | {r['seq128']:.1f} | {ratio('seq128')} | "
                     f"{r['peak_rss_mib']:.0f} | {ratio('peak_rss_mib')} | {loads} |")
    return "\n".join(lines)


def stage_table(rows: list[dict], key: str) -> str:
    """Per-stage medians of the trtbert systems, side by side."""
    have = [r for r in rows if key in r]
    if not have:
        return ""
    stages = list(have[0][key])
    lines = ["| stage | " + " | ".join(r["system"].split(":", 1)[1] for r in have) + " |",
             "|---" * (len(have) + 1) + "|"]
    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(f"{r[key].get(stage, float('nan')):.2f}" for r in have) + " |")
    lines.append("| wait for engines, per input | " + " | ".join(
        f"{r.get(key.replace('stage_ms', 'wait_ms_per_input'), 0):.2f}" for r in have) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--systems", default=SYSTEMS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=50)
    parser.add_argument("--long", type=int, default=12, help="How many 128-token inputs.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None, help="GLUE directory (CoLA dev sentences).")
    parser.add_argument("--rebuild", default="", help="Comma-separated engine sets to rebuild first.")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    systems = [s for s in args.systems.split(",") if s]
    for peer in PEERS.values():
        if peer not in systems:
            systems.insert(0, peer)
    source = short_sentences(args.sentences, args.data_dir)[1]
    print(f"short inputs: {source}", file=sys.stderr)
    prepare(args, systems)
    out = args.out or args.workdir / "peers.json"
    variants = {p: [s for s in systems if is_peer_variant(s, p)] for p in PEERS}
    others = [s for s in systems if not any(is_peer_variant(s, p) for p in PEERS)]
    rounds: list[dict[str, dict]] = []  # one entry per trial: a system and its peer's runs, back to back
    for i in range(args.rounds):
        print(f"round {i + 1}/{args.rounds}", file=sys.stderr)
        for j, system in enumerate(others):
            group = variants[precision(system)] + [system]
            rounds.append({s: spawn(args, s) for s in (group if (i + j) % 2 == 0 else group[::-1])})
            out.write_text(json.dumps({"argv": sys.argv, "inputs": source, "rounds": rounds}, indent=1) + "\n",
                           encoding="utf-8")
    rows = summarise(rounds, systems)
    print(f"\nbert-base shape (random weights), batch 1, {args.threads} threads, exit none; cola = {source}, "
          f"first {args.sentences}; seq128 = {args.long} texts of 128 tokens; medians over {args.rounds} rounds "
          "(ratios: median and range of the per-trial ratios to the peer's best at the same precision, run back to back)\n")
    print(table(rows))
    print("\nper stage, cola (median ms per input: the stage's wait for its engine + its compute)\n")
    print(stage_table(rows, "cola_stage_ms"))
    out.write_text(json.dumps({"argv": sys.argv, "inputs": source, "rows": rows, "rounds": rounds}, indent=1) + "\n",
                   encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
