"""Per-architecture facts, one small spec per ``config.model_type``, held in a registry.

A spec knows where a sequence classifier keeps its embeddings, layers, pooler and classifier, and how
to run each piece on its own. Adding a family is one entry in :data:`SPECS`. Everything here takes a
``*ForSequenceClassification`` model loaded with ``attn_implementation="eager"``; layers are called
with a 4-D additive float mask, ``(B, 1, 1, S)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from trtbert.errors import ModelError

MASK_MIN = -10000.0  # additive mask value; finite so fp16 engines stay NaN-free


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, S)`` 0/1 mask -> ``(B, 1, 1, S)`` additive mask (0 keep, -1e4 drop)."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * MASK_MIN


@dataclass(frozen=True)
class ArchSpec:
    """How one family is laid out. Functions take the ``*ForSequenceClassification`` model."""

    model_type: str
    base: str  # attribute holding the backbone: model.bert, model.roberta ...
    uses_token_type_ids: bool
    embed: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    layers: Callable[[nn.Module], list[nn.Module]]  # one module per depth (ALBERT repeats one)
    pool: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (B,S,H) -> (B,H): the family's pooler on CLS
    classify: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (B,S,H) -> (B,L): the model's own head
    hidden_size: Callable[[Any], int]
    num_layers: Callable[[Any], int]
    num_heads: Callable[[Any], int]
    embedding_size: Callable[[Any], int]
    shares_layers: bool = False
    tolerance: float = 1e-4

    def backbone(self, model: nn.Module) -> nn.Module:
        """The base model (``model.bert`` ...)."""
        return getattr(model, self.base)

    def word_embeddings(self, model: nn.Module) -> nn.Embedding:
        """The word-embedding table (gathered by row in the runtime)."""
        return self.backbone(model).embeddings.word_embeddings


def _position_ids(seq: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(seq, dtype=torch.long, device=like.device).unsqueeze(0)  # (1, S)


def _bert_embed(model: nn.Module, input_ids: torch.Tensor, embeds: torch.Tensor, tt: torch.Tensor | None) -> torch.Tensor:
    emb = model.bert.embeddings
    tt = torch.zeros_like(input_ids) if tt is None else tt
    x = embeds + emb.token_type_embeddings(tt) + emb.position_embeddings(_position_ids(input_ids.shape[1], input_ids))
    return emb.LayerNorm(x)  # (B, S, H)


def _roberta_embed(model: nn.Module, input_ids: torch.Tensor, embeds: torch.Tensor, tt: torch.Tensor | None) -> torch.Tensor:
    emb = model.roberta.embeddings
    pad = emb.padding_idx
    keep = input_ids.ne(pad).int()
    positions = (torch.cumsum(keep, dim=1).type_as(keep) * keep).long() + pad  # RoBERTa counts from pad+1
    tt = torch.zeros_like(input_ids) if tt is None else tt
    x = embeds + emb.token_type_embeddings(tt) + emb.position_embeddings(positions)
    return emb.LayerNorm(x)


def _albert_embed(model: nn.Module, input_ids: torch.Tensor, embeds: torch.Tensor, tt: torch.Tensor | None) -> torch.Tensor:
    emb = model.albert.embeddings
    tt = torch.zeros_like(input_ids) if tt is None else tt
    x = embeds + emb.token_type_embeddings(tt) + emb.position_embeddings(_position_ids(input_ids.shape[1], input_ids))
    return model.albert.encoder.embedding_hidden_mapping_in(emb.LayerNorm(x))  # (B, S, E) -> (B, S, H)


def _distilbert_embed(model: nn.Module, input_ids: torch.Tensor, embeds: torch.Tensor, tt: torch.Tensor | None) -> torch.Tensor:
    emb = model.distilbert.embeddings
    return emb.LayerNorm(embeds + emb.position_embeddings(_position_ids(input_ids.shape[1], input_ids)))


def _albert_layers(model: nn.Module) -> list[nn.Module]:
    cfg = model.config
    groups = model.albert.encoder.albert_layer_groups
    per_group = cfg.num_hidden_layers / cfg.num_hidden_groups
    return [groups[int(i / per_group)] for i in range(cfg.num_hidden_layers)]


def _bert_classify(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return model.classifier(model.bert.pooler(h))


def _albert_pool(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return model.albert.pooler_activation(model.albert.pooler(h[:, 0]))


def _roberta_pool(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return torch.tanh(model.classifier.dense(h[:, 0]))


def _distilbert_pool(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return torch.relu(model.pre_classifier(h[:, 0]))


def _cfg(name: str) -> Callable[[Any], int]:
    return lambda cfg: int(getattr(cfg, name))


_BERT_DIMS = dict(
    hidden_size=_cfg("hidden_size"), num_layers=_cfg("num_hidden_layers"),
    num_heads=_cfg("num_attention_heads"), embedding_size=_cfg("hidden_size"),
)

SPECS: dict[str, ArchSpec] = {
    "bert": ArchSpec(
        "bert", "bert", True, _bert_embed, lambda m: list(m.bert.encoder.layer),
        pool=lambda m, h: m.bert.pooler(h), classify=_bert_classify, **_BERT_DIMS,
    ),
    "roberta": ArchSpec(
        "roberta", "roberta", False, _roberta_embed, lambda m: list(m.roberta.encoder.layer),
        pool=_roberta_pool, classify=lambda m, h: m.classifier(h), **_BERT_DIMS,
    ),
    "albert": ArchSpec(
        "albert", "albert", True, _albert_embed, _albert_layers,
        pool=_albert_pool, classify=lambda m, h: m.classifier(_albert_pool(m, h)),
        hidden_size=_cfg("hidden_size"), num_layers=_cfg("num_hidden_layers"),
        num_heads=_cfg("num_attention_heads"), embedding_size=_cfg("embedding_size"), shares_layers=True,
    ),
    "distilbert": ArchSpec(
        "distilbert", "distilbert", False, _distilbert_embed, lambda m: list(m.distilbert.transformer.layer),
        pool=_distilbert_pool, classify=lambda m, h: m.classifier(_distilbert_pool(m, h)),
        hidden_size=_cfg("dim"), num_layers=_cfg("n_layers"), num_heads=_cfg("n_heads"), embedding_size=_cfg("dim"),
    ),
}


def get_spec(model_type: str) -> ArchSpec:
    """The spec for ``model_type``; an unknown type names the supported ones."""
    try:
        return SPECS[model_type]
    except KeyError:
        raise ModelError(
            f"model type {model_type!r} is not supported; supported: {', '.join(sorted(SPECS))}"
        ) from None
