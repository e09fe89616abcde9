"""The store side of load balancing: the ``BalanceStore`` protocol of
:mod:`service.rebalance` over the non-skipped plan rows (SPEC 6)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from service.planning.balance import BalanceItem
from service.rebalance import StoredRow, Update
from service.store.base import StoreBase, utc_now_text

_DATES: dict[str, date] = {}


def day_of(text: str) -> date:
    """An ISO date column as a date, memoised: a million rows share a few
    hundred distinct dates."""
    d = _DATES.get(text)
    if d is None:
        d = date.fromisoformat(text[:10])
        if len(_DATES) < 100_000:
            _DATES[text] = d
    return d


def _opt_day(text: str | None) -> date | None:
    return None if text is None else day_of(text)


def _stored_row(r: tuple[Any, ...]) -> StoredRow:
    # Columns as in the balance_* queries.
    cid, etype, y, m, d, prio, desired, a_from, a_to, step1, sched = r
    item = BalanceItem(
        (cid, etype, date(y, m, d)),
        prio if prio is not None else 10,
        day_of(desired),
        _opt_day(a_from),
        _opt_day(a_to),
    )
    return StoredRow(item, _opt_day(step1), day_of(sched))


def _span(lo: date, hi: date) -> dict[str, str]:
    return {"lo": lo.isoformat(), "hi": hi.isoformat()}


class BalanceMixin(StoreBase):
    """Implements :class:`service.rebalance.BalanceStore`."""

    async def last_desired(self) -> date | None:
        row = await self.fetchone("balance_last_desired")
        return None if row is None or row[0] is None else day_of(row[0])

    async def rows_by_desired(self, lo: date, hi: date) -> list[StoredRow]:
        rows = await self.fetchall("balance_rows_by_desired", _span(lo, hi))
        return [_stored_row(r) for r in rows]

    async def ed_rows_by_desired(self, days: Sequence[date]) -> list[StoredRow]:
        params = {"days": json.dumps(sorted({d.isoformat() for d in days}))}
        return [_stored_row(r) for r in await self.fetchall("balance_ed_rows_by_desired", params)]

    async def step1_counts(self, lo: date, hi: date) -> dict[date, int]:
        rows = await self.fetchall("balance_step1_counts", _span(lo, hi))
        return {day_of(r[0]): int(r[1]) for r in rows}

    async def rows_by_step1(self, lo: date, hi: date) -> list[StoredRow]:
        rows = await self.fetchall("balance_rows_by_step1", _span(lo, hi))
        return [_stored_row(r) for r in rows]

    async def off_day_rows(self, lo: date, hi: date) -> list[StoredRow]:
        rows = await self.fetchall("balance_off_day_rows", _span(lo, hi))
        return [_stored_row(r) for r in rows]

    async def save(self, updates: Sequence[Update]) -> None:
        now = utc_now_text()
        await self.executemany(
            "balance_save",
            [
                {
                    "step1": step1.isoformat(),
                    "scheduled": scheduled.isoformat(),
                    "now": now,
                    "contact_id": cid,
                    "email_type": etype,
                    "y": event.year,
                    "m": event.month,
                    "d": event.day,
                }
                for (cid, etype, event), step1, scheduled in updates
            ],
        )
