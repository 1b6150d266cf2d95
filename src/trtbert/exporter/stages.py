"""Stage wrappers: small ``nn.Module``s that run one piece of a classifier on its own.

The word-embedding table is not part of any graph: the runtime gathers the rows of the input's
tokens from a memory-mapped ``word_embeddings.npy`` and feeds them as ``inputs_embeds``.
"""

from __future__ import annotations

import torch
from torch import nn

from trtbert import bundle as B
from trtbert.modeling.heads import ExitHead
from trtbert.modeling.specs import ArchSpec, additive_mask


class EmbeddingsStage(nn.Module):
    """``input_ids, [token_type_ids,] inputs_embeds -> hidden_states (B, S, H)``."""

    def __init__(self, model: nn.Module, spec: ArchSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec

    @property
    def input_names(self) -> list[str]:
        """Graph input names, in forward order."""
        if self.spec.uses_token_type_ids:
            return [B.INPUT_IDS, B.TOKEN_TYPE_IDS, B.INPUTS_EMBEDS]
        return [B.INPUT_IDS, B.INPUTS_EMBEDS]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.spec.uses_token_type_ids:
            input_ids, token_type_ids, embeds = inputs
        else:
            (input_ids, embeds), token_type_ids = inputs, None
        return self.spec.embed(self.model, input_ids, embeds, token_type_ids)  # (B, S, H)


class _Readout(nn.Module):
    """Logits of one exit: an intermediate :class:`ExitHead`, or the model's own classifier."""

    def __init__(self, model: nn.Module, spec: ArchSpec, head: ExitHead | None) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.head = head

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            return self.spec.classify(self.model, hidden)  # (B, num_labels)
        return self.head(hidden, attention_mask, shared_pool=lambda h: self.spec.pool(self.model, h))


class LayerStage(nn.Module):
    """``hidden_states, attention_mask -> hidden_states_out [, logits]``.

    ``readout`` is None for a layer without an exit (or whose exit is a separate head stage).
    """

    def __init__(self, layer: nn.Module, readout: _Readout | None) -> None:
        super().__init__()
        self.layer = layer
        self.readout = readout

    @property
    def output_names(self) -> list[str]:
        """Graph output names."""
        return [B.HIDDEN_OUT, B.LOGITS] if self.readout is not None else [B.HIDDEN_OUT]

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.layer(hidden, additive_mask(attention_mask, hidden.dtype))  # (B, S, H)
        if isinstance(out, tuple):  # older transformers return (hidden, ...)
            out = out[0]
        if self.readout is None:
            return (out,)
        return out, self.readout(out, attention_mask)


class HeadStage(nn.Module):
    """``hidden_states, attention_mask -> logits``: an exit kept apart from its (shared) layer."""

    def __init__(self, readout: _Readout) -> None:
        super().__init__()
        self.readout = readout

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.readout(hidden, attention_mask)


def readout(model: nn.Module, spec: ArchSpec, head: ExitHead | None) -> _Readout:
    """The exit logits module of one layer: ``head``, or the model's classifier when ``head`` is None."""
    return _Readout(model, spec, head)
