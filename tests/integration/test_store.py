"""The store: event triggers, events/runs/state API, loaders, transactions (SPEC 3, 8.1, 13)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from service.planning.model import (
    Click,
    ContactCampaign,
    ContactEvent,
    HistoryEmail,
)
from service.store import RunStats, SqliteStore, Store, StoreBusy, open_store
from service.store.loaders import MAX_ID


@pytest.fixture
def upstream(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A second connection playing the upstream system (autocommit)."""
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute("PRAGMA foreign_keys = ON")
    yield con
    con.close()


def _events(con: sqlite3.Connection) -> list[tuple[object, ...]]:
    rows = con.execute(
        "SELECT kind, contact_id, ref, detail FROM scheduler_events ORDER BY id"
    ).fetchall()
    con.execute("DELETE FROM scheduler_events")
    return rows


def _contact(con: sqlite3.Connection, cid: int, email: str = "x@example.com") -> None:
    con.execute(
        "INSERT INTO contacts (id, email, birth_date, state, zip_code) "
        "VALUES (?, ?, '1950-06-01', 'TX', '75001')",
        (cid, email),
    )


# -- triggers (SPEC 8.1) ----------------------------------------------------


def test_contact_changes_become_events(upstream: sqlite3.Connection) -> None:
    _events(upstream)
    _contact(upstream, 1)
    upstream.execute("UPDATE contacts SET state = 'CA' WHERE id = 1")
    upstream.execute("UPDATE contacts SET id = 2 WHERE id = 1")
    upstream.execute("DELETE FROM contacts WHERE id = 2")
    assert _events(upstream) == [
        ("contact", 1, None, None),
        ("contact", 1, None, None),
        ("contact", 2, None, None),  # an id change concerns the new id...
        ("contact", 1, None, None),  # ...and the old one
        ("contact", 2, None, None),
    ]


def test_campaign_changes_become_events(upstream: sqlite3.Connection) -> None:
    _events(upstream)
    upstream.execute("INSERT INTO campaign_types (name, target_all_contacts) VALUES ('fall', 0)")
    upstream.execute("UPDATE campaign_types SET target_all_contacts = 1 WHERE name = 'fall'")
    upstream.execute(
        "INSERT INTO campaign_instances (id, campaign_type, instance_name) VALUES (9, 'fall', 'f')"
    )
    upstream.execute("UPDATE campaign_instances SET campaign_type = 'aep' WHERE id = 9")
    upstream.execute("DELETE FROM campaign_instances WHERE id = 9")
    upstream.execute("DELETE FROM campaign_types WHERE name = 'fall'")
    assert _events(upstream) == [
        ("campaign_type", None, "fall", "0"),
        ("campaign_type", None, "fall", "0"),  # OLD
        ("campaign_type", None, "fall", "1"),  # NEW
        ("campaign_instance", None, "9", "fall"),
        ("campaign_instance", None, "9", "fall"),
        ("campaign_instance", None, "9", "aep"),
        ("campaign_instance", None, "9", "aep"),
        ("campaign_type", None, "fall", "1"),
    ]


def test_targeting_and_engagement_become_events(upstream: sqlite3.Connection) -> None:
    _contact(upstream, 1)
    _contact(upstream, 2, "y@example.com")
    _events(upstream)
    upstream.execute(
        "INSERT INTO contact_campaigns (id, contact_id, campaign_instance_id, trigger_date) "
        "VALUES (1, 1, 4, '2026-01-01')"
    )
    upstream.execute("UPDATE contact_campaigns SET contact_id = 2 WHERE id = 1")
    upstream.execute("DELETE FROM contact_campaigns WHERE id = 1")
    upstream.execute("INSERT INTO tracking_clicks (id, contact_id) VALUES (1, 1)")
    upstream.execute("UPDATE tracking_clicks SET url = 'u' WHERE id = 1")
    upstream.execute("DELETE FROM tracking_clicks WHERE id = 1")
    upstream.execute(
        "INSERT INTO contact_events (id, contact_id, event_type) "
        "VALUES (1, 2, 'eligibility_answered')"
    )
    upstream.execute("UPDATE contact_events SET contact_id = 1 WHERE id = 1")
    upstream.execute("DELETE FROM contact_events WHERE id = 1")
    assert _events(upstream) == [
        ("contact_campaign", 1, "4", None),
        ("contact_campaign", 1, "4", None),
        ("contact_campaign", 2, "4", None),
        ("contact_campaign", 2, "4", None),
        ("engagement", 1, None, None),
        ("engagement", 1, None, None),  # update in place: one event
        ("engagement", 1, None, None),
        ("engagement", 2, None, None),
        ("engagement", 1, None, None),  # moved: the new contact...
        ("engagement", 2, None, None),  # ...and the old one
        ("engagement", 1, None, None),
    ]


def _schedule(con: sqlite3.Connection, rid: int, status: str, day: int = 1) -> None:
    con.execute(
        "INSERT INTO email_schedules (id, contact_id, email_type, scheduled_send_date, status, "
        "event_year, event_month, event_day) "
        "VALUES (?, 1, 'birthday', '2026-06-01', ?, 2026, 6, ?)",
        (rid, status, day),
    )


def test_history_rows_become_events_plan_rows_do_not(upstream: sqlite3.Connection) -> None:
    _contact(upstream, 1)
    _events(upstream)
    # Plan rows: inserted, rescheduled, re-statused within the plan set, deleted.
    _schedule(upstream, 1, "pre-scheduled")
    upstream.execute("UPDATE email_schedules SET scheduled_send_date = '2026-06-02' WHERE id = 1")
    upstream.execute("UPDATE email_schedules SET status = 'skipped' WHERE id = 1")
    upstream.execute("DELETE FROM email_schedules WHERE id = 1")
    assert _events(upstream) == []
    # A sender claims a plan row (plan -> history), sends it (history -> history).
    _schedule(upstream, 2, "pre-scheduled", 2)
    upstream.execute("UPDATE email_schedules SET status = 'scheduled' WHERE id = 2")
    upstream.execute(
        "UPDATE email_schedules SET status = 'sent', sent_at = '2026-06-01' WHERE id = 2"
    )
    upstream.execute("UPDATE email_schedules SET sendgrid_message_id = 'm' WHERE id = 2")
    upstream.execute("UPDATE email_schedules SET status = 'pre-scheduled' WHERE id = 2")
    upstream.execute("DELETE FROM email_schedules WHERE id = 2")
    _schedule(upstream, 3, "delivered", 3)
    upstream.execute("DELETE FROM email_schedules WHERE id = 3")
    assert _events(upstream) == [
        ("history", 1, None, None),  # claimed: pre-scheduled -> scheduled
        ("history", 1, None, None),  # scheduled -> sent
        # a message id alone changes nothing the planner reads: no event
        ("history", 1, None, None),  # back into the plan set
        ("history", 1, None, None),  # history row inserted
        ("history", 1, None, None),  # history row deleted
    ]


def test_deleting_a_contact_cascades_with_history_events(upstream: sqlite3.Connection) -> None:
    _contact(upstream, 1)
    _schedule(upstream, 1, "sent")
    _schedule(upstream, 2, "pre-scheduled", 2)
    _events(upstream)
    upstream.execute("DELETE FROM contacts WHERE id = 1")
    assert sorted(_events(upstream)) == [("contact", 1, None, None), ("history", 1, None, None)]


async def test_plan_writes_of_the_store_generate_no_events(
    store: Store, upstream: sqlite3.Connection
) -> None:
    from service.planning.model import PlanRow
    from service.store import WriteOptions
    from service.store.types import Scope

    _contact(upstream, 1)
    _events(upstream)
    row = PlanRow(
        1,
        "birthday",
        date(2026, 6, 1),
        date(2026, 5, 18),
        "pre-scheduled",
        None,
        10,
        "birthday_template",
    )
    from service.planning.model import ContactPlan

    for rows in ([row], [dataclasses.replace(row, priority=11)], []):
        async with store.transaction():
            loaded = await store.load_scope(Scope.of_ids([1]))
            await store.write_plans(loaded, [ContactPlan(1, tuple(rows), None)], WriteOptions("r"))
    assert _events(upstream) == []


# -- events API ---------------------------------------------------------------


async def test_events_fetch_in_order_delete_and_summary(store: Store) -> None:
    await store.delete_events_upto(await store.max_event_id())
    assert (await store.events_summary()).pending == 0
    ids = [
        await store.enqueue_event("recompute_contact", contact_id=5),
        await store.enqueue_event("recompute_all"),
        await store.enqueue_event("recompute_contact", contact_id=6),
    ]
    batch = await store.fetch_events(2)
    assert [(e.id, e.kind, e.contact_id) for e in batch] == [
        (ids[0], "recompute_contact", 5),
        (ids[1], "recompute_all", None),
    ]
    assert [e.id for e in await store.fetch_events(10, after_id=ids[1])] == [ids[2]]
    summary = await store.events_summary()
    assert (summary.pending, summary.max_id) == (3, ids[2])
    assert summary.oldest_created_at is not None
    assert await store.delete_events([ids[0], ids[2]]) == 2
    assert [e.id for e in await store.fetch_events(10)] == [ids[1]]


async def test_upstream_may_insert_explicit_events_without_created_at(
    store: Store, upstream: sqlite3.Connection
) -> None:
    upstream.execute(
        "INSERT INTO scheduler_events (kind, contact_id) VALUES ('recompute_contact', 'x')"
    )
    [event] = [e for e in await store.fetch_events(10) if e.kind == "recompute_contact"]
    assert event.contact_id == "x"  # passed through; the handler rejects it
    assert event.created_at


# -- runs and state --------------------------------------------------------------


async def test_runs_are_recorded(store: Store) -> None:
    run_id = await store.start_run("tick", date(2026, 1, 5))
    stats = RunStats(
        events_consumed=3,
        contacts_recomputed=2,
        inserted=4,
        updated=1,
        deleted=1,
        unchanged=7,
        windows_rebalanced=1,
        rows_moved=2,
    )
    await store.finish_run(run_id, stats, duration_ms=12.5)
    failed = await store.start_run("events", None)
    await store.finish_run(failed, RunStats(), error="boom")
    latest, first = await store.last_runs(2)
    assert (first.id, first.trigger, first.today, first.stats) == (
        run_id,
        "tick",
        "2026-01-05",
        stats,
    )
    assert first.duration_ms == 12.5 and first.finished_at is not None
    assert (latest.id, latest.error) == (failed, "boom")


async def test_key_value_state_and_capacity_snapshots(store: Store) -> None:
    assert await store.last_tick() is None
    await store.set_last_tick(date(2026, 3, 1))
    await store.set_last_tick(date(2026, 3, 2))
    assert await store.last_tick() == date(2026, 3, 2)
    assert await store.capacity_snapshot(date(2026, 3, 2)) is None
    await store.save_capacity_snapshot(date(2026, 3, 2), 1234)
    assert await store.capacity_snapshot(date(2026, 3, 2)) == 1234
    assert await store.capacity_snapshot(date(2026, 3, 3)) is None


async def test_review_dates(store: Store, upstream: sqlite3.Connection) -> None:
    await store.set_review_dates([(1, date(2026, 1, 10)), (2, date(2026, 1, 12)), (3, None)])
    assert await store.due_contacts(date(2026, 1, 9)) == []
    assert await store.due_contacts(date(2026, 1, 10)) == [1]
    assert await store.due_contacts(date(2026, 2, 1)) == [1, 2]


# -- transactions ------------------------------------------------------------------


async def test_transaction_rolls_back_on_error(store: Store) -> None:
    before = await store.max_event_id()
    with pytest.raises(RuntimeError):
        async with store.transaction():
            await store.enqueue_event("recompute_all")
            raise RuntimeError("boom")
    assert await store.max_event_id() == before
    async with store.transaction():
        await store.enqueue_event("recompute_all")
    assert await store.max_event_id() == before + 1


async def test_busy_database_is_retried_then_reported(store: SqliteStore, db_path: Path) -> None:
    other = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")
    store.BEGIN_ATTEMPTS = 2
    store.BEGIN_BACKOFF_S = 0.01
    await store._db.execute("PRAGMA busy_timeout = 10")
    try:
        with pytest.raises(StoreBusy, match="locked"):
            async with store.transaction():
                pass
        other.execute("COMMIT")
        async with store.transaction():
            await store.enqueue_event("recompute_all")
    finally:
        other.close()


async def test_nested_transactions_are_refused(store: Store) -> None:
    from service.errors import StoreError

    async with store.transaction():
        with pytest.raises(StoreError, match="already open"):
            async with store.transaction():
                pass


# -- loaders -----------------------------------------------------------------------


async def test_loaders_build_model_objects(store: Store, upstream: sqlite3.Connection) -> None:
    _contact(upstream, 1)
    _contact(upstream, 2, "y@example.com")
    upstream.execute(
        "UPDATE contacts SET failed_underwriting = 1, current_carrier = 'Aetna' WHERE id = 2"
    )
    rows = [
        # send date: actual send time first, then sent_at, then the scheduled date
        (
            "birthday",
            "sent",
            "2026-01-10",
            "2026-01-11 08:30:00",
            "2026-01-12T01:00:00Z",
            2026,
            1,
            24,
        ),
        ("post_window", "delivered", "2026-02-10", None, "2026-02-11 09:00:00", 2026, 2, 1),
        ("effective_date", "scheduled", "2026-03-10", None, None, 2026, 4, 9),
        ("effective_date", "processing", "not a date", None, None, None, None, None),
    ]
    for etype, status, sched, sent_at, actual, y, m, d in rows:
        upstream.execute(
            "INSERT INTO email_schedules (contact_id, email_type, status, scheduled_send_date, "
            "sent_at, actual_send_datetime, event_year, event_month, event_day) "
            "VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
            (etype, status, sched, sent_at, actual, y, m, d),
        )
    upstream.execute(
        "INSERT INTO contact_campaigns (contact_id, campaign_instance_id, trigger_date, status) "
        "VALUES (1, 3, '2026-05-01', 'pending'), (2, 3, 'garbage', 'done')"
    )
    upstream.execute(
        "INSERT INTO tracking_clicks (contact_id, clicked_at) VALUES "
        "(1, '2026-01-13 10:00:00'), (1, '2025-01-01 10:00:00'), (1, 'never')"
    )
    upstream.execute(
        "INSERT INTO contact_events (contact_id, event_type, metadata, created_at) VALUES "
        "(1, 'eligibility_answered', '{\"has_medical_conditions\": true}', '2026-01-14 10:00:00')"
    )
    one, two = await store.load_contacts([2, 1, 99], since=date(2025, 6, 1))
    assert one.contact.id == 1 and two.contact.id == 2
    assert two.contact.failed_underwriting and two.contact.carrier == "Aetna"
    # Send instants (SPEC 5.7) in naive UTC from the column that gives the send date.
    assert one.history == (
        HistoryEmail(1, "birthday", "sent", date(2026, 1, 12), date(2026, 1, 24),
                     send_at=datetime(2026, 1, 12, 1, 0)),
        HistoryEmail(1, "post_window", "delivered", date(2026, 2, 11), date(2026, 2, 1),
                     send_at=datetime(2026, 2, 11, 9, 0)),
        HistoryEmail(1, "effective_date", "scheduled", date(2026, 3, 10), date(2026, 4, 9)),
        HistoryEmail(1, "effective_date", "processing", None, None),
    )  # fmt: skip
    assert one.targeting == (ContactCampaign(1, 3, date(2026, 5, 1), "pending"),)
    assert two.targeting == (ContactCampaign(2, 3, None, "done"),)
    # The 2025-01-01 click is older than the cut-off; the undated one is unusable.
    assert one.clicks == (Click(1, date(2026, 1, 13), datetime(2026, 1, 13, 10, 0)),)
    assert one.events == (
        ContactEvent(
            1, "eligibility_answered", '{"has_medical_conditions": true}', date(2026, 1, 14),
            datetime(2026, 1, 14, 10, 0),
        ),
    )  # fmt: skip


async def test_bad_campaign_dates_are_reported_not_fatal(
    store: Store, upstream: sqlite3.Connection
) -> None:
    upstream.execute(
        "INSERT INTO campaign_instances (id, campaign_type, instance_name, active_start_date, "
        "active_end_date, spread_start_date) VALUES (4, 'aep', 'x', '2026-13-01', '2026-12-01', '')"
    )
    [inst] = (await store.load_campaigns()).instances
    assert inst.active_start_date is None and inst.active_end_date == date(2026, 12, 1)
    assert inst.spread_start_date is None
    assert inst.errors == (
        "campaign instance 4: active_start_date '2026-13-01' is not a date (YYYY-MM-DD)",
    )


async def test_invalid_utf8_is_read_with_replacement(
    store: Store, upstream: sqlite3.Connection
) -> None:
    upstream.execute(
        "INSERT INTO contacts (id, email, state) "
        "VALUES (1, CAST(X'61FF40782E636F6D' AS TEXT), 'TX')"
    )
    [data] = await store.load_contacts([1])
    assert data.contact.email == "a\ufffd@x.com"


async def test_chunks_cover_every_id_in_order(store: Store, upstream: sqlite3.Connection) -> None:
    for cid in (3, 5, 8, 9, 20):
        _contact(upstream, cid, f"{cid}@example.com")
    chunks = [c async for c in store.iter_contact_chunks(2)]
    assert [[d.contact.id for d in c.contacts] for c in chunks] == [[3, 5], [8, 9], [20]]
    scopes = [(c.scope.lo, c.scope.hi) for c in chunks]
    assert scopes[0][1] == 5 and scopes[1] == (6, 9) and scopes[2] == (10, MAX_ID)
    assert await store.contact_count_with_email() == 5


async def test_count_with_email_ignores_empty_addresses(
    store: Store, upstream: sqlite3.Connection
) -> None:
    upstream.execute(
        "INSERT INTO contacts (id, email) VALUES (1, 'a@x.com'), (2, ''), (3, NULL), (4, '  ')"
    )
    assert await store.contact_count_with_email() == 1


async def test_campaign_target_lookups(store: Store, upstream: sqlite3.Connection) -> None:
    for cid in (1, 2, 3, 4):
        _contact(upstream, cid, f"{cid}@example.com")
    upstream.execute("INSERT INTO campaign_types (name, target_all_contacts) VALUES ('fall', 0)")
    upstream.execute("INSERT INTO campaign_instances (id, campaign_type) VALUES (7, 'fall')")
    upstream.execute(
        "INSERT INTO contact_campaigns (contact_id, campaign_instance_id) VALUES (1, 7)"
    )
    upstream.execute(
        "INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status, "
        "campaign_instance_id, event_year, event_month, event_day) VALUES "
        "(2, 'campaign_fall_7', '2026-01-01', 'sent', 7, 2026, 1, 1), "
        "(3, 'campaign_fall_8', '2026-01-01', 'pre-scheduled', NULL, 2026, 1, 1)"
    )
    assert await store.campaign_type_targets_all("aep") is True
    assert await store.campaign_type_targets_all("fall") is False
    assert await store.campaign_type_targets_all("nope") is None
    assert await store.contacts_of_campaign_instance(7) == {1, 2}
    assert await store.contacts_of_campaign_type("fall") == {1, 2, 3}


async def test_data_version_moves_only_for_other_connections(
    store: Store, upstream: sqlite3.Connection
) -> None:
    start = await store.data_version()
    async with store.transaction():
        await store.enqueue_event("recompute_all")
    assert await store.data_version() == start  # our own commit
    _contact(upstream, 1)
    assert await store.data_version() != start  # an upstream commit


async def test_readonly_store_reads_and_refuses_writes(db_path: Path) -> None:
    from service.errors import StoreError

    async with open_store(db_path, readonly=True) as ro:
        assert await ro.pending_event_count() >= 0
        with pytest.raises(StoreError):
            async with ro.transaction():
                await ro.enqueue_event("recompute_all")


async def test_unreadable_event_timestamps_do_not_break_the_summary(
    store: Store, upstream: sqlite3.Connection
) -> None:
    upstream.execute(
        "INSERT INTO scheduler_events (kind, created_at) VALUES ('recompute_all', '0')"
    )
    summary = await store.events_summary()
    assert summary.pending >= 1 and summary.oldest_created_at is None


async def _hold_the_lock(store: Store, seconds: float) -> None:
    async with store.transaction():
        await store.set_state("held", "yes")
        await anyio.sleep(seconds)


async def test_a_transaction_holding_the_lock_long_is_logged_with_its_opener(
    store: Store,
) -> None:
    # Upstream writers wait for as long as one of our transactions holds the
    # lock: one of 150 ms is logged with the function that opened it; one of
    # a few milliseconds is not.
    with capture_logs() as logs:
        await _hold_the_lock(store, 0.0)
        await _hold_the_lock(store, 0.15)
    held = [e for e in logs if e["event"] == "write_lock_held"]
    assert len(held) == 1
    assert held[0]["ms"] >= 150
    assert held[0]["by"] == f"{__name__}._hold_the_lock"


async def _hold_then_commit_part_way(store: SqliteStore) -> None:
    async with store.transaction():
        await store.set_state("held", "first part")
        await anyio.sleep(0.15)
        # As a long rebalance does: commit, let writers in, go on.
        await store.commit_and_resume(0.0)
        await store.set_state("held", "second part")


async def test_each_hold_of_the_lock_is_timed_on_its_own(store: SqliteStore) -> None:
    # A transaction that commits part way holds the lock twice: the first
    # hold (150 ms) is logged where it was let go, the short second one is not.
    with capture_logs() as logs:
        await _hold_then_commit_part_way(store)
    held = [e for e in logs if e["event"] == "write_lock_held"]
    assert [(e["by"], e["ms"] >= 150) for e in held] == [
        (f"{__name__}._hold_then_commit_part_way", True)
    ]
