"""Exit-head training on PyTorch + accelerate (``pip install 'trtbert[train]'``).

Importing this package is cheap; :func:`train` imports torch, transformers and accelerate when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trtbert.train.options import OBJECTIVES, EpochResult, TrainOptions, TrainResult

__all__ = ["OBJECTIVES", "EpochResult", "TrainOptions", "TrainResult", "train"]

if TYPE_CHECKING:  # pragma: no cover
    from trtbert.train.trainer import train


def __getattr__(name: str) -> Any:
    if name == "train":
        from trtbert.train.trainer import train

        return train
    raise AttributeError(name)
