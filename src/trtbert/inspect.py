"""``trtbert inspect``: a bundle's manifest as readable text."""

from __future__ import annotations

from trtbert.bundle import WORD_EMBEDDINGS, Bundle
from trtbert.sizes import format_size


def describe(bundle: Bundle) -> str:
    """Model facts, stages (file, size, exit), engine sets and the default exit policy, as a table."""
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
        f"{'stage':<12} {'kind':<10} {'file':<26} {'size':>11}  exit",
    ]
    for s in m.stages:
        lines.append(f"{s.name:<12} {s.kind:<10} {s.file:<26} {format_size(bundle.file_size(s.file)):>11}  "
                     f"{'yes' if s.exit else ''}")
    if WORD_EMBEDDINGS in m.files:
        lines.append(f"{'(words)':<12} {'gather':<10} {WORD_EMBEDDINGS:<26} {format_size(bundle.file_size(WORD_EMBEDDINGS)):>11}")
    unique = {s.file for s in m.stages} | ({WORD_EMBEDDINGS} & set(m.files))
    lines.append(f"{'total':<12} {'':<10} {f'{len(unique)} files':<26} "
                 f"{format_size(sum(bundle.file_size(f) for f in unique)):>11}")
    lines.append("")
    lines.append(f"{'engine set':<20} {'backend':<9} {'precision':<9} {'size':>11}  options")
    for name in ["onnx", *m.engine_sets]:
        es = bundle.engine_set(name)
        size = sum(bundle.file_size(f) for f in set(es.stage_files.values()))
        opts = ", ".join(f"{k}={v}" for k, v in es.options.items()) or "-"
        lines.append(f"{name:<20} {es.backend:<9} {es.precision:<9} {format_size(size):>11}  {opts}")
    policy = m.exit_policy or {}
    lines.append("")
    lines.append(f"default exit policy: {policy.get('rule', 'none (run every layer)')}")
    return "\n".join(lines)
