"""sd_notify over a real AF_UNIX datagram socket (SPEC 9)."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.daemon.notify import Notifier, watchdog_interval


class Listener:
    """The systemd side: a datagram socket collecting notifications."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.settimeout(5)
        self.address = address

    def receive(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def drain(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                out.append(dict(line.split("=", 1) for line in data.splitlines()))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(5)
        return out


@pytest.fixture
def notify_listener() -> Iterator[Listener]:
    # AF_UNIX paths are limited to ~107 bytes: keep it short, not under tmp_path.
    folder = Path(tempfile.mkdtemp(prefix="mpn", dir="/tmp"))
    listener = Listener(str(folder / "notify"))
    yield listener
    listener.sock.close()
    (folder / "notify").unlink(missing_ok=True)
    folder.rmdir()


def test_messages_reach_a_filesystem_socket(notify_listener: Listener) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify_listener.address})
    assert notifier.enabled
    assert notifier.ready("starting")
    assert notify_listener.receive() == {"READY": "1", "STATUS": "starting"}
    assert notifier.status("3 pending events")
    assert notify_listener.receive() == {"STATUS": "3 pending events"}
    assert notifier.watchdog()
    assert notify_listener.receive() == {"WATCHDOG": "1"}
    assert notifier.reloading()
    message = notify_listener.receive()
    assert message["RELOADING"] == "1" and int(message["MONOTONIC_USEC"]) > 0
    assert notifier.stopping()
    assert notify_listener.receive() == {"STOPPING": "1"}
    notifier.close()


def test_abstract_socket_names() -> None:
    name = f"@mailplan-test-{os.getpid()}"
    listener = Listener(name)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": name})
        assert notifier.ready()
        assert listener.receive() == {"READY": "1"}
        notifier.close()
    finally:
        listener.sock.close()


def test_without_the_variable_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert notifier.status("x") is False
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # Half of the watchdog period, in seconds: 30 s for WatchdogSec=60.
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        # Meant for another process (a parent that passed its environment on).
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected
