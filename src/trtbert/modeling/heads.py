"""Exit heads ("off-ramps") as PyTorch modules, shared by ``train`` and ``export``.

Their checkpoint format (``trtbert_heads.json`` + ``trtbert_heads.safetensors``, the read-outs) is
described in :mod:`trtbert.modeling.checkpoint`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from trtbert.errors import ModelError
from trtbert.modeling.checkpoint import HEADS_CONFIG, HEADS_WEIGHTS, READOUTS, HeadsConfig

log = logging.getLogger(__name__)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token states over real tokens: ``(B, S, H), (B, S) -> (B, H)``."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, S, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class ExitHead(nn.Module):
    """One off-ramp: read-out of a layer's hidden states, dropout, linear to the labels."""

    def __init__(self, hidden_size: int, num_labels: int, readout: str = "mean", dropout: float = 0.1) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ModelError(f"unknown read-out {readout!r}; choose one of {', '.join(READOUTS)}")
        self.readout = readout
        self.dense = nn.Linear(hidden_size, hidden_size) if readout == "layer-pooler" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(
        self,
        hidden: torch.Tensor,  # (B, S, H)
        attention_mask: torch.Tensor,  # (B, S)
        shared_pool: nn.Module | None = None,
    ) -> torch.Tensor:  # (B, num_labels)
        if self.readout == "mean":
            pooled = masked_mean(hidden, attention_mask)
        elif self.readout == "layer-pooler":
            assert self.dense is not None
            pooled = torch.tanh(self.dense(hidden[:, 0]))
        else:
            if shared_pool is None:
                raise ValueError("the 'pooler' read-out needs the family's pooler (shared_pool)")
            pooled = shared_pool(hidden)
        return self.classifier(self.dropout(pooled))


class ExitHeads(nn.Module):
    """The intermediate exit heads of one model, keyed by 1-based layer."""

    def __init__(self, config: HeadsConfig) -> None:
        super().__init__()
        self.config = config
        self.heads = nn.ModuleDict(
            {str(layer): ExitHead(config.hidden_size, config.num_labels, config.readout) for layer in config.layers}
        )

    def head(self, layer: int) -> ExitHead:
        """The head of 1-based ``layer``."""
        return self.heads[str(layer)]  # type: ignore[return-value]

    def save(self, directory: str | Path) -> None:
        """Write ``trtbert_heads.json`` and ``trtbert_heads.safetensors`` into a checkpoint directory."""
        from safetensors.torch import save_file

        directory = Path(directory)
        tensors = {f"heads.{k}": v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
        save_file(tensors, str(directory / HEADS_WEIGHTS))
        self.config.save(directory)

    @classmethod
    def load(cls, directory: str | Path) -> ExitHeads | None:
        """Load heads saved beside a checkpoint, or ``None`` if the checkpoint has none."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = HeadsConfig.load(directory)
        if config is None:
            return None
        heads = cls(config)
        weights_path = directory / HEADS_WEIGHTS
        if not weights_path.is_file():
            raise ModelError(f"{directory} has {HEADS_CONFIG} but no {HEADS_WEIGHTS}; retrain or copy the heads")
        state = {k.removeprefix("heads."): v for k, v in load_file(str(weights_path)).items()}
        expected = heads.heads.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        bad_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
        if missing or unexpected or bad_shape:
            raise ModelError(
                f"{weights_path} does not match {HEADS_CONFIG}: missing {missing or '-'}, "
                f"unexpected {unexpected or '-'}, wrong shape {bad_shape or '-'}"
            )
        heads.heads.load_state_dict(state)
        log.info("loaded %d exit heads (%s read-out) from %s", len(config.layers), config.readout, directory)
        return heads
