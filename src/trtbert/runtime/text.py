"""Tokenisation for the runtime: the bundle's ``tokenizer/tokenizer.json`` through ``tokenizers``.

Single texts or ``(a, b)`` pairs; padded to the longest input of the batch; truncated to the model's
``max_positions`` (longest-first for pairs, as transformers does). Empty or whitespace-only text is a
:class:`UsageError`. No transformers, no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtbert.bundle import TOKENIZER_JSON, Bundle
from trtbert.errors import BundleError, UsageError

log = logging.getLogger(__name__)

TextInput = str | tuple[str, str]


@dataclass(frozen=True)
class Encoded:
    """One batch as int64 arrays ``(rows, seq)``; ``truncated`` says which rows lost tokens."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    truncated: np.ndarray  # (rows,) bool


def normalise_inputs(inputs: str | tuple[str, str] | Sequence[TextInput]) -> tuple[list[TextInput], bool]:
    """A list of texts or of pairs (never mixed), and whether they are pairs.

    Raises :class:`UsageError` on an empty list, a mix of texts and pairs, or empty text.
    """
    if isinstance(inputs, str) or (isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(t, str) for t in inputs)):
        items: list = [inputs]
    else:
        items = [tuple(i) if isinstance(i, list) else i for i in inputs]
    if not items:
        raise UsageError("no input text given")
    pairs = not isinstance(items[0], str)
    for n, item in enumerate(items, start=1):
        parts = (item,) if isinstance(item, str) else item
        if isinstance(item, str) == pairs or (pairs and (not isinstance(item, tuple) or len(item) != 2)):
            raise UsageError(f"input {n}: give either texts or (text, text_b) pairs, not a mix")
        for part in parts:
            if not isinstance(part, str):
                raise UsageError(f"input {n}: expected text, got {type(part).__name__}")
            if not part.strip():
                raise UsageError(f"input {n} is empty or only whitespace; give some text")
    return items, pairs


class TextEncoder:
    """Turns texts or pairs into padded, truncated id arrays with the bundle's fast tokenizer."""

    def __init__(self, tokenizer_json: str, max_length: int, pad_id: int) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(tokenizer_json)
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise BundleError(f"cannot read {tokenizer_json}: {str(exc).splitlines()[0]}; re-export the bundle") from None
        self.max_length = max_length
        self.pad_id = pad_id
        pad_token = self._tok.id_to_token(pad_id) or "[PAD]"
        self._tok.enable_truncation(max_length=max_length, strategy="longest_first")
        self._tok.enable_padding(pad_id=pad_id, pad_token=pad_token, pad_type_id=0)

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> TextEncoder:
        """The encoder of a bundle (``tokenizer/tokenizer.json``, ``max_positions``, pad id)."""
        model = bundle.manifest.model
        return cls(str(bundle.path(TOKENIZER_JSON)), model.max_positions, model.pad_token_id)

    def encode(self, items: Sequence[TextInput]) -> Encoded:
        """Encode one batch (already checked by :func:`normalise_inputs`)."""
        batch = [tuple(i) if not isinstance(i, str) else i for i in items]
        encodings = self._tok.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        truncated = np.array([bool(e.overflowing) for e in encodings], dtype=bool)
        return Encoded(ids, types, mask, truncated)


def read_tsv(path: str | Path) -> list[TextInput]:
    """Inputs from a TSV file: one text per line, or two tab-separated columns (pairs) on every line.

    Empty lines are skipped; a file mixing one- and two-column lines, or with more columns, is a
    :class:`UsageError`.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    items: list[TextInput] = []
    width = None
    for n, line in enumerate(lines, start=1):
        if not line:
            continue
        cols = line.split("\t")
        if len(cols) > 2:
            raise UsageError(f"{path}:{n} has {len(cols)} tab-separated columns; give one text or two (a pair) per line")
        if width is not None and len(cols) != width:
            raise UsageError(f"{path}:{n} has {len(cols)} column(s) but earlier lines have {width}; do not mix texts and pairs")
        width = len(cols)
        items.append(cols[0] if len(cols) == 1 else (cols[0], cols[1]))
    if not items:
        raise UsageError(f"{path} holds no text")
    return items
