"""The daemon's surroundings going wrong, black-box (SPEC 9, 13; issue findings 8, 9).

Each test runs ``python -m service run`` as its own process and changes the
world around it: the database missing at start, moved away, on a read-only
or full file system, locked past the busy timeout; SIGTERM at start-up and
while waiting for a lock; a broken configuration on SIGHUP; an unusable inbox.
The daemon must report it (log, STATUS), wait with backoff without flooding
the log or burning CPU, lose nothing and resume by itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from service.store import init_db
from tests.faults.blackbox import (
    DaemonProcess,
    daemon_process,
    mailplan,
    no_traceback,
    wait_for,
)
from tests.integration.daemon_helpers import (
    SEED_SQL,
    TODAY,
    assert_plan_is_full_recompute,
    pending_events,
    settings,
    upstream,
)

CFG = settings()
pytestmark = pytest.mark.timeout(90)


def _seeded(path: Path) -> Path:
    anyio.run(init_db, path)
    upstream(path, SEED_SQL)
    return path


def _plan_ok(db: Path) -> None:
    anyio.run(assert_plan_is_full_recompute, db, CFG, TODAY)


def _drained(daemon: DaemonProcess, db: Path, timeout: float = 30) -> None:
    wait_for(lambda: pending_events(db) == 0, timeout, "the daemon to drain the events")


def _wait_for_count(daemon: DaemonProcess, event: str, count: int) -> None:
    wait_for(lambda: len(daemon.events(event)) >= count, 20, f"{count} x {event}")


def _stop(daemon: DaemonProcess) -> None:
    code, seconds = daemon.terminate()
    assert code == 0, daemon.stderr()
    assert seconds < 5
    assert no_traceback(daemon.stderr())


def test_missing_database_at_start_is_waited_for(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite3"
    with daemon_process(db, tmp_path) as daemon:
        wait_for(lambda: bool(daemon.events("database_unavailable")), 20, "a report")
        time.sleep(2.0)
        assert daemon.alive()
        # READY (systemd must not fail the unit) with a STATUS that says why.
        seen = daemon.notify.drain()
        assert any(m.get("READY") == "1" for m in seen)
        assert any("waiting for database" in m.get("STATUS", "") for m in seen)
        # Backoff, not a flood: 0.5 s, 1 s, 2 s ... between attempts.
        assert len(daemon.events("database_unavailable")) <= 4
        # The operator creates it (built beside it, renamed into place).
        staged = _seeded(tmp_path / "staged.sqlite3")
        staged.rename(db)
        wait_for(lambda: bool(daemon.events("daemon_started")), 30, "the daemon to open it")
        _drained(daemon, db)
        _stop(daemon)
    _plan_ok(db)


def test_database_moved_away_and_back(tmp_path: Path) -> None:
    db = _seeded(tmp_path / "org.sqlite3")
    away = tmp_path / "away"
    away.mkdir()
    with daemon_process(db, tmp_path) as daemon:
        _drained(daemon, db)
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{db}{suffix}").exists():
                os.rename(f"{db}{suffix}", away / f"org.sqlite3{suffix}")
        wait_for(lambda: bool(daemon.events("database_gone")), 15, "the daemon to notice")
        cpu_before, lines_before = daemon.cpu_seconds(), len(daemon.logs())
        time.sleep(3.0)
        # Waiting costs (almost) nothing and writes a few lines, not thousands.
        assert daemon.cpu_seconds() - cpu_before < 0.5
        assert len(daemon.logs()) - lines_before <= 6
        assert any("waiting for database" in s for s in daemon.notify.statuses())
        for suffix in ("", "-wal", "-shm"):
            if (away / f"org.sqlite3{suffix}").exists():
                os.rename(away / f"org.sqlite3{suffix}", f"{db}{suffix}")
        upstream(db, "UPDATE contacts SET state = 'CA' WHERE id = 3;")
        wait_for(lambda: len(daemon.events("daemon_started")) >= 2, 40, "the re-open")
        _drained(daemon, db)
        _stop(daemon)
    _plan_ok(db)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (root only; skipped elsewhere)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


def test_read_only_database_at_start_recovers_when_writable(small_fs: Path, tmp_path: Path) -> None:
    db = _seeded(small_fs / "org.sqlite3")
    _remount(small_fs, "ro")
    with daemon_process(db, tmp_path) as daemon:
        wait_for(lambda: bool(daemon.events("database_unavailable")), 20, "a report")
        time.sleep(1.0)
        assert daemon.alive()
        assert not daemon.events("daemon_started")
        _remount(small_fs, "rw")
        _drained(daemon, db, timeout=40)
        _stop(daemon)
    _plan_ok(db)


def test_full_disk_is_waited_for_and_nothing_is_lost(small_fs: Path, tmp_path: Path) -> None:
    db = _seeded(small_fs / "org.sqlite3")
    with daemon_process(db, tmp_path) as daemon:
        _drained(daemon, db)
        os.kill(daemon.pid, signal.SIGSTOP)
        rows = ",".join(
            f"({i}, 'c{i}@example.com', '1950-03-{10 + i % 18:02d}', '2019-04-15', 'TX', '75001')"
            for i in range(100, 400)
        )
        upstream(db, "INSERT INTO contacts (id, email, birth_date, effective_date, state, "
                     f"zip_code) VALUES {rows};")  # fmt: skip
        filler = small_fs / "filler"
        with filler.open("wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        os.kill(daemon.pid, signal.SIGCONT)
        wait_for(lambda: bool(daemon.events("database_unavailable")), 30, "the full disk")
        assert daemon.alive()
        assert pending_events(db) > 0
        filler.unlink()
        _drained(daemon, db, timeout=60)
        _stop(daemon)
    _plan_ok(db)


LOCK_HOLDER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
# A change the daemon must plan, then the lock taken at once after its commit.
con.execute("UPDATE contacts SET state = 'NV' WHERE id = 1")
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("ROLLBACK")
"""


def test_locked_past_busy_timeout_and_sigterm_while_waiting(tmp_path: Path) -> None:
    """A writer holds the lock for 30 s: the daemon reports and retries;
    SIGTERM while it waits ends it within 5 s; restarted, it drains."""
    db = _seeded(tmp_path / "org.sqlite3")
    with daemon_process(db, tmp_path) as daemon:
        _drained(daemon, db)
        holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(db), "30"],
                                  stdout=subprocess.PIPE)  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
            upstream_failed = subprocess.run(
                ["sqlite3", "-cmd", ".timeout 1", str(db), "DELETE FROM contacts WHERE id=8;"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert "locked" in upstream_failed.stderr  # the lock is real
            wait_for(lambda: bool(daemon.events("batch_failed")), 20, "a reported lock")
            [failed, *_] = daemon.events("batch_failed")
            assert failed["kind"] == "StoreBusy" and failed["retry_s"] == 0.1
            assert pending_events(db) == 1
            time.sleep(0.3)
            _stop(daemon)
        finally:
            holder.kill()
            holder.wait()
            if holder.stdout is not None:
                holder.stdout.close()
        daemon.start()
        _drained(daemon, db)
        _stop(daemon)
    _plan_ok(db)


@pytest.mark.parametrize("delay", [0.2, 0.35, 0.5, 0.7, 0.9])
def test_sigterm_during_the_first_second_exits_cleanly(tmp_path: Path, delay: float) -> None:
    db = _seeded(tmp_path / "org.sqlite3")
    daemon = DaemonProcess(db, tmp_path)
    daemon.start()
    try:
        time.sleep(delay)
        code, seconds = daemon.terminate()
    finally:
        daemon.close()
    assert code == 0, daemon.stderr()
    assert seconds < 5
    assert no_traceback(daemon.stderr())


BROKEN_CONFIGS = [
    'timezone = "America/Chicago"\ndaily_cap = "lots"\n',
    'timezone = "Mars/Base"\n',
    "this is [not toml\n",
]


def test_broken_configuration_on_sighup_keeps_serving(tmp_path: Path) -> None:
    db = _seeded(tmp_path / "org.sqlite3")
    config = tmp_path / "mailplan.toml"
    config.write_text('timezone = "America/Chicago"\ndaily_cap = 3\n')
    env = {"MAILPLAN_CONFIG": str(config), "MAILPLAN_TIMEZONE": "", "MAILPLAN_DAILY_CAP": ""}
    with daemon_process(db, tmp_path, env=env) as daemon:
        _drained(daemon, db)
        for n, text in enumerate(BROKEN_CONFIGS, start=1):
            config.write_text(text)
            os.kill(daemon.pid, signal.SIGHUP)
            _wait_for_count(daemon, "reload_failed", n)
            upstream(db, f"UPDATE contacts SET state = 'MO' WHERE id = {n};")
            _drained(daemon, db)
        assert daemon.alive()
        _stop(daemon)
    _plan_ok(db)


@pytest.mark.parametrize("kind", ["a file", "under a file"])
def test_unusable_inbox_is_a_configuration_error(tmp_path: Path, kind: str) -> None:
    db = _seeded(tmp_path / "org.sqlite3")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    inbox = plain if kind == "a file" else plain / "inbox"
    result = mailplan("run", "--db", str(db), "--inbox", str(inbox), "--today", str(TODAY))
    assert result.returncode == 2, result.stderr
    assert f"--inbox {inbox}" in result.stderr
    assert no_traceback(result.stderr + result.stdout)
    assert shutil.which("sqlite3")
    assert sqlite3.connect(db).execute("SELECT count(*) FROM scheduler_events").fetchone()[0] > 0
