"""The runner: tokenise, run the stages through the engine pool, stop each row at its exit.

``Runner.from_bundle(path, memory_cap=..., exit=...)`` opens and verifies a bundle and one of its
engine sets; ``predict`` returns one :class:`Prediction` per input (``predict_stream`` yields them
batch by batch); ``layer_logits`` returns every exit layer's logits with no early exit (for
evaluation sweeps with :func:`exits.exit_layers_for`).

In a batch each row exits on its own: rows that finish leave the batch and the rest go on
(``bundle/chain.py``). The word-embedding table stays on disk; only the rows of the batch's tokens
are read. Imports numpy, onnxruntime (through the engines) and tokenizers only, never torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtbert import bundle as B
from trtbert.bundle.chain import run_chain, steps
from trtbert.engines.base import Shared
from trtbert.engines.registry import create_engine
from trtbert.errors import MemoryCapError, UsageError
from trtbert.memory import LARGE_MMAP_THRESHOLD, MMAP_THRESHOLD, memory_limit, tune_allocator as tune_glibc
from trtbert.runtime.embeddings import EmbeddingTable
from trtbert.runtime.exits import (
    Budget,
    ExitRule,
    ExitState,
    LayerContext,
    as_rule,
    mean_pool,
    rule_from_policy,
    softmax,
)
from trtbert.runtime.pool import EnginePool, PoolStats
from trtbert.runtime.text import Encoded, InputLine, TextEncoder, TextInput, normalise_inputs
from trtbert.runtime.timing import StageClock
from trtbert.sizes import format_size, parse_size

log = logging.getLogger(__name__)

AUTO_HEADROOM = 0.8  # share of the memory this process may still use that an automatic cap plans for
ALLOCATOR_SLACK = 6 << 20  # heap the allocator keeps beyond engines and activations (measured: up to 4.1 MiB)
LARGE_ALLOCATOR_SLACK = 16 << 20  # the same without a cap, where freed activations stay in the heap for reuse


@dataclass(frozen=True)
class Prediction:
    """The answer for one input.

    ``label``/``label_id``/``probabilities`` for classification, ``value`` for regression.
    ``exit_layer`` is the number of layers run (1-based depth of the exit). ``timings`` are
    milliseconds: ``tokenize``, one entry per stage run (for the whole batch), ``total`` (batch
    start to this row's exit). ``truncated``: the input was longer than the model reads.
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


@dataclass
class _Batch:
    """What one batch through the chain gives: exit layer per row, logits, per-row timings (ms) and the
    ms from the batch's start to each exit layer reached."""

    exits: np.ndarray
    logits: Any
    timings: list[dict[str, float]]
    exits_ms: list[float]
    pooled: list[np.ndarray] = field(default_factory=list)


@dataclass(frozen=True)
class FullPass:
    """A pass with no early exit: logits ``(exits, rows, labels)``, ms from each row's batch start to each
    exit layer ``(exits, rows)``, and optionally each exit layer's mean-pooled hidden state
    ``(exits, rows, hidden)`` (what a learned exit reads)."""

    logits: np.ndarray
    exits_ms: np.ndarray
    pooled: np.ndarray | None = None


def activation_bytes(model: B.ModelInfo, batch: int, seq: int) -> int:
    """A bound on the activation memory of running one stage on ``(batch, seq)`` float32 inputs: hidden
    states in and out and a few temporaries (8 x B*S*H), the feed-forward intermediate (2 x B*S*4H) and
    the attention scores and probabilities (2 x B*heads*S*S). Not covered by the memory cap."""
    h, heads = model.hidden_size, model.num_heads
    return 4 * (batch * seq * (8 * h + 2 * 4 * h) + 2 * batch * heads * seq * seq)


def rss_bound(engine_bytes: int, model: B.ModelInfo, batch: int, seq: int, slack: int = ALLOCATOR_SLACK) -> int:
    """The most the process's RSS may grow above its baseline (interpreter, libraries, tokenizer, the
    backend initialised): the engines the pool may hold (the cap; the plan's bound without one), the
    activations of one stage at ``(batch, seq)``, and the allocator's slack (``Runner.allocator_slack``:
    6 MiB under a cap, 16 MiB without one, where freed activations stay in the heap). Tested from outside in
    tests/runtime/test_memory.py; described in docs/memory.md."""
    return engine_bytes + activation_bytes(model, batch, seq) + slack


class Runner:
    """Runs a bundle's stages under a memory cap with an exit rule. Use :meth:`from_bundle`; close it
    (or use it as a context manager) to free its engines."""

    def __init__(self, bundle: B.Bundle, engine_set: B.EngineSet, pool: EnginePool, encoder: TextEncoder,
                 rule: ExitRule, check: bool = False, shared: Shared | None = None) -> None:
        self.bundle = bundle
        self.shared = shared or Shared()
        self.engine_set = engine_set
        self.pool = pool
        self.encoder = encoder
        self.rule = rule
        self.check = check
        self.activation_limit: int | None = None  # split batches whose activations would exceed it
        self.allocator_slack = ALLOCATOR_SLACK  # heap the allocator may keep beyond engines and activations
        manifest = bundle.manifest
        self.labels = manifest.model.labels
        self.regression = manifest.model.problem_type == B.REGRESSION
        self.exit_layers = tuple(manifest.exit_layers)
        self._stages = list(manifest.stages)
        self._table = EmbeddingTable(bundle.path(B.WORD_EMBEDDINGS), stamp=bundle.stamps.get(B.WORD_EMBEDDINGS))
        self._depths = steps(self._stages, self.exit_layers)
        recorded = {s.name: engine_set.costs.get(engine_set.stage_files[s.name], {}).get("us", 0) / 1e3
                    for s in self._stages}
        self.clock = StageClock(recorded)
        self._keys = [engine_set.stage_files[s.name] for s in self._stages]
        if len(self.exit_layers) == 1 and rule.text != "none":
            log.warning("this bundle has only the final exit, so exit rule %s changes nothing; export with trained "
                        "exit heads (trtbert train, then trtbert export) to exit early", rule.text)

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        engines: str = B.SOURCE_SET,
        memory_cap: int | str | None = None,
        exit: str | ExitRule | None = "default",
        threads: int = 0,
        prefetch: bool = True,
        check: bool = False,
        tune_allocator: bool = False,
        activation_limit: int | str | None = None,
    ) -> Runner:
        """Open the bundle at ``path`` with engine set ``engines``, verify its files' checksums, plan the pool.

        ``memory_cap``: bytes, a size such as ``"64MiB"``, None or ``"unlimited"``, or ``"auto"`` (fit
        the memory this process may still use: its cgroup limit, the memory available); it bounds the
        recorded costs of the engines resident at once (docs/memory.md). ``exit``: a rule such as
        ``"entropy:0.3"``; ``"default"`` (or None) uses the bundle's calibrated policy, else ``none``,
        as ``trtbert run`` does. ``threads``: intra-op threads (0: one per core). ``check``: check every
        feed's dtype and shape. ``tune_allocator``: make glibc return freed engine memory to the OS (a
        process-wide setting: the CLI turns it on; see :func:`trtbert.memory.tune_allocator`).
        ``activation_limit``: bytes of activations a batch may take (bigger batches of long inputs run a few
        rows at a time); ``"auto"`` sets it with an automatic memory cap (docs/memory.md).
        """
        if not isinstance(threads, int) or threads < 0:
            raise UsageError(f"threads must be 0 (one per core) or more, got {threads!r}")
        bundle = B.load_bundle(path, verify="none")
        engine_set = bundle.engine_set(engines)
        bundle.verify(files=bundle.files_of_set(engines))
        manifest = bundle.manifest
        rule = _policy_rule(manifest, exit, engine_set, memory_cap)
        shared = Shared()
        engines_by_key: dict[str, Any] = {}
        order, sizes, loading = [], {}, {}
        for stage in manifest.stages:
            key = engine_set.stage_files[stage.name]
            if key not in engines_by_key:
                engine = create_engine(bundle, engine_set, stage, shared=shared, threads=threads)
                engines_by_key[key] = engine
                sizes[key], loading[key] = engine.nbytes, engine.load_nbytes
            order.append((stage.name, key))
        if not engine_set.costs:
            log.warning("engine set %s has no recorded memory costs (built by an older trtbert): the cap counts "
                        "each engine as twice its file; rebuild it with trtbert build --overwrite", engine_set.name)
        shared_bytes = sum(int(v) for v in engine_set.shared.values())
        auto = isinstance(memory_cap, str) and memory_cap.strip().lower() == "auto"
        activations = auto_activation_limit(manifest.model) if auto or activation_limit == "auto" else (
            None if activation_limit is None else int(activation_limit))
        cap = _resolve_cap(memory_cap, manifest.model, loading, shared_bytes, order, activations)
        pool = EnginePool(engines_by_key, order, sizes, memory_cap=cap, prefetch=prefetch, shared=shared_bytes,
                          loading=loading)
        reuse_heap = tune_allocator and cap is None  # unlimited: freed activations stay in the heap for reuse
        if tune_allocator:  # under a cap, freed memory goes back at once (the bound)
            tune_glibc(LARGE_MMAP_THRESHOLD if reuse_heap else MMAP_THRESHOLD)
        runner = cls(bundle, engine_set, pool, TextEncoder.from_bundle(bundle), rule, check, shared)
        runner.activation_limit = activations
        runner.allocator_slack = LARGE_ALLOCATOR_SLACK if reuse_heap else ALLOCATOR_SLACK
        return runner

    # --- public API ---------------------------------------------------------------------------------

    def predict(self, inputs: str | tuple[str, str] | Sequence[TextInput], batch_size: int = 8) -> list[Prediction]:
        """Classify texts and ``(text, text_b)`` pairs (mixed freely), each row stopping at its exit layer."""
        items = normalise_inputs(inputs)
        lines = (InputLine(item, f"input {i}") for i, item in enumerate(items, start=1))
        return list(self.predict_stream(lines, batch_size))

    def predict_stream(self, lines: Iterable[InputLine], batch_size: int = 8) -> Iterator[Prediction]:
        """Predictions for inputs read lazily (e.g. from :func:`~trtbert.runtime.text.iter_inputs`), yielded
        batch by batch as they are computed."""
        _check_batch(batch_size)
        total = truncated = 0
        batch: list[InputLine] = []
        for line in _with_end(lines):
            if line is not None:
                normalise_inputs([line.item], where=[line.where])
                batch.append(line)
                if len(batch) < batch_size:
                    continue
            if not batch:
                break
            items = [b.item for b in batch]
            t0 = time.perf_counter()
            encoded = self.encoder.encode(items)
            tokenize_ms = (time.perf_counter() - t0) * 1e3
            truncated += int(encoded.truncated.sum())
            total += len(items)
            self.clock.observe("tokenize", int(encoded.attention_mask.sum(axis=1).max()) * len(items), tokenize_ms)
            offset = 0
            for part in self._split(encoded):
                result = self._run(part, self.rule, t0, collect=False)
                for r in range(len(part.input_ids)):
                    yield self._prediction(items[offset + r], result.exits[r], result.logits[r],
                                           {"tokenize": tokenize_ms, **result.timings[r]}, bool(part.truncated[r]))
                offset += len(part.input_ids)
            batch = []
        self._warn_truncated(truncated, total)

    def layer_logits(self, inputs: str | tuple[str, str] | Sequence[TextInput], batch_size: int = 8) -> np.ndarray:
        """Logits of every exit layer with no early exit: ``(len(exit_layers), rows, labels)``."""
        return self.layer_logits_timed(inputs, batch_size)[0]

    def full_pass(self, inputs: str | tuple[str, str] | Sequence[TextInput], batch_size: int = 8,
                  pooled: bool = False) -> FullPass:
        """Every exit layer's logits, the milliseconds from the start of each row's batch (tokenisation
        included) to each exit layer, and (``pooled``) each exit layer's mean-pooled hidden state: what
        replaying and calibrating an exit rule offline needs."""
        items = normalise_inputs(inputs)
        _check_batch(batch_size)
        parts, times, hidden, truncated = [], [], [], 0
        for start in range(0, len(items), batch_size):
            t0 = time.perf_counter()
            encoded = self.encoder.encode(items[start:start + batch_size])
            truncated += int(encoded.truncated.sum())
            for part in self._split(encoded):
                batch = self._run(part, ExitRule("none"), t0, collect=True, pool_hidden=pooled)
                parts.append(batch.logits)
                times.append(np.repeat(np.asarray(batch.exits_ms)[:, None], len(part.input_ids), axis=1))
                if pooled:
                    hidden.append(np.stack(batch.pooled))
        self._warn_truncated(truncated, len(items))
        return FullPass(np.concatenate(parts, axis=1), np.concatenate(times, axis=1),
                        np.concatenate(hidden, axis=1) if pooled else None)

    def layer_logits_timed(self, inputs: str | tuple[str, str] | Sequence[TextInput],
                           batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Every exit layer's logits ``(exits, rows, labels)`` and the ms to each exit layer ``(exits, rows)``."""
        result = self.full_pass(inputs, batch_size)
        return result.logits, result.exits_ms

    def reload_policy(self) -> None:
        """Take the bundle's exit policy as the manifest on disk holds it now (after a calibration)."""
        import dataclasses

        policy = B.read_manifest(self.bundle.root).exit_policy
        manifest = dataclasses.replace(self.bundle.manifest, exit_policy=policy)
        self.bundle = B.Bundle(self.bundle.root, manifest, self.bundle.stamps)

    def resolve_rule(self, rule: str | ExitRule | None) -> ExitRule:
        """An exit rule for this bundle: ``default``/None is its calibrated policy, a learned rule gets the
        policy's parameters."""
        return _policy_rule(self.bundle.manifest, rule, self.engine_set, self.pool.memory_cap)

    def stats(self) -> PoolStats:
        """The pool's counters: loads, evictions, peak bytes, load seconds, prefetches ..."""
        return self.pool.stats()

    def close(self) -> None:
        """Free every engine and what they share. Idempotent."""
        self.pool.close()
        self.shared.close()
        self._table.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the loop ----------------------------------------------------------------------------------------

    def _split(self, enc: Encoded) -> list[Encoded]:
        """The batch as sub-batches whose activations stay within ``activation_limit`` (long inputs run a
        few rows at a time; a row's answer does not depend on its batchmates), padding trimmed per part."""
        rows, seq = enc.input_ids.shape
        model = self.bundle.manifest.model
        if self.activation_limit is None or activation_bytes(model, rows, seq) <= self.activation_limit:
            return [enc]
        per_row = activation_bytes(model, 1, seq)
        step = max(1, self.activation_limit // per_row)
        parts = []
        for start in range(0, rows, step):
            sl = slice(start, start + step)
            width = max(1, int(enc.attention_mask[sl].sum(axis=1).max()))
            parts.append(Encoded(enc.input_ids[sl, :width], enc.token_type_ids[sl, :width],
                                 enc.attention_mask[sl, :width], enc.truncated[sl]))
        return parts

    def _stage(self, position: int, feeds: dict[str, np.ndarray], timings: dict[str, float],
               compute: dict[str, float], tokens: int) -> dict[str, np.ndarray]:
        stage = self._stages[position]
        start = time.perf_counter()
        loads_before = engine_loads(self.pool, self._keys[position])
        engine = self.pool.acquire(position)
        try:
            self.pool.prefetch(position + 1)
            ready = time.perf_counter()
            out = engine.infer(feeds, check=self.check)
        finally:
            self.pool.release(position)
        end = time.perf_counter()
        timings[stage.name] = (end - start) * 1e3
        compute[stage.name] = (end - ready) * 1e3
        loaded = engine_loads(self.pool, self._keys[position]) > loads_before
        load_ms = engine.load_seconds * 1e3 if loaded else None
        # the stage's share of a request's latency, its demand load apart (counted when not resident)
        self.clock.observe(stage.name, tokens, timings[stage.name] - (load_ms or 0.0), load_ms)
        return out

    def _expected(self, after: int, until: int, tokens: int) -> float:
        """Expected ms from the end of exit layer ``after`` (0: the start, tokenisation and embeddings
        included) to the end of exit layer ``until``."""
        positions = [0] if after == 0 else []
        for d in self._depths:
            if after < d.layer <= until:
                positions += [p for p in (d.position, d.head) if p is not None]
        names = [self._stages[p].name for p in positions]
        resident = {self._stages[p].name: self.pool.is_resident(self._keys[p]) for p in positions}
        between = self.clock.compute_ms("(between stages)", tokens) * len(names)
        start = self.clock.compute_ms("tokenize", tokens) if after == 0 else 0.0
        return start + self.clock.expected(names, tokens, resident) + between

    def _run(self, enc: Encoded, rule: ExitRule, t0: float, collect: bool, pool_hidden: bool = False) -> _Batch:
        """Run one batch: each row's exit layer, its logits (or, with ``collect``, every exit layer's
        logits for all rows), its timings, and the time to each exit layer."""
        rows = len(enc.input_ids)
        run_start = time.perf_counter()
        timings: dict[str, float] = {}
        compute: dict[str, float] = {}
        state = ExitState.start(rows)
        exits = np.zeros(rows, dtype=np.int64)
        final: list[Any] = [None] * rows
        row_timings: list[dict[str, float]] = [{} for _ in range(rows)]
        collected: list[np.ndarray] = []
        exits_ms: list[float] = []
        pooled_all: list[np.ndarray] = []
        last_exit = self.exit_layers[-1]
        budget = rule if isinstance(rule, Budget) else None
        row_tokens = int(enc.attention_mask.sum(axis=1).max()) if rows else 0

        def infer(position: int, stage: B.Stage, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return self._stage(position, feeds, timings, compute, row_tokens * len(next(iter(feeds.values()))))

        def on_exit(layer: int, logits: np.ndarray, active: np.ndarray, hidden: np.ndarray,
                    mask: np.ndarray) -> np.ndarray:
            nonlocal state
            nxt = next((x for x in self.exit_layers if x > layer), None)
            elapsed = (time.perf_counter() - t0) * 1e3
            if collect:
                collected.append(logits)
                exits_ms.append(elapsed)
            pooled = mean_pool(hidden, mask) if rule.needs_hidden or pool_hidden else None
            if pool_hidden:
                pooled_all.append(pooled)
            ctx = LayerContext(layer, nxt, elapsed, None, pooled)
            batch_tokens = row_tokens * len(active)
            # what the chain itself costs between stages (rules, bookkeeping), per stage run so far
            ran = [n for n in timings if n != "tokenize"]
            since = (time.perf_counter() - run_start) * 1e3
            self.clock.observe("(between stages)", batch_tokens, max(0.0, since - sum(timings.values())) / max(1, len(ran)))
            if budget is not None:  # expected (warm, typical) latency at this exit and the next one
                here = self._expected(0, layer, batch_tokens)
                ctx = LayerContext(layer, nxt, here, None if nxt is None else here + self._expected(layer, nxt, batch_tokens),
                                   pooled)
            done = rule.step(state, logits, ctx) | (layer >= last_exit)
            for r in np.flatnonzero(done):
                row = int(active[r])
                exits[row], final[row] = layer, logits[r].copy()
                row_timings[row] = {**timings, "total": elapsed}
            if done.all():
                self.pool.cancel_prefetch()
            elif done.any():
                state = state.keep(~done)
            return done

        embeds = self._table.gather(enc.input_ids)
        tokens = {B.INPUT_IDS: enc.input_ids, B.TOKEN_TYPE_IDS: enc.token_type_ids, B.ATTENTION_MASK: enc.attention_mask}
        run_chain(self._stages, self.exit_layers, infer, tokens, embeds, on_exit)
        return _Batch(exits, np.stack(collected) if collect else final, row_timings, exits_ms, pooled_all)

    def _prediction(self, item: TextInput, exit_layer: int, logits: np.ndarray,
                    timings: dict[str, float], truncated: bool) -> Prediction:
        text, text_b = (item, None) if isinstance(item, str) else item
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


def engine_loads(pool: EnginePool, key: str) -> int:
    """How many times the pool has loaded the engine file ``key``."""
    return pool.loads_of(key)


def _with_end(lines: Iterable[InputLine]) -> Iterator[InputLine | None]:
    yield from lines
    yield None


def _check_batch(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size!r}")


def _policy_rule(manifest: B.Manifest, exit: str | ExitRule | None, engine_set: B.EngineSet,
                 cap: int | str | None = None) -> ExitRule:
    """The exit rule to run: the one given (a learned rule takes the policy's parameters), or the bundle's
    calibrated policy (``default``), with a warning when the policy was calibrated for latency with
    another engine set or cap."""
    policy = manifest.exit_policy or {}
    if exit is None or exit == "default":
        if policy.get("objective") == "latency" and (
                policy.get("engines") not in (None, engine_set.name) or
                (isinstance(cap, int) and policy.get("memory_cap") not in (None, cap))):
            log.warning("the bundle's exit policy was calibrated for latency with engine set %s under cap %s; "
                        "here it runs with %s under %s, so its speed-up may differ (recalibrate with trtbert eval "
                        "--calibrate)", policy.get("engines"), policy.get("memory_cap"), engine_set.name, cap)
        return rule_from_policy(policy, manifest.model.problem_type)
    if isinstance(exit, str) and exit.strip().lower().startswith("learned"):
        return as_rule(exit, manifest.model.problem_type, policy.get("params"))
    return as_rule(exit, manifest.model.problem_type)


def auto_activation_limit(model: B.ModelInfo) -> int:
    """What an automatic cap reserves for activations: one input of the model's full length, or a batch
    of 8 inputs of 128 tokens, whichever is more (bigger batches of long inputs are split to fit)."""
    return max(activation_bytes(model, 1, model.max_positions), activation_bytes(model, 8, min(128, model.max_positions)))


def _resolve_cap(memory_cap: int | str | None, model: B.ModelInfo, sizes: dict[str, int], shared: int,
                 order: list[tuple[str, str]], activations: int | None) -> int | None:
    """The cap in bytes: as given, or for ``auto`` one that fits the memory this process may still use."""
    if isinstance(memory_cap, str):
        memory_cap = "auto" if memory_cap.strip().lower() == "auto" else parse_size(memory_cap)
    if memory_cap != "auto":
        if memory_cap is not None and (not isinstance(memory_cap, int) or memory_cap <= 0):
            raise UsageError(f"memory cap must be a positive number of bytes, got {memory_cap!r}")
        return memory_cap  # type: ignore[return-value]
    limit = memory_limit()
    activations = activations if activations is not None else auto_activation_limit(model)
    room = int(limit.bytes * AUTO_HEADROOM) - activations - ALLOCATOR_SLACK
    total = shared + sum(sizes.values())
    if total <= room:
        log.info("memory: %s free (%s); every engine (%s) fits, no cap", format_size(limit.bytes), limit.source,
                 format_size(total))
        return None
    names = {key: name for name, key in reversed(order)}
    largest = max(sizes, key=sizes.get)  # type: ignore[arg-type]
    if room < shared + sizes[largest]:
        raise MemoryCapError(
            f"this process can use {format_size(limit.bytes)} more ({limit.source}), too little for "
            f"{names[largest]} ({format_size(sizes[largest])}) beside activations ({format_size(activations)}); "
            "free memory, build with --int8, or give --memory-cap explicitly"
        )
    log.warning("memory: %s free (%s) cannot hold every engine (%s); capping engines at %s (pass --memory-cap "
                "to choose)", format_size(limit.bytes), limit.source, format_size(total), format_size(room))
    return room
