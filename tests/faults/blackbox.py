"""The daemon as a separate process, for the black-box suites (SPEC 13).

``python -m service run`` is started with its JSON log in a file and a
datagram socket standing in for systemd's ``NOTIFY_SOCKET``; upstream writes
come from other processes (the ``sqlite3`` shell, or Python writer processes).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.daemon_helpers import TODAY

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "MAILPLAN_TIMEZONE": "America/Chicago",
    "MAILPLAN_DAILY_CAP": "3",
    "MAILPLAN_LOG_LEVEL": "info",
}


class Notifications:
    """The systemd side of sd_notify: collects every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.seen: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        try:
            while True:
                data = self.sock.recv(65536).decode()
                self.seen.append(
                    dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
                )
        except BlockingIOError:
            pass
        return self.seen

    def readies(self) -> int:
        return sum(1 for m in self.drain() if m.get("READY") == "1")

    def statuses(self) -> list[str]:
        return [m["STATUS"] for m in self.drain() if "STATUS" in m]

    def close(self) -> None:
        self.sock.close()


class DaemonProcess:
    """One ``mailplan run`` process (restartable: each start appends to the log)."""

    def __init__(
        self,
        db: Path,
        workdir: Path,
        *,
        inbox: Path | None = None,
        today: str | None = TODAY.isoformat(),
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.db = db
        self.workdir = workdir
        self.inbox = inbox
        self.today = today
        self.extra = extra
        self.env = env or {}
        self.log_path = workdir / "daemon.log"
        self.err_path = workdir / "daemon.err"
        self.notify = Notifications(workdir / "notify.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        args = [sys.executable, "-m", "service", "run", "--db", str(self.db)]
        if self.inbox is not None:
            args += ["--inbox", str(self.inbox)]
        if self.today is not None:
            args += ["--today", self.today]
        return [*args, *self.extra]

    def start(self) -> None:
        env = {**os.environ, **ENV, "NOTIFY_SOCKET": str(self.notify.path), **self.env}
        env.pop("MAILPLAN_DB", None)
        env = {k: v for k, v in env.items() if v != ""}  # "" removes a variable
        with self.log_path.open("ab") as out, self.err_path.open("ab") as err:
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=err, env=env, cwd=ROOT)
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until the process was gone)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def logs(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def events(self, name: str) -> list[dict[str, object]]:
        return [e for e in self.logs() if e.get("event") == name]

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.alive():
            self.kill()
        self.notify.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def daemon_process(db: Path, workdir: Path, **kwargs: object) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(db, workdir, **kwargs)  # type: ignore[arg-type]
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


def no_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" not in text


def mailplan(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, **(env or {})}
    env.pop("MAILPLAN_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout, check=False,
    )  # fmt: skip
