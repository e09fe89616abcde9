"""Log lines journald files under their level (SPEC 10).

Under systemd, a line on stdout or stderr that starts with ``<N>`` (a syslog
priority, 0-7) is stored at priority N with the prefix removed
(``SyslogLevelPrefix=``, on by default). Without it every line lands at
priority 6, and ``journalctl -p warning`` would hide the errors. The prefix
is added only when the log stream is the journal: systemd names the journal
stream in ``JOURNAL_STREAM`` (``DEVICE:INODE``), which is compared with the
stream's own file, so a terminal or a pipe never sees the prefix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from typing import Any

PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3,
              "critical": 2}  # fmt: skip
"""structlog method names -> syslog priorities (RFC 5424)."""

Renderer = Callable[[Any, str, MutableMapping[str, Any]], Any]


def is_journal(stream: Any, environ: MutableMapping[str, str] | None = None) -> bool:
    """True if ``stream`` is the journal stream systemd connected (``JOURNAL_STREAM``)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (AttributeError, OSError, ValueError):
        return False


def with_priority(renderer: Renderer, stream: Any) -> Renderer:
    """``renderer``, its lines prefixed with ``<N>`` when ``stream`` is the journal."""
    if not is_journal(stream):
        return renderer

    def render(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        priority = PRIORITIES.get(method, 6)
        return f"<{priority}>{renderer(logger, method, event)}"

    return render
