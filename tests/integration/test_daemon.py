"""The daemon end to end: a real SQLite file, the daemon in-process with a manual
clock, upstream changes from another process (SPEC 8, 9, 11 I1, 13)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from service.config import Settings
from service.daemon.notify import Notifier
from service.daemon.processing import Processor
from service.daemon.run import run_daemon
from service.store import StoreBusy, init_db
from tests.integration.daemon_helpers import (
    SEED_SQL,
    TODAY,
    assert_plan_is_full_recompute,
    pending_events,
    query,
    requires_sqlite3,
    running_daemon,
    settings,
    upstream,
    wait_until,
)
from tests.integration.test_notify import Listener

CFG = settings()
ROOT = Path(__file__).resolve().parents[2]


async def quiet(db_path: Path) -> None:
    """Wait until the daemon, woken only by its file watcher, has drained everything."""
    await wait_until(lambda: pending_events(db_path) == 0, limit=20)


# Each step is one upstream transaction from the sqlite3 shell; after each, the
# stored plan must equal a full recompute (I1).
UPSTREAM_STEPS = [
    ("insert a contact",
     "INSERT INTO contacts (id, email, birth_date, effective_date, state, zip_code) "
     "VALUES (9, 'ivy@example.com', '1950-03-29', '2019-04-02', 'TX', '75001');"),
    ("move a contact to a window state",
     "UPDATE contacts SET state = 'CA', zip_code = '90001' WHERE id = 1;"),
    ("bad data: impossible birth date, unknown state",
     "UPDATE contacts SET birth_date = '1950-02-30', state = 'ZZ', zip_code = 'abc' "
     "WHERE id = 8;"),
    ("delete a contact", "DELETE FROM contacts WHERE id = 3;"),
    ("re-target a campaign instance",
     "UPDATE campaign_instances SET active_start_date = '2026-03-20' WHERE id = 10;"),
    ("add targeting",
     "INSERT INTO contact_campaigns (contact_id, campaign_instance_id, trigger_date, status) "
     "VALUES (4, 10, '2026-03-28', 'pending');"),
    ("a targeting row is used up",
     "UPDATE contact_campaigns SET status = 'sent' WHERE contact_id = 1;"),
    ("a campaign type is aimed at everyone",
     "UPDATE campaign_types SET target_all_contacts = 1, spread_evenly = 0 "
     "WHERE name = 'renewal';"),
    ("a new universal instance",
     "INSERT INTO campaign_instances (id, campaign_type, instance_name, active_start_date, "
     "active_end_date) VALUES (11, 'aep', 'aep-2026', '2026-03-15', '2026-04-30');"),
    ("a sent email, then engagement",
     "INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status, "
     "event_year, event_month, event_day, actual_send_datetime) VALUES "
     "(2, 'birthday', '2026-02-25', 'sent', 2026, 2, 28, '2026-02-25 08:30:00');"
     "INSERT INTO tracking_clicks (contact_id, clicked_at) VALUES (2, '2026-02-26 10:00:00');"
     "INSERT INTO contact_events (contact_id, event_type, metadata, created_at) VALUES "
     "(2, 'eligibility_answered', '{\"has_medical_conditions\": true}', '2026-02-27');"),
    ("the sender takes over a planned row",
     "UPDATE email_schedules SET status = 'scheduled' WHERE id = "
     "(SELECT min(id) FROM email_schedules WHERE status = 'pre-scheduled');"),
    ("an explicit recompute of everyone",
     "INSERT INTO scheduler_events (kind) VALUES ('recompute_all');"),
    ("SQL-looking text in a name",
     "UPDATE contacts SET first_name = 'Robert''); DROP TABLE contacts; --' WHERE id = 4;"),
]  # fmt: skip


@requires_sqlite3
async def test_upstream_changes_from_another_process(db_path: Path) -> None:
    upstream(db_path, SEED_SQL)
    async with running_daemon(db_path, CFG) as run:
        await run.settle()
        await assert_plan_is_full_recompute(db_path, CFG, TODAY)
        for name, script in UPSTREAM_STEPS:
            history_before = query(
                db_path, "SELECT * FROM email_schedules WHERE status NOT IN "
                "('pre-scheduled', 'skipped') ORDER BY id",
            )  # fmt: skip
            upstream(db_path, script)
            await quiet(db_path)
            actual, expected = await _export(db_path)
            assert actual == expected, name
            # I4: history rows are never changed by mailplan.
            history_after = query(
                db_path, "SELECT * FROM email_schedules WHERE status NOT IN "
                "('pre-scheduled', 'skipped') ORDER BY id",
            )  # fmt: skip
            assert history_before == [r for r in history_after if r in history_before], name
        assert run.daemon.status.failures == 0


async def _export(db_path: Path) -> tuple[object, object]:
    from tests.integration.daemon_helpers import export_and_expected

    return await export_and_expected(db_path, CFG, TODAY)


async def test_once_drains_ticks_and_exits(db_path: Path) -> None:
    upstream(db_path, SEED_SQL)
    code = await run_daemon(CFG, db_path, today=TODAY, once=True, handle_signals=False,
                            notifier=Notifier({}))  # fmt: skip
    assert code == 0
    assert pending_events(db_path) == 0
    assert query(db_path, "SELECT value FROM scheduler_state WHERE key = 'last_tick'") == [
        ("2026-03-01",)
    ]
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_once_reports_a_failure_that_does_not_go_away(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream(db_path, SEED_SQL)

    async def always_busy(self: Processor, today: date) -> object:
        raise StoreBusy("database stayed locked by another writer; it will be retried")

    monkeypatch.setattr(Processor, "step", always_busy)
    code = await run_daemon(CFG, db_path, today=TODAY, once=True, handle_signals=False,
                            notifier=Notifier({}))  # fmt: skip
    assert code == 1
    assert pending_events(db_path) > 0  # nothing consumed, nothing lost


@pytest.fixture
def short_socket() -> Iterator[Listener]:
    folder = Path(tempfile.mkdtemp(prefix="mpd", dir="/tmp"))
    listener = Listener(str(folder / "notify"))
    yield listener
    listener.sock.close()
    shutil.rmtree(folder)


async def test_systemd_notifications(db_path: Path, short_socket: Listener) -> None:
    upstream(db_path, SEED_SQL)
    # WatchdogSec=0.2 s: pings every 0.1 s.
    notifier = Notifier({"NOTIFY_SOCKET": short_socket.address, "WATCHDOG_USEC": "200000"})
    async with running_daemon(db_path, CFG, notifier=notifier) as run:
        await run.settle()
        await anyio.sleep(0.35)
        messages = short_socket.drain()
        ready = [m for m in messages if m.get("READY") == "1"]
        assert len(ready) == 1
        assert any("pending events" in m.get("STATUS", "") for m in messages)
        assert sum(1 for m in messages if m.get("WATCHDOG") == "1") >= 2
        upstream(db_path, "UPDATE contacts SET last_name = 'x' WHERE id = 1;")
        await run.settle()
        statuses = [m["STATUS"] for m in short_socket.drain() if "STATUS" in m]
        assert statuses[-1].startswith("0 pending events; last batch 1 events, 1 contacts")
    assert {"STOPPING": "1"} in short_socket.drain()


async def test_reload_recomputes_only_when_planning_changes(db_path: Path) -> None:
    upstream(db_path, SEED_SQL)
    current = {"cfg": CFG}
    async with running_daemon(db_path, CFG, reload_settings=lambda: current["cfg"]) as run:
        await run.settle()
        with capture_logs() as logs:
            run.daemon.wake("reload")
            await run.settle()
        assert [e["planning_changed"] for e in logs if e["event"] == "reload_applied"] == [False]
        assert query(db_path, "SELECT count(*) FROM scheduler_runs WHERE trigger = 'fanout'") == [
            (1,)  # the first start's full plan only
        ]
        current["cfg"] = settings(horizon_days=90, daily_cap=2)
        run.daemon.wake("reload")
        await run.settle()
        await run.settle()
        assert pending_events(db_path) == 0
    await assert_plan_is_full_recompute(db_path, current["cfg"], TODAY)


async def test_a_failed_reload_keeps_the_old_configuration(db_path: Path) -> None:
    from service.errors import ConfigError

    def broken() -> Settings:
        raise ConfigError("horizon_days='x' (from the configuration file): must be a number")

    upstream(db_path, SEED_SQL)
    async with running_daemon(db_path, CFG, reload_settings=broken) as run:
        await run.settle()
        with capture_logs() as logs:
            run.daemon.wake("reload")
            await run.settle()
        assert [e["event"] for e in logs if e["event"].startswith("reload")] == ["reload_failed"]
        assert run.daemon.settings is CFG


async def test_a_busy_database_is_retried_without_losing_events(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream(db_path, SEED_SQL)
    real_step = Processor.step
    failures = iter([True, True])

    async def flaky(self: Processor, today: date) -> object:
        if next(failures, False):
            raise StoreBusy("database stayed locked by another writer; it will be retried")
        return await real_step(self, today)

    monkeypatch.setattr(Processor, "step", flaky)
    with capture_logs() as logs:
        async with running_daemon(db_path, CFG) as run:
            await run.settle()
    assert [e["attempt"] for e in logs if e["event"] == "batch_failed"] == [1, 2]
    assert pending_events(db_path) == 0
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_an_event_that_keeps_failing_is_set_aside(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug triggered by one contact must not hold up everybody else."""
    upstream(db_path, SEED_SQL)
    from service import engine

    real = engine.recompute_contacts

    async def fragile(
        store: object, ctx: object, ids: object, *args: object, **kwargs: object
    ) -> object:
        if 3 in set(ids):  # type: ignore[call-overload]
            raise RuntimeError("planner bug on contact 3")
        return await real(store, ctx, ids, *args, **kwargs)  # type: ignore[arg-type]

    async with running_daemon(db_path, CFG) as run:
        await run.settle()
        monkeypatch.setattr(engine, "recompute_contacts", fragile)
        with capture_logs() as logs:
            upstream(db_path, "UPDATE contacts SET last_name = 'x' WHERE id IN (1, 3, 5);")
            await quiet_but(db_path, 1)
        events = [e["event"] for e in logs]
        assert "batch_crashed" in events and "event_set_aside" in events
        # Contact 3's event is still pending (nothing lost); 1 and 5 were done.
        assert query(db_path, "SELECT kind, contact_id FROM scheduler_events") == [("contact", 3)]


async def quiet_but(db_path: Path, left: int) -> None:
    await wait_until(lambda: pending_events(db_path) == left, limit=20)


@requires_sqlite3
async def test_an_upstream_write_lock_only_delays(db_path: Path) -> None:
    upstream(db_path, SEED_SQL)
    async with running_daemon(db_path, CFG) as run:
        await run.settle()
        holder = _hold_write_lock(db_path)
        run.daemon.wake("check")
        assert holder.wait(timeout=10) == 0
        await quiet(db_path)
        await run.settle()
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


def _hold_write_lock(db_path: Path) -> subprocess.Popen[str]:
    """Another process holds the write lock for a second while changing a contact."""
    holder = subprocess.Popen(["sqlite3", str(db_path)], stdin=subprocess.PIPE, text=True)
    assert holder.stdin is not None
    holder.stdin.write(
        "BEGIN IMMEDIATE; UPDATE contacts SET state = 'OK' WHERE id = 2;\n.shell sleep 1\nCOMMIT;\n"
    )
    holder.stdin.close()
    return holder


def _remove_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


async def test_database_replaced_under_the_daemon_is_reopened(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite3"
    await init_db(db)
    upstream(db, SEED_SQL)
    async with running_daemon(db, CFG, poll_interval=0.05, max_backoff=0.1) as run:
        await run.settle()
        with capture_logs() as logs:
            _remove_database(db)
            await wait_until(lambda: any(e["event"] == "database_unavailable" for e in logs))
            await init_db(db)
            # In a thread: the in-process daemon may hold the write lock (its
            # start-up writes) and needs the event loop to release it.
            await anyio.to_thread.run_sync(
                upstream, db, "INSERT INTO contacts (id, email, birth_date, state) "
                "VALUES (1, 'new@example.com', '1950-03-20', 'TX');",
            )  # fmt: skip
            await wait_until(lambda: pending_events(db) == 0, limit=20)
        assert [e["event"] for e in logs if e["event"] == "database_gone"] == ["database_gone"]
    await assert_plan_is_full_recompute(db, CFG, TODAY)


async def test_database_recreated_while_waiting_is_waited_for_until_migrated(
    tmp_path: Path,
) -> None:
    # The database disappears, and comes back as a file init-db has not
    # migrated yet (schema version 0): the daemon waits on instead of exiting,
    # and serves the database once init-db has brought it up to date.
    db = tmp_path / "org.sqlite3"
    await init_db(db)
    upstream(db, SEED_SQL)
    async with running_daemon(db, CFG, poll_interval=0.05, max_backoff=0.1) as run:
        await run.settle()
        with capture_logs() as logs:
            _remove_database(db)
            await wait_until(lambda: any(e["event"] == "database_unavailable" for e in logs))
            sqlite3.connect(db).close()  # an empty database file
            await wait_until(
                lambda: any("schema version 0" in str(e.get("error", "")) for e in logs)
            )
            await init_db(db)
            await anyio.to_thread.run_sync(
                upstream, db, "INSERT INTO contacts (id, email, birth_date, state) "
                "VALUES (1, 'new@example.com', '1950-03-20', 'TX');",
            )  # fmt: skip
            await wait_until(lambda: pending_events(db) == 0, limit=20)
    await assert_plan_is_full_recompute(db, CFG, TODAY)


async def test_inbox_files_reach_the_plan(db_path: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    async with running_daemon(db_path, CFG, inbox=inbox) as run:
        await run.settle()
        tmp = inbox / ".new.ndjson"
        tmp.write_text(
            '{"op":"upsert","contact":{"id":1,"email":"a@example.com",'
            '"birth_date":"1950-03-20","state":"TX","zip_code":"75001"}}\n'
            '{"op":"upsert","contact":{"id":"x"}}\n'
        )
        tmp.rename(inbox / "new.ndjson")
        # The inbox watcher, not a settle(), brings the file in.
        await wait_until(lambda: (inbox / "done" / "new.ndjson").exists())
        await quiet(db_path)
        await run.settle()
    assert query(db_path, "SELECT count(*) FROM email_schedules WHERE contact_id = 1") != [(0,)]
    assert (inbox / "rejected" / "new.ndjson.ndjson").exists()
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


# --- the daemon as a real process -----------------------------------------------------------


def _daemon_process(
    db_path: Path, today: date, log_file: Path, config: str = ""
) -> subprocess.Popen[bytes]:
    """``mailplan run`` as systemd would start it (``python -m service``)."""
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "MAILPLAN_DAILY_CAP": "50",
        "MAILPLAN_TIMEZONE": "America/Chicago",
    }  # fmt: skip
    env.pop("NOTIFY_SOCKET", None)
    env.pop("MAILPLAN_CONFIG", None)
    command = [
        sys.executable,
        "-m",
        "service",
        "run",
        "--db",
        str(db_path),
        "--today",
        today.isoformat(),
        "--config",
        str(log_file.with_suffix(".toml")),
    ]
    log_file.with_suffix(".toml").write_text(config)
    with log_file.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


MANY_CONTACTS = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
INSERT INTO contacts (id, email, birth_date, effective_date, state, zip_code)
SELECT i, 'c' || i || '@example.com',
       printf('19%02d-%02d-%02d', 40 + i % 30, 1 + i % 12, 1 + i % 28),
       printf('20%02d-%02d-%02d', 10 + i % 12, 1 + (i * 7) % 12, 1 + (i * 3) % 28),
       CASE i % 5 WHEN 0 THEN 'CA' WHEN 1 THEN 'TX' WHEN 2 THEN 'NY' WHEN 3 THEN 'MO' ELSE 'OK' END,
       '75001'
FROM n;
"""


@requires_sqlite3
def test_sigterm_during_a_large_fanout_exits_fast_and_cleanly(
    db_path: Path, tmp_path: Path
) -> None:
    upstream(db_path, MANY_CONTACTS)
    log_file = tmp_path / "daemon.log"
    proc = _daemon_process(db_path, TODAY, log_file)
    try:
        # Wait until the full plan of 4000 contacts is being written in chunks.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if query(db_path, "SELECT count(*) FROM scheduler_runs WHERE trigger = 'fanout'")[0][0]:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the daemon never started the fan-out")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log_file.read_text()
    assert proc.returncode == 0, output
    assert elapsed < 5
    assert "stop_requested" in output
    # All or nothing per transaction: contacts with a plan state are exactly
    # those up to the stored fan-out cursor (or all, if it finished).
    state = query(db_path, "SELECT value FROM scheduler_state WHERE key = 'fanout'")
    planned = query(db_path, "SELECT count(*), max(contact_id) FROM contact_plan_state")[0]
    if state and state[0][0]:
        import json

        after = json.loads(str(state[0][0]))["after"]
        assert planned == (after, after)
        assert pending_events(db_path) > 0
    # A restart finishes the job.
    proc = _daemon_process(db_path, TODAY, log_file)
    try:
        deadline = time.monotonic() + 120
        while pending_events(db_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert pending_events(db_path) == 0
    anyio.run(assert_plan_is_full_recompute, db_path, settings(daily_cap=50), TODAY)


def _wait(condition: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _fanouts(db_path: Path) -> int:
    rows = query(db_path, "SELECT count(*) FROM scheduler_runs WHERE trigger = 'fanout' "
                          "AND finished_at IS NOT NULL")  # fmt: skip
    count = rows[0][0]
    assert isinstance(count, int)
    return count


@requires_sqlite3
def test_sighup_reloads_the_configuration_file(db_path: Path, tmp_path: Path) -> None:
    upstream(db_path, SEED_SQL)
    log_file = tmp_path / "daemon.log"
    proc = _daemon_process(db_path, TODAY, log_file, config="horizon_days = 60\n")
    try:
        _wait(lambda: _fanouts(db_path) == 1 and pending_events(db_path) == 0, 30, "start-up")
        log_file.with_suffix(".toml").write_text("horizon_days = 90\n")
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: _fanouts(db_path) == 2 and pending_events(db_path) == 0, 30, "reload")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log_file.read_text()
    assert '"planning_changed": true' in output, output
    anyio.run(assert_plan_is_full_recompute, db_path, settings(daily_cap=50, horizon_days=90),
              TODAY)  # fmt: skip


# --- systemd units ------------------------------------------------------------------------


UNITS = ROOT / "systemd"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (apt-get install systemd)",
)
def test_unit_files_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's script.
    script = shutil.which("mailplan") or str(Path(sys.executable).with_name("mailplan"))
    assert Path(script).exists(), "the mailplan console script is not installed"
    names = []
    for unit in sorted(UNITS.iterdir()):
        text = unit.read_text().replace("/usr/local/bin/mailplan", script)
        name = unit.name.replace("@.", "@acme.")
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "mailplan" not in proc.stderr, proc.stderr


def test_units_use_notify_and_the_watchdog() -> None:
    for name in ("mailplan.service", "mailplan@.service"):
        text = (UNITS / name).read_text()
        for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=", "ExecReload="):
            assert line in text, (name, line)
    template = (UNITS / "mailplan@.service").read_text()
    assert "--db /var/lib/mailplan/%i.sqlite3" in template
    timer = (UNITS / "mailplan-reconcile.timer").read_text()
    assert "OnCalendar=" in timer and "Persistent=true" in timer
    assert (
        "recompute --db /var/lib/mailplan/mailplan.sqlite3 --all --verify"
        in (UNITS / "mailplan-reconcile.service").read_text()
    )
