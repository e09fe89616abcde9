"""The full recompute's chunk pipeline (SPEC 12): planning in a process pool,
reads outside the write lock, contacts skipped when their inputs did not
change. Each path must store exactly what the reference (the dry run) says."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

import anyio
import pytest

from service import engine
from service.config import Settings
from service.daemon.processing import BatchLimits, Processor
from service.engine import PlanContext, chunks, core, fullpass
from service.engine.core import BALANCE_BASIS
from service.planning.model import Campaigns, ContactData, ContactPlan
from service.store import RunStats, Store, open_store
from service.store.checkpoint import CheckpointThread
from service.store.loaders import MAX_ID
from service.store.sqlite import SqliteStore
from service.tools.generate import generate

TODAY = date(2026, 11, 29)


def _ctx(**settings: object) -> PlanContext:
    # Built from settings: a planning fingerprint, so input digests are kept.
    return PlanContext.from_settings(Settings(daily_cap=4, **settings), chunk_size=41)  # type: ignore[arg-type]


def _upstream(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    con = sqlite3.connect(path, timeout=10)
    con.execute(sql, params)
    con.commit()
    con.close()


@pytest.fixture
def book(db_path: Path) -> Path:
    generate(db_path, 160, seed=11, today=TODAY)
    return db_path


class _Counting:
    """Counts the contacts the pass really plans (in this process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.planned: list[int] = []
        real = chunks.plan_all

        def counting(
            ctx: PlanContext, campaigns: Campaigns, data: Iterable[ContactData], today: date
        ) -> list[ContactPlan]:
            data = list(data)
            self.planned.extend(d.contact.id for d in data)
            return real(ctx, campaigns, data, today)

        monkeypatch.setattr(chunks, "plan_all", counting)


async def _export_is_dry_run(store: SqliteStore, ctx: PlanContext, today: date) -> None:
    assert await store.export_rows() == await engine.dry_run_plan(store, ctx, today)


async def test_pool_plans_what_this_process_plans(
    book: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "copy.sqlite3"
    shutil.copy(book, other)
    monkeypatch.setattr(fullpass, "POOL_MIN_CONTACTS", 0)
    exports = []
    for path, workers in ((book, 0), (other, 2)):
        ctx = PlanContext.from_settings(Settings(daily_cap=4), chunk_size=41,
                                        planning_workers=workers)  # fmt: skip
        async with open_store(path) as store:
            stats = await engine.full_recompute(store, ctx, TODAY)
            assert stats.contacts_recomputed == 160 and stats.inserted > 0
            exports.append(await store.export_rows())
            await _export_is_dry_run(store, ctx, TODAY)
    assert exports[0] == exports[1]


async def test_unchanged_contacts_are_not_planned_again(
    book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _ctx()
    async with open_store(book) as store:
        first = await engine.full_recompute(store, ctx, TODAY)
        counting = _Counting(monkeypatch)
        again = await engine.full_recompute(store, ctx, TODAY)
        # Nothing changed: nothing planned, nothing written, every row unchanged.
        assert counting.planned == []
        assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
        assert again.unchanged == first.inserted > 0
        # One contact's birth date and another's click change upstream (no
        # daemon consumes their events): exactly those two are planned again.
        _upstream(book, "UPDATE contacts SET birth_date = '1950-12-20' WHERE id = 7")
        _upstream(book, "INSERT INTO tracking_clicks (contact_id, clicked_at) "
                        "VALUES (12, '2026-11-20 10:00:00')")  # fmt: skip
        await engine.full_recompute(store, ctx, TODAY)
        assert sorted(counting.planned) == [7, 12]
        await _export_is_dry_run(store, ctx, TODAY)
        # Other settings, or no trust in fingerprints: everyone is planned.
        counting.planned.clear()
        other = _ctx(horizon_days=200)
        await engine.full_recompute(store, other, TODAY)
        assert len(counting.planned) == 160
        await _export_is_dry_run(store, other, TODAY)
        counting.planned.clear()
        await engine.full_recompute(store, other, TODAY, trust_fingerprints=False)
        assert len(counting.planned) == 160


async def test_a_later_day_plans_every_contact_again(
    book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before its review date a plan still changes by the daily catch-up move
    # (its rows wanted on a day now past move to the new day), which only the
    # tick applies: a full recompute on another day trusts no stored plan.
    ctx = _ctx()
    later = date(2026, 12, 20)
    async with open_store(book) as store:
        await engine.full_recompute(store, ctx, TODAY)
        states = await store.fetchall("plan_state@range", {"lo": 0, "hi": 10**9})
        counting = _Counting(monkeypatch)
        await engine.full_recompute(store, ctx, later)
        assert sorted(counting.planned) == sorted(r[0] for r in states)
        await _export_is_dry_run(store, ctx, later)


async def test_an_upstream_change_between_read_and_write_replans_the_chunk(
    book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The chunk holding a contact with plan rows is read, then an upstream
    # writer deletes that contact before the chunk's write transaction: the
    # event sequence moved, so the chunk is read and planned again inside
    # the lock, and the deleted contact gets no rows.
    ctx = _ctx()
    async with open_store(book) as store:
        victim = (await engine.dry_run_plan(store, ctx, TODAY))[100].contact_id
    real = SqliteStore.read_chunk
    changed = False

    async def read_then_change(self: SqliteStore, *args: object, **kwargs: object) -> object:
        nonlocal changed
        rows = await real(self, *args, **kwargs)  # type: ignore[arg-type]
        if not changed and rows.scope.contains(victim) and kwargs.get("scope") is None:
            _upstream(book, "DELETE FROM contacts WHERE id = ?", (victim,))
            changed = True
        return rows

    monkeypatch.setattr(SqliteStore, "read_chunk", read_then_change)
    async with open_store(book) as store:
        await engine.full_recompute(store, ctx, TODAY)
        assert changed
        # The change's event stays for the daemon; the plan is already its own.
        assert await store.pending_event_count() == 1
        assert await store.export_rows([victim]) == []
        await _export_is_dry_run(store, ctx, TODAY)


async def test_a_fanout_chunk_plans_only_contacts_whose_inputs_changed(
    book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The daemon's fan-out (recompute_all, a settings reload) walks every
    # contact with recompute_range; after a full recompute under the same
    # settings only a contact changed since is planned again.
    ctx = _ctx()

    async def fanout(store: SqliteStore) -> None:
        after: int | None = None
        while True:
            async with store.transaction():
                _, hi = await engine.recompute_range(store, ctx, after, 50, TODAY, run_id=9)
            if hi == MAX_ID:
                return
            after = hi

    async with open_store(book) as store:
        await engine.full_recompute(store, ctx, TODAY)
        counting = _Counting(monkeypatch)
        await fanout(store)
        assert counting.planned == []
        _upstream(book, "UPDATE contacts SET state = 'CA' WHERE id = 9")
        await fanout(store)
        assert counting.planned == [9]
        await _export_is_dry_run(store, ctx, TODAY)


class _Rebalances:
    """Counts the closing global rebalances of full recomputes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = core.rebalance_all

        async def counting(store: Store, ctx: PlanContext, today: date) -> RunStats:
            self.calls += 1
            return await real(store, ctx, today)

        monkeypatch.setattr("service.engine.fullpass.rebalance_all", counting)


async def test_a_pass_that_changes_no_plan_row_keeps_the_global_balance(
    book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first pass ends with a global rebalance and stores its basis (day
    # and capacity). A second pass on the same day changes no plan row and
    # nobody else writes: the rows still hold that balance, so it is kept
    # (no rebalance), its basis stored again, and the plan is the reference.
    ctx = _ctx()
    async with open_store(book) as store:
        await engine.full_recompute(store, ctx, TODAY)
        basis = await store.get_state(BALANCE_BASIS)
        assert basis
        rebalances = _Rebalances(monkeypatch)
        again = await engine.full_recompute(store, ctx, TODAY)
        assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
        assert rebalances.calls == 0
        assert await store.get_state(BALANCE_BASIS) == basis
        await _export_is_dry_run(store, ctx, TODAY)
        # A plan change (one contact's birth date): the pass rebalances.
        _upstream(book, "UPDATE contacts SET birth_date = '1950-12-20' WHERE id = 7")
        changed = await engine.full_recompute(store, ctx, TODAY)
        assert changed.inserted + changed.updated + changed.deleted > 0
        assert rebalances.calls == 1
        await _export_is_dry_run(store, ctx, TODAY)


async def test_a_capacity_change_without_plan_changes_still_rebalances(
    book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # daily_cap 4 -> 3 changes no plan row (balancing is not planning), but
    # every scheduled date may move: the balance stored for cap 4 is no
    # balance for cap 3, so the pass must rebalance.
    four = _ctx()
    three = PlanContext.from_settings(Settings(daily_cap=3), chunk_size=41)
    async with open_store(book) as store:
        # The two capacities balance this book differently (else a kept
        # balance could not be told from a new one).
        assert await engine.dry_run_plan(store, four, TODAY) != await engine.dry_run_plan(
            store, three, TODAY
        )
        await engine.full_recompute(store, four, TODAY)
        rebalances = _Rebalances(monkeypatch)
        stats = await engine.full_recompute(store, three, TODAY)
        assert (stats.inserted, stats.updated, stats.deleted) == (0, 0, 0)
        assert rebalances.calls == 1
        await _export_is_dry_run(store, three, TODAY)


async def test_a_balance_not_stored_as_global_is_redone(
    book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A global rebalance that did not finish (a crash while it committed part
    # way) leaves no basis: the rows are not known to be balanced. A pass
    # that changes no plan row must still rebalance: here a row's scheduled
    # date was left where no balance puts it.
    ctx = _ctx()
    async with open_store(book) as store:
        await engine.full_recompute(store, ctx, TODAY)
        async with store.transaction():
            await store.set_state(BALANCE_BASIS, "")
    _upstream(
        book,
        "UPDATE email_schedules SET scheduled_send_date = '2027-06-30' WHERE id = "
        "(SELECT min(id) FROM email_schedules WHERE status = 'pre-scheduled')",
    )
    async with open_store(book) as store:
        rebalances = _Rebalances(monkeypatch)
        stats = await engine.full_recompute(store, ctx, TODAY)
        assert (stats.inserted, stats.updated, stats.deleted) == (0, 0, 0)
        assert rebalances.calls == 1
        await _export_is_dry_run(store, ctx, TODAY)


async def test_checkpoints_run_beside_a_pass_and_sqlite_checkpoints_again_after(
    book: Path,
) -> None:
    # Inside, the pass's connection leaves the WAL to the checkpoint thread
    # (automatic checkpoint 0); the thread checkpoints every 50 ms; after,
    # SQLite's default of 1,000 pages is back.
    async with open_store(book) as store:
        async with store.checkpoints_outside_lock():
            assert await store._rows("PRAGMA wal_autocheckpoint", ()) == [(0,)]
        assert await store._rows("PRAGMA wal_autocheckpoint", ()) == [(1000,)]
    thread = CheckpointThread(book)
    thread.start()
    _upstream(book, "UPDATE contacts SET state = 'CA' WHERE id = 9")
    await anyio.sleep(0.3)
    thread.stop()
    assert thread.runs >= 2


@pytest.mark.parametrize("inline", [True, False])
async def test_chunk_writes_run_on_the_loop_thread_and_store_the_same_plan(
    book: Path, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    # Hand-overs to the connection's thread made while a chunk's write
    # transaction is open (BEGIN itself excluded: it is made before _tx is
    # "write"). Inline, a chunk's statements and its COMMIT make none: only
    # the closing transaction (the global rebalance keeps the thread) does.
    # Either way the plan stored is the dry run's (160 contacts, chunks of
    # at most 41: at least 4 chunk transactions).
    monkeypatch.setattr(fullpass, "INLINE_WRITES", inline)
    ctx = _ctx()
    async with open_store(book) as store:
        in_chunks: list[int] = []
        real = type(store._db)._execute
        chunk_tx = False

        async def counting(db: object, fn: object, *args: object, **kwargs: object) -> object:
            if chunk_tx and store._tx == "write":
                in_chunks.append(1)
            return await real(db, fn, *args, **kwargs)  # type: ignore[arg-type, no-untyped-call]

        real_chunks = fullpass._chunks

        async def chunks_only(*args: object) -> None:
            nonlocal chunk_tx
            chunk_tx = True
            try:
                await real_chunks(*args)  # type: ignore[arg-type]
            finally:
                chunk_tx = False

        monkeypatch.setattr(type(store._db), "_execute", counting)
        monkeypatch.setattr(fullpass, "_chunks", chunks_only)
        stats = await engine.full_recompute(store, ctx, TODAY, trust_fingerprints=False)
        assert stats.inserted > 0
        if inline:
            assert in_chunks == []
        else:
            # At least the insert, the journal and the COMMIT of each of 4+ chunks.
            assert len(in_chunks) >= 12


def _change_after_reading(
    monkeypatch: pytest.MonkeyPatch, contact: int, change: Callable[[], Awaitable[None]]
) -> list[int]:
    """Run ``change()`` (an upstream change) right after the pass read the
    chunk holding ``contact`` outside the write lock; returns a list that
    holds the contact once the change was made."""
    real = SqliteStore.read_chunk
    done: list[int] = []

    async def read_then_change(self: SqliteStore, *args: object, **kwargs: object) -> object:
        rows = await real(self, *args, **kwargs)  # type: ignore[arg-type]
        if not done and rows.scope.contains(contact) and kwargs.get("scope") is None:
            await change()
            done.append(contact)
        return rows

    monkeypatch.setattr(SqliteStore, "read_chunk", read_then_change)
    return done


async def test_a_change_after_a_clean_chunk_was_read_stays_queued_for_the_daemon(
    book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plan is complete, so every chunk of the second pass is clean (its
    # contacts' inputs are unchanged) and is not written. Contact 7's birth
    # date changes upstream right after its chunk was read: the pass, which
    # took `covered` (the last event id) at its start, leaves the plan of 7
    # as it was (the chunk writes nothing) and its event queued (id above
    # `covered`); the daemon's processing of that event then makes the plan
    # the reference. Were events consumed past `covered`, or the change
    # lost, the plan would stay stale with an empty queue.
    ctx = _ctx()
    async with open_store(book) as store:
        await engine.full_recompute(store, ctx, TODAY)
        before = await store.export_rows([7])

    async def change() -> None:
        _upstream(book, "UPDATE contacts SET birth_date = '1950-12-20' WHERE id = 7")

    done = _change_after_reading(monkeypatch, 7, change)
    async with open_store(book) as store:
        stats = await engine.full_recompute(store, ctx, TODAY)
        assert done == [7]
        assert (stats.inserted, stats.updated, stats.deleted) == (0, 0, 0)
        assert await store.pending_event_count() == 1
        assert await store.export_rows([7]) == before
        wanted = [r for r in await engine.dry_run_plan(store, ctx, TODAY) if r.contact_id == 7]
        assert wanted != before  # the change does change 7's plan
        processor = Processor(store, ctx, BatchLimits())
        while await processor.step(TODAY) is not None:
            pass
        assert await store.pending_event_count() == 0
        await _export_is_dry_run(store, ctx, TODAY)


async def test_a_clean_chunk_leaves_a_plan_the_daemon_wrote_meanwhile(
    book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Right after the chunk holding contact 7 was read (before its plans are
    # looked at), 7 changes upstream and the daemon, on its own connection,
    # consumes the event and writes 7's new plan. The chunk as read is clean
    # (7's old inputs): it must write nothing, so the daemon's newer plan stays.
    ctx = _ctx()
    async with open_store(book) as store:
        await engine.full_recompute(store, ctx, TODAY)

    async def change_and_process() -> None:
        _upstream(book, "UPDATE contacts SET birth_date = '1950-12-20' WHERE id = 7")
        async with open_store(book) as daemon:
            processor = Processor(daemon, ctx, BatchLimits())
            while await processor.step(TODAY) is not None:
                pass
            assert await daemon.pending_event_count() == 0

    done = _change_after_reading(monkeypatch, 7, change_and_process)
    async with open_store(book) as store:
        stats = await engine.full_recompute(store, ctx, TODAY)
        assert done == [7]
        assert (stats.inserted, stats.updated, stats.deleted) == (0, 0, 0)
        await _export_is_dry_run(store, ctx, TODAY)


@pytest.mark.parametrize("workers", [0, 2])
async def test_a_large_read_chunk_is_written_in_write_sized_slices(
    book: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    # Write size 10 (chunk_size). The second pass reads chunks of 10
    # contacts at first; each clean one (inputs unchanged) doubles the size
    # of the next read: in this process 1..10, 11..30, 31..70, 71..150, ...;
    # with two workers four chunks are read ahead, so 1..40 by tens, then
    # 41..60, 61..100, 101..180. Contacts from 71 on changed birth dates:
    # chunk 71..150 (80 planned) or 61..100 (30 planned) is written in slices
    # of at most 10 planned contacts, and the plan is the reference.
    monkeypatch.setattr(fullpass, "POOL_MIN_CONTACTS", 0)
    ctx = PlanContext.from_settings(Settings(daily_cap=4), chunk_size=10,
                                    planning_workers=workers)  # fmt: skip
    async with open_store(book) as store:
        await engine.full_recompute(store, ctx, TODAY)
    _upstream(book, "UPDATE contacts SET birth_date = '1950-12-20' WHERE id >= 71")
    sliced: list[int] = []
    written: list[int] = []
    real_slices, real_write = chunks.write_slices, SqliteStore.write_pending

    def slices(*args: Any) -> Any:
        parts = real_slices(*args)
        sliced.append(len(parts))
        return parts

    async def write(self: SqliteStore, pending: Any, *args: Any, **kwargs: Any) -> Any:
        written.append(len(pending.prepared.states))
        return await real_write(self, pending, *args, **kwargs)

    monkeypatch.setattr("service.engine.fullpass.write_slices", slices)
    monkeypatch.setattr(SqliteStore, "write_pending", write)
    async with open_store(book) as store:
        stats = await engine.full_recompute(store, ctx, TODAY)
        assert stats.contacts_recomputed == 160
        assert max(sliced) > 1 and 0 < max(written) <= 10
        await _export_is_dry_run(store, ctx, TODAY)


@pytest.mark.parametrize("workers", [0, 2])
async def test_chunks_read_smaller_than_the_write_size_are_written_together(
    book: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    # Write size 10 (chunk_size), but every chunk is read 3 contacts at a time
    # (as chunks read ahead while the write size grows are). An empty plan
    # then writes 10 planned contacts a transaction, the last chunk of each
    # transaction cut where the 10 are reached, not 3 a transaction; and the
    # plan is the reference.
    monkeypatch.setattr(fullpass, "POOL_MIN_CONTACTS", 0)
    ctx = PlanContext.from_settings(Settings(daily_cap=4), chunk_size=10,
                                    planning_workers=workers)  # fmt: skip
    real_read, real_write = fullpass._read_ahead, SqliteStore.write_pending

    async def read_three(store: Store, planner: Any, after: int | None, size: int,
                         task: Any) -> Any:  # fmt: skip
        return await real_read(store, planner, after, 3, task)

    per_transaction: dict[object, int] = {}

    async def write(self: SqliteStore, pending: Any, *args: Any, **kwargs: Any) -> Any:
        key = self._locked_at
        per_transaction[key] = per_transaction.get(key, 0) + len(pending.prepared.states)
        return await real_write(self, pending, *args, **kwargs)

    monkeypatch.setattr(fullpass, "_read_ahead", read_three)
    monkeypatch.setattr(SqliteStore, "write_pending", write)
    async with open_store(book) as store:
        stats = await engine.full_recompute(store, ctx, TODAY)
        assert stats.contacts_recomputed == 160
        sizes = list(per_transaction.values())
        assert sum(sizes) >= 100
        # Every transaction but the last holds 10 planned contacts.
        assert sizes[:-1] == [10] * (len(sizes) - 1) and 0 < sizes[-1] <= 10
        await _export_is_dry_run(store, ctx, TODAY)


async def test_a_chunk_with_rows_of_deleted_contacts_is_written_alone(
    book: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Contacts 50-59 are deleted upstream after a pass; their plan rows stay
    # until the next pass deletes them. A chunk whose range holds such rows
    # may have few or no contacts to plan, but its deletes are not counted
    # in its planned contacts: it is written in a transaction of its own,
    # not gathered with others. The plan is the reference afterwards.
    ctx = PlanContext.from_settings(Settings(daily_cap=4), chunk_size=10)
    async with open_store(book) as store:
        await engine.full_recompute(store, ctx, TODAY)
    history = "SELECT count(*) FROM email_schedules WHERE contact_id BETWEEN 50 AND 59 " \
        "AND status NOT IN ('pre-scheduled', 'skipped')"  # fmt: skip
    sent_before = query_count(book, history)
    _upstream(book, "DELETE FROM contacts WHERE id BETWEEN 50 AND 59")
    real_read, real_take = fullpass._read_ahead, fullpass._take

    async def read_three(store: Store, planner: Any, after: int | None, size: int,
                         task: Any) -> Any:  # fmt: skip
        return await real_read(store, planner, after, 3, task)

    takes: list[list[bool]] = []

    def take(ready: Any, size: int) -> Any:
        parts = real_take(ready, size)
        takes.append([rows.untidy for rows, _ in parts])
        return parts

    monkeypatch.setattr(fullpass, "_read_ahead", read_three)
    monkeypatch.setattr(fullpass, "_take", take)
    async with open_store(book) as store:
        stats = await engine.full_recompute(store, ctx, TODAY, trust_fingerprints=False)
        assert stats.deleted > 0
        assert any(True in t for t in takes)
        assert all(t == [True] for t in takes if True in t)
        assert any(len(t) > 1 for t in takes)  # the others are gathered
        await _export_is_dry_run(store, ctx, TODAY)
    # The deleted contacts' plan rows are gone; their history stays (I4).
    plan = (
        "SELECT count(*) FROM email_schedules WHERE contact_id BETWEEN 50 AND 59 "
        "AND status IN ('pre-scheduled', 'skipped')"
    )
    assert query_count(book, plan) == 0
    assert query_count(book, history) == sent_before


def query_count(path: Path, sql: str) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()
