"""What an operator meets (SPEC 10, 13): no traceback from any command, the
exit codes, journald priorities, --version, progress only on a terminal, the
daemon's heartbeat in ``status``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from service.commands import status
from service.commands.logs import is_journal
from service.commands.progress import Progress
from service.config import load_settings
from service.store import init_db
from tests.integration.test_cli import ROOT, mailplan

TODAY = "2026-11-29"


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    for text in (result.stdout or "", result.stderr or ""):
        assert "Traceback" not in text and "Exception in thread" not in text, text


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("export",),
        ("explain", "--contact", "1"),
        ("plot", "--out", "{tmp}/p.html"),
        ("audit",),
        ("recompute", "--all"),
        ("init-db",),
    ],
)
def test_a_directory_as_database(tmp_path: Path, command: tuple[str, ...]) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    result = mailplan(*args, "--db", tmp_path)
    _no_traceback(result)
    assert result.returncode == 2
    assert result.stderr == (
        f"mailplan: error: database {tmp_path} is a directory; pass the database file "
        "inside it, e.g. --db /var/lib/mailplan/mailplan.sqlite3\n"
    )


def test_version() -> None:
    result = mailplan("--version")
    assert result.returncode == 0
    assert result.stdout == "mailplan 0.1.0\n"


def _run_once_read_only(db: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``run --once`` as root without the capability to override file modes,
    so that a 0444 database is really read-only; stdout is a file named as
    the journal stream."""
    st = os.stat(out)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPLAN_")}
    env.update(MAILPLAN_CONFIG=os.devnull, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    drop = "-dac_override,-dac_read_search"
    with out.open("w") as fh:
        return subprocess.run(
            ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", sys.executable, "-m",
             "service", "run", "--db", str(db), "--once", "--today", "2026-12-02"],
            stdout=fh, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=120,
            check=False,
        )  # fmt: skip


@pytest.mark.skipif(
    shutil.which("setpriv") is None or os.geteuid() != 0,
    reason="needs root and setpriv to make a database read-only for its owner",
)
def test_run_once_on_a_read_only_database_fails_with_priorities(tmp_path: Path) -> None:
    db = tmp_path / "ro.sqlite3"
    assert mailplan("init-db", "--db", db).returncode == 0
    db.chmod(0o444)
    out = tmp_path / "journal.txt"
    out.touch()
    result = _run_once_read_only(db, out)
    lines = out.read_text().splitlines()
    _no_traceback(result)
    # The tick cannot write: a one-shot run that could not do its work exits 1.
    assert result.returncode == 1, (result.stderr, lines)
    # Each line carries its syslog priority for journald: errors <3>, info <6>.
    assert lines and all(line[:3] in ("<3>", "<4>", "<6>") for line in lines), lines
    errors = [json.loads(line[3:]) for line in lines if line.startswith("<3>")]
    # The daemon probes the database for writing when it opens it, so the
    # read-only file is reported before any tick is tried.
    assert any(e["event"] in ("tick_failed", "database_unavailable") for e in errors), lines
    assert all(json.loads(line[3:])["level"] == "info" for line in lines if line[:3] == "<6>")


def test_priority_prefix_only_on_the_journal_stream(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.touch()
    st = os.stat(path)
    with path.open("w") as fh:
        assert is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not is_journal(fh, {})


class _Tty:
    def __init__(self, tty: bool) -> None:
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_progress_only_on_a_terminal() -> None:
    quiet, shown = _Tty(False), _Tty(True)
    for stream in (quiet, shown):
        bar = Progress("recompute", 200, stream)  # type: ignore[arg-type]
        bar.update(200)
        bar.close()
    assert quiet.text == ""
    assert shown.text.startswith("\rrecompute [" + "#" * 30 + "] 100% (200 of 200) ")
    assert shown.text.endswith(" s\n")


def test_status_sees_the_daemon_heartbeat(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite3"
    asyncio.run(init_db(db))
    settings = load_settings(None, {}, {})
    args = argparse.Namespace(today=date(2026, 11, 29), days=1, json=False)
    now = datetime.now(UTC)
    none = asyncio.run(status.gather(args, settings, db, now))
    assert none.daemon is None
    assert none.today == date(2026, 11, 29) and none.timezone == "America/Chicago"
    # An event whose contact id is not an id: consumed as malformed (on a day
    # already ticked, so that no first-tick fan-out covers it unread).
    con = sqlite3.connect(db)
    con.execute("INSERT INTO scheduler_state (key, value) VALUES ('last_tick', '2026-11-29')")
    con.execute("DELETE FROM scheduler_events")  # init-db's own (the aep type)
    con.execute("INSERT INTO scheduler_events (kind, contact_id) VALUES ('recompute_contact', 'x')")
    con.commit()
    con.close()
    # A real daemon process writes its heartbeat, and a last one when it stops.
    assert mailplan("run", "--db", db, "--once", "--today", TODAY).returncode == 0
    text = status.to_text(asyncio.run(status.gather(args, settings, db, datetime.now(UTC))))
    assert "  today: 2026-11-29 (America/Chicago)\n" in text
    assert "  daemon: not running (last heartbeat " in text
    assert "; it stopped)" in text
    assert (
        "  malformed events consumed since the daemon started: 1 (each logged as event_malformed)"
    ) in text


def test_audit_and_reconcile_units_alert() -> None:
    units = ROOT / "systemd"
    for suffix, db in (("", "mailplan"), ("@", "%i")):
        service = (units / f"mailplan-audit{suffix}.service").read_text()
        assert f"ExecStart=/usr/local/bin/mailplan audit --db /var/lib/mailplan/{db}.sqlite3\n" in (
            service
        )
        assert "Type=oneshot" in service and "ProtectHome=yes" in service
        timer = (units / f"mailplan-audit{suffix}.timer").read_text()
        target = "mailplan-audit@%i.service" if suffix else "mailplan-audit.service"
        assert f"Unit={target}" in timer
        assert "OnCalendar=*-*-* 04:30:00" in timer and "Persistent=true" in timer
        # The audit runs after the 03:30 reconciliation.
        assert (
            "OnCalendar=*-*-* 03:30:00" in (units / f"mailplan-reconcile{suffix}.timer").read_text()
        )
