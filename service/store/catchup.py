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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from service.store.base import ids_param, utc_now_text
from service.store.journal import JournalMixin


@dataclass(frozen=True, slots=True)
class CatchUpStep:
    """What one :meth:`CatchUpMixin.move_caught_up` call did."""

    rows: int
    contacts: int
    next_from: tuple[str, int] | None
    """Where the next call starts, (desired date, contact id); ``None``: no
    row is left to move."""


class CatchUpMixin(JournalMixin):
    """Moving caught-up plan rows to *today*."""

    async def move_caught_up(
        self, today: date, run_id: int, start: tuple[str, int] = ("", 0), limit: int = 2000
    ) -> CatchUpStep:
        """Move up to ``limit`` plan rows whose desired date is before ``today``,
        of contacts that are not due on ``today``, from ``start`` (desired date
        text, contact id) on, inside the caller's transaction.

        Rows of due contacts are left to their recompute. A call that moves
        fewer than ``limit`` rows has moved the last ones; otherwise call again
        from :attr:`CatchUpStep.next_from` (moved rows no longer match, so
        rows cut between two calls are found by the next).
        """
        day = today.isoformat()
        found = await self.fetchall(
            "catchup_rows",
            {"from_day": start[0], "from_contact": start[1], "today": day, "limit": limit},
        )
        if not found:
            return CatchUpStep(0, 0, None)
        ids = ids_param(r[0] for r in found)
        contacts = {int(r[1]) for r in found}
        await self.execute(
            "catchup_journal",
            {"run": run_id, "at": self._journal_time(), "today": day, "ids": ids},
        )
        moved = await self.execute(
            "catchup_move",
            {"today": day, "run_text": str(run_id), "now": utc_now_text(), "ids": ids},
        )
        await self.execute("catchup_forget_fingerprints", {"ids": ids_param(contacts)})
        last = (str(found[-1][2]), int(found[-1][1]))
        return CatchUpStep(moved, len(contacts), last if len(found) >= limit else None)
