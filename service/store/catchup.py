"""The tick's catch-up move (SPEC 5.10, 5.11): caught-up plan rows follow *today*.

A caught-up row's desired date is *today*; from one day to the next nothing
else about it changes until its contact's review date, and a row whose
desired date has just passed becomes such a row the same way
(:mod:`service.planning.review`). The tick therefore moves the rows whose
desired date has passed, of every contact that is not due, in SQL and in
short transactions, instead of recomputing those contacts: the same rows,
journal entries and balancing restart as the writer's update with a new
desired date (:func:`service.planning.review.caught_up_move` is the same move
on a plan).

Like the writer, each move hands the rows it moved to load balancing: their
versions before and after (a :class:`~service.store.types.BalanceDelta`),
with the per-day counts kept equal to the table in the same transaction, so
that the tick's closing rebalance redoes only what the move and the new day
change (SPEC 6, 12).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from service.planning.balance import BalanceItem
from service.store.balance_days import BalanceDaysMixin
from service.store.balancing import convert_stored
from service.store.base import CATCHUP_THROUGH, ids_param, utc_now_text
from service.store.journal import JournalMixin
from service.store.loaders import LoaderMixin
from service.store.types import BalanceDelta, StoredRow


@dataclass(frozen=True, slots=True)
class CatchUpStep:
    """What one :meth:`CatchUpMixin.move_caught_up` call did."""

    rows: int
    contacts: int
    delta: BalanceDelta
    """The swept rows moved: old versions ``gone``, new ones ``added``."""


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """Rows to catch up as a read snapshot found them (:meth:`CatchUpMixin.caught_up_rows`).

    ``rows`` are ``(id, contact_id, swept, *balance columns)``; ``basis`` is
    what the snapshot saw of the others' changes: the event sequence (every
    upstream change, a row the sender took included, moves it) and the plan
    version less this store's own bumps (every other mailplan process's plan
    write moves it). While both are the same, the rows are still as read.
    """

    rows: Sequence[tuple[Any, ...]]
    basis: tuple[int, int]

    @property
    def ids(self) -> list[int]:
        return [int(r[0]) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def split(self, n: int) -> tuple[CaughtUp, CaughtUp]:
        """The first ``n`` rows and the rest, with the same basis."""
        return CaughtUp(self.rows[:n], self.basis), CaughtUp(self.rows[n:], self.basis)

    def then(self, later: CaughtUp) -> CaughtUp:
        """These rows and those of a later read, with this read's basis (or
        the later one's if there are no rows here): the others' changes only
        grow, so if nothing changed since this read, nothing changed since
        the later one either."""
        if not self.rows:
            return later
        return CaughtUp([*self.rows, *later.rows], self.basis)


NOTHING_CAUGHT_UP = CaughtUp((), (0, 0))


class CatchUpMixin(LoaderMixin, JournalMixin, BalanceDaysMixin):
    """Moving the plan rows whose desired date has passed to *today*."""

    async def move_caught_up(self, today: date, run_id: int, lo: int, hi: int) -> CatchUpStep:
        """Catch up the plan rows of contacts ``lo..hi`` whose desired date is
        before ``today``, of the contacts not due on ``today`` (inside the
        caller's transaction). Rows of due contacts are left to their
        recompute; moved rows no longer match, so a range may be repeated.
        """
        return await self.move_caught_up_rows(
            today, run_id, await self.caught_up_rows(today, lo, hi)
        )

    async def caught_up_rows(self, today: date, lo: int, hi: int) -> CaughtUp:
        """The rows :meth:`move_caught_up` would move, with what the read saw of
        others' changes (a read: the tick runs it in a read snapshot, without
        the write lock)."""
        basis = await self.others_changes()
        rows = await self.fetchall("catchup_rows", {"lo": lo, "hi": hi, "today": today.isoformat()})
        return CaughtUp(rows, basis)

    async def move_caught_up_rows(self, today: date, run_id: int, found: CaughtUp) -> CatchUpStep:
        """Catch up those of the rows ``found`` (by :meth:`caught_up_rows`,
        maybe in an older snapshot) that still are plan rows with a desired
        date before ``today`` (inside the caller's transaction); a row sent or
        planned again since is left as it is.

        When nobody else has changed anything since the read (its basis), the
        rows are still as read and are not read again inside the lock."""
        day = today.isoformat()
        if not found:
            return CatchUpStep(0, 0, BalanceDelta())
        rows = found.rows
        if await self.others_changes() != found.basis:
            rows = await self.fetchall(
                "catchup_recheck", {"today": day, "ids": ids_param(found.ids)}
            )
            if not rows:
                return CatchUpStep(0, 0, BalanceDelta())
        moving = ids_param(r[0] for r in rows)
        contacts = {int(r[1]) for r in rows}
        delta = BalanceDelta()
        delta.gone = convert_stored([r[3:] for r in rows if r[2]])
        await self.execute(
            "catchup_journal",
            {"run": run_id, "at": self._journal_time(), "today": day, "ids": moving},
        )
        moved = await self.execute(
            "catchup_move",
            {"today": day, "run_text": str(run_id), "now": utc_now_text(), "ids": moving},
        )
        # The moved contacts' fingerprints still name their rows before the
        # move: trusted from now on only for plans of today or later.
        await self.execute("catchup_through", {"key": CATCHUP_THROUGH, "today": day})
        known, through = self.cached_state(CATCHUP_THROUGH)
        if known:
            self.remember_state(CATCHUP_THROUGH, max(day, through or day))
        # The versions as the move stores them (catchup_move): desired date,
        # step-1 and scheduled date today, no lower bound.
        delta.added = [
            StoredRow(BalanceItem(r.item.key, r.item.priority, today, None, r.item.allowed_to),
                      today, today)
            for r in delta.gone
        ]  # fmt: skip
        for r in delta.gone:
            delta.count(r.step1, r.scheduled, -1)
        for r in delta.added:
            delta.count(r.step1, r.scheduled, 1)
        await self.add_balance_days(delta.days)
        await self.bump_plan_version()
        return CatchUpStep(moved, len(contacts), delta)
