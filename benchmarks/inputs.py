"""Benchmark inputs: real CoLA dev sentences and texts of exactly 128 tokens cut from them.

GLUE data is looked up in ``--data-dir``, else ``$TRTBERT_GLUE_DIR``, else ``../shared/data/glue`` beside
the repository; without CoLA there, the short inputs are the dev sentences of the SST-2 sample shipped
with trtbert (:func:`short_sentences` says which it used).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SST2 = REPO / "src" / "trtbert" / "data" / "samples" / "glue" / "SST-2" / "dev.tsv"


def glue_dir(given: str | Path | None = None) -> Path | None:
    """The GLUE directory: ``given``, $TRTBERT_GLUE_DIR, ../shared/data/glue beside the repository, or None."""
    for candidate in (given, os.environ.get("TRTBERT_GLUE_DIR"), REPO.parent / "shared" / "data" / "glue"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def short_sentences(limit: int, data_dir: str | Path | None = None) -> tuple[list[str], str]:
    """The first ``limit`` CoLA dev sentences (4th column of ``dev.tsv``, no header) and where they came
    from; the shipped SST-2 sample's dev sentences when CoLA is not found."""
    glue = glue_dir(data_dir)
    cola = glue / "CoLA" / "dev.tsv" if glue is not None else None
    if cola is not None and cola.is_file():
        rows = cola.read_text(encoding="utf-8").splitlines()
        return [r.split("\t")[3] for r in rows if r.count("\t") >= 3][:limit], f"CoLA dev ({cola})"
    rows = SAMPLE_SST2.read_text(encoding="utf-8").splitlines()[1:]
    return ([r.split("\t")[0] for r in rows if "\t" in r][:limit],
            f"CoLA not found (--data-dir, $TRTBERT_GLUE_DIR, ../shared/data/glue): SST-2 sample dev ({SAMPLE_SST2})")


def cola_sentences(limit: int, data_dir: str | Path | None = None) -> list[str]:
    """The first ``limit`` short sentences (see :func:`short_sentences`)."""
    return short_sentences(limit, data_dir)[0]


def long_texts(tokenizer_json: Path, count: int, tokens: int = 128, data_dir: str | Path | None = None) -> list[str]:
    """``count`` texts of exactly ``tokens`` tokens ([CLS] and [SEP] included), cut from the short sentences."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()
    tok.no_padding()
    ids = tok.encode(" ".join(cola_sentences(5000, data_dir)), add_special_tokens=False).ids
    step = max(1, min(101, (len(ids) - tokens) // max(1, count)))
    texts = []
    for i in range(count):
        body = tokens - 2
        while True:
            text = tok.decode(ids[i * step: i * step + body])
            n = len(tok.encode(text).ids)
            if n == tokens:
                break
            body -= n - tokens
        texts.append(text)
    return texts
