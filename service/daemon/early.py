"""Signals in the first instant of the daemon's process (SPEC 9).

Before the daemon's own handlers exist (interpreter start, imports, reading
the configuration) a SIGTERM would kill the process with the default action.
``catch_early_signals`` runs before anything else is imported; the daemon
asks :func:`stop_requested_early` once its handlers are in place and then
stops cleanly at once. Imports nothing but ``signal``.
"""

from __future__ import annotations

import signal
from types import FrameType

_EARLY_STOP: list[int] = []


def _note_early_stop(signum: int, frame: FrameType | None) -> None:
    _EARLY_STOP.append(signum)


def catch_early_signals() -> None:
    """Note SIGTERM/SIGINT, ignore SIGHUP (the configuration is being read anyway)."""
    signal.signal(signal.SIGTERM, _note_early_stop)
    signal.signal(signal.SIGINT, _note_early_stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def stop_requested_early() -> bool:
    """A SIGTERM/SIGINT arrived before the daemon's handlers took over."""
    return bool(_EARLY_STOP)
