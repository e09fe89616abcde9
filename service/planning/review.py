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
- a future-dated value becomes current: a birth date after *today* becomes
  valid on that day; a history email dated after *today* becomes a follow-up
  candidate on its send date.

**The catch-up move.** Once a row's desired date has passed, its desired date
is *today* (noted "caught up from <the date>") and moves every day; nothing
else about it changes until one of the dates below. The daemon's tick applies
that move, to every row whose desired date has passed, of every contact that
is not due, in SQL (:meth:`~service.store.interface.PlanWriter.move_caught_up`)
instead of recomputing the contact, so the review date names only the days on
which the plan can differ from its catch-up move (:func:`caught_up_move`).
For a row, counted from its desired date (*today* once caught up), those are:

- the day after its last live day (above);
- the first day its exclusion decision can differ from the one on its
  desired date: for a skipped row the day after the window occurrence that
  skips it, or the day a rule of higher rank starts to cover it; for a row
  that is not skipped the day after the exclusion-free run around its date
  (its allowed interval) ends;
- a change of the state's rules (any ``effective_from``, the day after any
  ``effective_to``): which rule decides, and the allowed interval, follow
  the desired date once it is caught up;
- the day after the earliest desired date of the contact's rows when the
  frequency limit (5.9) has to admit them, or of its campaign rows when there
  are several (5.8): those decisions compare desired dates, and the conflict
  reason names the day, so from the first catch-up on they can change daily.

Before its desired date a row needs no entry for a rule's effective dates:
rules apply to an email by its desired date, which does not move until then.
Post-window emails are never caught up: they end the day after their date.
Reporting a date earlier than necessary is always sound (the contact is
recomputed and found unchanged); missing one is a bug, which the property test
in ``tests/unit/test_review.py`` hunts for.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from service.planning.contacts import ResolvedContact
from service.planning.exclusion import Exclusion, rule_exclusion
from service.planning.model import ContactPlan, PlanRow
from service.planning.params import PlanParams
from service.planning.rules import RuleBook

ONE_DAY = timedelta(days=1)
INTERVAL_LIMIT_DAYS = 400
"""How far :func:`~service.planning.exclusion.allowed_interval` looks either way
by default: an interval that reaches it is cut by the limit, not by a window."""
_YEAR = 365


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


def caught_up_move(plan: ContactPlan, day: date) -> ContactPlan:
    """``plan`` as time alone makes it on ``day``, up to the contact's review
    date (SPEC 5.10, 5.11): every row whose desired date is before ``day`` is
    caught up to ``day`` (noted "caught up from <its desired date>" unless it
    already was; a lower bound becomes ``day``), every other lower bound is at
    least ``day``; nothing else changes.

    The store's ``move_caught_up`` does the same to the stored rows.
    """
    rows: list[PlanRow] = []
    for row in plan.rows:
        low = row.allowed_from
        if row.desired_date < day:
            note = row.catchup_note or f"caught up from {row.desired_date.isoformat()}"
            row = replace(
                row, desired_date=day, catchup_note=note, allowed_from=None if low is None else day
            )
        elif low is not None and low < day:
            row = replace(row, allowed_from=day)
        rows.append(row)
    return replace(plan, rows=tuple(rows))


def rule_changes(
    rules: RuleBook, state: str, memo: dict[int, tuple[Any, dict[str, tuple[date, ...]]]]
) -> tuple[date, ...]:
    """:meth:`RuleBook.change_dates` of ``state``, memoised per rule book in ``memo``
    (a run's :attr:`Memo.changes <service.planning.memo.Memo.changes>`; the
    entry keeps its book alive, so its ``id`` cannot be reused meanwhile)."""
    entry = memo.get(id(rules))
    if entry is None or entry[0] is not rules:
        if len(memo) >= 8:
            memo.clear()
        entry = memo[id(rules)] = (rules, {})
    found = entry[1].get(state)
    if found is None:
        found = entry[1][state] = rules.change_dates(state)
    return found


def next_rule_change(
    rules: RuleBook,
    state: str,
    today: date,
    memo: dict[int, tuple[Any, dict[str, tuple[date, ...]]]],
) -> date | None:
    """The first day after ``today`` on which a rule of ``state`` starts or ends."""
    changes = rule_changes(rules, state, memo)
    i = bisect_right(changes, today)
    return changes[i] if i < len(changes) else None


def free_run_end(today: date, high: date, upper: date | None) -> date:
    """When a caught-up row that is not excluded on ``today`` may change: the
    day after the exclusion-free run around ``today`` (``high`` is its last
    day, as :func:`~service.planning.exclusion.allowed_interval` found it).

    A run cut by the interval's look-ahead limit rather than by a window
    moves its end with *today*: the row's ``allowed_to`` then follows *today*
    unless the row's own bound ``upper`` comes first, so it is reviewed
    daily.
    """
    if (high - today).days >= INTERVAL_LIMIT_DAYS and (upper is None or upper > high):
        return today + ONE_DAY
    return high + ONE_DAY


def excluded_run_end(
    rc: ResolvedContact, today: date, exc: Exclusion, rules: RuleBook, params: PlanParams
) -> date:
    """When a caught-up row skipped by ``exc`` on ``today`` may change: the
    first later day whose exclusion decision (rule, reason, window end) can
    differ, not counting rule changes (:func:`next_rule_change`).

    - year-round: only a rule change ends it;
    - a window occurrence: the day after it ends, unless the state's
      anchored rule (checked first, SPEC 5.3) starts a window before then
      while an annual period is what skips the row today; an occurrence a
      year or longer may meet the next one of its rule, reviewed daily.
    """
    if exc.year_round or exc.window_end is None or exc.window_start is None:
        return date.max
    end = exc.window_end
    if (end - exc.window_start).days + 1 >= _YEAR:
        return today + ONE_DAY
    state = rc.state
    assert state is not None
    anchored = rules.rule_on(state, today)
    buffer = params.pre_window_buffer_days
    if anchored is not None and rule_exclusion(rc, today, anchored, buffer) is None:
        # The annual period skips today; the anchored rule wins where it starts.
        day = today + ONE_DAY
        while day <= end:
            if rule_exclusion(rc, day, anchored, buffer) is not None:
                return day
            day += ONE_DAY
    return end + ONE_DAY if end < date.max else date.max
