"""Review dates: when a contact's plan can next change by time alone (SPEC 5.11).

A contact's plan is a function of its data and *today*. Between two upstream
changes the only input that moves is *today*, so the daemon's tick only needs
to recompute a contact on the first day its plan can differ. The planning
rules report every date at which one of their time-dependent decisions flips
to :class:`Review`; the review date is the earliest of them after *today*.

The decisions that depend on *today*, and the date each one reports:

- an occurrence enters the horizon: ``desired - horizon_days`` of the first
  occurrence (birthday, effective date, campaign) not yet live;
- an occurrence stops being live: its event date + 1 (birthday, effective
  date, targeted campaign), ``active_end_date + 1`` (campaigns), send date +
  ``followup_lookback_days`` + 1 (follow-ups), the post-window date + 1;
- catch-up: the day after every row's desired date (skipped rows included).
  From then on the desired date is *today* and moves every day, so a contact
  with a caught-up row is reviewed daily until the row ends;
- a future-dated value becomes current: a birth date after *today* becomes
  valid on that day; a history email dated after *today* becomes a follow-up
  candidate on its send date.

A state rule's ``effective_from``/``effective_to`` needs no entry of its own:
a rule applies to an email according to the email's desired date, which only
moves through catch-up, already reviewed daily. The same holds for same-day
conflicts and the frequency limit, which depend on desired dates only.
Reporting a date earlier than necessary is always sound (the contact is
recomputed and found unchanged); missing one is a bug, which the property test
in ``tests/unit/test_review.py`` hunts for.
"""

from __future__ import annotations

from datetime import date, timedelta

ONE_DAY = timedelta(days=1)


def days(n: int) -> timedelta:
    """``timedelta(days=n)``."""
    return timedelta(days=n)


class Review:
    """Running minimum of the dates after *today* at which the plan can change."""

    __slots__ = ("review", "today")

    def __init__(self, today: date) -> None:
        self.today = today
        self.review: date | None = None

    def wake(self, d: date) -> None:
        """Report that the plan may differ from day ``d`` on (SPEC 5.11).

        Dates on or before *today* are ignored: they are already in effect.
        """
        if d > self.today and (self.review is None or d < self.review):
            self.review = d
