"""Sample inputs of the bundle contract: what export validates every stage on, and what ``build``
checks every engine against (real shapes, one row half padded)."""

from __future__ import annotations

import numpy as np

from trtbert.bundle.manifest import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS

SAMPLE_SHAPES = ((2, 16), (1, 7))  # (batch, sequence): the second proves the axes are dynamic


def sample_batch(vocab_size: int, pad_id: int, batch: int, seq: int, seed: int = 0,
                 token_types: bool = True) -> dict[str, np.ndarray]:
    """Random token ids with the last row padded to half length; token types 0 then 1 (or all 0)."""
    rng = np.random.default_rng(seed)
    low = min(5, vocab_size - 1)
    ids = rng.integers(low, vocab_size, size=(batch, seq), dtype=np.int64)
    ids[ids == pad_id] = low if low != pad_id else low + 1
    mask = np.ones((batch, seq), dtype=np.int64)
    if batch > 1:
        mask[-1, max(1, seq // 2):] = 0
        ids[-1, max(1, seq // 2):] = pad_id
    types = np.zeros((batch, seq), dtype=np.int64)
    if token_types:
        types[:, seq // 3 * 2:] = 1
    return {INPUT_IDS: ids, ATTENTION_MASK: mask, TOKEN_TYPE_IDS: types * mask}


def sample_batches(vocab_size: int, pad_id: int, max_positions: int, token_types: bool = True,
                   seed: int = 0) -> list[dict[str, np.ndarray]]:
    """One :func:`sample_batch` per :data:`SAMPLE_SHAPES` entry (sequence cut at ``max_positions``)."""
    return [sample_batch(vocab_size, pad_id, b, min(s, max_positions), seed=seed + i, token_types=token_types)
            for i, (b, s) in enumerate(SAMPLE_SHAPES)]
