"""A sequence classifier with its exit heads as one module, the cached-feature heads, and the losses.

Layer ``L`` (the last) exits through the model's own classifier; layers ``1 .. L-1`` through
:class:`~trtbert.modeling.heads.ExitHeads`. ``hidden_states[i]`` of transformers is layer ``i``'s output
(index 0 is the embeddings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trtbert.modeling.heads import ExitHeads, masked_mean
from trtbert.modeling.specs import ArchSpec
from trtbert.train.options import LAYER_WEIGHTS


class ExitModel(nn.Module):
    """``*ForSequenceClassification`` + intermediate heads: ``forward`` gives logits per layer."""

    def __init__(self, model: nn.Module, heads: ExitHeads | None, spec: ArchSpec) -> None:
        super().__init__()
        self.model = model
        self.heads = heads
        self.spec = spec

    def shared_pool(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, S, H) -> (B, H)
        return self.spec.pool(self.model, hidden)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, S)
        attention_mask: torch.Tensor,  # (B, S)
        token_type_ids: torch.Tensor | None = None,  # (B, S)
    ) -> list[torch.Tensor | None]:  # L entries of (B, C); None where a layer has no head
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        want_hidden = self.heads is not None
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=want_hidden, **kwargs)
        num_layers = self.spec.num_layers(self.model.config)
        logits: list[torch.Tensor | None] = [None] * (num_layers - 1) + [out.logits]
        if self.heads is not None:
            for layer in self.heads.config.layers:
                head = self.heads.head(layer)
                logits[layer - 1] = head(out.hidden_states[layer], attention_mask, shared_pool=self.shared_pool)
        return logits


def readout_features(
    readout: str, model: nn.Module, spec: ArchSpec, hidden: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The frozen part of a head's input: ``(B, S, H) -> (B, H)``; cacheable when the backbone is frozen."""
    if readout == "mean":
        return masked_mean(hidden, attention_mask)
    if readout == "layer-pooler":
        return hidden[:, 0]  # the head's own dense + tanh still trains
    return spec.pool(model, hidden)  # the family's shared (frozen) pooler


def _first_token(hidden: torch.Tensor) -> torch.Tensor:
    return hidden[:, 0]


class CachedHeads(nn.Module):
    """Exit heads applied to cached read-out features ``(B, L-1, H) -> (B, L-1, C)``."""

    def __init__(self, heads: ExitHeads) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(features.shape[0], 1, dtype=torch.long, device=features.device)  # (B, 1)
        outs = []
        for i, layer in enumerate(self.heads.config.layers):
            x = features[:, i].unsqueeze(1)  # (B, 1, H): mean over one token / first token = itself
            outs.append(self.heads.head(layer)(x, ones, shared_pool=_first_token))
        return torch.stack(outs, dim=1)


def task_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """Cross-entropy, or MSE for regression (``logits`` ``(B, 1)``)."""
    if regression:
        return F.mse_loss(logits.squeeze(-1), labels)
    return F.cross_entropy(logits, labels)


def distill_loss(
    logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, regression: bool,
    temperature: float, alpha: float,
) -> torch.Tensor:
    """``(1 - alpha) * hard + alpha * soft``; soft = T^2 KL to softmax(teacher / T), or MSE for regression."""
    hard = task_loss(logits, labels, regression)
    teacher = teacher.detach()
    if regression:
        soft = F.mse_loss(logits.squeeze(-1), teacher.squeeze(-1))
    else:
        soft = F.kl_div(
            F.log_softmax(logits / temperature, dim=-1), F.softmax(teacher / temperature, dim=-1),
            reduction="batchmean",
        ) * temperature**2
    return (1.0 - alpha) * hard + alpha * soft


def layer_weights(num_layers: int, scheme: str = "pabee") -> list[float]:
    """Loss weights of exits ``1 .. L`` (summing to 1).

    - ``pabee``: ``i`` (PABEE, later layers weigh more);
    - ``uniform``: all equal (DeeBERT's sum);
    - ``cost``: prices computation: an exit at layer ``i < L`` weighs ``L + 1 - i`` (the layers it
      saves, plus one), the final exit ``L`` (as much as the first: the full model stays the reference).
    """
    if scheme not in LAYER_WEIGHTS:
        raise ValueError(f"unknown layer weights {scheme!r}")
    L = num_layers
    raw = ([float(i) for i in range(1, L + 1)] if scheme == "pabee" else [1.0] * L if scheme == "uniform"
           else [float(L + 1 - i) for i in range(1, L)] + [float(L)])
    total = sum(raw)
    return [w / total for w in raw]


def weighted_loss(losses: list[torch.Tensor], scheme: str = "pabee") -> torch.Tensor:
    """``sum_i w_i * loss_i`` over layers ``i = 1 .. L`` (list order) with :func:`layer_weights`
    (PABEE's ``i / sum_i i`` by default)."""
    return sum(w * loss for w, loss in zip(layer_weights(len(losses), scheme), losses))
