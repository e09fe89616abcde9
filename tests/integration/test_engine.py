"""The engine end to end on real SQLite files: full recompute, incremental
recompute, dry run, verification (SPEC 6, 7, 11: I1, I2, I6)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import engine
from service.engine import PlanContext
from service.planning.params import BalanceParams
from service.planning.rules import builtin_rules
from service.store import Store, init_db, open_store
from service.store.sqlite import SqliteStore
from service.store.types import BalanceDelta
from service.tools.generate import generate

TODAY = date(2026, 11, 29)
# A small cap so that the cap sweep and smoothing really move rows.
CTX = PlanContext(
    rules=builtin_rules(),
    balance=BalanceParams(daily_cap=4, ed_daily_soft_limit=1),
    chunk_size=37,
)


def _upstream(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    con = sqlite3.connect(path, timeout=10)
    con.execute("PRAGMA foreign_keys = ON")
    con.execute(sql, params)
    con.commit()
    con.close()


def _count(path: Path, sql: str) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


@pytest.fixture
def book(db_path: Path) -> Path:
    """A generated book of 150 contacts with history, clicks and campaigns."""
    generate(db_path, 150, seed=7, today=TODAY)
    return db_path


async def _assert_export_is_dry_run(store: Store, today: date, ctx: PlanContext = CTX) -> None:
    assert await store.export_rows() == await engine.dry_run_plan(store, ctx, today)


async def test_full_recompute_then_again_writes_nothing(store: Store, book: Path) -> None:
    first = await engine.full_recompute(store, CTX, TODAY)
    assert first.contacts_recomputed == 150 and first.inserted > 0
    assert first.rows_moved > 0  # the cap of 4 a day moves rows
    stamps = _count(book, "SELECT count(*) FROM email_schedules WHERE scheduler_run_id = '1'")
    second = await engine.full_recompute(store, CTX, TODAY)
    # I6: nothing inserted, updated, deleted or moved; rows keep run 1.
    assert (second.inserted, second.updated, second.deleted, second.rows_moved) == (0, 0, 0, 0)
    assert second.unchanged == first.inserted
    assert (
        _count(book, "SELECT count(*) FROM email_schedules WHERE scheduler_run_id = '1'") == stamps
    )
    await _assert_export_is_dry_run(store, TODAY)


async def test_full_recompute_consumes_earlier_events_and_records_the_run(
    store: Store, book: Path
) -> None:
    # init-db ensuring 'aep', and the recompute_all that generate queued
    assert await store.pending_event_count() == 2
    stats = await engine.full_recompute(store, CTX, TODAY, trigger="cli")
    assert stats.events_consumed == 2 and await store.pending_event_count() == 0
    [run] = await store.last_runs(1)
    assert (run.trigger, run.today, run.error) == ("cli", TODAY.isoformat(), None)
    assert run.stats == stats
    # N was snapshotted for the day: 150 generated contacts, some without e-mail.
    assert await store.capacity_snapshot(TODAY) == await store.contact_count_with_email()


async def test_dry_run_writes_nothing(store: Store, book: Path) -> None:
    before = _count(book, "SELECT total_changes()")  # fresh connection: 0
    rows = await engine.dry_run_plan(store, CTX, TODAY)
    assert rows and before == 0
    assert _count(book, "SELECT count(*) FROM email_schedules WHERE status = 'pre-scheduled'") == 0
    assert await store.capacity_snapshot(TODAY) is None
    # Sorted by (contact_id, email_type, event_date) as SPEC 10 prints them.
    assert rows == sorted(rows, key=lambda r: (r.contact_id, r.email_type, r.event_date))


async def test_rows_are_never_scheduled_before_today(store: Store, book: Path) -> None:
    await engine.full_recompute(store, CTX, TODAY)
    rows = await store.export_rows()
    assert all(r.scheduled_date >= TODAY for r in rows if r.status == "pre-scheduled")
    # Skipped rows are not balanced: their scheduled date is their desired date.
    assert all(r.scheduled_date == r.desired_date for r in rows if r.status == "skipped")


async def test_incremental_changes_equal_a_full_recompute(store: Store, book: Path) -> None:
    await engine.full_recompute(store, CTX, TODAY)
    _upstream(book, "UPDATE contacts SET birth_date = '1950-12-20', state = 'TX' WHERE id = 3")
    _upstream(book, "UPDATE contacts SET state = 'NY' WHERE id = 4")
    _upstream(book, "DELETE FROM contacts WHERE id = 5")
    _upstream(book, "UPDATE contacts SET email = '' WHERE id = 6")
    _upstream(
        book,
        "INSERT INTO contacts (id, email, birth_date, effective_date, state, zip_code) "
        "VALUES (1000, 'new@example.com', '1951-12-24', '2020-01-09', 'CA', '90210')",
    )
    async with store.transaction():
        events = await store.fetch_events(100)
        ids = {int(e.contact_id) for e in events if isinstance(e.contact_id, int)}
        stats = await engine.recompute_contacts(store, CTX, ids, TODAY, run_id=99)
        await store.delete_events(e.id for e in events)
    assert ids == {3, 4, 5, 6, 1000}
    assert stats.contacts_recomputed == 5 and stats.inserted + stats.updated + stats.deleted > 0
    await _assert_export_is_dry_run(store, TODAY)
    assert _count(book, "SELECT count(*) FROM email_schedules WHERE contact_id = 5") == 0


async def test_recompute_requires_a_transaction(store: Store, book: Path) -> None:
    with pytest.raises(RuntimeError, match="transaction"):
        await engine.recompute_contacts(store, CTX, [1], TODAY, run_id=1)


async def test_recompute_of_an_unchanged_contact_writes_nothing(store: Store, book: Path) -> None:
    await engine.full_recompute(store, CTX, TODAY)
    async with store.transaction():
        stats = await engine.recompute_contacts(store, CTX, range(1, 151), TODAY, run_id=5)
    assert (stats.inserted, stats.updated, stats.deleted, stats.rows_moved) == (0, 0, 0, 0)


async def test_chunked_range_recompute_equals_full(store: Store, book: Path) -> None:
    await engine.full_recompute(store, CTX, TODAY)
    _upstream(book, "UPDATE contacts SET state = 'CA' WHERE id BETWEEN 20 AND 60")
    after: int | None = None
    while True:
        async with store.transaction():
            _, after = await engine.recompute_range(store, CTX, after, 25, TODAY, run_id=7)
        if after == 2**63 - 1:
            break
    await _assert_export_is_dry_run(store, TODAY)


async def test_days_advance_with_review_dates_and_the_tick(store: Store, book: Path) -> None:
    await engine.full_recompute(store, CTX, TODAY)
    for offset in range(1, 9):
        day = TODAY + timedelta(days=offset)
        async with store.transaction():
            # The tick's work: the catch-up move of the contacts not due (SPEC
            # 5.11), the due ones recomputed, a global rebalance.
            run = await store.start_run("tick", day)
            await store.move_caught_up(day, run, 0, await store.max_contact_id())
            due = await store.due_contacts(day)
            await engine.recompute_contacts(store, CTX, due, day, run_id=run)
            await engine.rebalance_all(store, CTX, day)
        await _assert_export_is_dry_run(store, day)


async def test_verify_reports_and_repairs_drift(store: Store, book: Path) -> None:
    await engine.full_recompute(store, CTX, TODAY)
    clean = await engine.verify(store, CTX, TODAY, repair=False)
    assert clean.drift == 0
    con = sqlite3.connect(book)
    con.execute(
        "UPDATE email_schedules SET scheduled_send_date = '2030-01-01' WHERE id = "
        "(SELECT min(id) FROM email_schedules WHERE status = 'pre-scheduled')"
    )
    con.execute(
        "DELETE FROM email_schedules WHERE id = "
        "(SELECT max(id) FROM email_schedules WHERE status = 'skipped')"
    )
    con.execute(
        "INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status, "
        "event_year, event_month, event_day, desired_date) "
        "VALUES (1, 'birthday', '2031-01-01', 'pre-scheduled', 2031, 1, 15, '2031-01-01')"
    )
    con.commit()
    con.close()
    report = await engine.verify(store, CTX, TODAY, repair=False)
    assert (report.changed, report.missing, report.extra) == (1, 1, 1)
    assert not report.repaired and len(report.samples) == 3
    repaired = await engine.verify(store, CTX, TODAY, repair=True)
    assert repaired.repaired and repaired.repair_stats is not None
    assert (await engine.verify(store, CTX, TODAY, repair=False)).drift == 0


async def test_send_instant_in_contact_time_zone(store: Store, book: Path) -> None:
    ctx = PlanContext(rules=builtin_rules(), send_in_contact_timezone=True)
    await engine.full_recompute(store, ctx, TODAY)
    con = sqlite3.connect(book)
    rows = con.execute(
        "SELECT send_timezone, scheduled_send_date, send_at_utc FROM email_schedules "
        "WHERE status = 'pre-scheduled' AND send_timezone = 'America/New_York' LIMIT 1"
    ).fetchall()
    con.close()
    [(_zone, day, instant)] = rows
    # 08:30 in New York on a date in winter (EST, UTC-5) is 13:30 UTC.
    if date.fromisoformat(day).month in (12, 1, 2):
        assert instant == f"{day}T13:30:00Z"
    assert instant.endswith(":30:00Z")


# -- I1 as a property: random upstream changes, incremental vs full --------------

changes = st.lists(
    st.tuples(
        st.sampled_from(["birth", "state", "delete", "click", "email", "ed", "claim", "send"]),
        st.integers(1, 40),
        st.integers(0, 400),
    ),
    min_size=1,
    max_size=8,
)
STATES = ["CA", "NY", "TX", "NV", "MO", "OR", "", "ZZ"]


def _apply(path: Path, kind: str, cid: int, n: int) -> None:
    day = (TODAY - timedelta(days=365 * 70) + timedelta(days=n)).isoformat()
    statements = {
        "birth": ("UPDATE contacts SET birth_date = ? WHERE id = ?", (day, cid)),
        "ed": (
            "UPDATE contacts SET effective_date = ? WHERE id = ?",
            ((TODAY - timedelta(days=300 + n)).isoformat(), cid),
        ),
        "state": ("UPDATE contacts SET state = ? WHERE id = ?", (STATES[n % len(STATES)], cid)),
        "delete": ("DELETE FROM contacts WHERE id = ?", (cid,)),
        "click": (
            "INSERT INTO tracking_clicks (contact_id, clicked_at) VALUES (?, ?)",
            (cid, (TODAY - timedelta(days=n % 20)).isoformat()),
        ),
        "email": ("UPDATE contacts SET email = ? WHERE id = ?", ("" if n % 2 else "a@b.co", cid)),
        # The sender claims one of the contact's planned rows, or all of today's.
        "claim": (
            "UPDATE email_schedules SET status = 'scheduled' WHERE status = 'pre-scheduled' "
            "AND (id = (SELECT min(id) FROM email_schedules WHERE contact_id = ? "
            "AND status = 'pre-scheduled') OR (? % 3 = 0 AND scheduled_send_date = ?))",
            (cid, n, TODAY.isoformat()),
        ),
        "send": (
            "UPDATE email_schedules SET status = 'sent', actual_send_datetime = ? "
            "WHERE status = 'scheduled' AND (contact_id = ? OR ? % 2 = 0)",
            (f"{TODAY.isoformat()} 08:31:00", cid, n),
        ),
    }
    _upstream(path, *statements[kind])


async def _incremental_equals_full(path: Path, steps: list[tuple[str, int, int]]) -> None:
    await init_db(path)
    generate(path, 40, seed=3, today=TODAY)
    ctx = PlanContext(rules=builtin_rules(), balance=BalanceParams(daily_cap=2), chunk_size=16)
    async with open_store(path) as store:
        await engine.full_recompute(store, ctx, TODAY)
        for kind, cid, n in steps:
            _apply(path, kind, cid, n)
            async with store.transaction():
                events = await store.fetch_events(1000)
                ids = {e.contact_id for e in events if isinstance(e.contact_id, int)}
                await engine.recompute_contacts(store, ctx, ids, TODAY, run_id=2)
                await store.delete_events(e.id for e in events)
        assert await store.export_rows() == await engine.dry_run_plan(store, ctx, TODAY)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=changes)
def test_incremental_equals_full_for_random_changes(steps: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_incremental_equals_full(Path(folder) / "db.sqlite3", steps))


async def _full_after_changes(path: Path, steps: list[tuple[str, int, int]]) -> None:
    await init_db(path)
    generate(path, 40, seed=5, today=TODAY)
    ctx = PlanContext(rules=builtin_rules(), balance=BalanceParams(daily_cap=2), chunk_size=9)
    async with open_store(path) as store:
        await engine.full_recompute(store, ctx, TODAY)
        for kind, cid, n in steps:
            _apply(path, kind, cid, n)
        # Unprocessed changes, then a full recompute that trusts fingerprints.
        await engine.full_recompute(store, ctx, TODAY)
        assert await store.export_rows() == await engine.dry_run_plan(store, ctx, TODAY)
        second = await engine.full_recompute(store, ctx, TODAY)
        assert second.inserted + second.updated + second.deleted + second.rows_moved == 0


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=changes)
def test_full_recompute_by_fingerprint_after_random_changes(
    steps: list[tuple[str, int, int]],
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_full_after_changes(Path(folder) / "db.sqlite3", steps))


async def test_contact_deleted_without_cascade_loses_its_rows_in_a_full_recompute(
    store: Store, book: Path
) -> None:
    await engine.full_recompute(store, CTX, TODAY)
    con = sqlite3.connect(book)  # foreign keys off: nothing cascades
    con.execute("DELETE FROM contacts WHERE id IN (7, 150)")
    con.commit()
    con.close()
    stats = await engine.full_recompute(store, CTX, TODAY)
    assert stats.deleted > 0
    assert _count(book, "SELECT count(*) FROM email_schedules WHERE contact_id IN (7, 150) "
                  "AND status IN ('pre-scheduled', 'skipped')") == 0  # fmt: skip
    await _assert_export_is_dry_run(store, TODAY)


async def test_repair_rewrites_rows_edited_behind_the_planner(store: Store, book: Path) -> None:
    await engine.full_recompute(store, CTX, TODAY)
    _upstream(
        book,
        "UPDATE email_schedules SET email_template = 'tampered', skip_reason = 'x' "
        "WHERE status = 'skipped'",
    )
    # Trusting fingerprints, a full recompute does not read unchanged plans...
    await engine.full_recompute(store, CTX, TODAY)
    assert _count(book, "SELECT count(*) FROM email_schedules WHERE skip_reason = 'x'") > 0
    # ...verify finds the drift and its repair compares every stored row.
    report = await engine.verify(store, CTX, TODAY, repair=True)
    assert report.changed > 0 and report.repaired
    assert _count(book, "SELECT count(*) FROM email_schedules WHERE skip_reason = 'x'") == 0
    assert (
        _count(book, "SELECT count(*) FROM email_schedules WHERE email_template = 'tampered'") == 0
    )


async def test_global_rebalance_in_many_transactions_equals_the_dry_run(
    store: Store, book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The global rebalance commits after every chunk of 4 desired days and
    # every 3 rows saved; a writer commits in between. The result must still
    # be the global balance (the dry run), and the commits must really
    # happen: the writer's row, inserted while the rebalance had committed
    # part way, is there.
    monkeypatch.setattr(engine.core, "GLOBAL_COMMIT_EVERY_S", 0.0)
    monkeypatch.setattr(engine.core, "GLOBAL_COMMIT_GAP_S", 0.0)
    # Saves of 3 rows each, with a commit between them too.
    monkeypatch.setattr(engine.rebalance, "PAUSED_SAVE_BATCH", 3)
    commits = 0
    real = SqliteStore.commit_and_resume
    writer: asyncio.Future[None] | None = None

    async def counting(self: SqliteStore, seconds: float) -> None:
        nonlocal commits, writer
        commits += 1
        if writer is None:
            # Another connection waits for the lock (busy timeout 10 s) and
            # gets it in the gap, not after the whole rebalance.
            writer = asyncio.ensure_future(asyncio.to_thread(
                _upstream, book, "UPDATE contacts SET last_emailed = '2026-11-01' WHERE id = 1"
            ))  # fmt: skip
            await asyncio.sleep(0.01)
            seconds = 0.2
        await real(self, seconds)

    monkeypatch.setattr(SqliteStore, "commit_and_resume", counting)
    await engine.full_recompute(store, CTX, TODAY)
    assert commits > 3
    assert writer is not None and writer.done()
    await writer
    assert _count(book, "SELECT count(*) FROM contacts WHERE last_emailed = '2026-11-01'") == 1
    await _assert_export_is_dry_run(store, TODAY)


async def test_verify_finds_and_repairs_wrong_balancing_counts(store: Store, book: Path) -> None:
    await engine.full_recompute(store, CTX, TODAY)
    clean = await engine.verify(store, CTX, TODAY, repair=False)
    assert (clean.drift, clean.count_days) == (0, 0)
    # Something behind mailplan's back changes a count: the plan rows still
    # equal a full recompute, but the next incremental rebalance would trust
    # a wrong number of candidates on that day.
    _upstream(book, "UPDATE balance_days SET scheduled = scheduled + 5 WHERE day = "
                    "(SELECT min(day) FROM balance_days)")  # fmt: skip
    found = await engine.verify(store, CTX, TODAY, repair=True)
    assert (found.drift, found.count_days, found.repaired) == (0, 1, True)
    again = await engine.verify(store, CTX, TODAY, repair=False)
    assert (again.drift, again.count_days) == (0, 0)


async def test_a_new_days_rebase_the_sender_wrote_into_is_no_basis(
    store: Store, book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new day's rebase (what ends a fan-out after a settings change) reads
    # its change in a read snapshot and saves in parts with commits between
    # them. The sender marks planned rows `sent` in each of those openings.
    # Whatever the rebase stores, the balance after the next incremental
    # rebalance (which takes up the gaps the sender left) must be the global
    # balance of the rows as they are then (I2).
    await engine.full_recompute(store, CTX, TODAY)
    later = TODAY + timedelta(days=2)
    monkeypatch.setattr(engine.core, "COMMIT_EVERY_S", 0.0)
    monkeypatch.setattr(engine.core, "GLOBAL_COMMIT_GAP_S", 0.0)
    monkeypatch.setattr(engine.incremental, "PAUSED_SAVE_BATCH", 2)
    sent = 0

    def send_one() -> None:
        nonlocal sent
        _upstream(
            book,
            "UPDATE email_schedules SET status = 'sent' WHERE id = (SELECT id FROM "
            "email_schedules WHERE status = 'pre-scheduled' AND scheduled_send_date >= ? "
            "ORDER BY scheduled_send_date, id LIMIT 1 OFFSET ?)",
            (later.isoformat(), 3 * sent),
        )
        sent += 1

    real_resume = SqliteStore.commit_and_resume
    real_outside = SqliteStore.outside_write_lock

    async def resume_after_a_send(self: SqliteStore, seconds: float) -> None:
        # The sender waits for the lock (busy timeout 10 s) and gets it in the gap.
        sender = asyncio.ensure_future(asyncio.to_thread(send_one))
        await asyncio.sleep(0.01)
        await real_resume(self, 0.2)
        await sender

    @contextlib.asynccontextmanager
    async def outside_with_a_send(self: SqliteStore) -> AsyncIterator[None]:
        async with real_outside(self):
            await asyncio.to_thread(send_one)
            yield

    monkeypatch.setattr(SqliteStore, "commit_and_resume", resume_after_a_send)
    monkeypatch.setattr(SqliteStore, "outside_write_lock", outside_with_a_send)
    async with store.transaction():
        await engine.rebalance_new_day(store, CTX, later)
    monkeypatch.undo()
    assert sent >= 2
    # The daemon's next batch: an incremental rebalance of no change of its
    # own, which takes up the gaps (or a global one where no basis was kept).
    async with store.transaction():
        await engine.core._rebalance(store, CTX, later, BalanceDelta(), pauses=False)
    after_next_batch = await store.export_rows()
    async with store.transaction():
        await engine.rebalance_all(store, CTX, later)
    assert after_next_batch == await store.export_rows()


TIGHT = replace(CTX, balance=BalanceParams(daily_cap=2, ed_daily_soft_limit=1))


@pytest.mark.parametrize("walk_in_snapshot", [False, True])
async def test_a_batch_rebalance_saved_in_parts_stays_a_basis_while_the_sender_takes_rows(
    store: Store, book: Path, monkeypatch: pytest.MonkeyPatch, walk_in_snapshot: bool
) -> None:
    # The sender's commit frees room on crowded days, and the daemon's next
    # batch pulls the carry forward: a move of many rows, saved in parts with
    # the lock left to upstream writers between them (and, for a change this
    # large, its days walked in a read snapshot without the lock). The sender
    # takes more rows in each opening. Meanwhile the stored balance is marked
    # as no basis (a crash there leaves a global rebalance to do); at the end
    # it is one again, and the next incremental rebalance (taking up the
    # gaps) gives the global balance (I2).
    # Two a day: much of the plan is carried past its step-1 date.
    await engine.full_recompute(store, TIGHT, TODAY)
    monkeypatch.setattr(engine.core, "SNAPSHOT_WALK_GAPS", 1 if walk_in_snapshot else 10**9)
    monkeypatch.setattr(engine.core, "COMMIT_EVERY_S", 0.0)
    monkeypatch.setattr(engine.core, "GLOBAL_COMMIT_GAP_S", 0.0)
    monkeypatch.setattr(engine.incremental, "PAUSED_SAVE_BATCH", 1)
    take = (
        "UPDATE email_schedules SET status = 'sent' WHERE id IN (SELECT id FROM "
        "email_schedules WHERE status = 'pre-scheduled' AND scheduled_send_date >= ? "
        "ORDER BY scheduled_send_date, id LIMIT ? OFFSET ?)"
    )
    _upstream(book, take, (TODAY.isoformat(), 12, 0))
    # In each opening: a row carried past its step-1 date (what the batch
    # pulls forward, so likely a move still to be saved) and a row elsewhere.
    scattered = (
        "UPDATE email_schedules SET status = 'sent' WHERE id IN (SELECT id FROM "
        "email_schedules WHERE status = 'pre-scheduled' AND scheduled_send_date >= ?1 "
        "AND scheduled_send_date > balance_date ORDER BY scheduled_send_date DESC LIMIT 1) "
        "OR id IN (SELECT id FROM email_schedules WHERE status = 'pre-scheduled' "
        "AND scheduled_send_date >= ?1 ORDER BY (id * 7919) % 101, id LIMIT 1)"
    )
    basis_in_the_openings: list[str] = []
    sent = 0

    def send_one() -> None:
        nonlocal sent
        # Waits for the lock: in the opening, after the part's commit.
        _upstream(book, scattered, (TODAY.isoformat(),))
        sent += 1
        con = sqlite3.connect(book, timeout=10)
        basis_in_the_openings.append(
            con.execute(
                "SELECT value FROM scheduler_state WHERE key = ?", (engine.core.BALANCE_BASIS,)
            ).fetchone()[0]
        )
        con.close()

    real_resume = SqliteStore.commit_and_resume

    async def resume_after_a_send(self: SqliteStore, seconds: float) -> None:
        sender = asyncio.ensure_future(asyncio.to_thread(send_one))
        await asyncio.sleep(0.01)
        await real_resume(self, 0.2)
        await sender

    real_outside = SqliteStore.outside_write_lock
    snapshots = 0

    @contextlib.asynccontextmanager
    async def outside_with_a_send(self: SqliteStore) -> AsyncIterator[None]:
        # The lock is free while the walk reads: the sender commits there (a
        # busy lock would keep it waiting for its 10 s timeout).
        nonlocal snapshots
        snapshots += 1
        async with real_outside(self):
            await asyncio.to_thread(send_one)
            yield
            await asyncio.to_thread(send_one)

    monkeypatch.setattr(SqliteStore, "commit_and_resume", resume_after_a_send)
    monkeypatch.setattr(SqliteStore, "outside_write_lock", outside_with_a_send)
    async with store.transaction():
        stats = await engine.recompute_contacts(store, TIGHT, [1], TODAY, "batch")
    monkeypatch.undo()
    assert snapshots == (1 if walk_in_snapshot else 0)
    assert stats.rows_moved > 2 and sent >= 1
    assert set(basis_in_the_openings) == {""}
    async with store.transaction():
        stored = await store.get_state(engine.core.BALANCE_BASIS)
    assert stored and stored.startswith("v")
    # The next batch's rebalance, incremental on that basis: it raises if the
    # counts disagree with the rows and the gaps (where the engine would fall
    # back to a global rebalance).
    async with store.transaction():
        cap = await engine.capacity_for(store, TIGHT, TODAY, save=False)
        await engine.rebalance.rebalance(store, cap, TODAY, BalanceDelta())
        # The gaps taken up, the per-day counts equal the rows.
        assert await store.balance_days_drift() == 0
    after_next_batch = await store.export_rows()
    async with store.transaction():
        await engine.rebalance_all(store, TIGHT, TODAY)
    assert after_next_batch == await store.export_rows()


def _balanced_rows(path: Path) -> list[tuple[int, date, date, tuple[object, ...]]]:
    """(priority, step-1 date, send date, key) of every pre-scheduled row with
    a step-1 date, sorted as SPEC 5.5's sweep takes them (priority, step-1
    date, contact, type, event), here in Python rather than by a query."""
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT COALESCE(priority, 10), balance_date, contact_id, email_type, event_year, "
            "event_month, event_day, scheduled_send_date FROM email_schedules "
            "WHERE status = 'pre-scheduled' AND balance_date IS NOT NULL"
        ).fetchall()
    finally:
        con.close()
    rows.sort()
    return [
        (prio, date.fromisoformat(step1), date.fromisoformat(sent), (cid, etype, date(y, m, d)))
        for prio, step1, cid, etype, y, m, d, sent in rows
    ]


async def test_the_carry_reads_return_the_rows_they_define(store: Store, book: Path) -> None:
    # The balancing reads the incremental walk follows a carry with, on the
    # real table and its indexes: the first rows carried out of a day (step-1
    # date on or before it, scheduled after it) and a day's carried arrivals
    # (step-1 date the day, scheduled after it), each against the rows
    # selected and sorted here. A cap of 1 carries rows on most days.
    ctx = replace(CTX, balance=BalanceParams(daily_cap=1, ed_daily_soft_limit=1))
    await engine.full_recompute(store, ctx, TODAY)
    rows = _balanced_rows(book)
    carried_days = 0
    for day in sorted({step1 for _, step1, _, _ in rows})[:60]:
        carry = [key for _, step1, sent, key in rows if step1 <= day < sent]
        arrivals = [key for _, step1, sent, key in rows if step1 == day < sent]
        carried_days += len(carry) > 3
        for n in (0, 1, 3, 1000):
            assert [r.item.key for r in await store.carried_first(day, n)] == carry[:n]
            assert [r.item.key for r in await store.carried_arrivals(day, n)] == arrivals[:n]
        assert [r.item.key for r in await store.carried_first(day, -1)] == carry
    # The reads were really tested on days with a carry longer than a seek.
    assert carried_days >= 20


@pytest.mark.parametrize("long_walk_days", [1, 10**9])
async def test_after_a_long_walk_the_next_walks_in_a_snapshot(
    store: Store, book: Path, monkeypatch: pytest.MonkeyPatch, long_walk_days: int
) -> None:
    # Two a day: the carry runs on. A batch whose store's last walk went
    # through at least SNAPSHOT_WALK_DAYS days walks in a read snapshot
    # (the lock left to upstream writers); the first walk, with none
    # before it, holds the lock. Either way the plan is the full
    # recompute's.
    await engine.full_recompute(store, TIGHT, TODAY)
    monkeypatch.setattr(engine.core, "SNAPSHOT_WALK_GAPS", 10**9)
    monkeypatch.setattr(engine.core, "SNAPSHOT_WALK_DAYS", long_walk_days)
    real_outside = SqliteStore.outside_write_lock
    snapshots: list[int] = []
    done: list[int] = []

    @contextlib.asynccontextmanager
    async def counting(self: SqliteStore) -> AsyncIterator[None]:
        snapshots.append(len(done))
        async with real_outside(self):
            yield

    monkeypatch.setattr(SqliteStore, "outside_write_lock", counting)
    move = (
        "UPDATE contacts SET birth_date = date(birth_date, '+5 days') "
        "WHERE id IN (SELECT value FROM json_each(?))"
    )
    for ids in ([1, 2, 3], [4, 5, 6], [7, 8, 9]):
        _upstream(book, move, (json.dumps(ids),))
        async with store.transaction():
            stats = await engine.recompute_contacts(store, TIGHT, ids, TODAY, "batch")
        done.append(stats.rows_moved)
    moved = sum(done)
    monkeypatch.undo()
    assert moved > 0
    # The walks' snapshots: none in the first batch, one in each after it
    # when every walk counts as long; none when none does.
    assert sorted(set(snapshots)) == ([1, 2] if long_walk_days == 1 else [])
    await _assert_export_is_dry_run(store, TODAY, TIGHT)
