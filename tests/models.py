"""Registry of tiny random models, one per supported family, built in-process (no hub access).

``make_tiny_model(model_type, directory)`` saves a ``*ForSequenceClassification`` with 2 layers,
hidden size 32, and a fast WordPiece tokenizer whose vocabulary holds the words of ``SENTENCES``.
"""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "the movie was great and i loved it",
    "a dull , boring film with no story",
    "she said that he could not have been working",
    "what a wonderful day for a walk in the park",
    "the plot is thin but the actors are good",
    "i would not watch this again",
]
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]
FAMILIES = ("bert", "roberta", "albert", "distilbert")


def _vocab() -> list[str]:
    words = sorted({w for s in SENTENCES for w in s.split()})
    extra = [f"w{i}" for i in range(80)]
    return _SPECIAL + words + extra + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]


def _tokenizer(directory: Path):
    from transformers import BertTokenizerFast

    vocab = {token: i for i, token in enumerate(_vocab())}
    try:  # transformers 5: the vocabulary itself (a vocab_file argument would be ignored: 5 tokens)
        tok = BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)
    except TypeError:  # transformers 4
        vocab_file = directory / "vocab.txt"
        vocab_file.write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
        tok = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=64)
    assert len(tok) == len(vocab), f"tiny tokenizer has {len(tok)} tokens, expected {len(vocab)}"
    tok.save_pretrained(str(directory))
    return tok


def make_tiny_model(model_type: str, directory: Path, num_labels: int = 2, layers: int = 2, seed: int = 0) -> Path:
    """Save a tiny random classifier of ``model_type`` with a fast tokenizer into ``directory``."""
    import torch
    from transformers import (
        AlbertConfig,
        AlbertForSequenceClassification,
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(directory)
    vocab = len(_vocab())
    common = dict(vocab_size=vocab, num_labels=num_labels, pad_token_id=tok.pad_token_id)
    bert_like = dict(
        hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=72, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **common,
    )
    if model_type == "bert":
        config, cls = BertConfig(**bert_like), BertForSequenceClassification
    elif model_type == "roberta":
        config, cls = RobertaConfig(**{**bert_like, "type_vocab_size": 1}), RobertaForSequenceClassification
    elif model_type == "albert":
        config, cls = AlbertConfig(embedding_size=16, **bert_like), AlbertForSequenceClassification
    elif model_type == "distilbert":
        config = DistilBertConfig(dim=32, n_layers=layers, n_heads=2, hidden_dim=37, max_position_embeddings=72, **common)
        cls = DistilBertForSequenceClassification
    else:
        raise ValueError(f"no tiny model for {model_type}")
    if num_labels == 1:
        config.problem_type = "regression"
    torch.manual_seed(seed)
    model = cls(config)
    model.save_pretrained(str(directory))
    return directory
