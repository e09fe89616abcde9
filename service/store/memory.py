"""An in-memory :class:`~service.store.interface.BalanceStore` (tests, experiments).

It follows the writer's contract of :mod:`service.store.writer`: an inserted
row, or a row whose desired date changed, starts with step-1 and scheduled
date at its desired date; a row updated otherwise keeps its stored dates; each
write returns its :class:`~service.store.types.BalanceDelta` and keeps the
per-day counts equal to the rows. Rows taken by someone else (the sender) are
recorded as balance gaps, as the database's triggers do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date

from service.planning.balance import BalanceItem, Capacity, balance
from service.planning.model import EFFECTIVE_DATE, RowKey
from service.store.types import BalanceDelta, DayCounts, StoredRow, Update


def sweep_order(row: StoredRow) -> tuple[int, date, int, str, date]:
    """A stored row's place in the sweep order of SPEC 6."""
    cid, etype, event = row.item.key
    assert row.step1 is not None
    return (row.item.priority, row.step1, cid, etype, event)


@dataclass
class MemoryBalanceStore:
    """Non-skipped plan rows in a dict; each method mirrors one SQL query.

    Besides the :class:`~service.store.interface.BalanceStore` methods it has
    the writer's side (insert, update, delete, each adding to a
    :class:`BalanceDelta`) and the sender's (``take``), and counts its calls,
    so tests can check that balancing reads only what it must.
    """

    rows: dict[RowKey, StoredRow] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    saved: list[Update] = field(default_factory=list)
    counts: dict[date, list[int]] = field(default_factory=dict)
    gaps: list[tuple[StoredRow, bool]] = field(default_factory=list)
    gaps_taken: int = 0
    """Gaps consumed so far: the id of ``gaps[i]`` is ``gaps_taken + i + 1``."""
    opening: Callable[[str], Awaitable[None]] | None = None
    """Awaited when :meth:`outside_write_lock` gives up the lock, with
    ``"before"`` (before its body's reads: commits its snapshot sees) and
    ``"after"`` (after them: commits it does not): tests, what others do
    there."""

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

    async def ed_counts(
        self, days: Sequence[date] | None, at_most: int | None = None
    ) -> dict[date, int]:
        self.calls["ed_counts"] += 1
        wanted = None if days is None else set(days)
        counts = Counter(
            r.item.desired
            for r in self.rows.values()
            if r.item.key[1] == EFFECTIVE_DATE and (wanted is None or r.item.desired in wanted)
        )
        if at_most is None or days is None:
            return dict(counts)
        return {d: min(counts.get(d, 0), at_most) for d in wanted or ()}

    async def rows_before(self, day: date) -> list[StoredRow]:
        self.calls["rows_before"] += 1
        return [r for r in self.rows.values() if r.step1 is not None and r.scheduled < day]

    async def kept_last(self, day: date, n: int) -> list[StoredRow]:
        self.calls["kept_last"] += 1
        rows = sorted(
            (
                r
                for r in self.rows.values()
                if r.step1 is not None
                and r.scheduled == day
                and (r.item.allowed_to is None or r.item.allowed_to > day)
            ),
            key=sweep_order,
        )
        return rows[-n:] if n > 0 else []

    async def carried_first(self, day: date, n: int) -> list[StoredRow]:
        self.calls["carried_first"] += 1
        rows = sorted(
            (r for r in self.rows.values() if r.step1 is not None and r.step1 <= day < r.scheduled),
            key=sweep_order,
        )
        return rows if n < 0 else rows[:n]

    async def carried_arrivals(self, day: date, n: int) -> list[StoredRow]:
        self.calls["carried_arrivals"] += 1
        rows = sorted(
            (r for r in self.rows.values() if r.step1 == day and r.scheduled > day),
            key=sweep_order,
        )
        return rows[:n]

    async def day_rows(self, day: date) -> list[StoredRow]:
        self.calls["day_rows"] += 1
        return [r for r in self.rows.values() if r.step1 is not None and r.scheduled == day]

    async def take_gaps(self) -> tuple[list[StoredRow], list[StoredRow]]:
        self.calls["take_gaps"] += 1
        gone = [r for r, back in self.gaps if not back]
        back = [r for r, is_back in self.gaps if is_back]
        self.gaps_taken += len(self.gaps)
        self.gaps = []
        return gone, back

    async def read_gaps(self, upto: int) -> tuple[list[StoredRow], list[StoredRow]]:
        seen = self.gaps[: max(0, upto - self.gaps_taken)]
        return [r for r, back in seen if not back], [r for r, back in seen if back]

    async def forget_gaps_upto(self, upto: int) -> None:
        n = max(0, upto - self.gaps_taken)
        self.gaps_taken += n
        self.gaps = self.gaps[n:]

    @asynccontextmanager
    async def outside_write_lock(self) -> AsyncIterator[None]:
        self.calls["outside_write_lock"] += 1
        if self.opening is not None:
            await self.opening("before")
        yield
        if self.opening is not None:
            await self.opening("after")

    async def gap_mark(self) -> int:
        return self.gaps_taken + len(self.gaps) if self.gaps else 0

    async def retarget_gaps(self, since: int, pending: Mapping[RowKey, tuple[date, date]]) -> bool:
        came_back = False
        for i in range(max(0, since - self.gaps_taken), len(self.gaps)):
            row, back = self.gaps[i]
            if back:
                came_back = True
            elif row.item.key in pending:
                step1, scheduled = pending[row.item.key]
                self.gaps[i] = (row._replace(step1=step1, scheduled=scheduled), False)
        return came_back

    async def settle_gaps(self, since: int, reads: Sequence[tuple[date, date, int]]) -> int:
        # One process, no concurrent writer: every gap left is still pending.
        return len(self.gaps)

    async def plan_version(self) -> tuple[int, int]:
        return 0, 0

    async def balance_days(self) -> DayCounts:
        self.calls["balance_days"] += 1
        return {d: (a, b) for d, (a, b) in self.counts.items()}

    async def balance_days_drift(self) -> int:
        return 0 if self.counts_match() else 1

    async def add_balance_days(self, deltas: Mapping[date, Sequence[int]]) -> None:
        self._add_counts(deltas)

    async def put_balance_days(self, counts: Iterable[tuple[date, int, int]]) -> None:
        self.counts = {d: [a, b] for d, a, b in counts if a or b}

    async def save(self, updates: Sequence[Update]) -> None:
        self.calls["save"] += 1
        for key, step1, sched in updates:
            row = self.rows.get(key)
            if row is None:
                continue  # taken meanwhile: the database's status guard skips it
            if (row.step1, row.scheduled) == (step1, sched):
                raise ValueError(f"saved an unchanged row {key}")
            self.rows[key] = row._replace(step1=step1, scheduled=sched)
        self.saved.extend(updates)

    # --- the writer's side ---------------------------------------------

    def _add_counts(self, deltas: Mapping[date, Sequence[int]]) -> None:
        for day, (a, b) in deltas.items():
            entry = self.counts.setdefault(day, [0, 0])
            entry[0] += a
            entry[1] += b
            if entry == [0, 0]:
                del self.counts[day]

    def _write(self, delta: BalanceDelta, gone: StoredRow | None, new: StoredRow | None) -> None:
        part = BalanceDelta()
        if gone is not None:
            part.gone.append(gone)
            part.count(gone.step1, gone.scheduled, -1)
        if new is not None:
            part.added.append(new)
            part.count(new.step1, new.scheduled, 1)
        self._add_counts(part.days)
        delta.extend(part)

    def load_balanced(self, items: list[BalanceItem], cap: Capacity, today: date) -> None:
        """Rows as a global rebalance leaves them, with their counts."""
        result = balance(items, cap, today)
        self.rows = {it.key: StoredRow(it, *result[it.key]) for it in items}
        self.counts = {}
        self._add_counts(count_rows(self.rows.values()))

    def insert(self, it: BalanceItem, delta: BalanceDelta) -> None:
        row = self.rows[it.key] = StoredRow(it, it.desired, it.desired)
        self._write(delta, None, row)

    def delete(self, key: RowKey, delta: BalanceDelta) -> None:
        self._write(delta, self.rows.pop(key), None)

    def update(self, new: BalanceItem, delta: BalanceDelta, *, restart: bool = False) -> None:
        """A changed row; its balancing starts over at its desired date when
        the desired date changed (or ``restart``), else it keeps its dates."""
        old = self.rows[new.key]
        if restart or new.desired != old.item.desired:
            row = StoredRow(new, new.desired, new.desired)
        else:
            row = old._replace(item=new)
        self.rows[new.key] = row
        self._write(delta, old, row)

    def take(self, key: RowKey) -> None:
        """Someone else takes a row out of the plan (the sender marks it sent)."""
        self.gaps.append((self.rows.pop(key), False))

    def give_back(self, row: StoredRow) -> None:
        """Someone else puts a taken row back into the plan, as it was."""
        self.rows[row.item.key] = row
        self.gaps.append((row, True))

    def state(self) -> dict[RowKey, tuple[date | None, date]]:
        return {k: (r.step1, r.scheduled) for k, r in self.rows.items()}

    def items(self) -> list[BalanceItem]:
        return [r.item for r in self.rows.values()]

    def counts_match(self) -> bool:
        """Whether the per-day counts equal the rows (gaps not yet consumed
        are still counted, as in the database)."""
        expected = count_rows([*self.rows.values(), *(r for r, back in self.gaps if not back)])
        return {d: tuple(c) for d, c in self.counts.items()} == {
            d: tuple(c) for d, c in expected.items() if c != [0, 0]
        }


def count_rows(rows: Iterable[StoredRow]) -> dict[date, list[int]]:
    """Per day: rows with that step-1 date, rows scheduled on it."""
    out: dict[date, list[int]] = {}
    for r in rows:
        if r.step1 is None:
            continue
        out.setdefault(r.step1, [0, 0])[0] += 1
        out.setdefault(r.scheduled, [0, 0])[1] += 1
    return out
