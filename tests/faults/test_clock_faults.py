"""The date moving backwards (issue finding 7; SPEC 8.4, I1)."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

from service.daemon.processing import Processor
from service.daemon.tick import tick_if_due
from service.engine import PlanContext
from service.store import SqliteStore, open_store
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
