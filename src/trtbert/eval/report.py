"""Eval reports as text tables, JSON files and the speed-accuracy plot."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from trtbert.bundle import atomic_write_text, check_space, os_error, tmp_name
from trtbert.bundle.files import owning_output
from trtbert.errors import TrtbertError, missing_extra


def _short_rule(rule: str, width: int = 28) -> str:
    """A legend-sized rule text: per-layer thresholds and learned weights are cut, the family kept."""
    return rule if len(rule) <= width else rule.split(":")[0] + " (per layer)"


def check_output(path: Path | None) -> None:
    """Refuse an output path that cannot be written, before any evaluation work."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise TrtbertError(f"{path} is a directory; give a file path")
    owner = owning_output(path)
    if owner is not None:
        raise TrtbertError(f"{path} is inside {owner}, which trtbert wrote (its manifest.json lists its files); "
                           "write the report elsewhere")
    parent = path.parent
    if not parent.is_dir():
        raise TrtbertError(f"cannot write to {parent}: no such directory; create it first")
    probe = tmp_name(path)
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise os_error("write to", parent, exc) from exc
    check_space(parent, 1 << 20)


def format_report(report: Any) -> str:
    """The report as a readable table (plus MNLI mismatched, the sweep and the calibration, when present)."""
    lines = [_summary(report)]
    if report.mismatched is not None:
        lines.append(_summary(report.mismatched, prefix="mismatched: "))
    if report.sweep:
        width = max(28, *(len(p.rule) + 2 for p in report.sweep))
        lines += ["", f"{'rule':<{width}} {report.metric:>9} {'avg layers':>10} {'layer x':>8} {'est. ms':>8}"]
        lines.append(f"{'none (full model)':<{width}} {report.full_score:>9.2f} {report.num_layers:>10.2f} "
                     f"{1.0:>8.2f} {report.full_latency_ms.mean:>8.1f}")
        for p in report.sweep:
            wall = f"{p.wall_ms:>8.1f}" if p.wall_ms is not None else f"{'-':>8}"
            lines.append(f"{p.rule:<{width}} {p.score:>9.2f} {p.avg_layers:>10.2f} {p.layer_speedup:>8.2f} {wall}")
    if report.calibration is not None:
        lines += ["", _calibration_line(report.calibration.to_json())]
    return "\n".join(lines)


def _calibration_line(c: dict[str, Any]) -> str:
    cert = c["certificate"]
    rows = f"{cert['rows']} {c['task']} {c['split']} rows" + (f" ({cert['fit_rows']} more shaped the candidates)"
                                                            if cert.get("fit_rows") else "")
    if c["certified"]:
        text = (f"certified {c['rule'].split(':')[0]} ({c['family']}, {c['objective']} objective): {cert['risk']} <= "
                f"{cert['eps']:g} on unseen rows with probability >= {1 - cert['delta']:g}, from {rows} "
                f"(observed {cert['empirical_risk']:.4f}); {c['layer_speedup']:.2f}x fewer layers there, oracle "
                f"{c['oracle_avg_layers']:.2f} layers")
    else:
        needed = c.get("rows_needed") or c.get("rows_needed_zero_errors")
        text = (f"nothing certified at {cert['risk']} <= {cert['eps']:g} from {rows}: the full model is kept "
                f"(at least {needed} calibration rows would be needed)")
    note = f" [{cert['note']}]" if cert.get("note") else ""
    return f"{text}{note}; written to the bundle as its default exit policy"


def _summary(r: Any, prefix: str = "") -> str:
    lat = r.latency_ms
    hist = " ".join(f"{k}:{v}" for k, v in sorted(r.exit_histogram.items()))
    return "\n".join([
        f"{prefix}{r.task} {r.split} ({r.examples} examples), exit {r.exit_rule}, engines {r.engines}",
        f"  {r.metric:<10} {r.score:.2f}   (full model {r.full_score:.2f}, {r.score - r.full_score:+.2f}; "
        f"answers differ on {100 * r.disagreement:.2f}% of rows)",
        f"  layers     {r.avg_exit_layer:.2f} of {r.num_layers} on average: {r.layer_speedup:.2f}x fewer "
        f"(oracle {r.oracle_layers:.2f}); wall {r.wall_speedup:.2f}x",
        f"  latency    mean {lat.mean:.1f} ms, p50 {lat.p50:.1f}, p90 {lat.p90:.1f}, p99 {lat.p99:.1f} "
        f"(full model mean {r.full_latency_ms.mean:.1f} ms)",
        f"  memory     peak RSS {r.peak_rss_mib:.0f} MiB, peak pool {r.peak_pool_mib:.1f} MiB"
        + (f" (cap {r.memory_cap_mib:.0f} MiB)" if r.memory_cap_mib else ""),
        f"  exits      {hist}",
    ])


def write_json(report: Any, path: Path) -> None:
    """Write the report as JSON, atomically."""
    atomic_write_text(path, json.dumps(report.to_json(), indent=2) + "\n")


def plot(reports: list[Any], path: Path) -> None:
    """Speed-accuracy curve: metric against average layers, one line per rule, the full model marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise missing_extra("matplotlib", "plot") from None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for report in reports:
        label = "" if len(reports) == 1 else f"{report.task} "
        lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for p in report.sweep:
            lines[p.rule.split(":")[0]].append((p.avg_layers, p.score))
        for name, pts in sorted(lines.items()):
            pts.sort()
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", ms=3, label=f"{label}{name}")
        ax.scatter([report.num_layers], [report.full_score], marker="*", s=160, color="black", zorder=5,
                   label=f"{label}full model")
        ax.axvline(report.oracle_layers, color="grey", ls=":", lw=1, label=f"{label}oracle layers")
        if report.calibration is not None:
            ax.scatter([report.avg_exit_layer], [report.score], marker="D", s=50, color="red", zorder=5,
                       label=f"{label}certified {_short_rule(report.calibration.rule)}")
    r0 = reports[0]
    ax.set_xlabel("average layers run")
    ax.set_ylabel(f"{r0.metric} (points)")
    ax.set_title(f"{r0.task} {r0.split}: speed-accuracy trade-off")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise os_error("write", path, exc) from exc
    finally:
        plt.close(fig)
