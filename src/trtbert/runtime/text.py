"""Tokenisation for the runtime: the bundle's ``tokenizer/tokenizer.json`` through ``tokenizers``.

Single texts and ``(a, b)`` pairs, mixed freely in one call; padded to the longest input of the batch;
truncated to the model's ``max_positions`` (longest-first for pairs, as transformers does). Empty text
(nothing but whitespace or invisible format characters such as U+200B) is a :class:`UsageError`
naming the input (or its ``file:line``). No transformers, no torch.

Work per input is bounded: a text far longer than the model can read is cut at a word boundary before
tokenising, at a point that still yields more tokens than the model takes (checked by tokenising the
cut), so a 100,000-word line costs about what a 512-token one does and truncates exactly as the whole
text would.
"""

from __future__ import annotations

import logging
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtbert.bundle import TOKENIZER_JSON, Bundle
from trtbert.errors import BundleError, UsageError, first_line

log = logging.getLogger(__name__)

TextInput = str | tuple[str, str]
CHARS_PER_TOKEN = 8  # first guess of characters per token when cutting a long text
MAX_CUT_CHARS = 4 << 20  # a "word" longer than this is cut here whatever it would tokenise to


@dataclass(frozen=True)
class Encoded:
    """One batch as int64 arrays ``(rows, seq)``; ``truncated`` says which rows lost tokens."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    truncated: np.ndarray  # (rows,) bool


def is_blank(text: str) -> bool:
    """True if ``text`` has nothing a tokenizer would keep: whitespace, control or format characters."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp") for ch in text)


def _check_text(text: Any, where: str) -> str:
    if not isinstance(text, str):
        raise UsageError(f"{where}: expected text, got {type(text).__name__}")
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise UsageError(f"{where} is not valid UTF-8 text (undecodable bytes); convert it to UTF-8")
    if is_blank(text):
        raise UsageError(f"{where} is empty or only whitespace; give some text")
    return text


def normalise_inputs(inputs: Any, where: Sequence[str] | None = None) -> list[TextInput]:
    """A list of texts and ``(text, text_b)`` pairs, each checked; ``where`` names each input in errors
    (``file:line``), else ``input N``.

    Raises :class:`UsageError` on no input, something that is not text, or empty text.
    """
    if inputs is None:
        raise UsageError("no input text given (got None); pass a text, a (text, text_b) pair or a list of them")
    if isinstance(inputs, str) or (isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(t, str) for t in inputs)):
        items: list[Any] = [inputs]
    else:
        try:
            items = list(inputs)
        except TypeError:
            raise UsageError(f"expected texts or (text, text_b) pairs, got {type(inputs).__name__}") from None
    if not items:
        raise UsageError("no input text given")
    out: list[TextInput] = []
    for n, item in enumerate(items, start=1):
        name = where[n - 1] if where is not None else f"input {n}"
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise UsageError(f"{name}: a pair has two texts, got {len(item)}")
            out.append((_check_text(item[0], name), _check_text(item[1], name)))
        else:
            out.append(_check_text(item, name))
    return out


class TextEncoder:
    """Turns texts or pairs into padded, truncated id arrays with the bundle's fast tokenizer."""

    def __init__(self, tokenizer_json: str, max_length: int, pad_id: int) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(tokenizer_json)
            self._plain = Tokenizer.from_file(tokenizer_json)  # no truncation or padding: for cutting long texts
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a plain Exception for a bad file
            if type(exc) is not Exception and not isinstance(exc, (OSError, ValueError)):
                raise
            raise BundleError(f"cannot read {tokenizer_json}: {first_line(exc)}; re-export the bundle") from exc
        self.max_length = max_length
        self.pad_id = pad_id
        pad_token = self._tok.id_to_token(pad_id) or "[PAD]"
        self._tok.enable_truncation(max_length=max_length, strategy="longest_first")
        self._tok.enable_padding(pad_id=pad_id, pad_token=pad_token, pad_type_id=0)
        self._plain.no_truncation()
        self._plain.no_padding()

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> TextEncoder:
        """The encoder of a bundle (``tokenizer/tokenizer.json``, ``max_positions``, pad id)."""
        model = bundle.manifest.model
        return cls(str(bundle.path(TOKENIZER_JSON)), model.max_positions, model.pad_token_id)

    def cut(self, text: str) -> tuple[str, bool]:
        """``text``, or a prefix ending at a word boundary that still has more tokens than the model
        reads (so truncation is unchanged); and whether it was cut."""
        limit = self.max_length * CHARS_PER_TOKEN
        while len(text) > limit:
            space = max(text.rfind(" ", 0, limit), text.rfind("\n", 0, limit), text.rfind("\t", 0, limit))
            head = text[:space] if space > limit // 2 else text[:limit]
            if len(self._plain.encode(head, add_special_tokens=False).ids) > self.max_length + 1:
                return head, True
            if limit >= MAX_CUT_CHARS:
                return head, True
            limit *= 2
        return text, False

    def encode(self, items: Sequence[TextInput]) -> Encoded:
        """Encode one batch (already checked by :func:`normalise_inputs`)."""
        batch: list[Any] = []
        cut_rows = []
        for item in items:
            parts = (item,) if isinstance(item, str) else tuple(item)
            cuts = [self.cut(p) for p in parts]
            cut_rows.append(any(c for _, c in cuts))
            batch.append(cuts[0][0] if len(cuts) == 1 else (cuts[0][0], cuts[1][0]))
        encodings = self._tok.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        truncated = np.array([bool(e.overflowing) or c for e, c in zip(encodings, cut_rows)], dtype=bool)
        return Encoded(ids, types, mask, truncated)


@dataclass(frozen=True)
class InputLine:
    """One input read from a file: the text (or pair) and where it came from (``file:line``)."""

    item: TextInput
    where: str


def _lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Lines of a UTF-8 file (or stdin for ``-``), byte-order mark removed."""
    if str(path) == "-":
        stream = sys.stdin.buffer
        close = False
    else:
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
        close = True
    try:
        for n, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(f"{path}:{n} is not UTF-8 text ({exc.reason} at byte {exc.start}); convert "
                                 "the file to UTF-8") from None
            if n == 1:
                line = line.removeprefix("\ufeff")
            yield n, line.rstrip("\r\n")
    finally:
        if close:
            stream.close()


def iter_inputs(path: str | Path) -> Iterator[InputLine]:
    """Inputs from a file (``-``: stdin), one per line, read as they are needed: one text per line, or
    two tab-separated columns (pairs) on every line. Empty lines are skipped; a blank text, a file
    mixing one- and two-column lines, or more columns is a :class:`UsageError` naming ``file:line``."""
    name = "<stdin>" if str(path) == "-" else str(path)
    width = None
    seen = False
    for n, line in _lines(path):
        if not line:
            continue
        cols = line.split("\t")
        where = f"{name}:{n}"
        if len(cols) > 2:
            raise UsageError(f"{where} has {len(cols)} tab-separated columns; give one text or two (a pair) per line")
        if width is not None and len(cols) != width:
            raise UsageError(f"{where} has {len(cols)} column(s) but earlier lines have {width}; do not mix texts and pairs")
        width = len(cols)
        item: TextInput = cols[0] if len(cols) == 1 else (cols[0], cols[1])
        normalise_inputs([item], where=[where])
        seen = True
        yield InputLine(item, where)
    if not seen:
        raise UsageError(f"{name} holds no text")


def read_inputs(path: str | Path) -> list[TextInput]:
    """Every input of a file (see :func:`iter_inputs`)."""
    return [line.item for line in iter_inputs(path)]
