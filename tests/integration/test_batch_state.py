"""The state a write transaction reads with BEGIN, and writes deferred to the
next statement: never stale, never lost, rolled back with the transaction."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import date
from pathlib import Path

import anyio
import pytest

from service.errors import StoreError
from service.store import RunStats, SqliteStore


def _other(db_path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """A commit of another connection (an operator's command, upstream)."""
    con = sqlite3.connect(db_path, isolation_level=None, timeout=5)
    try:
        con.execute(sql, params)
    finally:
        con.close()


SET = (
    "INSERT INTO scheduler_state (key, value, updated_at) VALUES (?, ?, datetime('now')) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


async def test_state_read_in_a_transaction_follows_other_commits(
    store: SqliteStore, db_path: Path
) -> None:
    _other(db_path, SET, ("k", "one"))
    async with store.transaction():
        assert await store.get_state("k") == "one"
    # Changed by another process between two transactions: the next one
    # reads the new value (the copy lives only as long as one transaction).
    _other(db_path, SET, ("k", "two"))
    async with store.transaction():
        assert await store.get_state("k") == "two"
    _other(db_path, "DELETE FROM scheduler_state WHERE key = 'k'")
    async with store.transaction():
        assert await store.get_state("k") is None
    # Outside a transaction every read goes to the database.
    _other(db_path, SET, ("k", "three"))
    assert await store.get_state("k") == "three"


async def test_own_writes_are_read_back_and_rolled_back(store: SqliteStore) -> None:
    async with store.transaction():
        await store.set_state("a", "1")
        assert await store.get_state("a") == "1"
        await store.set_state("a", "2")
        assert await store.get_state("a") == "2"
        await store.delete_state("a")
        assert await store.get_state("a") is None
        await store.set_state("a", "3")
    assert await store.get_state("a") == "3"
    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.set_state("a", "4")
            raise RuntimeError("batch failed")
    async with store.transaction():
        assert await store.get_state("a") == "3"


async def test_savepoint_rollback_forgets_the_copy(store: SqliteStore) -> None:
    async with store.transaction():
        await store.set_state("s", "before")
        await store.run_sql("SAVEPOINT p", what="savepoint")
        await store.set_state("s", "inside")
        await store.run_sql("ROLLBACK TO p", what="savepoint rollback")
        await store.run_sql("RELEASE p", what="savepoint release")
        # The database holds "before" again; so must every read.
        assert await store.get_state("s") == "before"


async def test_commit_and_resume_reads_what_others_wrote_in_the_gap(
    store: SqliteStore, db_path: Path
) -> None:
    _other(db_path, SET, ("g", "old"))
    async with store.transaction():
        assert await store.get_state("g") == "old"
        # A global rebalance commits part way and lets other writers in: one
        # waiting for the lock meanwhile writes in the gap.
        writer = threading.Thread(target=_other, args=(db_path, SET, ("g", "new")))
        writer.start()
        await anyio.sleep(0.05)
        await store.commit_and_resume(0.5)
        writer.join()
        assert await store.get_state("g") == "new"


async def test_capacity_snapshot_of_a_new_day(store: SqliteStore) -> None:
    # The day's N is a state key of its own: a new day has none until saved
    # (SPEC 6), also within a transaction that read the state at its start.
    day1, day2 = date(2026, 12, 1), date(2026, 12, 2)
    async with store.transaction():
        await store.save_capacity_snapshot(day1, 100)
    async with store.transaction():
        assert await store.capacity_snapshot(day1) == 100
        assert await store.capacity_snapshot(day2) is None
        await store.save_capacity_snapshot(day2, 120)
        assert await store.capacity_snapshot(day2) == 120
    assert await store.capacity_snapshot(day2) == 120


async def _run_record(db_path: Path, run_id: int) -> tuple[object, ...] | None:
    con = sqlite3.connect(db_path)
    try:
        row: tuple[object, ...] | None = con.execute(
            "SELECT events_consumed, contacts_recomputed, finished_at IS NOT NULL "
            "FROM scheduler_runs WHERE id = ?",
            (run_id,),
        ).fetchone()
        return row
    finally:
        con.close()


async def test_deferred_run_record_commits_with_the_transaction(
    store: SqliteStore, db_path: Path
) -> None:
    async with store.transaction():
        run_id = await store.start_run("events", date(2026, 12, 2))
        await store.finish_run(run_id, RunStats(events_consumed=3, contacts_recomputed=2))
        # Queued, not yet written: read back in the same transaction, after it.
        rows = await store.fetch_each([("last_runs", (1,))])
        assert rows[0][0][0] == run_id
        assert rows[0][0][2] is not None  # finished_at
    assert await _run_record(db_path, run_id) == (3, 2, 1)
    # Rolled back: neither the run nor its deferred record stays.
    with pytest.raises(RuntimeError):
        async with store.transaction():
            other = await store.start_run("events", date(2026, 12, 2))
            await store.finish_run(other, RunStats(events_consumed=9))
            raise RuntimeError("batch failed")
    assert await _run_record(db_path, other) is None
    # Outside a transaction it is written at once.
    run3 = await store.start_run("events", date(2026, 12, 2))
    await store.finish_run(run3, RunStats(events_consumed=1))
    assert await _run_record(db_path, run3) == (1, 0, 1)


async def test_a_failing_deferred_write_fails_the_transaction(
    store: SqliteStore, db_path: Path
) -> None:
    with pytest.raises(StoreError):
        async with store.transaction():
            await store.set_state("kept", "no")
            # A write that fails (its JSON parameter is malformed): queued,
            # it fails with the COMMIT, and everything of the transaction
            # is rolled back.
            store.execute_later("delete_events", {"ids": "not json"})
    assert await store.get_state("kept") is None
    with pytest.raises(StoreError):
        store.execute_later("set_state", ("k", "v"))


def _thread(con: sqlite3.Connection) -> int:
    return threading.get_ident()


async def test_statements_inline_run_on_the_calling_thread(store: SqliteStore) -> None:
    here = threading.get_ident()
    assert await store.in_connection(_thread) != here
    with store.statements_inline():
        assert await store.in_connection(_thread) == here
        async with store.transaction():
            await store.set_state("i", "1")
            assert await store.get_state("i") == "1"
        with store.statements_inline(False):
            assert await store.in_connection(_thread) != here
        assert await store.in_connection(_thread) == here
    assert await store.in_connection(_thread) != here
    assert await store.get_state("i") == "1"


def _slow_thread(con: sqlite3.Connection, started: threading.Event) -> int:
    started.set()
    time.sleep(0.2)
    return threading.get_ident()


async def test_inline_waits_its_turn_behind_a_handed_over_statement(store: SqliteStore) -> None:
    # Another task's statement is running on the connection's thread: a
    # statement asked for inline meanwhile goes over to that thread as well
    # (queued behind it), so the connection is never used by two threads.
    here = threading.get_ident()
    started = threading.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.in_connection, _slow_thread, started)
        await anyio.to_thread.run_sync(started.wait)
        with store.statements_inline():
            assert await store.in_connection(_thread) != here
    with store.statements_inline():
        assert await store.in_connection(_thread) == here


async def test_the_daemons_small_reads_take_no_hand_over(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: list[object] = []
    real = store._db._execute

    async def counting(fn: object, *args: object) -> object:
        handed.append(fn)
        return await real(fn, *args)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(store._db, "_execute", counting)
    await store.use_short_lock_waits()
    handed.clear()
    await store.get_state("x")
    await store.fetch_events(10)
    assert len(handed) == 2
    store.run_small_statements_inline()
    handed.clear()
    await store.get_state("x")
    await store.fetch_events(10)
    await store.data_version()
    async with store.transaction():  # BEGIN (with the state), COMMIT of nothing inline
        await store.set_state("x", "1")
    # set_state is no small read: it alone goes over (and not the COMMIT,
    # whose transaction ran no statement inline but its BEGIN).
    assert len(handed) == 2
    assert await store.get_state("x") == "1"
