"""The plan journal (SPEC 7): one entry per insert, update, delete or move of
a plan row, in the writing transaction; nothing for unchanged rows; pruned by age."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.daemon.tick import prune_journal
from service.planning.balance import BalanceItem
from service.planning.model import ContactPlan, PlanRow
from service.store import Scope, Store, WriteOptions, init_db, open_store

EVENT = date(2026, 6, 1)
AT = datetime(2026, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)


def _row(status: str = "pre-scheduled", desired: date = date(2026, 5, 18)) -> PlanRow:
    reason = None if status == "pre-scheduled" else "Birthday exclusion window for CA"
    return PlanRow(7, "birthday", EVENT, desired, status, reason, 10, "birthday_template")  # type: ignore[arg-type]


def _journal(path: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(
            "SELECT run_id, trigger, at, contact_id, email_type, event_date, op, old_desired,"
            " old_scheduled, old_status, old_reason, new_desired, new_scheduled, new_status,"
            " new_reason FROM plan_journal ORDER BY id"
        ).fetchall()
    finally:
        con.close()


async def _write(store: Store, plan: ContactPlan, trigger: str) -> int:
    async with store.transaction():
        run = await store.start_run(trigger, date(2026, 5, 1))
        loaded = await store.load_scope(Scope.of_ids([7]))
        await store.write_plans(loaded, [plan], WriteOptions(run_id=str(run)))
    return run


async def test_insert_update_unchanged_delete_each_journalled(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.execute("INSERT INTO contacts (id, email) VALUES (7, 'a@example.com')")
    con.commit()
    con.close()
    async with open_store(db_path, clock=lambda: AT) as store:
        r1 = await _write(store, ContactPlan(7, (_row(),), None), "events")
        # The same plan again: nothing is written, nothing journalled (I6).
        await _write(store, ContactPlan(7, (_row(),), None), "events")
        r3 = await _write(store, ContactPlan(7, (_row("skipped"),), None), "tick")
        r4 = await _write(store, ContactPlan(7, (), None), "fanout")
    at = "2026-05-01 12:30:15.250"  # the caller's clock, in UTC, to the millisecond
    assert _journal(db_path) == [
        (r1, "events", at, 7, "birthday", "2026-06-01", "insert", None, None, None, None,
         "2026-05-18", "2026-05-18", "pre-scheduled", None),
        (r3, "tick", at, 7, "birthday", "2026-06-01", "update", "2026-05-18", "2026-05-18",
         "pre-scheduled", None, "2026-05-18", "2026-05-18", "skipped",
         "Birthday exclusion window for CA"),
        (r4, "fanout", at, 7, "birthday", "2026-06-01", "delete", "2026-05-18", "2026-05-18",
         "skipped", "Birthday exclusion window for CA", None, None, None, None),
    ]  # fmt: skip


async def test_balancing_move_is_journalled_once(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.execute("INSERT INTO contacts (id, email) VALUES (7, 'a@example.com')")
    con.commit()
    con.close()
    async with open_store(db_path, clock=lambda: AT) as store:
        await _write(store, ContactPlan(7, (_row(),), None), "events")
        item = BalanceItem((7, "birthday", EVENT), 10, date(2026, 5, 18), None, None)
        async with store.transaction():
            run = await store.start_run("tick", date(2026, 5, 1))
            await store.save([(item.key, date(2026, 5, 18), date(2026, 5, 19))])
            # Saving the same date again is no move.
            await store.save([(item.key, date(2026, 5, 18), date(2026, 5, 19))])
    moves = [r for r in _journal(db_path) if r[6] == "move"]
    assert moves == [
        (run, "tick", "2026-05-01 12:30:15.250", 7, "birthday", "2026-06-01", "move",
         "2026-05-18", "2026-05-18", "pre-scheduled", None,
         "2026-05-18", "2026-05-19", "pre-scheduled", None),
    ]  # fmt: skip


async def test_prune_by_age_only(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.executemany(
        "INSERT INTO plan_journal (at, contact_id, email_type, op)"
        " VALUES (?, 1, 'birthday', 'insert')",
        [("2025-03-31 23:59:59.999",), ("2025-04-01 00:00:00.000",), ("2026-05-01 08:00:00.000",)],
    )
    con.commit()
    con.close()
    async with open_store(db_path) as store:
        # 400 days before 2026-05-06 is 2025-04-01 (365 to 2025-05-06, 35 more):
        # older entries go, that day stays.
        assert await prune_journal(store, date(2025, 4, 1)) == 1
    assert [r[2] for r in _journal(db_path)] == [
        "2025-04-01 00:00:00.000",
        "2026-05-01 08:00:00.000",
    ]


# --- property: the journal replays to the stored plan ------------------------------------

EVENTS = [date(2026, 6, 1), date(2026, 7, 1), date(2026, 8, 1)]
TYPES = ["birthday", "effective_date"]

_row_spec = st.tuples(
    st.sampled_from(TYPES),
    st.sampled_from(EVENTS),
    st.integers(min_value=1, max_value=20),  # days before the event
    st.sampled_from(["pre-scheduled", "skipped"]),
)


def _plan_of(specs: list[tuple[str, date, int, str]]) -> ContactPlan:
    seen: dict[tuple[str, date], PlanRow] = {}
    for etype, event, before, status in specs:
        desired = event - timedelta(days=before)
        reason = None if status == "pre-scheduled" else "Year-round exclusion for NY"
        seen[(etype, event)] = PlanRow(7, etype, event, desired, status, reason, 10, None)  # type: ignore[arg-type]
    return ContactPlan(7, tuple(seen.values()), None)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    writes=st.lists(st.lists(_row_spec, max_size=5), min_size=1, max_size=5),
    moves=st.lists(st.integers(min_value=0, max_value=5), max_size=5),
)
def test_replaying_the_journal_gives_the_stored_plan(
    tmp_path_factory: pytest.TempPathFactory,
    writes: list[list[tuple[str, date, int, str]]],
    moves: list[int],
) -> None:
    """After any sequence of writes and balancing moves, the last journal entry of
    every identity is the stored row (or a delete when there is none), and each
    write journals exactly the rows it inserted, updated or deleted."""
    path = tmp_path_factory.mktemp("journal") / "org.sqlite3"

    async def scenario() -> None:
        await init_db(path)
        con = sqlite3.connect(path)
        con.execute("INSERT INTO contacts (id, email) VALUES (7, 'a@example.com')")
        con.commit()
        con.close()
        async with open_store(path, clock=lambda: AT) as store:
            for k, specs in enumerate(writes):
                before = len(_journal(path))
                async with store.transaction():
                    run = await store.start_run("events", date(2026, 5, 1))
                    loaded = await store.load_scope(Scope.of_ids([7]))
                    result = await store.write_plans(
                        loaded, [_plan_of(specs)], WriteOptions(run_id=str(run))
                    )
                    w = result.stats
                    if k < len(moves):
                        rows = await store.export_rows([7])
                        shift = [(( r.contact_id, r.email_type, r.event_date), r.desired_date,
                                  r.scheduled_date + timedelta(days=moves[k]))
                                 for r in rows if r.status == "pre-scheduled"]  # fmt: skip
                        await store.save(shift)
                        moved = sum(1 for r in shift if moves[k])
                    else:
                        moved = 0
                assert len(_journal(path)) - before == w.inserted + w.updated + w.deleted + moved

    asyncio.run(scenario())
    last: dict[tuple[object, object], tuple[object, ...]] = {}
    for entry in _journal(path):
        last[(entry[4], entry[5])] = entry
    con = sqlite3.connect(path)
    stored = {
        (t, ev): (d, s, st_, r)
        for t, ev, d, s, st_, r in con.execute(
            "SELECT email_type, printf('%04d-%02d-%02d', event_year, event_month, event_day),"
            " desired_date, scheduled_send_date, status, skip_reason FROM email_schedules"
        )
    }
    con.close()
    for key, entry in last.items():
        if key in stored:
            assert entry[6] != "delete"
            assert tuple(entry[11:15]) == stored[key], (entry, stored[key])
        else:
            assert entry[6] == "delete"
    assert set(stored) <= set(last)


async def test_rows_deleted_with_their_contact_are_journalled_once(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.execute("INSERT INTO contacts (id, email) VALUES (7, 'a@example.com')")
    con.commit()
    con.close()
    async with open_store(db_path, clock=lambda: AT) as store:
        await _write(store, ContactPlan(7, (_row(),), None), "events")
        # Upstream deletes the contact: the foreign key's cascade takes the plan row.
        con = sqlite3.connect(db_path)
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("DELETE FROM contacts WHERE id = 7")
        con.commit()
        con.close()
        # The next recompute of the contact finds nothing left to delete.
        await _write(store, ContactPlan(7, (), None), "events")
    ops = [(r[1], r[6], r[9]) for r in _journal(db_path)]
    assert ops == [("events", "insert", None), ("contact deleted", "delete", "pre-scheduled")]


async def test_an_orphan_removed_by_the_writer_is_journalled_once(db_path: Path) -> None:
    con = sqlite3.connect(db_path)
    con.execute("INSERT INTO contacts (id, email) VALUES (7, 'a@example.com')")
    con.commit()
    con.close()
    async with open_store(db_path, clock=lambda: AT) as store:
        await _write(store, ContactPlan(7, (_row(),), None), "events")
        # Without the cascade (an upstream database whose foreign keys are off),
        # the row stays behind its deleted contact until the writer removes it.
        con = sqlite3.connect(db_path)
        con.execute("PRAGMA foreign_keys = OFF")
        con.execute("DELETE FROM contacts WHERE id = 7")
        con.commit()
        con.close()
        await _write(store, ContactPlan(7, (), None), "events")
    ops = [(r[1], r[6]) for r in _journal(db_path)]
    assert ops == [("events", "insert"), ("contact deleted", "delete")]
