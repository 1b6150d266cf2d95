"""How ``trtbert run`` prints: one line (or JSON object) per prediction, flushed as it is computed, and
the pool's statistics."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from trtbert.memory import peak_rss
from trtbert.sizes import format_size


def prediction_record(p: Any, labels: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object of one prediction: inputs, answer, exit layer, per-stage timings (ms), truncation."""
    record: dict[str, Any] = {"text": p.text}
    if p.text_b is not None:
        record["text_b"] = p.text_b
    probs = None if p.probabilities is None else dict(zip(labels, p.probabilities))
    record.update(label=p.label, probabilities=probs, exit_layer=p.exit_layer)
    if p.value is not None:
        record["value"] = p.value
    record["truncated"] = p.truncated
    record["timings_ms"] = {k: round(v, 3) for k, v in p.timings.items()}
    return record


def print_prediction(p: Any, labels: tuple[str, ...], layers: int, as_json: bool) -> None:
    """Write one prediction to stdout and flush, so an interrupted run keeps what it computed."""
    if as_json:
        line = json.dumps(prediction_record(p, labels), ensure_ascii=False)
    else:
        answer = f"{p.value:.4f}" if p.value is not None else f"{p.label}\t{max(p.probabilities or (0.0,)):.4f}"
        text = p.text if p.text_b is None else f"{p.text} ||| {p.text_b}"
        line = f"{answer}\texit {p.exit_layer}/{layers}\t{text}"
    click.echo(line)
    sys.stdout.flush()


def print_stats(stats: Any) -> None:
    """The pool's counters and the peak RSS, on stderr."""
    click.echo(
        f"pool: cap {format_size(stats.memory_cap)}, peak {format_size(stats.peak_bytes)} (plan bound "
        f"{format_size(stats.plan_bound)}, shared {format_size(stats.shared_bytes)}), {stats.loads} loads "
        f"({stats.load_seconds:.2f} s), {stats.evictions} evictions, {stats.hits} hits; prefetch "
        f"{stats.prefetches} loads, {stats.prefetch_hits} hits, {stats.prefetch_skipped} skipped, "
        f"{stats.prefetch_cancelled} cancelled, {stats.prefetch_wasted} wasted; waited "
        f"{stats.wait_seconds:.2f} s; pinned {', '.join(stats.pinned) or '-'}; peak RSS {format_size(peak_rss())}",
        err=True)
