"""trtbert: BERT-family classifiers, layer by layer, under a memory cap, with early exit.

The public API imports nothing heavy: torch and transformers load only inside export and train.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trtbert.errors import TrtbertError

__version__ = "0.1.0"

__all__ = ["TrtbertError", "Runner", "load_bundle", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from trtbert.bundle import load_bundle
    from trtbert.runtime.runner import Runner


def __getattr__(name: str) -> Any:
    if name == "load_bundle":
        from trtbert.bundle import load_bundle

        return load_bundle
    if name == "Runner":
        from trtbert.runtime.runner import Runner

        return Runner
    raise AttributeError(name)
