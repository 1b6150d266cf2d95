"""Benchmark inputs: real CoLA dev sentences and texts of exactly 128 tokens cut from them."""

from __future__ import annotations

import os
from pathlib import Path

GLUE = Path(os.environ.get("TRTBERT_GLUE_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")


def cola_sentences(limit: int) -> list[str]:
    """The first ``limit`` sentences of CoLA's dev.tsv (4th column, no header)."""
    rows = (GLUE / "CoLA" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    return [r.split("\t")[3] for r in rows if r.count("\t") >= 3][:limit]


def long_texts(tokenizer_json: Path, count: int, tokens: int = 128) -> list[str]:
    """``count`` texts of exactly ``tokens`` tokens ([CLS] and [SEP] included), cut from CoLA sentences."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    tok.no_padding()
    ids = tok.encode(" ".join(cola_sentences(5000)), add_special_tokens=False).ids
    texts = []
    for i in range(count):
        body = tokens - 2
        while True:
            text = tok.decode(ids[i * 101: i * 101 + body])
            n = len(tok.encode(text).ids)
            if n == tokens:
                break
            body -= n - tokens
        texts.append(text)
    return texts
