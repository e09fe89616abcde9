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
    """Reads and writes ``balance_days``."""

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
