"""systemd's notification protocol (``sd_notify``) with the standard library only.

systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or an abstract socket name
starting with ``@``) to ``Type=notify`` services; each notification is one
datagram of ``KEY=VALUE`` lines. Without the variable every call is a no-op,
so the daemon runs the same way from a terminal. A failed send is logged and
otherwise ignored: losing a status line must never stop the planner.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def _socket_address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        # Linux abstract namespace: the leading '@' stands for a NUL byte.
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings: half of ``WATCHDOG_USEC``, or ``None``.

    ``WATCHDOG_PID``, when set, must name this process (systemd sets it so that
    children that inherit the environment do not ping on the parent's behalf).
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 2_000_000


class Notifier:
    """Sends notifications to the socket named by ``NOTIFY_SOCKET``."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = watchdog_interval(env)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; True when it was sent."""
        if self.address is None or not fields:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload.encode("utf-8"), self.address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc), fields=sorted(fields))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        if status is None:
            return self.send(READY=1)
        return self.send(READY=1, STATUS=status)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def reloading(self) -> bool:
        # systemd (>= 253) wants the monotonic timestamp of the reload start.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(RELOADING=1, MONOTONIC_USEC=usec)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
