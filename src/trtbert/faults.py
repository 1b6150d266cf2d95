"""Fault injection for the crash-safety tests: ``TRTBERT_FAULT=<point>`` makes the process kill itself
with SIGKILL when it reaches that point (e.g. ``build:after-swap``), exactly as a power cut or the OOM
killer would. ``TRTBERT_FAULT=enospc:<point>`` raises "no space left on device" there instead.

Points are named where writers call :func:`point`; with the variable unset this costs one dict lookup.
"""

from __future__ import annotations

import errno
import os
import signal


def point(name: str) -> None:
    """Die here (or fail with ENOSPC) if the environment asks for it."""
    wanted = os.environ.get("TRTBERT_FAULT")
    if not wanted:
        return
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted == f"enospc:{name}":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
