"""Shared tools of the daemon tests: an upstream writer, a running daemon, I1 checks."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import pytest

from service.config import Settings
from service.daemon.clock import ManualClock
from service.daemon.notify import Notifier
from service.daemon.processing import BatchLimits
from service.daemon.run import Daemon, DaemonOptions
from service.engine import PlanContext, dry_run_plan
from service.store import ExportRow, open_store

CHICAGO = ZoneInfo("America/Chicago")
SQLITE3 = shutil.which("sqlite3")


def upstream(db_path: Path, script: str) -> None:
    """Run SQL in a separate process, as a CRM or importer would.

    Uses the ``sqlite3`` shell; without it, a separate Python process. A
    script without its own transaction runs in one ``BEGIN IMMEDIATE``: an
    autocommit statement reads first and then needs the write lock, and
    SQLite answers that upgrade with SQLITE_BUSY at once, without waiting,
    when another connection committed in between (as the daemon does all
    the time). Real upstream writers should do the same (README).
    """
    if "BEGIN" not in script.upper():
        script = f"BEGIN IMMEDIATE;\n{script}\nCOMMIT;\n"
    if SQLITE3 is not None:
        proc = subprocess.run(
            [SQLITE3, "-bail", "-cmd", ".timeout 10000", str(db_path)],
            input=script, text=True, capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    else:  # pragma: no cover - the sqlite3 shell is normally installed
        code = (
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=10);"
            "c.executescript(sys.stdin.read()); c.commit()"
        )
        proc = subprocess.run(
            ["python3", "-c", code, str(db_path)],
            input=script, text=True, capture_output=True, timeout=30, check=False,
        )  # fmt: skip
    if proc.returncode != 0 or proc.stderr.strip():
        raise AssertionError(f"upstream write failed: {proc.stderr}\n{script}")


def query(db_path: Path, sql: str, params: Iterable[object] = ()) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db_path, timeout=10)
    try:
        return con.execute(sql, tuple(params)).fetchall()
    finally:
        con.close()


def local_noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=CHICAGO)


def settings(**overrides: object) -> Settings:
    base: dict[str, object] = {"timezone": "America/Chicago", "daily_cap": 3}
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


SEED_SQL = """
INSERT INTO contacts (id, first_name, email, birth_date, effective_date, state, zip_code) VALUES
  (1, 'Ann', 'ann@example.com', '1955-03-20', '2019-04-15', 'TX', '75001'),
  (2, 'Bob', 'bob@example.com', '1956-02-29', '2018-03-01', 'CA', '90210'),
  (3, 'Cy',  'cy@example.com',  '1957-04-02', '2020-05-10', 'NY', '10001'),
  (4, 'Dee', 'dee@example.com', '1958-03-25', '2017-03-30', 'MO', '63101'),
  (5, 'Eve', 'not-an-address',  '1959-03-28', '2016-04-01', 'TX', '75002'),
  (6, 'Fay', 'fay@example.com', '1960-04-10', '2015-04-20', NULL, NULL),
  (7, 'Gus', 'gus@example.com', '1961-03-15', '2021-03-18', 'NV', '89501'),
  (8, 'Hal', 'hal@example.com', '1962-05-01', '2022-04-05', 'OK', '73101');
INSERT INTO campaign_types (name, respect_exclusion_windows, enable_followups,
    days_before_event, target_all_contacts, priority, active, spread_evenly)
  VALUES ('renewal', 1, 1, 7, 0, 25, 1, 0);
INSERT INTO campaign_instances (id, campaign_type, instance_name, active_start_date,
    active_end_date) VALUES (10, 'renewal', 'spring', '2026-01-01', '2026-12-31');
INSERT INTO contact_campaigns (contact_id, campaign_instance_id, trigger_date, status)
  VALUES (1, 10, '2026-03-25', 'pending'), (3, 10, '2026-04-01', 'pending');
"""
"""A small book around a March 2026 *today*: birthdays and anniversaries in
the horizon, window states (CA, MO, NV, OK), a year-round state (NY), an
invalid address, a contact without location, a targeted campaign."""

TODAY = date(2026, 3, 1)


async def export_and_expected(
    db_path: Path, cfg: Settings, today: date
) -> tuple[list[ExportRow], list[ExportRow]]:
    """The stored plan and what a full recompute would store (I1)."""
    async with open_store(db_path) as store:
        actual = await store.export_rows()
        expected = await dry_run_plan(store, PlanContext.from_settings(cfg), today)
    return actual, expected


async def assert_plan_is_full_recompute(db_path: Path, cfg: Settings, today: date) -> None:
    actual, expected = await export_and_expected(db_path, cfg, today)
    assert actual == expected


def balance_days_mismatch(db_path: Path) -> dict[str, tuple[object, object]]:
    """Days whose per-day counts (``balance_days``) differ from the plan rows
    not yet covered by a balance gap: {day: (counted, in the table)}."""
    con = sqlite3.connect(db_path)
    try:
        counted = {d: (a, b) for d, a, b in con.execute("SELECT * FROM balance_days")}
        rows = con.execute(
            "SELECT balance_date, scheduled_send_date FROM email_schedules "
            "WHERE status = 'pre-scheduled' AND balance_date IS NOT NULL "
            "UNION ALL SELECT balance_date, scheduled_send_date FROM scheduler_balance_gaps "
            "WHERE back = 0 AND balance_date IS NOT NULL "
        ).fetchall()
        backs = con.execute(
            "SELECT balance_date, scheduled_send_date FROM scheduler_balance_gaps "
            "WHERE back = 1 AND balance_date IS NOT NULL"
        ).fetchall()
    finally:
        con.close()
    table: dict[str, list[int]] = {}
    for rs, sign in ((rows, 1), (backs, -1)):
        for s1, sched in rs:
            table.setdefault(s1, [0, 0])[0] += sign
            table.setdefault(sched, [0, 0])[1] += sign
    expected = {d: (a, b) for d, (a, b) in table.items() if a or b}
    return {
        d: (counted.get(d), expected.get(d))
        for d in set(counted) | set(expected)
        if counted.get(d) != expected.get(d)
    }


def pending_events(db_path: Path) -> int:
    count = query(db_path, "SELECT count(*) FROM scheduler_events")[0][0]
    assert isinstance(count, int)
    return count


@dataclass
class Running:
    daemon: Daemon
    clock: ManualClock
    cancel: anyio.CancelScope

    async def settle(self) -> None:
        with anyio.fail_after(20):
            await self.daemon.wait_idle()

    async def stop(self) -> None:
        self.daemon.request_stop()


@asynccontextmanager
async def running_daemon(
    db_path: Path,
    cfg: Settings,
    *,
    start: datetime | None = None,
    inbox: Path | None = None,
    notifier: Notifier | None = None,
    poll_interval: float = 3600.0,
    limits: BatchLimits | None = None,
    reload_settings: Callable[[], Settings] | None = None,
    max_backoff: float = 30.0,
) -> AsyncIterator[Running]:
    """The real daemon, in-process, with a manual clock and no signal handling.

    The poll interval defaults to an hour so that tests prove the file
    watchers (or an explicit ``settle``) wake the daemon.
    """
    clock = ManualClock(cfg.tz, start or local_noon(TODAY))
    options = DaemonOptions(
        inbox=inbox, handle_signals=False, poll_interval=poll_interval,
        limits=limits or BatchLimits(), max_backoff=max_backoff,
    )  # fmt: skip
    daemon = Daemon(
        cfg, db_path, options=options, clock=clock, notifier=notifier or Notifier({}),
        reload_settings=reload_settings,
    )  # fmt: skip
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        try:
            yield Running(daemon, clock, tg.cancel_scope)
        finally:
            daemon.request_stop()


async def wait_until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    """Poll a cheap condition until it holds.

    For effects of background tasks or other processes, which no event of
    this process announces.
    """
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - the state lives in another process or file
            await anyio.sleep(0.01)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def days(n: int) -> timedelta:
    return timedelta(days=n)


requires_sqlite3 = pytest.mark.skipif(SQLITE3 is None, reason="the sqlite3 shell is not installed")
