"""The runner: tokenise, run the stages through the engine pool, stop each row at its exit.

``Runner.from_bundle(path, memory_cap=..., exit=...)`` opens and verifies a bundle and one of its
engine sets; ``predict`` returns one :class:`Prediction` per input; ``layer_logits`` returns every
exit layer's logits with no early exit (for evaluation sweeps with :func:`exits.exit_layers_for`).

In a batch each row exits on its own: rows that finish leave the batch (their hidden states and mask
rows are dropped, and trailing padding columns no row needs any more are trimmed) and the rest go on.
The word-embedding table stays on disk; only the rows of the batch's tokens are read.
Imports numpy, onnxruntime (through the engines) and tokenizers only, never torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtbert import bundle as B
from trtbert.engines.registry import create_engine
from trtbert.errors import UsageError
from trtbert.runtime.embeddings import EmbeddingTable
from trtbert.runtime.exits import ExitRule, ExitState, LayerContext, as_rule, softmax
from trtbert.runtime.pool import EnginePool, PoolStats
from trtbert.runtime.text import Encoded, TextEncoder, TextInput, normalise_inputs
from trtbert.sizes import parse_size

log = logging.getLogger(__name__)

_EMA = 0.3  # weight of the newest measurement in the per-stage time estimates (budget rule)


@dataclass(frozen=True)
class Prediction:
    """The answer for one input.

    ``label``/``label_id``/``probabilities`` for classification, ``value`` for regression.
    ``exit_layer`` is the number of layers run (1-based depth of the exit). ``timings`` are
    milliseconds: ``tokenize``, one entry per stage run (for the whole batch), ``total`` (batch
    start to this row's exit).
    """

    text: str
    text_b: str | None
    label: str | None
    label_id: int | None
    probabilities: tuple[float, ...] | None
    value: float | None
    exit_layer: int
    logits: tuple[float, ...]
    timings: dict[str, float] = field(default_factory=dict)
    truncated: bool = False


@dataclass(frozen=True)
class _Depth:
    layer: int  # 1-based depth
    position: int  # of the layer stage in the pass
    head: int | None  # position of a separate head stage (ALBERT)
    exit: bool


class Runner:
    """Runs a bundle's stages under a memory cap with an exit rule. Use :meth:`from_bundle`; close it
    (or use it as a context manager) to free its engines."""

    def __init__(self, bundle: B.Bundle, engine_set: B.EngineSet, pool: EnginePool, encoder: TextEncoder,
                 rule: ExitRule, check: bool = False) -> None:
        self.bundle = bundle
        self.engine_set = engine_set
        self.pool = pool
        self.encoder = encoder
        self.rule = rule
        self.check = check
        manifest = bundle.manifest
        self.labels = manifest.model.labels
        self.regression = manifest.model.problem_type == B.REGRESSION
        self.exit_layers = tuple(manifest.exit_layers)
        self._stages = list(manifest.stages)
        self._table = EmbeddingTable(bundle.path(B.WORD_EMBEDDINGS))
        self._depths = self._plan()
        self._stage_ms: dict[str, float] = {}

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        engines: str = B.SOURCE_SET,
        memory_cap: int | str | None = None,
        exit: str | ExitRule | None = "none",
        threads: int = 0,
        prefetch: bool = True,
        check: bool = False,
    ) -> Runner:
        """Open the bundle at ``path`` with engine set ``engines``, verify its files' checksums, plan the pool.

        ``memory_cap``: bytes, a size such as ``"64MiB"``, or None (unlimited). ``exit``: a rule such as
        ``"entropy:0.3"``; ``"default"`` or None uses the manifest's exit policy (else ``none``).
        ``threads``: intra-op threads (0: one per core). ``check``: check every feed's dtype and shape.
        """
        bundle = B.load_bundle(path, verify="none")
        engine_set = bundle.engine_set(engines)
        bundle.verify(files=bundle.files_of_set(engines))
        manifest = bundle.manifest
        cap = parse_size(memory_cap) if isinstance(memory_cap, str) else memory_cap
        if cap is not None and cap <= 0:
            raise UsageError(f"memory cap must be positive, got {cap}")
        if exit is None or exit == "default":
            exit = (manifest.exit_policy or {}).get("rule") or "none"
        rule = as_rule(exit, manifest.model.problem_type)
        engines_by_key: dict[str, Any] = {}
        order, sizes = [], {}
        for stage in manifest.stages:
            key = engine_set.stage_files[stage.name] if stage.name in engine_set.stage_files else stage.file
            if key not in engines_by_key:
                engines_by_key[key] = create_engine(bundle, engine_set, stage, threads=threads)
                entry = manifest.files.get(key)
                sizes[key] = entry.size if entry is not None else bundle.path(key).stat().st_size
            order.append((stage.name, key))
        pool = EnginePool(engines_by_key, order, sizes, memory_cap=cap, prefetch=prefetch)
        runner = cls(bundle, engine_set, pool, TextEncoder.from_bundle(bundle), rule, check)
        pool.warm_up()
        return runner

    def _plan(self) -> list[_Depth]:
        depths = []
        for i, stage in enumerate(self._stages):
            if stage.kind != B.LAYER:
                continue
            head = next((j for j, s in enumerate(self._stages) if s.kind == B.HEAD and s.layer == stage.layer), None)
            depths.append(_Depth(int(stage.layer or 0), i, head, stage.layer in self.exit_layers))
        if self._stages[0].kind != B.EMBEDDINGS:
            raise UsageError("bundle stages must start with the embeddings stage; re-export it")
        return depths

    # --- public API ---------------------------------------------------------------------------------

    def predict(self, inputs: str | tuple[str, str] | Sequence[TextInput], batch_size: int = 8) -> list[Prediction]:
        """Classify texts (or ``(text, text_b)`` pairs), each row stopping at its exit layer."""
        items, pairs = normalise_inputs(inputs)
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        out: list[Prediction] = []
        truncated = 0
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            t0 = time.perf_counter()
            encoded = self.encoder.encode(chunk)
            tokenize_ms = (time.perf_counter() - t0) * 1e3
            truncated += int(encoded.truncated.sum())
            exits, logits, timings = self._run(encoded, self.rule, t0, collect=False)
            for r, item in enumerate(chunk):
                out.append(self._prediction(item, pairs, exits[r], logits[r],
                                            {"tokenize": tokenize_ms, **timings[r]}, bool(encoded.truncated[r])))
        self._warn_truncated(truncated, len(items))
        return out

    def layer_logits(self, inputs: str | tuple[str, str] | Sequence[TextInput], batch_size: int = 8) -> np.ndarray:
        """Logits of every exit layer with no early exit: ``(len(exit_layers), rows, labels)``."""
        items, _ = normalise_inputs(inputs)
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        parts, truncated = [], 0
        for start in range(0, len(items), batch_size):
            encoded = self.encoder.encode(items[start:start + batch_size])
            truncated += int(encoded.truncated.sum())
            parts.append(self._run(encoded, ExitRule("none"), time.perf_counter(), collect=True)[1])
        self._warn_truncated(truncated, len(items))
        return np.concatenate(parts, axis=1)

    def stats(self) -> PoolStats:
        """The pool's counters: loads, evictions, peak bytes, load seconds ..."""
        return self.pool.stats()

    def close(self) -> None:
        """Free every engine. Idempotent."""
        self.pool.close()
        self._table.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the loop ----------------------------------------------------------------------------------------

    def _stage(self, position: int, feeds: dict[str, np.ndarray], timings: dict[str, float]) -> dict[str, np.ndarray]:
        stage = self._stages[position]
        start = time.perf_counter()
        engine = self.pool.acquire(position)
        try:
            self.pool.prefetch(position + 1)
            wanted = {t.name for t in stage.inputs}
            out = engine.infer({k: v for k, v in feeds.items() if k in wanted}, check=self.check)
        finally:
            self.pool.release(position)
        ms = (time.perf_counter() - start) * 1e3
        timings[stage.name] = ms
        old = self._stage_ms.get(stage.name)
        self._stage_ms[stage.name] = ms if old is None else (1 - _EMA) * old + _EMA * ms
        return out

    def _segment_ms(self, after: int, until: int, run_so_far: list[float]) -> float:
        """Estimated milliseconds from the end of layer ``after`` to the end of exit layer ``until``."""
        fallback = float(np.mean(run_so_far)) if run_so_far else 0.0
        total = 0.0
        for depth in self._depths:
            if after < depth.layer <= until:
                for pos in (depth.position, depth.head):
                    if pos is not None:
                        total += self._stage_ms.get(self._stages[pos].name, fallback)
        return total

    def _run(self, enc: Encoded, rule: ExitRule, t0: float, collect: bool) -> tuple[np.ndarray, Any, list[dict[str, float]]]:
        """Run one batch. Returns each row's exit layer, its logits (or, with ``collect``, every exit
        layer's logits for all rows) and its timings."""
        rows = len(enc.input_ids)
        ids, mask = enc.input_ids, enc.attention_mask
        timings: dict[str, float] = {}
        embeds = self._table.gather(ids)
        feeds = {B.INPUT_IDS: ids, B.TOKEN_TYPE_IDS: enc.token_type_ids, B.INPUTS_EMBEDS: embeds}
        hidden = self._stage(0, feeds, timings)[B.HIDDEN]
        active = np.arange(rows)
        state = ExitState.start(rows)
        exits = np.zeros(rows, dtype=np.int64)
        final: list[Any] = [None] * rows
        row_timings: list[dict[str, float]] = [{} for _ in range(rows)]
        collected: list[np.ndarray] = []
        layer_ms: list[float] = []
        last_exit = self.exit_layers[-1]
        for depth in self._depths:
            out = self._stage(depth.position, {B.HIDDEN: hidden, B.ATTENTION_MASK: mask}, timings)
            layer_ms.append(timings[self._stages[depth.position].name])
            hidden = out[B.HIDDEN_OUT]
            if not depth.exit:
                continue
            if depth.head is not None:
                logits = self._stage(depth.head, {B.HIDDEN: hidden, B.ATTENTION_MASK: mask}, timings)[B.LOGITS]
            else:
                logits = out[B.LOGITS]
            if collect:
                collected.append(logits)
            nxt = next((layer for layer in self.exit_layers if layer > depth.layer), None)
            elapsed = (time.perf_counter() - t0) * 1e3
            ctx = LayerContext(depth.layer, nxt, elapsed,
                               None if nxt is None else elapsed + self._segment_ms(depth.layer, nxt, layer_ms))
            done = rule.step(state, logits, ctx) | (depth.layer >= last_exit)
            if not done.any():
                continue
            for r in np.flatnonzero(done):
                row = int(active[r])
                exits[row], final[row] = depth.layer, logits[r].copy()
                row_timings[row] = {**timings, "total": elapsed}
            if done.all():
                self.pool.cancel_prefetch()
                break
            keep = ~done
            active, state, mask, hidden = active[keep], state.keep(keep), mask[keep], hidden[keep]
            width = int(mask.sum(axis=1).max())
            if width < mask.shape[1]:  # padding columns no remaining row needs
                mask, hidden = mask[:, :width], hidden[:, :width]
            mask, hidden = np.ascontiguousarray(mask), np.ascontiguousarray(hidden)
        if collect:
            return exits, np.stack(collected), row_timings
        return exits, final, row_timings

    def _prediction(self, item: TextInput, pairs: bool, exit_layer: int, logits: np.ndarray,
                    timings: dict[str, float], truncated: bool) -> Prediction:
        text, text_b = (item if pairs else (item, None))  # type: ignore[misc]
        values = tuple(float(v) for v in logits)
        if self.regression:
            return Prediction(text, text_b, None, None, None, values[0], int(exit_layer), values, timings, truncated)
        probs = softmax(logits)
        label_id = int(np.argmax(probs))
        label = self.labels[label_id] if label_id < len(self.labels) else str(label_id)
        return Prediction(text, text_b, label, label_id, tuple(float(p) for p in probs), None, int(exit_layer),
                          values, timings, truncated)

    def _warn_truncated(self, truncated: int, total: int) -> None:
        if truncated:
            log.warning("%d of %d inputs were longer than %d tokens and were truncated",
                        truncated, total, self.encoder.max_length)
