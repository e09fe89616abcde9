"""Bursts and fan-outs read and planned outside the write lock (SPEC 8.3, 12).

The seed book of ``daemon_helpers`` (8 contacts, *today* 2026-03-01). Small
limits make the processor stage a burst of a few events in chunks of a few
contacts, as it does for thousands at scale.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import anyio
import pytest

from service import engine
from service.daemon.processing import BatchLimits, Processor, StepReport
from service.engine import PlanContext, staged
from service.engine.staged import PlanningFailed
from service.store import Store
from tests.integration.daemon_helpers import (
    SEED_SQL,
    TODAY,
    assert_plan_is_full_recompute,
    query,
    settings,
)

CFG = settings()
CTX = PlanContext.from_settings(CFG)
STAGED = BatchLimits(max_contacts=3, chunk_contacts=3, staged_min_events=2)


def write(db_path: Path, script: str) -> None:
    """An upstream writer on its own connection."""
    con = sqlite3.connect(db_path)
    try:
        con.executescript(script)
    finally:
        con.close()


def birthday(db_path: Path, contact_id: int) -> list[tuple[object, ...]]:
    return query(
        db_path,
        "SELECT event_year, event_month, event_day FROM email_schedules "
        f"WHERE contact_id = {int(contact_id)} AND email_type = 'birthday'",
    )


async def drain(processor: Processor, today: date = TODAY) -> list[StepReport]:
    reports: list[StepReport] = []
    while (report := await processor.step(today)) is not None:
        reports.append(report)
        assert len(reports) < 1000, "the queue never drained"
    return reports


@pytest.fixture
async def seeded(db_path: Path, store: Store) -> Store:
    write(db_path, SEED_SQL)
    await engine.full_recompute(store, CTX, TODAY)
    return store


async def test_a_burst_is_written_in_staged_chunks_of_whole_events(
    seeded: Store, db_path: Path
) -> None:
    # Eight birth dates moved +3 days in one commit: eight contact events.
    # Chunks of at most 3 contacts (max_contacts): 3 + 3 + 2.
    write(db_path, "UPDATE contacts SET birth_date = date(birth_date, '+3 days');")
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(8,)]
    reports = await drain(Processor(seeded, CTX, STAGED))
    assert [(r.kind, r.staged, r.events, r.contacts) for r in reports] == [
        ("batch", True, 3, 3), ("batch", True, 3, 3), ("batch", True, 2, 2),
    ]  # fmt: skip
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]
    # Ann, born 1955-03-20, now 1955-03-23: her next birthday after
    # 2026-03-01 is 2026-03-23 (TX has no exclusion window).
    assert birthday(db_path, 1) == [(2026, 3, 23)]
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_few_events_go_the_direct_way(seeded: Store, db_path: Path) -> None:
    write(db_path, "UPDATE contacts SET birth_date = date(birth_date, '+3 days') WHERE id = 1;")
    [report] = await drain(Processor(seeded, CTX, STAGED))
    assert (report.kind, report.staged, report.events) == ("batch", False, 1)


async def test_an_upstream_change_after_the_read_is_planned_from_the_new_rows(
    seeded: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(db_path, "UPDATE contacts SET birth_date = date(birth_date, '+3 days');")
    real = staged.read_ids
    calls = 0

    async def read_then_change(*args: object, **kwargs: object) -> object:
        nonlocal calls
        rows = await real(*args, **kwargs)  # type: ignore[arg-type]
        calls += 1
        if calls == 1:
            # Between the first chunk's read and its write transaction.
            write(db_path, "UPDATE contacts SET birth_date = '1955-03-27' WHERE id = 1;")
        return rows

    monkeypatch.setattr(staged, "read_ids", read_then_change)
    processor = Processor(seeded, CTX, STAGED)
    first = await processor.step(TODAY)
    assert first is not None and first.staged and first.events == 3
    # The chunk read Ann at 1955-03-23, but its write saw the event sequence
    # move and planned her again from 1955-03-27: birthday 2026-03-27.
    assert birthday(db_path, 1) == [(2026, 3, 27)]
    # The new change's event is not the chunk's: still pending.
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(6,)]
    await drain(processor)
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_a_fanout_chunk_sees_an_upstream_change_after_its_read(
    seeded: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(db_path, "INSERT INTO scheduler_events (kind) VALUES ('recompute_all');")
    processor = Processor(seeded, CTX, STAGED)
    first = await processor.step(TODAY)  # starts the fan-out: contacts 1-3, the direct way
    assert first is not None and first.kind == "fanout" and not first.staged
    real = staged.read_range
    calls = 0

    async def read_then_change(*args: object, **kwargs: object) -> object:
        nonlocal calls
        rows = await real(*args, **kwargs)  # type: ignore[arg-type]
        calls += 1
        if calls == 1:
            write(db_path, "UPDATE contacts SET birth_date = '1958-03-29' WHERE id = 4;")
        return rows

    monkeypatch.setattr(staged, "read_range", read_then_change)
    chunk = await processor.step(TODAY)
    assert chunk is not None and chunk.kind == "fanout" and chunk.staged and chunk.contacts == 3
    # Dee (4) read at 1958-03-25, written from 1958-03-29 (MO: her birthday
    # email falls in the window, its row keeps the event's date).
    assert birthday(db_path, 4) == [(2026, 3, 29)]
    await drain(processor)
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_a_failed_chunk_leaves_its_events_and_the_restart_finishes(
    seeded: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(db_path, "UPDATE contacts SET birth_date = date(birth_date, '+3 days');")
    real = staged.write_staged
    calls = 0

    class Crash(Exception):
        pass

    async def second_fails(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Crash
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(staged, "write_staged", second_fails)
    processor = Processor(seeded, CTX, STAGED)
    assert (await processor.step(TODAY)) is not None
    with pytest.raises(Crash):
        await processor.step(TODAY)
    # The first chunk's three events are consumed, the second's rolled back.
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(5,)]
    monkeypatch.undo()
    await drain(Processor(seeded, CTX, STAGED))
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_a_large_burst_plans_in_the_pool_and_idle_closes_it(
    seeded: Store, db_path: Path
) -> None:
    ctx = PlanContext.from_settings(CFG, planning_workers=1)
    limits = BatchLimits(max_contacts=3, chunk_contacts=3, staged_min_events=2,
                         pool_min_contacts=4)  # fmt: skip
    write(db_path, "UPDATE contacts SET birth_date = date(birth_date, '+3 days');")
    processor = Processor(seeded, ctx, limits)
    reports = await drain(processor)
    assert sum(r.events for r in reports) == 8 and all(r.staged for r in reports)
    assert processor.stager.planner.running
    processor.idle()
    assert not processor.stager.planner.running
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_fanout_chunks_with_nothing_to_plan_take_no_write_lock(
    seeded: Store, db_path: Path
) -> None:
    # Nothing changed since the full recompute: every contact's input digest
    # is the stored one for TODAY. Chunks of 3: contacts 1-3 (the first
    # chunk, the direct way), 4-6 (staged, nothing to write: no transaction,
    # no run), 7-8 (the last: written, it consumes the event).
    [(runs,)] = query(db_path, "SELECT count(*) FROM scheduler_runs")
    write(db_path, "INSERT INTO scheduler_events (kind) VALUES ('recompute_all');")
    reports = await drain(Processor(seeded, CTX, STAGED))
    assert [(r.staged, r.run_id > 0, r.contacts, r.finished) for r in reports] == [
        (False, True, 3, False), (True, False, 3, False), (True, True, 2, True),
    ]  # fmt: skip
    assert query(db_path, "SELECT count(*) FROM scheduler_runs") == [(int(str(runs)) + 2,)]
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_explicit_recompute_events_repair_rows_edited_behind_mailplans_back(
    seeded: Store, db_path: Path
) -> None:
    # A plan row's date edited directly (a plan row staying a plan row: no
    # event), then an operator asks for every contact to be recomputed.
    write(db_path, "UPDATE email_schedules SET priority = 99 "
                   "WHERE contact_id = 1 AND email_type = 'birthday';")  # fmt: skip
    write(db_path, "INSERT INTO scheduler_events (kind, contact_id) "
                   "SELECT 'recompute_contact', id FROM contacts;")  # fmt: skip
    reports = await drain(Processor(seeded, CTX, STAGED))
    assert all(r.staged for r in reports) and sum(r.events for r in reports) == 8
    # The explicit request compares every stored row: the edit is undone
    # (with the inputs unchanged, a trusted digest would have left it).
    assert query(db_path, "SELECT count(*) FROM email_schedules WHERE priority = 99") == [(0,)]
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_a_planning_process_killed_mid_burst_is_replaced_and_nothing_is_lost(
    seeded: Store, db_path: Path
) -> None:
    ctx = PlanContext.from_settings(CFG, planning_workers=1)
    limits = BatchLimits(max_contacts=2, chunk_contacts=2, staged_min_events=2,
                         pool_min_contacts=4)  # fmt: skip
    # 30 commits moving every birth date a day: 240 events, chunks of 2.
    write(db_path, "UPDATE contacts SET birth_date = date(birth_date, '+1 day');" * 30)
    processor = Processor(seeded, ctx, limits)
    planner = processor.stager.planner
    # Until its process is up the pool is not used: wait for it.
    for _ in range(200):
        first = await processor.step(TODAY)
        assert first is not None
        if planner.warm:
            break
        await anyio.sleep(0.05)
    pool = planner._pool
    assert isinstance(pool, ProcessPoolExecutor)
    for process in list(pool._processes.values()):
        process.kill()  # SIGKILL, as the kernel's OOM killer would
    with pytest.raises(PlanningFailed):
        for _ in range(200):
            assert await processor.step(TODAY) is not None
            await anyio.sleep(0.05)
    assert not planner.running  # closed: the next large work starts a new one
    await drain(processor)
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]
    processor.idle()
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)
