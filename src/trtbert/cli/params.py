"""Option types shared by every command, so each validates sizes, exit rules and numbers the same way
and refuses a bad value up front, before any work (one line naming the option and the fix)."""

from __future__ import annotations

import math
from typing import Any

import click

from trtbert.errors import UsageError

MAX_THREADS_PER_CORE = 4


def _bad(param: click.Parameter | None, message: str) -> UsageError:
    """A one-line error naming the option: ``--epochs must be at least 1, got 0``."""
    name = param.opts[0] if param is not None and getattr(param, "opts", None) else "value"
    return UsageError(f"{name} {message}")


class SizeType(click.ParamType):
    """A byte size: ``64MiB``, ``1.5GB``, ``unlimited`` (None) or, where allowed, ``auto``."""

    name = "size"

    def __init__(self, allow_auto: bool = False) -> None:
        self.allow_auto = allow_auto

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str | None:
        if value is None or isinstance(value, int):
            return value
        from trtbert.sizes import parse_size

        if self.allow_auto and str(value).strip().lower() == "auto":
            return "auto"
        try:
            size = parse_size(str(value))
        except UsageError as exc:
            raise _bad(param, str(exc)) from None
        if size is not None and size <= 0:
            raise _bad(param, f"must be a positive size such as 64MiB (or 'unlimited'), got {value!r}")
        return size


class ExitRuleType(click.ParamType):
    """An exit rule such as ``entropy:0.3`` (checked for syntax here, against the bundle later), or
    ``default`` (the bundle's calibrated policy)."""

    name = "rule"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from trtbert.runtime.exits import parse_rule

        text = str(value).strip()
        if text.lower() == "default":
            return "default"
        if text.lower().startswith("learned"):  # its parameters come from the bundle's calibrated policy
            head, _, q = text.partition(":")
            if head.lower() != "learned" or (q and Number(0, 1).convert(q, param, ctx) is None):
                raise _bad(param, f"cannot read exit rule {text!r}: write it as learned or learned:Q")
            return text
        parse_rule(text)  # a UsageError names the rule and how to write it
        return text


class Number(click.ParamType):
    """A finite float within ``[low, high]`` (``open_low``: strictly above ``low``)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, open_low: bool = False) -> None:
        self.low, self.high, self.open_low = low, high, open_low

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _bad(param, f"must be a number, got {value!r}") from None
        bad = not math.isfinite(number) or (self.low is not None and (number <= self.low if self.open_low
                                                                      else number < self.low))
        bad = bad or (self.high is not None and number > self.high)
        if bad:
            lo = "" if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
            hi = "" if self.high is None else f"<= {self.high:g}"
            raise _bad(param, f"must be a finite number {' and '.join(x for x in (lo, hi) if x)}, got {value}")
        return number


class AtLeast(click.ParamType):
    """An integer of at least ``low`` (and at most ``high``, naming the limit)."""

    name = "integer"

    def __init__(self, low: int, high: int | None = None, why: str = "") -> None:
        self.low, self.high, self.why = low, high, why

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, bool):
            raise _bad(param, f"must be an integer, got {value!r}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise _bad(param, f"must be an integer, got {value!r}") from None
        if number < self.low:
            raise _bad(param, f"must be at least {self.low}, got {number}")
        if self.high is not None and number > self.high:
            raise _bad(param, f"must be at most {self.high}{self.why}, got {number}")
        return number


def threads_option(help_text: str = "Intra-op threads (0: one per core).") -> Any:
    """``--threads``: 0 (one per core) up to a small multiple of the cores."""
    from trtbert.engines.base import cpu_count

    limit = MAX_THREADS_PER_CORE * cpu_count()
    why = f" ({MAX_THREADS_PER_CORE} per core on this machine's {cpu_count()})"
    return click.option("--threads", default=0, show_default=True, type=AtLeast(0, limit, why),
                        help=f"{help_text} At most {limit} ({MAX_THREADS_PER_CORE} per core).")


POSITIVE = AtLeast(1)
SIZE = SizeType()
SIZE_OR_AUTO = SizeType(allow_auto=True)
EXIT_RULE = ExitRuleType()
