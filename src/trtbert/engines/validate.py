"""Check built engines against the bundle's ONNX stages on sample inputs.

The samples are real token ids of the model's vocabulary (two shapes, one row half padded); every
stage's reference inputs and outputs come from running the exported ONNX chain on them (word rows
gathered from ``word_embeddings.npy`` as the runtime does), so each built stage sees the hidden
states it will see in use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from trtbert import bundle as B
from trtbert.engines.base import Engine
from trtbert.engines.ort import OrtEngine, OrtOptions

log = logging.getLogger(__name__)

SAMPLE_SHAPES = ((2, 16), (1, 7))  # (batch, sequence)
# (absolute, relative to the largest reference value): a stage passes if max|diff| <= atol + rtol * max|ref|.
TOLERANCES: dict[str, tuple[float, float]] = {"fp32": (1e-4, 1e-4), "fp16": (1e-2, 1e-2)}
INT8_WARN = (0.25, 0.05)  # int8 is reported, never failed; above this bound the build warns


@dataclass(frozen=True)
class StageSample:
    """One stage's reference inputs and outputs on each sample shape."""

    feeds: tuple[dict[str, np.ndarray], ...]
    outputs: tuple[dict[str, np.ndarray], ...]


@dataclass(frozen=True)
class Comparison:
    """Largest absolute difference of a stage's outputs and the largest reference magnitude."""

    max_diff: float
    scale: float

    def within(self, atol: float, rtol: float) -> bool:
        """Whether the difference is inside ``atol + rtol * scale``."""
        return bool(self.max_diff <= atol + rtol * self.scale)


def sample_tokens(info: B.ModelInfo, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Token-level feeds (ids, mask, token types) for each sample shape."""
    from trtbert.exporter.export import sample_batch  # numpy only

    samples = []
    for i, (batch, seq) in enumerate(SAMPLE_SHAPES):
        feeds = sample_batch(info.vocab_size, info.pad_token_id, batch, min(seq, info.max_positions), seed=seed + i)
        feeds[B.TOKEN_TYPE_IDS][:] = 0  # valid for every family (RoBERTa has one token type)
        samples.append(feeds)
    return samples


def reference_samples(bundle: B.Bundle) -> dict[str, StageSample]:
    """Run the ONNX chain on the samples; every stage's inputs and outputs, by stage name."""
    manifest = bundle.manifest
    table = np.load(bundle.path(B.WORD_EMBEDDINGS), mmap_mode="r")
    tokens = sample_tokens(manifest.model)
    hidden = {}  # layer depth -> hidden states after it, per sample
    collected: dict[str, tuple[list, list]] = {s.name: ([], []) for s in manifest.stages}
    engines: dict[str, Engine] = {
        s.file: OrtEngine(bundle.path(s.file), s.name, s.inputs, s.outputs, OrtOptions())
        for s in manifest.stages
    }
    try:
        for i, tok in enumerate(tokens):
            state = None
            for stage in manifest.stages:
                if stage.kind == B.EMBEDDINGS:
                    available = {**tok, B.INPUTS_EMBEDS: np.ascontiguousarray(table[tok[B.INPUT_IDS]])}
                elif stage.kind == B.LAYER:
                    available = {B.HIDDEN: state, B.ATTENTION_MASK: tok[B.ATTENTION_MASK]}
                else:  # a separate head reads its layer's output
                    available = {B.HIDDEN: hidden[(i, stage.layer)], B.ATTENTION_MASK: tok[B.ATTENTION_MASK]}
                feeds = {t.name: available[t.name] for t in stage.inputs}
                out = _run(engines[stage.file], stage, feeds)
                collected[stage.name][0].append(feeds)
                collected[stage.name][1].append(out)
                if stage.kind == B.EMBEDDINGS:
                    state = out[B.HIDDEN]
                elif stage.kind == B.LAYER:
                    state = out[B.HIDDEN_OUT]
                    hidden[(i, stage.layer)] = state
    finally:
        for engine in engines.values():
            engine.unload()
    return {name: StageSample(tuple(f), tuple(o)) for name, (f, o) in collected.items()}


def _run(engine: Engine, stage: B.Stage, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    engine.load()
    return engine.infer(feeds)


def compare(engine: Engine, stage: B.Stage, sample: StageSample) -> Comparison:
    """Run ``engine`` on the stage's reference inputs; the worst difference over outputs and shapes."""
    worst, scale = 0.0, 0.0
    engine.load()
    try:
        for feeds, expected in zip(sample.feeds, sample.outputs):
            got = engine.infer(feeds)
            for name, ref in expected.items():
                diff = np.abs(got[name].astype(np.float64) - ref.astype(np.float64))
                worst = max(worst, float(np.nanmax(diff)) if np.isfinite(diff).all() else float("inf"))
                scale = max(scale, float(np.max(np.abs(ref))))
    finally:
        engine.unload()
    return Comparison(worst, scale)
