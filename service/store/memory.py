"""An in-memory :class:`~service.store.interface.BalanceStore` (tests, experiments).

It follows the writer's contract of :mod:`service.store.writer`: an inserted
row, or a row whose desired date changed, starts with step-1 and scheduled
date at its desired date; a row updated otherwise keeps its stored dates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from service.planning.balance import BalanceItem, Capacity, balance
from service.planning.model import EFFECTIVE_DATE, RowKey
from service.store.types import StoredRow, Update

DAY = timedelta(days=1)


@dataclass
class MemoryBalanceStore:
    """Non-skipped plan rows in a dict; each method mirrors one SQL query.

    Besides the :class:`~service.store.interface.BalanceStore` methods it has
    the writer's side (insert, update, delete with the ``touched`` dates the
    engine collects) and counts its calls, so tests can check that windowed
    balancing reads only what it must.
    """

    rows: dict[RowKey, StoredRow] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    saved: list[Update] = field(default_factory=list)

    async def last_desired(self) -> date | None:
        self.calls["last_desired"] += 1
        return max((r.item.desired for r in self.rows.values()), default=None)

    async def rows_by_desired(self, lo: date, hi: date) -> list[StoredRow]:
        self.calls["rows_by_desired"] += 1
        return [r for r in self.rows.values() if lo <= r.item.desired < hi]

    async def ed_rows_by_desired(self, days: Sequence[date]) -> list[StoredRow]:
        self.calls["ed_rows_by_desired"] += 1
        wanted = set(days)
        return [
            r
            for r in self.rows.values()
            if r.item.key[1] == EFFECTIVE_DATE and r.item.desired in wanted
        ]

    async def step1_counts(self, lo: date, hi: date) -> dict[date, int]:
        self.calls["step1_counts"] += 1
        return dict(Counter(r.step1 for r in self.rows.values() if r.step1 and lo <= r.step1 < hi))

    async def rows_by_step1(self, lo: date, hi: date) -> list[StoredRow]:
        self.calls["rows_by_step1"] += 1
        return [r for r in self.rows.values() if r.step1 and lo <= r.step1 < hi]

    async def off_day_rows(self, lo: date, hi: date) -> list[StoredRow]:
        self.calls["off_day_rows"] += 1
        return [
            r
            for r in self.rows.values()
            if r.step1 and r.step1 < hi and r.scheduled >= lo and r.scheduled != r.step1
        ]

    async def save(self, updates: Sequence[Update]) -> None:
        self.calls["save"] += 1
        for key, step1, sched in updates:
            row = self.rows[key]
            if (row.step1, row.scheduled) == (step1, sched):
                raise ValueError(f"saved an unchanged row {key}")
            self.rows[key] = row._replace(step1=step1, scheduled=sched)
        self.saved.extend(updates)

    # --- the writer's side ---------------------------------------------

    def load_balanced(self, items: list[BalanceItem], cap: Capacity, today: date) -> None:
        result = balance(items, cap, today)
        self.rows = {it.key: StoredRow(it, *result[it.key]) for it in items}

    def insert(self, it: BalanceItem, touched: set[date]) -> None:
        self.rows[it.key] = StoredRow(it, it.desired, it.desired)
        touched.add(it.desired)

    def delete(self, key: RowKey, touched: set[date]) -> None:
        old = self.rows.pop(key)
        _touch_old(old, touched)

    def update(self, new: BalanceItem, touched: set[date]) -> None:
        old = self.rows[new.key]
        _touch_old(old, touched)
        touched.add(new.desired)
        if new.desired != old.item.desired:
            self.rows[new.key] = StoredRow(new, new.desired, new.desired)
        else:
            self.rows[new.key] = old._replace(item=new)

    def state(self) -> dict[RowKey, tuple[date | None, date]]:
        return {k: (r.step1, r.scheduled) for k, r in self.rows.items()}

    def items(self) -> list[BalanceItem]:
        return [r.item for r in self.rows.values()]


def _touch_old(old: StoredRow, touched: set[date]) -> None:
    lo, hi = sorted((old.item.desired, old.scheduled))
    while lo <= hi:
        touched.add(lo)
        lo += DAY
