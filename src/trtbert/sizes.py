"""Byte sizes: parse ``64MiB`` / ``1.5GB`` / ``unlimited`` and format bytes for humans."""

from __future__ import annotations

import re

from trtbert.errors import UsageError

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int | None:
    """Parse a size such as ``64MiB`` into bytes; ``unlimited``/``none``/``inf`` give ``None``. Zero is
    refused (it is not a way to say unlimited)."""
    if text.strip().lower() in {"unlimited", "none", "inf"}:
        return None
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise UsageError(
            f"cannot read size {text!r}: use a number with a unit such as 64MiB, 512MB or 2GiB, or 'unlimited'"
        )
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise UsageError(f"size {text!r} is zero: give a positive size such as 64MiB, or 'unlimited'")
    return size


def format_size(nbytes: float | None) -> str:
    """Format bytes as MiB with one decimal, KiB below 1 MiB (``None`` is ``unlimited``)."""
    if nbytes is None:
        return "unlimited"
    if nbytes < 1024**2:
        return f"{nbytes / 1024:.1f} KiB"
    return f"{nbytes / 1024**2:.1f} MiB"
