"""Post-window emails: the make-up email after an exclusion window (SPEC 5.5).

The anniversary rules collect, for every birthday or effective-date email
skipped by a *window* (never a year-round exclusion, never a failed-underwriting
skip), the window occurrence's end date and the email's event date. This module
turns them into one email per window occurrence.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from service.planning.exclusion import post_window_date
from service.planning.model import POST_WINDOW

if TYPE_CHECKING:
    from service.planning.context import ContactContext

POST_WINDOW_PRIORITY = 40


def plan_post_windows(ctx: ContactContext) -> None:
    """One ``post_window`` email per window occurrence that skipped an email (SPEC 5.5).

    - The email goes on the first day after the window that no window of the
      rules in force on that day covers (:func:`post_window_date`); emails
      whose post-window dates coincide give one email, whose event date is
      the earliest of their event dates.
    - Live while its source occurrence has entered the horizon and (the source
      is live, or today ≤ its date): a source whose event has passed is judged
      as on its event date (see ``anniversaries._past_source``), so the email
      does not move when its source ends.
    - Never checked against exclusion windows, never caught up (its date is
      always today or later); its allowed interval is the exclusion-free run
      around its date, from today on, so balancing never moves it into a
      window (SPEC 5.5, 6). A passed source's email whose date has passed
      is gone.
    - Not planned when its identity is a history row (already sent or
      claimed); a source that was itself sent causes nothing.
    """
    earliest: dict[date, date] = {}
    ends: dict[date, date | None] = {}
    for window_end, event in ctx.pw_sources:
        if window_end not in ends:
            ends[window_end] = post_window_date(ctx.rc, window_end, ctx.rules, ctx.params)
        when = ends[window_end]
        if when is None or when < ctx.today:
            continue
        known = earliest.get(when)
        if known is None or event < known:
            earliest[when] = event
    chosen: dict[date, date] = {}
    for when in sorted(earliest):
        # Two post-window dates whose earliest sources share an event date
        # would share an identity; the later date stands (SPEC 5.5).
        chosen[earliest[when]] = when
    for event, when in sorted(chosen.items()):
        ctx.emit(
            POST_WINDOW, event, when, POST_WINDOW_PRIORITY,
            "post_window_template", windows=False, interval=True,
        )  # fmt: skip
