"""Draining events in bounded batches and chunked fan-outs (SPEC 8.3)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from service import engine
from service.daemon.processing import FANOUT_KEY, BatchLimits, FanOut, Processor, StepReport
from service.engine import PlanContext, staged
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


def write(db_path: Path, script: str) -> None:
    """An upstream writer on its own connection."""
    import sqlite3

    con = sqlite3.connect(db_path, timeout=10)
    try:
        con.executescript(script)
        con.commit()
    finally:
        con.close()


async def drain(processor: Processor, today: date = TODAY) -> list[StepReport]:
    reports: list[StepReport] = []
    while (report := await processor.step(today)) is not None:
        reports.append(report)
        assert len(reports) < 1000, "the queue never drained"
    return reports


@pytest.fixture
async def seeded(db_path: Path, store: Store) -> Store:
    """The seed book, fully planned for TODAY, with an empty event queue."""
    write(db_path, SEED_SQL)
    await engine.full_recompute(store, CTX, TODAY)
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]
    return store


async def test_batches_are_bounded_by_events(seeded: Store, db_path: Path) -> None:
    # Seven updates of seven contacts, at most three events per transaction.
    write(db_path, "UPDATE contacts SET last_name = 'x' WHERE id <= 7;")
    processor = Processor(seeded, CTX, BatchLimits(max_events=3, max_contacts=100))
    reports = await drain(processor)
    assert [(r.kind, r.events, r.contacts) for r in reports] == [
        ("batch", 3, 3), ("batch", 3, 3), ("batch", 1, 1),
    ]  # fmt: skip
    runs = query(db_path, "SELECT trigger, events_consumed FROM scheduler_runs WHERE id > 1")
    assert runs == [("events", 3), ("events", 3), ("events", 1)]
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_batches_are_bounded_by_contacts(seeded: Store, db_path: Path) -> None:
    # Contact 1 twice, then 2 and 3: the two events of contact 1 count once.
    write(
        db_path,
        """
        UPDATE contacts SET last_name = 'a' WHERE id = 1;
        UPDATE contacts SET last_name = 'b' WHERE id = 1;
        UPDATE contacts SET last_name = 'c' WHERE id = 2;
        UPDATE contacts SET last_name = 'd' WHERE id = 3;
    """,
    )
    processor = Processor(seeded, CTX, BatchLimits(max_events=100, max_contacts=2))
    reports = await drain(processor)
    assert [(r.events, r.contacts) for r in reports] == [(3, 2), (1, 1)]


async def test_everyone_fans_out_in_chunks_and_consumes_with_the_last(
    seeded: Store, db_path: Path
) -> None:
    write(db_path, "INSERT INTO scheduler_events (kind) VALUES ('recompute_all');")
    processor = Processor(seeded, CTX, BatchLimits(chunk_contacts=3))
    first = await processor.step(TODAY)
    assert first is not None and first.kind == "fanout" and not first.finished
    assert first.contacts == 3
    # Progress is stored with the chunk; the event is still pending.
    state = FanOut.loads(str(await seeded.get_state(FANOUT_KEY)))
    assert state is not None and state.everyone and state.after == 3
    assert query(db_path, "SELECT kind FROM scheduler_events") == [("recompute_all",)]
    rest = await drain(processor)
    # Eight contacts in chunks of three: 3 + 3 + 2, the last consumes the event.
    assert [(r.contacts, r.finished, r.events) for r in rest] == [(3, False, 0), (2, True, 1)]
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]
    assert await seeded.get_state(FANOUT_KEY) is None
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_fanout_resumes_after_a_crash(
    seeded: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        db_path,
        """
        UPDATE campaign_instances SET active_start_date = '2026-03-05';
        INSERT INTO scheduler_events (kind) VALUES ('recompute_all');
    """,
    )
    processor = Processor(seeded, CTX, BatchLimits(chunk_contacts=3, max_contacts=100))
    # The two instance events (old and new row) go first, as a batch.
    batch = await processor.step(TODAY)
    assert batch is not None and batch.kind == "batch" and batch.events == 2
    chunk = await processor.step(TODAY)
    assert chunk is not None and chunk.kind == "fanout" and chunk.contacts == 3

    real = staged.write_staged

    class Crash(Exception):
        pass

    async def crashing(*args: object, **kwargs: object) -> object:
        raise Crash

    # The chunk's write (fan-out chunks are read and planned outside the lock).
    monkeypatch.setattr(staged, "write_staged", crashing)
    with pytest.raises(Crash):
        await processor.step(TODAY)
    monkeypatch.undo()
    assert staged.write_staged is real
    # Rolled back: still after contact 3, event still pending.
    state = FanOut.loads(str(await seeded.get_state(FANOUT_KEY)))
    assert state is not None and state.after == 3
    assert query(db_path, "SELECT kind FROM scheduler_events") == [("recompute_all",)]

    restarted = Processor(seeded, CTX, BatchLimits(chunk_contacts=3))
    rest = await drain(restarted)
    assert [(r.kind, r.contacts, r.finished) for r in rest] == [
        ("fanout", 3, False), ("fanout", 2, True),
    ]  # fmt: skip
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_changes_during_a_fanout_are_not_held_up(seeded: Store, db_path: Path) -> None:
    write(db_path, "INSERT INTO scheduler_events (kind) VALUES ('recompute_all');")
    processor = Processor(seeded, CTX, BatchLimits(chunk_contacts=3))
    await processor.step(TODAY)
    write(db_path, "UPDATE contacts SET birth_date = '1955-03-30' WHERE id = 8;")
    reports = await drain(processor)
    # Chunk, then the new event as its own batch, then the rest of the fan-out.
    assert [r.kind for r in reports] == ["batch", "fanout", "fanout"]
    assert reports[0].contacts == 1
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_large_targeted_campaign_is_chunked(seeded: Store, db_path: Path) -> None:
    write(
        db_path,
        """
        INSERT INTO contact_campaigns (contact_id, campaign_instance_id, trigger_date, status)
        VALUES (2, 10, '2026-03-20', 'pending'), (4, 10, '2026-03-21', 'pending'),
               (7, 10, '2026-03-22', 'pending');
    """,
    )
    await drain(Processor(seeded, CTX))
    # The instance now reaches contacts 1, 2, 3, 4, 7: more than two per batch.
    write(db_path, "UPDATE campaign_instances SET active_end_date = '2026-03-21' WHERE id = 10;")
    processor = Processor(seeded, CTX, BatchLimits(max_contacts=2, chunk_contacts=2))
    reports = await drain(processor)
    assert [(r.kind, r.contacts, r.finished) for r in reports] == [
        ("fanout", 2, False), ("fanout", 2, False), ("fanout", 1, True),  # old row's event
        ("fanout", 2, False), ("fanout", 2, False), ("fanout", 1, True),  # new row's event
    ]  # fmt: skip
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_malformed_events_are_logged_and_consumed(seeded: Store, db_path: Path) -> None:
    write(
        db_path,
        """
        INSERT INTO scheduler_events (kind, contact_id) VALUES ('recompute_contact', 'abc');
        INSERT INTO scheduler_events (kind, contact_id) VALUES ('no_such_kind', 1);
        INSERT INTO scheduler_events (kind, contact_id) VALUES ('contact', 2);
    """,
    )
    with capture_logs() as logs:
        reports = await drain(Processor(seeded, CTX))
    assert [(r.events, r.rejected, r.contacts) for r in reports] == [(3, 2, 1)]
    malformed = [e for e in logs if e["event"] == "event_malformed"]
    assert [e["kind"] for e in malformed] == ["recompute_contact", "no_such_kind"]
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]


async def test_events_of_deleted_contacts_remove_their_plan(seeded: Store, db_path: Path) -> None:
    assert query(db_path, "SELECT count(*) FROM email_schedules WHERE contact_id = 1") != [(0,)]
    # Upstream without foreign keys: nothing cascades, only the event says so.
    write(db_path, "PRAGMA foreign_keys = OFF; DELETE FROM contacts WHERE id = 1;")
    await drain(Processor(seeded, CTX))
    assert query(db_path, "SELECT count(*) FROM email_schedules WHERE contact_id = 1") == [(0,)]
    assert query(db_path, "SELECT count(*) FROM contact_plan_state WHERE contact_id = 1") == [(0,)]
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_sender_taking_a_row_is_history_and_never_touched(
    seeded: Store, db_path: Path
) -> None:
    [(row_id, email_type)] = query(
        db_path,
        "SELECT id, email_type FROM email_schedules WHERE status = 'pre-scheduled' "
        "ORDER BY scheduled_send_date, id LIMIT 1",
    )
    write(db_path, f"UPDATE email_schedules SET status = 'scheduled' WHERE id = {row_id};")
    before = query(db_path, "SELECT * FROM email_schedules WHERE id = ?", [row_id])
    reports = await drain(Processor(seeded, CTX))
    assert [r.events for r in reports] == [1]
    assert query(db_path, "SELECT * FROM email_schedules WHERE id = ?", [row_id]) == before
    assert email_type
    await assert_plan_is_full_recompute(db_path, CFG, TODAY)


async def test_an_unchanged_contact_writes_nothing(seeded: Store, db_path: Path) -> None:
    before = query(db_path, "SELECT * FROM email_schedules ORDER BY id")
    write(db_path, "INSERT INTO scheduler_events (kind, contact_id) "
                   "SELECT 'recompute_contact', id FROM contacts;")  # fmt: skip
    [report] = await drain(Processor(seeded, CTX))
    assert report.contacts == 8
    stats = report.stats
    assert (stats.inserted, stats.updated, stats.deleted, stats.rows_moved) == (0, 0, 0, 0)
    assert query(db_path, "SELECT * FROM email_schedules ORDER BY id") == before


async def test_a_batch_over_the_time_target_shrinks_the_next(seeded: Store, db_path: Path) -> None:
    # 40 statements each updating the 8 contacts: 320 events. Batches of at most
    # 200 events; with a target no transaction can meet, every full or slow batch
    # sizes the next one down to the floor of 50 events (pacing.MIN_CHUNK):
    # 200, then 50 at a time for the remaining 120 (50, 50, 20).
    write(db_path, "".join(f"UPDATE contacts SET last_name = 'x{i}';" for i in range(40)))
    # The direct way (a staged batch is sized by its contacts, not its events).
    limits = BatchLimits(max_events=200, max_contacts=100, staged_min_events=10**9)
    processor = Processor(seeded, CTX, limits)
    processor._batch_sizer.target_s = 1e-9
    reports = await drain(processor)
    assert [r.events for r in reports] == [200, 50, 50, 20]
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]
