"""The exit heads' checkpoint format, torch-free (the CLI and options read it without torch).

A trained checkpoint is a normal Hugging Face ``*ForSequenceClassification`` directory (the backbone
and the model's own classifier, which is the exit of the last layer) plus two files beside it::

    trtbert_heads.json          {"format": 1, "readout": "mean", "layers": [1, 2, ...], "num_labels": 2,
                                 "hidden_size": 384, "model_type": "bert"}
    trtbert_heads.safetensors   heads.<layer>.classifier.weight/bias
                                (+ heads.<layer>.dense.weight/bias for the "layer-pooler" read-out)

``layers`` are 1-based depths below the last layer. Read-outs:

- ``mean``: masked mean over the layer's token states, then a linear layer (the default: it trains
  every exit of all-MiniLM-L6-v2, where the shared CLS pooler left the early exits at chance);
- ``pooler``: the family's own CLS pooler, shared by every layer, then a linear layer (PABEE);
- ``layer-pooler``: a CLS pooler (dense + tanh) of each layer's own, then a linear layer (DeeBERT).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from trtbert.errors import ModelError

HEADS_CONFIG = "trtbert_heads.json"
HEADS_WEIGHTS = "trtbert_heads.safetensors"
HEADS_FORMAT = 1
READOUTS = ("mean", "pooler", "layer-pooler")


@dataclass(frozen=True)
class HeadsConfig:
    """What ``trtbert_heads.json`` holds."""

    readout: str
    layers: tuple[int, ...]
    num_labels: int
    hidden_size: int
    model_type: str
    format: int = HEADS_FORMAT

    def save(self, directory: str | Path) -> None:
        """Write ``trtbert_heads.json`` into a checkpoint directory."""
        data = dict(asdict(self), layers=list(self.layers))
        (Path(directory) / HEADS_CONFIG).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> HeadsConfig | None:
        """The heads' config saved beside a checkpoint, or ``None`` if the checkpoint has no heads."""
        path = Path(directory) / HEADS_CONFIG
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            config = cls(**{**raw, "layers": tuple(int(x) for x in raw["layers"])})
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"{path} is malformed ({exc}); retrain the heads with trtbert train") from exc
        if config.format != HEADS_FORMAT:
            raise ModelError(f"{path}: heads format {config.format} is not supported (expected {HEADS_FORMAT})")
        if config.readout not in READOUTS:
            raise ModelError(f"{path}: unknown read-out {config.readout!r} (known: {', '.join(READOUTS)})")
        return config
