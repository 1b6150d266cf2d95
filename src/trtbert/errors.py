"""One exception root for user errors.

Anything raised as a :class:`TrtbertError` is the user's to fix (bad input, missing file, a cap too
small); the CLI prints its message as one line and exits with status 1. Any other exception is a bug
and keeps its traceback.
"""

from __future__ import annotations


class TrtbertError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""


class BundleError(TrtbertError):
    """A bundle is missing, partial, corrupted or of an unsupported format version."""


class ModelError(TrtbertError):
    """A model cannot be resolved, loaded or is of an unsupported family."""


class ExportError(TrtbertError):
    """Export failed, including a stage that does not match PyTorch within tolerance."""


class EngineError(TrtbertError):
    """An engine backend is missing, cannot build a precision, or an engine cannot be used."""


class MemoryCapError(TrtbertError):
    """A memory cap that cannot be honoured (e.g. below the largest stage)."""


class DataError(TrtbertError):
    """Task data is missing or malformed, or a task is unknown."""


class UsageError(TrtbertError):
    """An option value that cannot be parsed (a size, an exit rule, a list of layers)."""


def missing_extra(module: str, extra: str) -> TrtbertError:
    """Error for an optional dependency that is not installed, naming the pip extra that brings it."""
    return TrtbertError(f"{module} is not installed; install it with: pip install 'trtbert[{extra}]'")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def ort_load_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's exceptions that mean a bad or unreadable model file (not a bug in trtbert):
    a damaged graph, a missing file, an unsupported operator, no memory."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented",
             "RuntimeException", "EPFail")
    return (OSError, MemoryError, *(getattr(state, n) for n in names if hasattr(state, n)))
