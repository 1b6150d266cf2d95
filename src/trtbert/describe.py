"""``trtbert inspect``: a bundle's manifest as readable text (columns sized to their longest entry)."""

from __future__ import annotations

from trtbert.bundle import SOURCE_SET, WORD_EMBEDDINGS, Bundle
from trtbert.sizes import format_size


def _table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(f"{c:>{w}}" if i in right else f"{c:<{w}}"  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [fmt(header), *(fmt(r) for r in rows)]


def describe(bundle: Bundle) -> str:
    """Model facts, stages (file, size, exit), engine sets (with their recorded memory costs) and the
    default exit policy, as tables."""
    m = bundle.manifest
    info = m.model
    lines = [
        f"bundle   {bundle.root}  (format {m.format_version})",
        f"model    {info.source}  [{info.model_type}] {info.num_layers} layers, hidden {info.hidden_size}, "
        f"{info.num_heads} heads, vocab {info.vocab_size}, max {info.max_positions} tokens",
        f"task     {info.problem_type}, labels {list(info.labels)}",
        f"exits    layers {list(m.exit_layers)}"
        + (f" ({m.heads.get('readout')} read-out)" if m.heads.get("readout") else ""),
        "",
    ]
    rows = [[s.name, s.kind, s.file, format_size(bundle.file_size(s.file)), "yes" if s.exit else ""]
            for s in m.stages]
    if WORD_EMBEDDINGS in m.files:
        rows.append(["(words)", "gather", WORD_EMBEDDINGS, format_size(bundle.file_size(WORD_EMBEDDINGS)), ""])
    unique = {s.file for s in m.stages} | ({WORD_EMBEDDINGS} & set(m.files))
    rows.append(["total", "", f"{len(unique)} files", format_size(sum(bundle.file_size(f) for f in unique)), ""])
    lines += _table(["stage", "kind", "file", "size", "exit"], rows, right={3})
    lines.append("")
    set_rows = []
    for name in [SOURCE_SET, *m.engine_sets]:
        es = bundle.engine_set(name)
        size = sum(bundle.file_size(f) for f in set(es.stage_files.values()) | set(es.files))
        cost = sum(c.get("host", 0) + c.get("device", 0) for c in es.costs.values()) + sum(es.shared.values())
        opts = ", ".join(f"{k}={v}" for k, v in es.options.items()) or "-"
        set_rows.append([name, es.backend, es.precision, format_size(size),
                         format_size(cost) if es.costs else "not measured", opts])
    lines += _table(["engine set", "backend", "precision", "size", "resident", "options"], set_rows, right={3, 4})
    policy = m.exit_policy or {}
    lines.append("")
    lines.append(f"default exit policy: {policy.get('rule', 'none (run every layer)')}")
    return "\n".join(lines)
