"""The tick's catch-up move (SPEC 5.10, 5.11): caught-up plan rows follow *today*.

A caught-up row's desired date is *today*; from one day to the next nothing
else about it changes until its contact's review date
(:mod:`service.planning.review`). The tick therefore moves the caught-up rows
of every contact that is not due in SQL, in short transactions, instead of
recomputing those contacts: the same rows, journal entries and balancing
restart as the writer's update with a new desired date
(:func:`service.planning.review.caught_up_move` is the same move on a plan).
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
    next_from: int | None
    """Where the next call starts (``None``: no caught-up row is left to move)."""


class CatchUpMixin(JournalMixin):
    """Moving caught-up plan rows to *today*."""

    async def move_caught_up(
        self, today: date, run_id: int, start: int = 0, limit: int = 2000
    ) -> CatchUpStep:
        """Move up to ``limit`` caught-up plan rows of contacts from id ``start``
        on that are not due on ``today`` (inside the caller's transaction).

        Rows of due contacts are left to their recompute. A call that moves
        fewer than ``limit`` rows has moved the last ones; otherwise call again
        from :attr:`CatchUpStep.next_from` (rows already moved no longer
        match, so a contact cut between two calls is finished by the next).
        """
        day = today.isoformat()
        found = await self.fetchall("catchup_rows", {"from": start, "today": day, "limit": limit})
        if not found:
            return CatchUpStep(0, 0, None)
        ids = ids_param(r[0] for r in found)
        contacts = ids_param({r[1] for r in found})
        await self.execute(
            "catchup_journal",
            {"run": run_id, "at": self._journal_time(), "today": day, "ids": ids},
        )
        moved = await self.execute(
            "catchup_move",
            {"today": day, "run_text": str(run_id), "now": utc_now_text(), "ids": ids},
        )
        await self.execute("catchup_forget_fingerprints", {"ids": contacts})
        last = int(found[-1][1])
        return CatchUpStep(moved, len({r[1] for r in found}), last if len(found) >= limit else None)
