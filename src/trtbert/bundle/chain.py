"""The stage chain of a bundle, run once for everyone: embeddings -> layer 1 -> ... -> layer N, with
each exit layer's logits (inline, or from a separate head stage: ALBERT).

Whoever runs stages passes ``infer(position, stage, feeds) -> outputs`` (an ONNX Runtime session, a
pooled engine, ...). After each exit layer ``on_exit(layer, logits, active, hidden, mask)`` (the layer's
output and mask of the active rows) may return which of the still active rows are done: those rows leave the batch (their hidden states and mask rows are
dropped, and trailing padding columns no remaining row needs are trimmed), and the chain stops when
no row is left. Export validation, build checks and the runtime all run this one function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trtbert.bundle.manifest import (
    ATTENTION_MASK,
    EMBEDDINGS,
    HEAD,
    HIDDEN,
    HIDDEN_OUT,
    INPUTS_EMBEDS,
    LAYER,
    LOGITS,
    Stage,
)

Infer = Callable[[int, Stage, dict[str, np.ndarray]], dict[str, np.ndarray]]
OnExit = Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], "np.ndarray | None"]


@dataclass(frozen=True)
class Step:
    """One layer of the chain: its position in ``manifest.stages``, its separate head's position (or
    None), its 1-based depth and whether it has an exit."""

    position: int
    head: int | None
    layer: int
    exit: bool


def steps(stages: Sequence[Stage], exit_layers: Sequence[int]) -> list[Step]:
    """The layers of a chain in execution order, with where their exit logits come from."""
    heads = {s.layer: i for i, s in enumerate(stages) if s.kind == HEAD}
    exits = set(exit_layers)
    return [Step(i, heads.get(s.layer), int(s.layer or 0), s.layer in exits)
            for i, s in enumerate(stages) if s.kind == LAYER]


def _feeds(stage: Stage, available: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {t.name: available[t.name] for t in stage.inputs}


def run_chain(stages: Sequence[Stage], exit_layers: Sequence[int], infer: Infer, tokens: dict[str, np.ndarray],
              embeds: np.ndarray, on_exit: OnExit | None = None) -> None:
    """Run the chain (``manifest.stages``, ``manifest.exit_layers``) on one batch. ``tokens`` holds the
    token-level feeds (ids, token types, mask), ``embeds`` the word-embedding rows of the ids ``(B, S, E)``."""
    assert stages[0].kind == EMBEDDINGS
    hidden = infer(0, stages[0], _feeds(stages[0], {**tokens, INPUTS_EMBEDS: embeds}))[HIDDEN]
    mask = tokens[ATTENTION_MASK]
    active = np.arange(len(mask))
    for step in steps(stages, exit_layers):
        stage = stages[step.position]
        out = infer(step.position, stage, _feeds(stage, {HIDDEN: hidden, ATTENTION_MASK: mask}))
        hidden = out[HIDDEN_OUT]
        if not step.exit:
            continue
        if step.head is not None:
            head = stages[step.head]
            logits = infer(step.head, head, _feeds(head, {HIDDEN: hidden, ATTENTION_MASK: mask}))[LOGITS]
        else:
            logits = out[LOGITS]
        done = None if on_exit is None else on_exit(step.layer, logits, active, hidden, mask)
        if done is None or not done.any():
            continue
        if done.all():
            return
        keep = ~done
        active, mask, hidden = active[keep], mask[keep], hidden[keep]
        width = int(mask.sum(axis=1).max())
        if width < mask.shape[1]:  # padding columns no remaining row needs
            mask, hidden = mask[:, :width], hidden[:, :width]
        mask, hidden = np.ascontiguousarray(mask), np.ascontiguousarray(hidden)
