"""The plan writer (SPEC 7) and the untouchability of history (I4)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.planning.model import ContactPlan, PlanRow
from service.store import Scope, SqliteStore, Store, WriteOptions, init_db, open_store
from service.store.sql import queries
from service.store.types import StoredRow, WriteResult
from service.store.writer import PendingWrite, prepare

D = date(2026, 6, 1)


def _row(
    cid: int = 1,
    etype: str = "birthday",
    event: date = D,
    desired: date | None = None,
    status: str = "pre-scheduled",
    **kw: Any,
) -> PlanRow:
    planned = status == "pre-scheduled"
    row = PlanRow(
        cid,
        etype,
        event,
        desired or event - timedelta(days=14),
        "pre-scheduled" if planned else "skipped",
        skip_reason=None if planned else "Year-round exclusion for NY",
        priority=10,
        template=f"{etype}_template",
        allowed_from=None,
        allowed_to=None,
    )
    return dataclasses.replace(row, **kw) if kw else row


def _plan(cid: int, *rows: PlanRow, review: date | None = None) -> ContactPlan:
    return ContactPlan(cid, tuple(rows), review)


async def _write(store: Store, ids: list[int], plans: list[ContactPlan], run: str) -> WriteResult:
    async with store.transaction():
        loaded = await store.load_scope(Scope.of_ids(ids))
        return await store.write_plans(loaded, plans, WriteOptions(run_id=run))


def _moves(result: WriteResult) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """(gone, added) of a write's balance delta: contact, step-1, scheduled, priority."""

    def rows(rs: list[StoredRow]) -> list[tuple[object, ...]]:
        return [
            (r.item.key[0], r.step1.isoformat() if r.step1 else None, r.scheduled.isoformat(),
             r.item.priority)
            for r in rs
        ]  # fmt: skip

    return rows(result.delta.gone), rows(result.delta.added)


def _contacts(path: Path, *ids: int) -> None:
    con = sqlite3.connect(path)
    con.executemany(
        "INSERT INTO contacts (id, email) VALUES (?, 'a@example.com')", [(i,) for i in ids]
    )
    con.commit()
    con.close()


def _rows(path: Path, where: str = "1") -> list[sqlite3.Row]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        return con.execute(f"SELECT * FROM email_schedules WHERE {where} ORDER BY id").fetchall()
    finally:
        con.close()


def _exec(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    con = sqlite3.connect(path)
    con.execute(sql, params)
    con.commit()
    con.close()


async def test_new_rows_are_inserted_with_the_balancer_dates_at_desired(
    store: Store, db_path: Path
) -> None:
    _contacts(db_path, 1)
    row = _row(allowed_from=date(2026, 5, 10), allowed_to=D, catchup_note="caught up")
    result = await _write(store, [1], [_plan(1, row, review=date(2026, 5, 19))], "run-1")
    assert (result.stats.inserted, result.stats.updated, result.stats.deleted) == (1, 0, 0)
    # A new non-skipped row joins the sweep at its desired date (D - 14 days).
    assert _moves(result) == ([], [(1, "2026-05-18", "2026-05-18", 10)])
    assert result.delta.days == {date(2026, 5, 18): [1, 1]}
    [stored] = _rows(db_path)
    assert dict(stored) | {"id": 0, "created_at": "", "updated_at": ""} == dict(stored) | {
        "id": 0,
        "created_at": "",
        "updated_at": "",
        "contact_id": 1,
        "email_type": "birthday",
        "event_year": 2026,
        "event_month": 6,
        "event_day": 1,
        "desired_date": "2026-05-18",
        "balance_date": "2026-05-18",
        "scheduled_send_date": "2026-05-18",
        "scheduled_send_time": "08:30:00",
        "status": "pre-scheduled",
        "skip_reason": None,
        "priority": 10,
        "email_template": "birthday_template",
        "catchup_note": "caught up",
        "allowed_from": "2026-05-10",
        "allowed_to": "2026-06-01",
        "scheduler_run_id": "run-1",
        "send_timezone": None,
        "send_at_utc": None,
    }
    assert await store.due_contacts(date(2026, 5, 19)) == [1]


async def test_unchanged_rows_keep_run_id_and_created_at(store: Store, db_path: Path) -> None:
    _contacts(db_path, 1)
    plan = _plan(1, _row(), _row(etype="effective_date", event=date(2026, 7, 1)))
    await _write(store, [1], [plan], "run-1")
    # Let the rows look old and balanced elsewhere, as after a rebalance.
    _exec(
        db_path,
        "UPDATE email_schedules SET created_at = '2020-01-01 00:00:00', "
        "updated_at = '2020-01-01 00:00:00', scheduled_send_date = '2026-05-20'",
    )
    before = [dict(r) for r in _rows(db_path)]
    result = await _write(store, [1], [plan], "run-2")
    assert (result.stats.unchanged, result.stats.changed) == (2, 0)
    assert not result.delta
    assert [dict(r) for r in _rows(db_path)] == before


async def test_changed_content_is_updated_with_the_new_run_id(store: Store, db_path: Path) -> None:
    _contacts(db_path, 1)
    await _write(store, [1], [_plan(1, _row())], "run-1")
    _exec(
        db_path,
        "UPDATE email_schedules SET created_at = '2020-01-01 00:00:00', "
        "scheduled_send_date = '2026-05-20', balance_date = '2026-05-19'",
    )
    # A template change does not move the row and changes nothing for balancing.
    result = await _write(store, [1], [_plan(1, _row(template="new"))], "run-2")
    assert result.stats.updated == 1 and not result.delta
    [r] = _rows(db_path)
    assert (r["email_template"], r["scheduler_run_id"], r["created_at"]) == (
        "new",
        "run-2",
        "2020-01-01 00:00:00",
    )
    assert (r["scheduled_send_date"], r["balance_date"]) == ("2026-05-20", "2026-05-19")
    # A priority change keeps the dates; the old version leaves the sweep and
    # the new one joins it with the same dates (step-1 05-19, scheduled 05-20).
    result = await _write(store, [1], [_plan(1, _row(template="new", priority=5))], "run-3")
    assert _moves(result) == (
        [(1, "2026-05-19", "2026-05-20", 10)],
        [(1, "2026-05-19", "2026-05-20", 5)],
    )
    assert not any(any(c) for c in result.delta.days.values())
    assert _rows(db_path)[0]["scheduled_send_date"] == "2026-05-20"
    # A new desired date (catch-up) restarts balancing at it.
    moved = _row(template="new", priority=5, desired=date(2026, 5, 25), catchup_note="late")
    result = await _write(store, [1], [_plan(1, moved)], "run-4")
    assert _moves(result) == (
        [(1, "2026-05-19", "2026-05-20", 5)],
        [(1, "2026-05-25", "2026-05-25", 5)],
    )
    [r] = _rows(db_path)
    assert (r["desired_date"], r["balance_date"], r["scheduled_send_date"], r["id"]) == (
        "2026-05-25",
        "2026-05-25",
        "2026-05-25",
        1,
    )


async def test_skipped_rows_are_scheduled_on_their_desired_date(
    store: Store, db_path: Path
) -> None:
    _contacts(db_path, 1)
    await _write(store, [1], [_plan(1, _row())], "run-1")
    _exec(db_path, "UPDATE email_schedules SET scheduled_send_date = '2026-05-20'")
    result = await _write(store, [1], [_plan(1, _row(status="skipped"))], "run-2")
    # The row leaves the sweep with the dates it had there (step-1 05-18,
    # scheduled 05-20); skipped rows are not balanced.
    assert _moves(result) == ([(1, "2026-05-18", "2026-05-20", 10)], [])
    [r] = _rows(db_path)
    assert (r["status"], r["scheduled_send_date"], r["skip_reason"]) == (
        "skipped",
        "2026-05-18",
        "Year-round exclusion for NY",
    )
    result = await _write(
        store, [1], [_plan(1, _row(status="skipped", skip_reason="Frequency limit exceeded"))], "r3"
    )
    assert result.stats.updated == 1 and not result.delta


async def test_rows_no_longer_planned_are_deleted(store: Store, db_path: Path) -> None:
    _contacts(db_path, 1, 2)
    await _write(store, [1, 2], [_plan(1, _row()), _plan(2, _row(cid=2))], "run-1")
    result = await _write(store, [1, 2], [_plan(1, _row()), _plan(2)], "run-2")
    assert (result.stats.deleted, result.stats.unchanged) == (1, 1)
    assert _moves(result) == ([(2, "2026-05-18", "2026-05-18", 10)], [])
    assert [r["contact_id"] for r in _rows(db_path)] == [1]


async def test_a_contact_outside_the_new_plans_but_in_scope_loses_its_rows(
    store: Store, db_path: Path
) -> None:
    _contacts(db_path, 1, 2)
    await _write(store, [1, 2], [_plan(1, _row()), _plan(2, _row(cid=2))], "run-1")
    _exec(db_path, "PRAGMA foreign_keys = OFF")
    con = sqlite3.connect(db_path)  # an upstream without foreign keys: nothing cascades
    con.execute("DELETE FROM contacts WHERE id = 2")
    con.commit()
    con.close()
    async with store.transaction():
        chunks = [c async for c in store.iter_loaded_chunks(10)]
        [chunk] = chunks
        assert [d.contact.id for d in chunk.contacts] == [1]
        result = await store.write_plans(chunk, [_plan(1, _row())], WriteOptions("run-2"))
    assert (result.stats.deleted, result.stats.unchanged) == (1, 1)
    assert [r["contact_id"] for r in _rows(db_path)] == [1]
    assert await store.due_contacts(date(2100, 1, 1)) == []


async def test_history_identity_is_never_planned_or_touched(store: Store, db_path: Path) -> None:
    _contacts(db_path, 1)
    _exec(
        db_path,
        "INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status, "
        "event_year, event_month, event_day, created_at, updated_at) VALUES "
        "(1, 'birthday', '2026-05-18', 'sent', 2026, 6, 1, '2020-01-01', '2020-01-01')",
    )
    before = [dict(r) for r in _rows(db_path)]
    result = await _write(store, [1], [_plan(1, _row())], "run-1")
    assert result.stats.inserted == 0
    assert [dict(r) for r in _rows(db_path)] == before


async def test_same_type_rows_may_share_a_scheduled_day(store: Store, db_path: Path) -> None:
    _contacts(db_path, 1)
    a = _row(etype="followup_cold", event=date(2026, 5, 1), desired=date(2026, 5, 20))
    b = _row(etype="followup_cold", event=date(2026, 5, 3), desired=date(2026, 5, 20))
    result = await _write(store, [1], [_plan(1, a, b)], "run-1")
    assert result.stats.inserted == 2


def test_every_plan_write_statement_is_guarded_by_status() -> None:
    q = queries("current_carrier")
    for name in ("update_plan_row", "delete_plan_row"):
        assert "status IN ('pre-scheduled', 'skipped')" in q[name]


async def test_send_instant_in_the_contact_time_zone(store: Store, db_path: Path) -> None:
    _contacts(db_path, 1)
    async with store.transaction():
        loaded = await store.load_scope(Scope.of_ids([1]))
        await store.write_plans(
            loaded,
            [_plan(1, _row())],
            WriteOptions("run-1", timezones={1: "America/New_York"}),
        )
    [r] = _rows(db_path)
    # 08:30 EDT on 2026-05-18 is 12:30 UTC.
    assert (r["send_timezone"], r["send_at_utc"]) == ("America/New_York", "2026-05-18T12:30:00Z")


# -- Hypothesis: random mixes of history and plan rows (I4, I6) --------------------

HISTORY = ["scheduled", "processing", "sent", "delivered", "failed"]
TYPES = ["birthday", "effective_date", "followup_cold"]

identity = st.tuples(st.integers(1, 3), st.sampled_from(TYPES), st.integers(0, 4))
stored_rows = st.lists(
    st.tuples(
        identity, st.sampled_from([*HISTORY, "pre-scheduled", "skipped"]), st.integers(0, 20)
    ),
    max_size=12,
    unique_by=lambda t: t[0],
)
new_rows = st.lists(
    st.tuples(
        identity,
        st.sampled_from(["pre-scheduled", "skipped"]),
        st.integers(0, 20),
        st.integers(1, 3),
    ),
    max_size=12,
    unique_by=lambda t: t[0],
)


def _event(day: int) -> date:
    return date(2026, 6, 1) + timedelta(days=day)


async def _scenario(path: Path, stored: list[tuple[Any, ...]], new: list[tuple[Any, ...]]) -> None:
    await init_db(path)
    _contacts(path, 1, 2, 3)
    con = sqlite3.connect(path)
    con.executemany(
        "INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status, "
        "event_year, event_month, event_day, desired_date, balance_date, priority, "
        "created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 10, '2020-01-01', '2020-01-01')",
        [
            (
                cid,
                et,
                (_event(ev) - timedelta(days=sh)).isoformat(),
                status,
                _event(ev).year,
                _event(ev).month,
                _event(ev).day,
                (_event(ev) - timedelta(days=sh)).isoformat(),
                (_event(ev) - timedelta(days=sh)).isoformat(),
            )
            for (cid, et, ev), status, sh in stored
        ],
    )
    con.commit()
    con.close()
    history_before = [dict(r) for r in _rows(path, "status NOT IN ('pre-scheduled', 'skipped')")]
    history_keys = {(r["contact_id"], r["email_type"], r["event_day"]) for r in history_before}
    plans = [
        _plan(
            cid,
            *[
                _row(c, et, _event(ev), _event(ev) - timedelta(days=sh), status, priority=prio)
                for (c, et, ev), status, sh, prio in new
                if c == cid
            ],
        )
        for cid in (1, 2, 3)
    ]
    async with open_store(path) as store:
        first = await _write(store, [1, 2, 3], plans, "run-1")
        assert [
            dict(r) for r in _rows(path, "status NOT IN ('pre-scheduled', 'skipped')")
        ] == history_before
        plan_rows = _rows(path, "status IN ('pre-scheduled', 'skipped')")
        expected = {
            (c, et, _event(ev).day, status)
            for (c, et, ev), status, _, _ in new
            if (c, et, _event(ev).day) not in history_keys
        }
        assert {
            (r["contact_id"], r["email_type"], r["event_day"], r["status"]) for r in plan_rows
        } == expected
        assert first.stats.inserted + first.stats.updated + first.stats.unchanged == len(expected)
        again = await _write(store, [1, 2, 3], plans, "run-2")
        assert again.stats.changed == 0 and not again.delta


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stored=stored_rows, new=new_rows)
def test_random_plan_and_history_mixes(
    stored: list[tuple[Any, ...]], new: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_scenario(Path(folder) / "db.sqlite3", stored, new))


def test_rows_helper_is_consistent() -> None:
    # PlanRow equality includes every field the writer compares.
    row = _row()
    assert dataclasses.replace(row, priority=11) != row


async def _write_chunk(store: Store, plans: list[ContactPlan], run: str) -> WriteResult:
    """A chunk write as a full recompute does it: plan rows compared by fingerprint."""
    async with store.transaction():
        loaded = await store.load_chunk(None, 100, plan_rows=False)
        assert loaded.stored is None
        return await store.write_plans(loaded, plans, WriteOptions(run_id=run))


async def test_fingerprints_skip_unchanged_plans(store: Store, db_path: Path) -> None:
    _contacts(db_path, 1, 2, 3)
    plans = [_plan(1, _row()), _plan(2, _row(cid=2)), _plan(3)]
    first = await _write_chunk(store, plans, "run-1")
    assert first.stats.inserted == 2
    again = await _write_chunk(store, plans, "run-2")
    assert (again.stats.changed, again.stats.unchanged) == (0, 2)
    # Contact 2's plan changes: only its rows are read and rewritten.
    changed = [_plan(1, _row()), _plan(2, _row(cid=2, priority=3)), _plan(3)]
    result = await _write_chunk(store, changed, "run-3")
    assert (result.stats.updated, result.stats.unchanged) == (1, 1)
    assert [r["scheduler_run_id"] for r in _rows(db_path)] == ["run-1", "run-3"]


async def test_fingerprint_mode_removes_rows_of_vanished_contacts(
    store: Store, db_path: Path
) -> None:
    _contacts(db_path, 1, 2)
    await _write_chunk(store, [_plan(1, _row()), _plan(2, _row(cid=2))], "run-1")
    # Deleted on a connection without foreign keys: the rows stay behind.
    _exec(db_path, "DELETE FROM contacts WHERE id = 2")
    # And an orphan row nobody planned (no plan state at all).
    _exec(
        db_path,
        "INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status, "
        "event_year, event_month, event_day) "
        "VALUES (9, 'birthday', '2026-05-01', 'pre-scheduled', 2026, 5, 15)",
    )
    result = await _write_chunk(store, [_plan(1, _row())], "run-2")
    assert (result.stats.deleted, result.stats.unchanged) == (2, 1)
    assert [r["contact_id"] for r in _rows(db_path)] == [1]


async def test_rows_leaving_the_plan_outside_the_writer_leave_balance_gaps(
    store: Store, db_path: Path
) -> None:
    _contacts(db_path, 1, 2)
    await _write(store, [1, 2], [_plan(1, _row()), _plan(2, _row(cid=2))], "run-1")
    _exec(db_path, "UPDATE email_schedules SET scheduled_send_date = '2026-05-20'")
    # The sender claims contact 1's row; contact 2 is deleted with a cascade.
    _exec(db_path, "UPDATE email_schedules SET status = 'scheduled' WHERE contact_id = 1")
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("DELETE FROM contacts WHERE id = 2")
    con.commit()
    con.close()
    gaps = sqlite3.connect(db_path).execute(
        "SELECT contact_id, email_type, balance_date, scheduled_send_date, back "
        "FROM scheduler_balance_gaps ORDER BY contact_id"
    )
    assert gaps.fetchall() == [
        (1, "birthday", "2026-05-18", "2026-05-20", 0),
        (2, "birthday", "2026-05-18", "2026-05-20", 0),
    ]
    # The next rebalance takes both rows out of the sweep, with those dates.
    async with store.transaction():
        gone, back = await store.take_gaps()
    assert back == []
    assert [(r.item.key[0], r.step1, r.scheduled) for r in gone] == [
        (1, date(2026, 5, 18), date(2026, 5, 20)),
        (2, date(2026, 5, 18), date(2026, 5, 20)),
    ]
    left = sqlite3.connect(db_path).execute("SELECT count(*) FROM scheduler_balance_gaps")
    assert left.fetchone() == (0,)


async def test_the_planners_own_deletes_leave_no_gaps(store: Store, db_path: Path) -> None:
    _contacts(db_path, 1)
    await _write(store, [1], [_plan(1, _row())], "run-1")
    await _write(store, [1], [_plan(1)], "run-2")
    left = sqlite3.connect(db_path).execute("SELECT count(*) FROM scheduler_balance_gaps")
    assert left.fetchone() == (0,)


# -- a write compared ahead of its transaction (diff_ahead, write_pending) --------------


def _ahead_plans(priority: int, review: date | None = None) -> list[ContactPlan]:
    return [_plan(1, _row(priority=priority), review=review), _plan(2, _row(cid=2), review=review)]


def _count_comparisons(monkeypatch: Any) -> list[object]:
    """The writer's comparisons with the stored rows from now on, one entry each."""
    compared: list[object] = []
    real = SqliteStore._diffed

    async def spy(self: SqliteStore, *args: Any) -> Any:
        compared.append(args)
        return await real(self, *args)

    monkeypatch.setattr(SqliteStore, "_diffed", spy)
    return compared


async def _ahead(store: Store, plans: list[ContactPlan], run: str) -> PendingWrite:
    """Plans of contacts 1 and 2 compared with the stored rows in a read snapshot."""
    options = WriteOptions(run_id=run)
    prepared = prepare(Scope.of_ids([1, 2]), plans, set(), options)
    async with store.snapshot():
        return await store.diff_ahead(prepared, options)


async def _planned_then_ahead(store: Store, db_path: Path) -> PendingWrite:
    """Contacts 1 and 2 planned at priority 10 (run-1), then their plans with
    contact 1 at priority 3 compared ahead (run-2)."""
    _contacts(db_path, 1, 2)
    await _write(store, [1, 2], _ahead_plans(10), "run-1")
    return await _ahead(store, _ahead_plans(3), "run-2")


async def test_a_diff_found_ahead_is_written_as_found_when_nobody_wrote(
    store: Store, db_path: Path, monkeypatch: Any
) -> None:
    pending = await _planned_then_ahead(store, db_path)
    compared = _count_comparisons(monkeypatch)
    async with store.transaction():
        result = await store.write_pending(pending, WriteOptions(run_id="run-2"))
    # Contact 1's row changed priority, contact 2's did not; nothing was
    # compared again inside the lock.
    assert (result.stats.updated, result.stats.unchanged, result.stats.inserted) == (1, 1, 0)
    assert compared == []
    rows = _rows(db_path)
    assert [(r["contact_id"], r["priority"], r["scheduler_run_id"]) for r in rows] == [
        (1, 3, "run-2"),
        (2, 10, "run-1"),
    ]


async def test_a_diff_found_ahead_is_compared_again_after_another_process_wrote_the_rows(
    store: Store, db_path: Path
) -> None:
    # The diff says: update contact 1's row to priority 3.
    pending = await _planned_then_ahead(store, db_path)
    # Meanwhile another mailplan process removes that row (no upstream event).
    async with open_store(db_path) as other:
        await _write(other, [1], [_plan(1)], "other")
    assert [r["contact_id"] for r in _rows(db_path)] == [2]
    async with store.transaction():
        result = await store.write_pending(pending, WriteOptions(run_id="run-2"))
    # Applied as found, the update would have matched no row and left
    # contact 1 without its email; compared again, the row is inserted.
    assert (result.stats.inserted, result.stats.updated, result.stats.unchanged) == (1, 0, 1)
    assert sorted((r["contact_id"], r["priority"]) for r in _rows(db_path)) == [(1, 3), (2, 10)]


async def test_a_diff_found_ahead_is_compared_again_after_an_upstream_change(
    store: Store, db_path: Path, monkeypatch: Any
) -> None:
    pending = await _planned_then_ahead(store, db_path)
    # The sender takes contact 1's row (its trigger raises an event).
    _exec(db_path, "UPDATE email_schedules SET status = 'sent' WHERE contact_id = 1")
    compared = _count_comparisons(monkeypatch)
    async with store.transaction():
        result = await store.write_pending(pending, WriteOptions(run_id="run-2"))
    # Compared again: the sent row is history now, never planned or touched (I4).
    assert len(compared) == 1
    assert (result.stats.inserted, result.stats.updated, result.stats.deleted) == (0, 0, 0)
    rows = _rows(db_path)
    assert [(r["contact_id"], r["status"], r["priority"]) for r in rows] == [
        (1, "sent", 10),
        (2, "pre-scheduled", 10),
    ]


async def test_a_diff_found_ahead_is_compared_again_after_another_process_wrote_a_state(
    store: Store, db_path: Path, monkeypatch: Any
) -> None:
    # Another process may store a review date without changing any row
    # (which moves neither the event sequence nor the plan version): the
    # states read ahead are stale, and this write's own review date must win.
    _contacts(db_path, 1, 2)
    await _write(store, [1, 2], _ahead_plans(10, review=date(2026, 5, 19)), "run-1")
    pending = await _ahead(store, _ahead_plans(10, review=date(2026, 5, 19)), "run-2")
    async with open_store(db_path) as other:
        async with other.transaction():
            await other.set_review_dates([(1, date(2026, 9, 1))])
    assert await store.due_contacts(date(2026, 5, 19)) == [2]
    compared = _count_comparisons(monkeypatch)
    async with store.transaction():
        result = await store.write_pending(pending, WriteOptions(run_id="run-2"))
    assert len(compared) == 1
    assert (result.stats.changed, result.stats.unchanged) == (0, 2)
    assert await store.due_contacts(date(2026, 5, 19)) == [1, 2]


async def test_a_diff_found_ahead_takes_the_run_id_of_the_transaction(
    store: Store, db_path: Path
) -> None:
    # The daemon's batch starts its run inside the transaction: the diff
    # found before is stamped with that run's id, in the rows and the journal.
    _contacts(db_path, 1, 2, 3)
    await _write(store, [1, 2], _ahead_plans(10), "run-1")
    options = WriteOptions(run_id="")
    plans = [*_ahead_plans(3), _plan(3, _row(cid=3))]
    prepared = prepare(Scope.of_ids([1, 2, 3]), plans, set(), options)
    async with store.snapshot():
        pending = await store.diff_ahead(prepared, options)
    async with store.transaction():
        result = await store.write_pending(pending.for_run("42"), WriteOptions(run_id="42"))
    assert (result.stats.inserted, result.stats.updated, result.stats.unchanged) == (1, 1, 1)
    rows = _rows(db_path)
    assert sorted((r["contact_id"], r["priority"], r["scheduler_run_id"]) for r in rows) == [
        (1, 3, "42"),
        (2, 10, "run-1"),
        (3, 10, "42"),
    ]
    con = sqlite3.connect(db_path)
    journal = con.execute(
        "SELECT contact_id, op, run_id FROM plan_journal WHERE run_id = 42 ORDER BY contact_id"
    ).fetchall()
    con.close()
    assert journal == [(1, "update", 42), (3, "insert", 42)]


# -- Hypothesis: a diff found ahead writes what a comparison inside the lock writes -------

ahead_rows = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.sampled_from(["birthday", "effective_date"]),
        st.integers(0, 2),
        st.sampled_from(["pre-scheduled", "skipped"]),
        st.integers(0, 20),
        st.sampled_from([3, 10]),
    ),
    max_size=8,
    unique_by=lambda t: t[:3],
)
meanwhile = st.one_of(
    st.just(("none",)),
    st.tuples(st.just("other plans"), ahead_rows, st.sets(st.integers(1, 3), min_size=1)),
    st.tuples(st.just("other review"), st.integers(1, 3), st.integers(0, 60)),
    st.tuples(st.just("sent"), st.integers(1, 3)),
)


def _ahead_plan_list(rows: list[tuple[Any, ...]], ids: Any = (1, 2, 3), review: int = 30) -> Any:
    return [
        _plan(
            cid,
            *[
                _row(c, et, _event(ev), _event(ev) - timedelta(days=sh), status, priority=prio)
                for c, et, ev, status, sh, prio in rows
                if c == cid
            ],
            review=_event(review),
        )
        for cid in sorted(ids)
    ]


async def _prepared_write(
    store: Store,
    plans: Any,
    run: str,
    ids: Any = (1, 2, 3),
    *,
    between: Callable[[], Awaitable[None]] | None = None,
) -> WriteResult:
    """Prepared plans written: compared inside the lock, or (``between``
    given) compared ahead, then ``between`` awaited, then written."""
    options = WriteOptions(run_id=run, today=date(2026, 5, 1))
    prepared = prepare(Scope.of_ids(sorted(ids)), plans, set(), options)
    if between is None:
        async with store.transaction():
            return await store.write_prepared(prepared, options)
    async with store.snapshot():
        pending = await store.diff_ahead(prepared, options)
    await between()
    async with store.transaction():
        return await store.write_pending(pending, options)


async def _meanwhile(path: Path, change: tuple[Any, ...]) -> None:
    """Another mailplan process or an upstream system changes something."""
    kind = change[0]
    if kind == "other plans":
        _, rows, ids = change
        async with open_store(path) as other:
            await _prepared_write(other, _ahead_plan_list(rows, ids), "other", ids)
    elif kind == "other review":
        _, cid, day = change
        async with open_store(path) as other, other.transaction():
            await other.set_review_dates([(cid, _event(day))])
    elif kind == "sent":
        _exec(
            path,
            "UPDATE email_schedules SET status = 'sent' "
            "WHERE contact_id = ? AND status = 'pre-scheduled'",
            (change[1],),
        )


def _outcome(path: Path) -> tuple[Any, ...]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT contact_id, email_type, event_year, event_month, event_day, status, "
            "skip_reason, priority, desired_date, balance_date, scheduled_send_date "
            "FROM email_schedules ORDER BY 1, 2, 3, 4, 5"
        ).fetchall()
        states = con.execute(
            "SELECT contact_id, review_date, invalid, fingerprint FROM contact_plan_state "
            "ORDER BY 1"
        ).fetchall()
        journal = con.execute(
            "SELECT contact_id, email_type, event_date, op, new_status, new_desired "
            "FROM plan_journal WHERE run_id IS NOT NULL ORDER BY 1, 2, 3, 4"
        ).fetchall()
        days = con.execute("SELECT day, step1, scheduled FROM balance_days ORDER BY 1").fetchall()
    finally:
        con.close()
    return rows, states, journal, days


async def _ahead_scenario(
    folder: Path, first: list[Any], new: list[Any], change: tuple[Any, ...], review: int
) -> None:
    outcomes = []
    for ahead in (False, True):
        path = folder / f"{ahead}.sqlite3"
        await init_db(path)
        _contacts(path, 1, 2, 3)
        async with open_store(path) as store:
            await _prepared_write(store, _ahead_plan_list(first), "1")
            plans = _ahead_plan_list(new, review=review)
            if ahead:
                result = await _prepared_write(
                    store, plans, "2", between=functools.partial(_meanwhile, path, change)
                )
            else:
                await _meanwhile(path, change)
                result = await _prepared_write(store, plans, "2")
        outcomes.append((result.stats, _outcome(path)))
    # Compared ahead, with the change in between, the write leaves what a
    # comparison inside the lock after the change leaves: the same rows,
    # plan states, journal entries and per-day counts.
    assert outcomes[1] == outcomes[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=ahead_rows, new=ahead_rows, change=meanwhile, review=st.integers(0, 60))
def test_a_diff_found_ahead_writes_what_a_comparison_in_the_lock_writes(
    first: list[Any], new: list[Any], change: tuple[Any, ...], review: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_ahead_scenario(Path(folder), first, new, change, review))
