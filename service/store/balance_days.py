"""The per-day counts of the rows load balancing sweeps (``balance_days``).

For each day: how many non-skipped plan rows have it as their step-1 date
(``balance_date``) and how many are scheduled on it. mailplan's writer and
balancer keep the table equal to ``email_schedules`` in the transaction that
changes the rows; rows changed by others reach it through the balance gaps
(``scheduler_balance_gaps``) that the rebalance consumes; every global
rebalance writes it anew. With it, the candidates of a sweep day and the size
of the carry into it are sums over a few hundred small rows instead of
counts over the rows of a day (SPEC 6, 12).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date

from service.store.base import StoreBase
from service.store.types import DayCounts


class BalanceDaysMixin(StoreBase):
    """Reads and writes ``balance_days``, the plan version and the gap marks."""

    _own_plan_writes = 0
    """Plan-version bumps made through this store object."""

    async def bump_plan_version(self) -> None:
        """Record, inside a write transaction, that plan rows or their balance changed."""
        await self.execute("bump_plan_version")
        self._own_plan_writes += 1

    async def plan_version(self) -> tuple[int, int]:
        """(the plan version, how many of its bumps were this store's)."""
        row = await self.fetchone("plan_version")
        return (int(row[0]) if row else 0), self._own_plan_writes

    async def others_changes(self) -> tuple[int, int]:
        """What this store sees of others' changes: the event sequence (every
        upstream change moves it, a row the sender took included) and the
        plan version less this store's own bumps (every other mailplan
        process's plan write moves it). While both stay the same, rows read
        earlier are still the stored rows."""
        row = await self.fetchone("others_changes")
        if row is None:
            return 0, -self._own_plan_writes
        return int(row[0]), int(row[1]) - self._own_plan_writes

    async def gap_mark(self) -> int:
        """The id of the last balance gap recorded so far (0: none)."""
        row = await self.fetchone("balance_gaps_mark")
        return int(row[0]) if row else 0

    async def settle_gaps(self, since: int, reads: Sequence[tuple[date, date, int]]) -> int:
        """After a global rebalance that read desired dates ``[lo, hi)`` when the
        last gap was ``mark`` (``reads``): forget the gaps recorded after
        ``since`` that its reads already saw (the row gone, or back, before its
        dates were read); the others stay for the next incremental rebalance.
        Returns how many stay."""
        rows = await self.fetchall("balance_gaps_since", {"id": since})
        forget: list[tuple[int]] = []
        for gap_id, day_text, back in rows:
            try:
                day = date.fromisoformat(str(day_text)[:10])
            except ValueError:
                forget.append((gap_id,))
                continue
            mark = next((m for lo, hi, m in reads if lo <= day < hi), None)
            if mark is None:
                # Dates never read: a row gone was not in the balance; a row
                # back must still be added.
                if not back:
                    forget.append((gap_id,))
            elif gap_id <= mark:
                forget.append((gap_id,))
        if forget:
            await self.executemany("delete_balance_gap", forget)
        return len(rows) - len(forget)

    async def balance_days(self) -> DayCounts:
        """Every day's (step-1 rows, scheduled rows)."""
        rows = await self.fetchall("balance_days")
        out: DayCounts = {}
        for day, step1, scheduled in rows:
            try:
                out[date.fromisoformat(day)] = (int(step1), int(scheduled))
            except (TypeError, ValueError):
                continue
        return out

    async def balance_days_drift(self) -> int:
        """How many days' counts differ from the table (the reconcile's check)."""
        expected = {
            str(day): (int(a), int(b))
            for day, a, b in await self.fetchall("balance_days_expected")
            if a or b
        }
        stored = {str(day): (int(a), int(b)) for day, a, b in await self.fetchall("balance_days")}
        return sum(1 for d in set(expected) | set(stored) if expected.get(d) != stored.get(d))

    async def add_balance_days(self, deltas: Mapping[date, Sequence[int]]) -> None:
        """Add differences to the counts (inside a write transaction)."""
        rows = [(d.isoformat(), int(a), int(b)) for d, (a, b) in deltas.items() if a or b]
        if rows:
            await self.executemany("balance_days_add", rows)
            await self.execute("balance_days_prune")

    async def put_balance_days(self, counts: Iterable[tuple[date, int, int]]) -> None:
        """Replace every count (a global rebalance, which saw every row)."""
        await self.execute("balance_days_clear")
        await self.executemany(
            "balance_days_put", [(d.isoformat(), a, b) for d, a, b in counts if a or b]
        )
