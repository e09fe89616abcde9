"""Post-window emails: the make-up email after an exclusion window (SPEC 5.5).

The anniversary rules collect, for every birthday or effective-date email
skipped by a *window* (never a year-round exclusion, never a failed-underwriting
skip), the window occurrence's end date and the email's event date. This module
turns them into one email per window occurrence.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from service.planning.model import POST_WINDOW
from service.planning.review import ONE_DAY

if TYPE_CHECKING:
    from service.planning.plan import PlanContext

POST_WINDOW_PRIORITY = 40


def plan_post_windows(ctx: PlanContext) -> None:
    """One ``post_window`` email per window occurrence that skipped an email (SPEC 5.5).

    - Emails skipped by the same occurrence (same window end) give one email on
      window end + 1, whose event date is the earliest of their event dates.
    - Live while its source occurrence has entered the horizon and (the source
      is live, or today ≤ its date): a source whose event has passed is judged
      as on its event date (see ``anniversaries._past_source``), so the email
      does not move when its source ends.
    - Never checked against exclusion windows, never caught up (its date is
      always today or later); its allowed interval starts today, unbounded
      above.
    - Not planned when its identity is a history row (already sent or
      claimed); a source that was itself sent causes nothing.
    """
    earliest: dict[date, date] = {}
    for window_end, event in ctx.pw_sources:
        known = earliest.get(window_end)
        if known is None or event < known:
            earliest[window_end] = event
    planned: set[date] = set()
    for window_end in sorted(earliest):
        event = earliest[window_end]
        if event in planned:
            # Two occurrences whose earliest sources share an event date would
            # share an identity; the earlier window keeps it.
            continue
        planned.add(event)
        ctx.emit(
            POST_WINDOW, event, window_end + ONE_DAY, POST_WINDOW_PRIORITY,
            "post_window_template", windows=False,
        )  # fmt: skip
