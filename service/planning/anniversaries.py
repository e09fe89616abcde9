"""Birthday and policy-anniversary emails (SPEC 5.4, with 5.10's liveness).

Occurrences are enumerated year by year from the first one that can still
matter: the live ones become rows, the first one beyond the horizon only
reports the day it enters the horizon (5.11). When post-window emails are
possible, occurrences whose event has already passed are looked at too: the
post-window email they caused lives on until its own date (5.5).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from service.planning.dates import months_between
from service.planning.exclusion import check_exclusion
from service.planning.model import BIRTHDAY, EFFECTIVE_DATE
from service.planning.review import days
from service.planning.rules import RuleBook, StateRule

if TYPE_CHECKING:
    from service.planning.context import ContactContext

FAILED_UNDERWRITING = "Failed underwriting"
"""Skip reason under ``exclude_failed_underwriting_global`` (SPEC 5.2)."""

BIRTHDAY_PRIORITY = 10
EFFECTIVE_DATE_PRIORITY = 20


def plan_anniversaries(ctx: ContactContext) -> None:
    """Birthday and effective-date emails of one contact (SPEC 5.4, 5.10).

    - Birthday occurrences are the anniversaries of the birth date in the years
      after the birth year; policy anniversaries are those strictly after the
      effective date. Feb 29 falls on Feb 28 in non-leap years (5.1).
    - An occurrence is live while its desired date (event - days before) is
      within today + ``horizon_days`` and today ≤ its event date; a passed
      desired date is caught up to today (see ``ContactContext.emit``).
    - Effective-date emails need at least ``effective_date_first_email_months``
      calendar months from the effective date to the desired date before any
      catch-up (time-invariant, SPEC 14).
    - With the state unknown, nothing is planned unless
      ``send_without_zipcode_for_universal`` (5.2).
    - A failed-underwriting contact under ``exclude_failed_underwriting_global``
      gets skipped rows with reason "Failed underwriting" (kept, not dropped,
      so ``explain`` shows them); such skips cause no post-window email.
    - ``days_before`` values are assumed non-negative (the configuration
      validates them), so the desired date never follows the event.
    """
    rc = ctx.rc
    if rc.birth_date is None and rc.effective_date is None:
        return
    params = ctx.params
    if rc.state is None and not params.send_without_zipcode_for_universal:
        ctx.notes.append(
            "no birthday or effective-date emails: the location is unknown and "
            "send_without_zipcode_for_universal is off"
        )
        return
    skip = None
    oldest = ctx.today
    if rc.failed_underwriting and params.exclude_failed_underwriting_global:
        skip = FAILED_UNDERWRITING
    elif ctx.excludable and params.enable_post_window_emails:
        assert rc.state is not None
        reach = window_reach(ctx.rules, rc.state, params.pre_window_buffer_days, ctx.memo.reach)
        if reach >= 0:
            # Older occurrences cannot have a post-window email on or after today.
            oldest -= days(reach + 1)
    if rc.birth_date is not None:
        _occurrences(
            ctx, BIRTHDAY, rc.birth_date, days(params.birthday_days_before), BIRTHDAY_PRIORITY,
            "birthday_template", skip, None, oldest,
        )  # fmt: skip
    if rc.effective_date is not None:
        _occurrences(
            ctx, EFFECTIVE_DATE, rc.effective_date, days(params.effective_date_days_before),
            EFFECTIVE_DATE_PRIORITY, "effective_date_template", skip,
            params.effective_date_first_email_months, oldest,
        )  # fmt: skip


def _occurrences(
    ctx: ContactContext,
    kind: str,
    base: date,
    before: timedelta,
    priority: int,
    template: str,
    skip: str | None,
    min_months: int | None,
    oldest: date,
) -> None:
    """Enumerate ``base``'s occurrences from the one in ``oldest``'s year on.

    Passed occurrences on or after ``oldest`` are post-window sources only.
    """
    today = ctx.today
    horizon_end = ctx.horizon_end
    year = oldest.year
    if year <= base.year:
        year = base.year + 1
    month, day = base.month, base.day
    leap_day = month == 2 and day == 29
    while True:
        # dates.anniversary, inlined in this per-contact loop: Feb 29 -> Feb 28.
        if leap_day and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
            event = date(year, 2, 28)
        else:
            event = date(year, month, day)
        year += 1
        desired = event - before
        if event < today:
            if event >= oldest:
                _past_source(ctx, kind, base, event, desired, min_months)
            continue
        if desired > horizon_end:
            ctx.wake(desired - ctx.horizon)
            return
        # No wake at event + 1 is needed: emit reports desired + 1, which is earlier.
        if min_months is not None and months_between(base, desired) < min_months:
            continue
        exc = ctx.emit(
            kind, event, desired, priority, template, windows=True, skip=skip, upper=event
        )
        if exc is not None and not exc.year_round and exc.window_end is not None:
            if ctx.params.enable_post_window_emails:
                ctx.pw_sources.append((exc.window_end, event))


def window_reach(
    rules: RuleBook,
    state: str,
    buffer_days: int,
    memo: dict[int, tuple[Any, dict[tuple[str, int], int]]] | None = None,
) -> int:
    """How far after a day an exclusion window holding it, and the windows
    that follow it without a free day between, can reach; -1 without windows.

    A chain of windows that a post-window date steps over (SPEC 5.5) holds
    each rule's window at most once while the windows of all rules together
    are shorter than a year, so it reaches at most the sum of their lengths
    (buffer included); beyond that a generous bound of two years per rule is
    used. Only days older than this are never looked at (SPEC 5.3, 5.5).
    Memoised per rule book in ``memo`` (a run's :attr:`Memo.reach
    <service.planning.memo.Memo.reach>`): the entry keeps its book alive, so
    the ``id`` it is filed under cannot be reused meanwhile.
    """
    if memo is None:
        memo = {}
    entry = memo.get(id(rules))
    if entry is None or entry[0] is not rules:
        if len(memo) >= 8:
            memo.clear()
        entry = memo[id(rules)] = (rules, {})
    reaches = entry[1]
    key = (state, buffer_days)
    reach = reaches.get(key)
    if reach is None:
        lengths = [
            _length(r) + buffer_days + 1 for r in rules.rules_for(state) if r.kind != "year_round"
        ]
        total = sum(lengths)
        if not lengths:
            reach = -1
        elif total < 365:
            reach = total
        else:
            reach = total + 732 * len(lengths)
        reaches[key] = reach
    return reach


def _length(rule: StateRule) -> int:
    """Days of one window of ``rule`` without the pre-window buffer."""
    if rule.period_from is not None and rule.period_to is not None:
        # Day numbers in a leap year (Feb 29 exists); wraps past the year end.
        start = date(2000, *rule.period_from).toordinal()
        return (date(2000, *rule.period_to).toordinal() - start) % 366
    return rule.before_days + rule.after_days


def _past_source(
    ctx: ContactContext, kind: str, base: date, event: date, desired: date, min_months: int | None
) -> None:
    """A passed occurrence's contribution to post-window emails (SPEC 5.5).

    The occurrence is judged as on its last live day, its event date, when its
    (caught-up) desired date was ``max(desired, event)``: the post-window email
    then stays exactly as it was while the source was live, until its own date.
    """
    if min_months is not None and months_between(base, desired) < min_months:
        return
    if ctx.in_history(kind, event):
        return
    at = desired if desired > event else event
    state = ctx.rc.state
    assert state is not None
    # No window of the state reaches further than `reach` from a day it holds,
    # and a chain of windows the post-window date steps over (5.5) no further
    # than their sum: skip the exact check when that is long past.
    if (ctx.today - at).days > window_reach(
        ctx.rules, state, ctx.params.pre_window_buffer_days, ctx.memo.reach
    ) + 1:
        return
    exc = check_exclusion(ctx.rc, at, ctx.rules, ctx.params)
    if exc is None or exc.year_round or exc.window_end is None:
        return
    # plan_post_windows drops the sources whose post-window date has passed.
    ctx.pw_sources.append((exc.window_end, event))
