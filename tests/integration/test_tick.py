"""The calendar tick (SPEC 8.4): due contacts only, once per local date."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from service import engine
from service.daemon.tick import tick_if_due
from service.engine import PlanContext, core
from service.store import SqliteStore, Store
from service.store.catchup import CaughtUp
from service.store.handover import Params
from tests.integration.daemon_helpers import (
    SEED_SQL,
    TODAY,
    assert_plan_is_full_recompute,
    local_noon,
    query,
    running_daemon,
    settings,
    utc,
    wait_until,
)

CFG = settings()
CTX = PlanContext.from_settings(CFG)


def write(db_path: Path, script: str) -> None:
    con = sqlite3.connect(db_path, timeout=10)
    try:
        con.executescript(script)
        con.commit()
    finally:
        con.close()


def tick_dates(db_path: Path) -> list[str]:
    rows = query(db_path, "SELECT today FROM scheduler_runs WHERE trigger = 'tick' ORDER BY id")
    return [str(r[0]) for r in rows]


@pytest.fixture
async def planned(db_path: Path, store: Store) -> Store:
    write(db_path, SEED_SQL)
    await engine.full_recompute(store, CTX, TODAY)
    async with store.transaction():
        await store.set_last_tick(TODAY)
    return store


async def test_tick_recomputes_exactly_the_due_contacts(planned: Store, db_path: Path) -> None:
    # Review dates set by hand: 1 and 2 come due on the 2nd, 3 on the 5th,
    # everybody else later; 6 never (NULL).
    write(
        db_path,
        """
        UPDATE contact_plan_state SET review_date = '2026-12-31';
        UPDATE contact_plan_state SET review_date = '2026-03-02' WHERE contact_id IN (1, 2);
        UPDATE contact_plan_state SET review_date = '2026-03-05' WHERE contact_id = 3;
        UPDATE contact_plan_state SET review_date = NULL WHERE contact_id = 6;
    """,
    )
    report = await tick_if_due(planned, CTX, date(2026, 3, 2))
    assert report is not None and report.finished
    assert report.contacts == 2  # contacts 1 and 2
    assert report.previous == TODAY
    assert await planned.last_tick() == date(2026, 3, 2)
    # The day's capacity snapshot is taken (8 contacts with a non-empty e-mail).
    assert await planned.capacity_snapshot(date(2026, 3, 2)) == 8
    # Not due twice on the same date.
    assert await tick_if_due(planned, CTX, date(2026, 3, 2)) is None


async def test_catching_up_after_days_of_downtime_is_one_tick(
    planned: Store, db_path: Path
) -> None:
    write(
        db_path,
        """
        UPDATE contact_plan_state SET review_date = '2026-12-31';
        UPDATE contact_plan_state SET review_date = '2026-03-02' WHERE contact_id = 1;
        UPDATE contact_plan_state SET review_date = '2026-03-04' WHERE contact_id = 2;
        UPDATE contact_plan_state SET review_date = '2026-03-09' WHERE contact_id = 3;
    """,
    )
    # Down from the 1st to the 6th: contacts due on the 2nd and 4th are both caught up.
    report = await tick_if_due(planned, CTX, date(2026, 3, 6))
    assert report is not None
    assert (report.previous, report.contacts) == (TODAY, 2)
    assert tick_dates(db_path) == ["2026-03-06"]


async def test_an_interrupted_tick_is_repeated_for_what_is_left(
    planned: Store, db_path: Path
) -> None:
    write(
        db_path,
        """
        UPDATE contact_plan_state SET review_date = '2026-12-31';
        UPDATE contact_plan_state SET review_date = '2026-03-02' WHERE contact_id IN (1, 2, 4);
    """,
    )
    calls = iter([False, True])  # one chunk, then "SIGTERM"
    report = await tick_if_due(planned, CTX, date(2026, 3, 2), chunk=1,
                               should_stop=lambda: next(calls))  # fmt: skip
    assert report is not None and not report.finished and report.contacts == 1
    assert await planned.last_tick() == TODAY  # the date was not stored
    again = await tick_if_due(planned, CTX, date(2026, 3, 2))
    assert again is not None and again.finished and again.contacts == 2


async def test_first_tick_on_a_new_database_plans_everyone(store: Store, db_path: Path) -> None:
    write(db_path, SEED_SQL + "DELETE FROM scheduler_events;")
    report = await tick_if_due(store, CTX, TODAY)
    assert report is not None and report.full_recompute_queued
    assert query(db_path, "SELECT kind FROM scheduler_events") == [("recompute_all",)]


# Start 2026-03-07 20:00 CST (02:00 UTC on the 8th), one step per hour. Local
# midnights, worked out by hand: 2026-03-08 00:00 CST = 06:00 UTC (step 4);
# that day has 23 hours (02:00 CST jumps to 03:00 CDT), so 2026-03-09 00:00 CDT
# = 05:00 UTC on the 9th (step 27); 2026-03-10 00:00 CDT = 05:00 UTC (step 51).
SPRING = (
    utc(2026, 3, 8, 2),
    [0, 4, 27, 51],
    ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"],
)
# Start 2026-10-31 20:00 CDT (01:00 UTC on 11-01). 2026-11-01 00:00 CDT = 05:00
# UTC (step 4); that day has 25 hours (the 01:00 hour repeats), so 2026-11-02
# 00:00 CST = 06:00 UTC on the 2nd (step 29); 2026-11-03 00:00 CST = 06:00 UTC (53).
AUTUMN = (
    utc(2026, 11, 1, 1),
    [0, 4, 29, 53],
    ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03"],
)


@pytest.mark.parametrize(("start", "steps", "dates"), [SPRING, AUTUMN], ids=["spring", "autumn"])
async def test_one_tick_per_local_date_across_dst(
    db_path: Path, start: datetime, steps: list[int], dates: list[str]
) -> None:
    write(db_path, SEED_SQL)
    async with running_daemon(db_path, CFG, start=start) as run:
        await run.settle()
        seen: list[int] = []
        count = len(tick_dates(db_path))
        if count:
            seen.append(0)
        for step in range(1, 60):
            run.clock.advance(timedelta(hours=1))
            await run.settle()
            now = len(tick_dates(db_path))
            if now != count:
                seen.extend([step] * (now - count))
                count = now
        assert seen == steps
        assert tick_dates(db_path) == dates
        today = run.clock.today()
    await assert_plan_is_full_recompute(db_path, CFG, today)


async def test_midnight_wakes_the_daemon_by_itself(db_path: Path) -> None:
    write(db_path, SEED_SQL)
    start = datetime(2026, 3, 1, 23, 59, 0, tzinfo=CFG.tz)
    async with running_daemon(db_path, CFG, start=start) as run:
        await run.settle()
        assert tick_dates(db_path) == ["2026-03-01"]
        run.clock.advance(timedelta(minutes=2))
        # No settle(): the clock task itself must notice the new date.
        await wait_until(lambda: tick_dates(db_path) == ["2026-03-01", "2026-03-02"])


async def test_a_jump_over_several_days_is_one_tick_in_the_daemon(db_path: Path) -> None:
    write(db_path, SEED_SQL)
    async with running_daemon(db_path, CFG, start=local_noon(TODAY)) as run:
        await run.settle()
        run.clock.set(local_noon(date(2026, 3, 6)))  # suspended for five days
        await run.settle()
        await run.settle()
    assert tick_dates(db_path) == ["2026-03-01", "2026-03-06"]
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 6))


async def test_the_tick_moves_caught_up_rows_of_contacts_not_due(
    planned: Store, db_path: Path
) -> None:
    # Ann (contact 1, TX: no exclusion rules): birthday 2026-03-20, wanted 14 days
    # before, on 03-06; policy anniversary 04-15, wanted 30 days before, on 03-16;
    # targeted renewal, trigger 03-25, 7 days before: 03-18. Without windows a row
    # whose desired date passes is caught up and then only follows today until
    # its last live day: 03-20 (birthday), 04-15, 03-25. Her plan first differs
    # from that catch-up move on 03-21, when the birthday row ends.
    await tick_if_due(planned, CTX, date(2026, 3, 7))
    review = query(db_path, "SELECT review_date FROM contact_plan_state WHERE contact_id = 1")
    assert review == [("2026-03-21",)]
    report = await tick_if_due(planned, CTX, date(2026, 3, 9))
    assert report is not None and report.finished and report.caught_up_moved >= 1
    tick_run = query(db_path, "SELECT max(id) FROM scheduler_runs WHERE trigger = 'tick'")[0][0]
    assert isinstance(tick_run, int)
    # (The balancer may move the scheduled dates of the rows not caught up.)
    assert [(r[0], r[1], r[3], r[4]) for r in rows_of_ann(db_path)] == [
        ("birthday", "2026-03-09", "caught up from 2026-03-06", str(tick_run)),
        ("campaign_renewal_10", "2026-03-18", None, "1"),
        ("effective_date", "2026-03-16", None, "1"),
    ]
    assert rows_of_ann(db_path)[0][2] == "2026-03-09"
    # The move is journalled as the writer's update would be (SPEC 7).
    journal = query(
        db_path,
        "SELECT op, old_desired, new_desired, new_scheduled, trigger FROM plan_journal "
        "WHERE contact_id = 1 AND email_type = 'birthday' AND run_id = ?",
        (tick_run,),
    )
    assert journal == [("update", "2026-03-07", "2026-03-09", "2026-03-09", "tick")]
    # The move does not rewrite the contact's state (its fingerprint still
    # names the rows of 03-01, planned on 03-01); it records the day it moved
    # rows to, before which no fingerprint is trusted any more.
    state = query(db_path, "SELECT fingerprint FROM contact_plan_state WHERE contact_id = 1")
    assert len(state) == 1 and str(state[0][0]).split(":")[2:] == ["2026-03-01", "2026-03-21", "3"]
    through = "SELECT value FROM scheduler_state WHERE key = 'catchup_through'"
    assert query(db_path, through) == [("2026-03-09",)]
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 9))
    # On 03-19 the policy and renewal rows have passed their desired dates too:
    # the move catches them up, noting the day they were wanted.
    await tick_if_due(planned, CTX, date(2026, 3, 19))
    assert [(r[0], r[1], r[3]) for r in rows_of_ann(db_path)] == [
        ("birthday", "2026-03-19", "caught up from 2026-03-06"),
        ("campaign_renewal_10", "2026-03-19", "caught up from 2026-03-18"),
        ("effective_date", "2026-03-19", "caught up from 2026-03-16"),
    ]
    assert query(db_path, through) == [("2026-03-19",)]
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 19))


def rows_of_ann(db_path: Path) -> list[tuple[object, ...]]:
    return query(
        db_path,
        "SELECT email_type, desired_date, scheduled_send_date, catchup_note, scheduler_run_id "
        "FROM email_schedules WHERE contact_id = 1 ORDER BY email_type",
    )


async def test_the_tick_rebalances_from_the_day_before_by_what_it_changed(
    planned: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The full recompute left the global balance of 03-01. A week later the
    # tick catches rows up and recomputes the due contacts; its closing
    # rebalance starts from that balance and redoes only what moved: no
    # global rebalance runs, and the result is the global balance all the same.
    global_runs: list[object] = []
    real = core._rebalance

    async def spy(store: Store, ctx: PlanContext, today: date, delta: object) -> object:
        global_runs.append(delta)
        return await real(store, ctx, today, None)

    monkeypatch.setattr("service.engine.rebase._rebalance", spy)
    report = await tick_if_due(planned, CTX, date(2026, 3, 9), chunk=1)
    assert report is not None and report.finished and report.caught_up_moved >= 1
    assert global_runs == []
    assert set(report.phases) == {"reads", "catch_up", "recompute", "rebalance"}
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 9))
    async with planned.transaction():
        assert (await engine.rebalance_all(planned, CTX, date(2026, 3, 9))).rows_moved == 0


async def test_plan_rows_written_by_another_process_during_the_tick_make_it_global(
    planned: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between two of the tick's transactions another mailplan process moves
    # plan rows (as its own rebalance would) and counts its write in the plan
    # version. That change is not in what the tick gathered, so the tick's
    # closing rebalance must not build on the balance of the day before: it
    # goes global, and the plan is a full recompute's.
    global_runs: list[object] = []
    real = core._rebalance

    async def spy(store: Store, ctx: PlanContext, today: date, delta: object) -> object:
        global_runs.append(delta)
        return await real(store, ctx, today, None)

    monkeypatch.setattr("service.engine.rebase._rebalance", spy)
    injected: list[bool] = []

    def other_process_writes() -> bool:
        if not injected:
            write(
                db_path,
                """
                UPDATE email_schedules SET scheduled_send_date = '2026-04-30'
                WHERE status = 'pre-scheduled' AND scheduled_send_date > '2026-03-20';
                UPDATE scheduler_state SET value = CAST(value AS INTEGER) + 1
                WHERE key = 'plan_version';
                """,
            )
            injected.append(True)
        return False

    report = await tick_if_due(
        planned, CTX, date(2026, 3, 9), chunk=1, should_stop=other_process_writes
    )
    assert report is not None and report.finished and injected
    assert global_runs == [None]
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 9))


async def test_rows_found_to_move_and_sent_before_the_move_stay_as_sent(
    planned: Store, db_path: Path
) -> None:
    # The tick finds the rows to catch up in a read snapshot and moves them in
    # a later write transaction. A row the sender sends in between is history
    # by then: the move leaves it alone (SPEC I4) and moves the others.
    day = date(2026, 3, 19)
    async with planned.snapshot():
        found = await planned.caught_up_rows(day, 0, await planned.max_contact_id())
    ids = found.ids
    assert len(ids) >= 2
    con = sqlite3.connect(db_path, timeout=10)
    with con:
        con.execute(
            "UPDATE email_schedules SET status = 'sent', sent_at = '2026-03-18 09:00:00' "
            "WHERE id = ?",
            (ids[0],),
        )
    con.close()
    before = query(db_path, "SELECT * FROM email_schedules WHERE id = ?", (ids[0],))
    async with planned.transaction():
        run = await planned.start_run("tick", day)
        step = await planned.move_caught_up_rows(day, run, found)
    assert step.rows == len(ids) - 1
    assert query(db_path, "SELECT * FROM email_schedules WHERE id = ?", (ids[0],)) == before
    moved = query(
        db_path,
        "SELECT count(*) FROM email_schedules WHERE desired_date = ? AND id IN "
        "(SELECT value FROM json_each(?))",
        (day.isoformat(), json.dumps(ids[1:])),
    )
    assert moved == [(len(ids) - 1,)]


async def test_rows_found_to_move_are_not_read_again_when_nobody_else_wrote(
    planned: SqliteStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found in a read snapshot, moved in a later write transaction with no
    # upstream change and no other mailplan process's plan write in between:
    # the rows are still as read, and the move does not read them again
    # inside the lock. Ann's three rows (desired 03-06, 03-16, 03-18) move.
    day = date(2026, 3, 19)
    async with planned.snapshot():
        found = await planned.caught_up_rows(day, 0, await planned.max_contact_id())
    assert len(found) >= 3
    names: list[str] = []
    original = planned.fetchall

    async def spy(name: str, params: Params = ()) -> list[tuple[Any, ...]]:
        names.append(name)
        return await original(name, params)

    monkeypatch.setattr(planned, "fetchall", spy)
    async with planned.transaction():
        run = await planned.start_run("tick", day)
        step = await planned.move_caught_up_rows(day, run, found)
    assert "catchup_recheck" not in names
    assert step.rows == len(found)
    moved = query(
        db_path,
        "SELECT count(*) FROM email_schedules WHERE desired_date = ? "
        "AND scheduled_send_date = ? AND id IN (SELECT value FROM json_each(?))",
        (day.isoformat(), day.isoformat(), json.dumps(found.ids)),
    )
    assert moved == [(len(found),)]


async def test_rows_found_to_move_and_planned_again_by_another_process_are_read_again(
    planned: Store, db_path: Path
) -> None:
    # Between the read and the move another mailplan process plans one of
    # the rows again (its desired date is now in the future) and counts its
    # write in the plan version, as every mailplan write does. No event says
    # so, but the plan version does: the move reads the rows again inside
    # the lock and leaves that row where the other process put it.
    day = date(2026, 3, 19)
    async with planned.snapshot():
        found = await planned.caught_up_rows(day, 0, await planned.max_contact_id())
    ids = found.ids
    assert len(ids) >= 2
    write(
        db_path,
        f"""
        UPDATE email_schedules SET desired_date = '2026-04-01', balance_date = '2026-04-01',
            scheduled_send_date = '2026-04-01' WHERE id = {int(ids[0])};
        UPDATE scheduler_state SET value = CAST(value AS INTEGER) + 1 WHERE key = 'plan_version';
        """,
    )
    async with planned.transaction():
        run = await planned.start_run("tick", day)
        step = await planned.move_caught_up_rows(day, run, found)
    assert step.rows == len(ids) - 1
    assert query(
        db_path,
        "SELECT desired_date, scheduled_send_date FROM email_schedules WHERE id = ?",
        (ids[0],),
    ) == [("2026-04-01", "2026-04-01")]


async def test_the_first_catch_up_transaction_is_small_and_the_rest_follow(
    planned: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the sizer has timed a move, the first transaction moves
    # FIRST_MOVE_ROWS rows (1 here); the others follow in later transactions.
    # On 03-19 Ann's three rows have passed their desired dates (03-06, 03-16,
    # 03-18: see the test above) and all three are caught up to 03-19, as a
    # full recompute would plan them.
    from service.daemon import tick

    monkeypatch.setattr(tick, "FIRST_MOVE_ROWS", 1)
    await tick_if_due(planned, CTX, date(2026, 3, 7))
    sizes: list[int] = []
    original = planned.move_caught_up_rows

    async def spy(today: date, run_id: int, found: CaughtUp) -> object:
        sizes.append(len(found))
        return await original(today, run_id, found)

    monkeypatch.setattr(planned, "move_caught_up_rows", spy)
    report = await tick_if_due(planned, CTX, date(2026, 3, 19))
    assert report is not None and report.finished
    assert sizes[0] == 1 and len(sizes) >= 2
    assert report.caught_up_moved == sum(sizes) >= 3
    assert [(r[0], r[1]) for r in rows_of_ann(db_path)] == [
        ("birthday", "2026-03-19"),
        ("campaign_renewal_10", "2026-03-19"),
        ("effective_date", "2026-03-19"),
    ]
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 19))


async def test_catch_up_reads_of_one_contact_each_join_into_full_moves(
    planned: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each read looks at one contact; the move reads on until it has a full
    # share (two rows here) before it writes, so the rows of several reads
    # go in one transaction, and the plan is a full recompute's.
    from service.daemon import tick

    monkeypatch.setattr(tick, "READ_CONTACTS", 1)
    monkeypatch.setattr(tick, "FIRST_MOVE_ROWS", 2)
    monkeypatch.setattr(tick, "MOVE_ROWS", 2)
    await tick_if_due(planned, CTX, date(2026, 3, 7))
    sizes: list[int] = []
    original = planned.move_caught_up_rows

    async def spy(today: date, run_id: int, found: CaughtUp) -> object:
        sizes.append(len({r[1] for r in found.rows}))
        return await original(today, run_id, found)

    monkeypatch.setattr(planned, "move_caught_up_rows", spy)
    report = await tick_if_due(planned, CTX, date(2026, 3, 19))
    assert report is not None and report.finished and report.caught_up_moved >= 3
    assert sizes and max(sizes) >= 2  # rows of two contacts' reads in one move
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 19))


async def test_the_closing_rebalance_walks_without_the_lock_and_the_sender_gets_in(
    planned: Store, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While the tick's closing rebalance walks the new day's move, the write
    # lock is free: the sender commits a row sent with no busy timeout at
    # all. Its balance gap is reconciled with the saves, and once the daemon
    # has worked off the sender's history event the plan is a full
    # recompute's of the day.
    from service.daemon.processing import BatchLimits, Processor
    from service.engine.incremental import Incremental

    day = date(2026, 3, 19)
    await tick_if_due(planned, CTX, date(2026, 3, 7))
    sent: list[object] = []
    walk = Incremental._walk

    async def walk_and_send(self: Incremental) -> None:
        if not sent:
            con = sqlite3.connect(db_path, timeout=0)
            try:
                with con:
                    sent.extend(
                        con.execute(
                            "UPDATE email_schedules SET status = 'sent', sent_at = ? WHERE id = "
                            "(SELECT id FROM email_schedules WHERE status = 'pre-scheduled' "
                            "AND scheduled_send_date > ? ORDER BY id LIMIT 1) RETURNING id",
                            ("2026-03-19 09:00:00", day.isoformat()),
                        ).fetchall()
                    )
            finally:
                con.close()
        await walk(self)

    monkeypatch.setattr(Incremental, "_walk", walk_and_send)
    report = await tick_if_due(planned, CTX, day)
    assert report is not None and report.finished
    assert len(sent) == 1
    monkeypatch.setattr(Incremental, "_walk", walk)
    processor = Processor(planned, CTX, BatchLimits())
    while await processor.step(day) is not None:
        pass
    await assert_plan_is_full_recompute(db_path, CFG, day)


async def test_the_wal_is_checkpointed_beside_the_tick(
    planned: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint thread runs while the tick writes, is woken after each of
    # the tick's commits (not only every 50 ms), and is stopped after it.
    from service.store import checkpoint
    from service.store.checkpoint import CheckpointThread

    seen: list[str] = []
    commits = 0

    class Counting(CheckpointThread):
        def start(self) -> None:
            seen.append("start")
            super().start()

        def kick(self) -> None:
            seen.append("kick")
            super().kick()

        def stop(self) -> None:
            super().stop()
            seen.append("stop")

    from service.store.base import StoreBase

    real_end = StoreBase._end

    async def counting_end(self: StoreBase, statement: str) -> None:
        nonlocal commits
        await real_end(self, statement)
        if statement == "COMMIT" and "start" in seen and "stop" not in seen:
            commits += 1

    monkeypatch.setattr(checkpoint, "CheckpointThread", Counting)
    monkeypatch.setattr(StoreBase, "_end", counting_end)
    assert await tick_if_due(planned, CTX, date(2026, 3, 9)) is not None
    assert commits >= 2
    assert seen == ["start"] + ["kick"] * commits + ["stop"]
    # No thread for a tick that is not due.
    assert await tick_if_due(planned, CTX, date(2026, 3, 9)) is None
    assert seen == ["start"] + ["kick"] * commits + ["stop"]
