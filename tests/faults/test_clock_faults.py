"""The date moving backwards (issue finding 7; SPEC 8.4, I1)."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import pytest

from service import engine
from service.daemon.processing import Processor
from service.daemon.tick import tick_if_due
from service.engine import PlanContext
from service.store import SqliteStore, open_store
from service.store.base import fingerprints_trusted
from tests.integration.daemon_helpers import SEED_SQL, assert_plan_is_full_recompute, settings

CFG = settings()
CTX = PlanContext.from_settings(CFG)


async def _day(store: SqliteStore, today: date) -> None:
    await tick_if_due(store, CTX, today)
    processor = Processor(store, CTX)
    while await processor.step(today) is not None:
        pass


async def test_a_date_moving_back_replans_for_the_earlier_day(db_path: Path) -> None:
    """--today 03-01, then 03-09, then 03-05 (a clock set back): the plan is
    the full recompute for 03-05, not rows caught up to 03-09."""
    con = sqlite3.connect(db_path)
    con.executescript(SEED_SQL)
    con.close()
    async with open_store(db_path) as store:
        for day in (date(2026, 3, 1), date(2026, 3, 9), date(2026, 3, 5)):
            await _day(store, day)
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 5))


def _ann_rows(db_path: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db_path)
    try:
        return con.execute(
            "SELECT email_type, desired_date, catchup_note FROM email_schedules "
            "WHERE status IN ('pre-scheduled', 'skipped') ORDER BY contact_id, email_type"
        ).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("first", [date(2026, 3, 1), date(2026, 3, 5)])
async def test_a_full_recompute_for_a_day_before_the_last_move_trusts_no_fingerprint(
    db_path: Path, first: date
) -> None:
    """Planned on ``first``, rows caught up by the tick of 03-09; then an
    operator's `recompute --all --today 2026-03-05`. The stored fingerprints
    still name the rows as planned, whose plan for 03-05 is the same: trusted,
    they would leave the rows caught up to 03-09 in a plan for 03-05. (Planned
    on 03-05 itself, the contacts' input digests match as well: trusted, they
    would not even be planned.)"""
    con = sqlite3.connect(db_path)
    con.executescript(SEED_SQL)
    con.close()
    async with open_store(db_path) as store:
        await _day(store, first)
        planned = _ann_rows(db_path)
        await _day(store, date(2026, 3, 9))
        moved = [r for r in _ann_rows(db_path) if r[2] is not None and r[1] == "2026-03-09"]
        # The seed has rows wanted between 03-05 and 03-09 that the tick moved.
        assert any("2026-03-05" <= str(row[1]) < "2026-03-09" for row in planned) and moved
        stats = await engine.full_recompute(store, CTX, date(2026, 3, 5))
        assert stats.updated >= len(moved)
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 5))


async def test_fingerprints_are_trusted_again_for_the_day_of_the_last_move(db_path: Path) -> None:
    """After the tick of 03-09 a full recompute for 03-09 and for 03-12 is
    exact, and for 03-09 it finds every stored row as planned (nothing to
    write: the fingerprints it trusts do not hide a difference)."""
    con = sqlite3.connect(db_path)
    con.executescript(SEED_SQL)
    con.close()
    async with open_store(db_path) as store:
        await _day(store, date(2026, 3, 1))
        await _day(store, date(2026, 3, 9))
        stats = await engine.full_recompute(store, CTX, date(2026, 3, 9))
        assert (stats.inserted, stats.updated, stats.deleted) == (0, 0, 0)
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 9))
    async with open_store(db_path) as store:
        await engine.full_recompute(store, CTX, date(2026, 3, 12))
    await assert_plan_is_full_recompute(db_path, CFG, date(2026, 3, 12))


def test_the_trust_rule_follows_the_latest_move() -> None:
    assert fingerprints_trusted(None, date(2026, 3, 1))
    assert fingerprints_trusted(None, None)
    assert not fingerprints_trusted("2026-03-09", date(2026, 3, 8))
    assert fingerprints_trusted("2026-03-09", date(2026, 3, 9))
    assert fingerprints_trusted("2026-03-09", date(2026, 3, 10))
    assert not fingerprints_trusted("2026-03-09", None)
