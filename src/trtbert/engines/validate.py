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
from trtbert.bundle.chain import run_chain
from trtbert.bundle.samples import sample_batches
from trtbert.engines.base import Engine
from trtbert.engines.ort import OrtEngine, OrtOptions

log = logging.getLogger(__name__)

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
    """Token-level feeds (ids, mask, token types all 0: valid for every family) for each sample shape."""
    return sample_batches(info.vocab_size, info.pad_token_id, info.max_positions, token_types=False, seed=seed)


def reference_samples(bundle: B.Bundle) -> dict[str, StageSample]:
    """Run the ONNX chain on the samples; every stage's inputs and outputs, by stage name."""
    manifest = bundle.manifest
    table = np.load(bundle.path(B.WORD_EMBEDDINGS), mmap_mode="r")
    collected: dict[str, tuple[list, list]] = {s.name: ([], []) for s in manifest.stages}
    engines: dict[str, Engine] = {
        s.file: OrtEngine(bundle.path(s.file), s.name, s.inputs, s.outputs, OrtOptions())
        for s in manifest.stages
    }

    def infer(position: int, stage: B.Stage, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        engine = engines[stage.file]
        engine.load()
        out = engine.infer(feeds)
        collected[stage.name][0].append(feeds)
        collected[stage.name][1].append(out)
        return out

    try:
        for tokens in sample_tokens(manifest.model):
            run_chain(manifest.stages, manifest.exit_layers, infer, tokens,
                      np.ascontiguousarray(table[tokens[B.INPUT_IDS]]))
    finally:
        for engine in engines.values():
            engine.unload()
    return {name: StageSample(tuple(f), tuple(o)) for name, (f, o) in collected.items()}


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
