"""Exclusion windows: may a contact be marketed to on a given day? (SPEC 5.3, 6)

A rule applies to an email when the email's desired date is within the rule's
effective period; the rule of the contact's state in effect on the checked day
is the one used.

A window occurrence for anchor ``A`` covers ``[A - before_days -
pre_window_buffer_days, A + after_days]``, both ends inclusive. ``A`` is the
birthday (or policy anniversary) in some year, Feb 29 falling on Feb 28 in
non-leap years; for month-anchored rules it is the first day of that month.
Effective-date windows are anchored on the effective date itself and on each
of its anniversaries, never before the effective date. A day is in a window if
it is inside the occurrence anchored in its own year, the previous year or the
next year.

An annual period (``from``/``to``, SPEC 5.3) occurs every year ``Y`` as
``[Y-from - pre_window_buffer_days, Y-to]`` (``to`` in ``Y + 1`` when it comes
before ``from`` in the calendar); its anchor is ``Y-from`` and ages are taken
on it. It is checked after the anchored rule of the state.

Rules with an age range use the contact's age on the anchor date ``A``; an
occurrence for which the contact is outside the range has no window, and when
the birth date is unknown no occurrence of such a rule has a window.

This module runs several times per contact on a million contacts, so it works
on day ordinals and builds no objects unless it has a result to return.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, date

from service.planning.contacts import ResolvedContact
from service.planning.params import PlanParams
from service.planning.rules import RuleBook, StateRule

_MIN_ORD = date.min.toordinal()
_MAX_ORD = date.max.toordinal()
_YEAR = 365
"""Days between two anchors of consecutive years are never fewer than this."""


@dataclass(frozen=True, slots=True)
class Exclusion:
    """Why a day is excluded for a contact (SPEC 5.3).

    For windows, ``window_start``/``window_end`` bound the occurrence that
    contains the day (with the pre-window buffer) and ``anchor`` is its anchor
    date; all three are ``None`` for a year-round rule.
    """

    reason: str
    year_round: bool
    window_start: date | None
    window_end: date | None
    anchor: date | None


def _year_round(rule: StateRule) -> Exclusion:
    return Exclusion(rule.reason, True, None, None, None)


_ANNUAL_BASE = date(2000, 1, 1)
"""Stands in for the event date of an annual period (its anchors are fixed days)."""


def _event_base(c: ResolvedContact, rule: StateRule) -> date | None:
    """The date whose anniversaries anchor ``rule``'s windows for ``c``, if any applies."""
    if rule.kind == "annual_period":
        base: date | None = _ANNUAL_BASE
    else:
        base = c.birth_date if rule.kind == "birthday" else c.effective_date
    if base is not None and rule.has_age_range and c.birth_date is None:
        return None
    return base


def _anchor_ord(rule: StateRule, base: date, birth: date | None, year: int) -> int:
    """Ordinal of the anchor of ``rule``'s occurrence in ``year``; 0 if there is none.

    None when the year is out of range, when a policy anniversary is not strictly
    after the effective date, or when the contact's age on the anchor is outside
    the rule's range.
    """
    if year < MINYEAR or year > MAXYEAR:
        return 0
    if rule.kind == "annual_period":
        assert rule.period_from is not None
        month, day = rule.period_from
    else:
        month, day = base.month, base.day
    own_year = rule.kind == "effective_date" and year <= base.year
    if own_year and year < base.year:
        return 0  # no anchor before the effective date (SPEC 5.3)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if month == 2 and day == 29 and not leap:
        day = 28
    if rule.month_anchored and not own_year:
        # The policy's own year is anchored on the effective date itself:
        # month anchoring never moves an anchor before that date.
        day = 1
    if rule.has_age_range:
        if birth is None:
            return 0
        b_month, b_day = birth.month, birth.day
        if b_month == 2 and b_day == 29 and not leap:
            b_day = 28
        age = year - birth.year - ((month, day) < (b_month, b_day))
        if (rule.min_age is not None and age < rule.min_age) or (
            rule.max_age is not None and age > rule.max_age
        ):
            return 0
    return date(year, month, day).toordinal()


def _from_ordinal(n: int) -> date:
    return date.fromordinal(min(max(n, _MIN_ORD), _MAX_ORD))


def _annual_end(rule: StateRule, a: int) -> int:
    """Ordinal of the last day of the annual period that starts on day ``a``."""
    assert rule.period_from is not None and rule.period_to is not None
    start = date.fromordinal(a)
    year = start.year + (1 if rule.period_to < rule.period_from else 0)
    if year > MAXYEAR:
        return _MAX_ORD
    month, day = rule.period_to
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        day = 28
    return date(year, month, day).toordinal()


def _end(rule: StateRule, a: int) -> int:
    return _annual_end(rule, a) if rule.kind == "annual_period" else a + rule.after_days


def _found(rule: StateRule, a: int, lead: int) -> Exclusion:
    return Exclusion(
        rule.reason,
        False,
        _from_ordinal(a - lead),
        _from_ordinal(_end(rule, a)),
        date.fromordinal(a),
    )


def _annual_exclusion(
    c: ResolvedContact, x: int, year: int, rule: StateRule, lead: int
) -> Exclusion | None:
    """The annual period occurrence of ``year - 1 .. year + 1`` containing day ``x``
    (the latest ending one), or None (SPEC 5.3)."""
    birth = c.birth_date
    if rule.has_age_range and birth is None:
        return None
    for y in (year + 1, year, year - 1):
        a = _anchor_ord(rule, _ANNUAL_BASE, birth, y)
        if a and a - lead <= x <= _annual_end(rule, a):
            return _found(rule, a, lead)
    return None


def rule_exclusion(
    c: ResolvedContact, d: date, rule: StateRule, buffer_days: int
) -> Exclusion | None:
    """Check day ``d`` against one given rule, whatever its effective period (SPEC 5.3).

    Where two occurrences contain ``d`` (only possible when a window plus the
    buffer spans a year), the one with the latest end is reported, so a
    post-window email on the day after it is outside every occurrence that
    contained ``d``.
    """
    if rule.kind == "year_round":
        return _year_round(rule)
    if rule.kind == "annual_period":
        return _annual_exclusion(c, d.toordinal(), d.year, rule, rule.before_days + buffer_days)
    base = _event_base(c, rule)
    if base is None:
        return None
    lead = rule.before_days + buffer_days
    after = rule.after_days
    x = d.toordinal()
    year = d.year
    month, day = base.month, base.day
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        day = 28
    # Where d lies relative to this year's anchor tells which occurrences can hold it,
    # since consecutive anchors are at least a year apart.
    diff = x - date(year, month, 1 if rule.month_anchored else day).toordinal()
    birth = c.birth_date
    # Latest anchor first: the later the anchor, the later the window ends.
    if diff >= _YEAR - lead:
        a = _anchor_ord(rule, base, birth, year + 1)
        if a and a - lead <= x <= a + after:
            return _found(rule, a, lead)
    if -lead <= diff <= after:
        a = _anchor_ord(rule, base, birth, year)
        if a:
            return _found(rule, a, lead)
    if diff <= after - _YEAR:
        a = _anchor_ord(rule, base, birth, year - 1)
        if a and a - lead <= x <= a + after:
            return _found(rule, a, lead)
    return None


def check_exclusion(
    c: ResolvedContact, d: date, rules: RuleBook, params: PlanParams
) -> Exclusion | None:
    """Is day ``d`` in an exclusion window for contact ``c``? (SPEC 5.3)

    Uses the rules of ``c.state`` in effect on ``d``: the anchored rule first,
    then the annual period. Unknown state, a state without a rule in effect,
    or a missing event date: ``None``. Year-round: "Year-round exclusion for
    ST"; birthday window: "Birthday exclusion window for ST"; effective-date
    window: "Effective date exclusion window for ST"; annual period: "Annual
    exclusion period for ST".
    """
    state = c.state
    if state is None:
        return None
    rule = rules.rule_on(state, d)
    if rule is not None:
        found = rule_exclusion(c, d, rule, params.pre_window_buffer_days)
        if found is not None:
            return found
    annual = rules.annual_on(state, d)
    if annual is None:
        return None
    return rule_exclusion(c, d, annual, params.pre_window_buffer_days)


def _window(
    rule: StateRule, base: date, birth: date | None, year: int, lead: int
) -> tuple[int, int]:
    """Ordinals of the days ``rule``'s occurrence in ``year`` excludes; empty if start > end."""
    a = _anchor_ord(rule, base, birth, year)
    if not a:
        return 1, 0
    start, end = a - lead, _end(rule, a)
    if lead > _YEAR or end - a > _YEAR:
        # An occurrence counts only for days of the years year-1 .. year+1 (SPEC 5.3);
        # shorter windows never reach further.
        if year - 1 >= MINYEAR:
            start = max(start, date(year - 1, 1, 1).toordinal())
        if year + 1 <= MAXYEAR:
            end = min(end, date(year + 1, 12, 31).toordinal())
    return start, end


def _cut_period(x: int, bounds: tuple[int, int], period: tuple[int, int]) -> tuple[int, int] | None:
    """Cut a whole period (a year-round rule's) out of ``bounds`` around ``x``."""
    lo, hi = bounds
    if period[1] < x:
        return max(lo, period[1] + 1), hi
    if period[0] > x:
        return lo, min(hi, period[0] - 1)
    return None


def _narrow(
    rule: StateRule,
    c: ResolvedContact,
    x: int,
    year_x: int,
    bounds: tuple[int, int],
    lead: int,
    period: tuple[int, int],
) -> tuple[int, int] | None:
    """Cut ``rule``'s windows (restricted to ``period``) out of ``bounds`` around ``x``.

    Returns the narrowed bounds, or None if a window contains ``x``.
    """
    lo, hi = bounds
    p_from, p_to = period
    if rule.kind == "year_round":
        return _cut_period(x, bounds, period)
    base = _event_base(c, rule)
    if base is None:
        return lo, hi
    birth = c.birth_date
    span = max(x - lo, hi - x) // _YEAR + 2
    # Windows move monotonically with their anchor year, so scanning outwards from
    # the day's own year the first window found on each side is the nearest one.
    left_found = False
    for year in range(year_x, year_x + span + 1):
        start, end = _window(rule, base, birth, year, lead)
        start, end = max(start, p_from), min(end, p_to)
        if start > end:
            continue
        if start > x:
            hi = min(hi, start - 1)
            break
        if end >= x:
            return None
        lo = max(lo, end + 1)
        left_found = True
    if left_found:
        # earlier windows end earlier still: nothing more to cut on the left
        return lo, hi
    for year in range(year_x - 1, year_x - span - 1, -1):
        start, end = _window(rule, base, birth, year, lead)
        start, end = max(start, p_from), min(end, p_to)
        if start > end:
            continue
        if end < x:
            lo = max(lo, end + 1)
            break
        if start <= x:
            return None
        hi = min(hi, start - 1)
    return lo, hi


def allowed_interval(
    c: ResolvedContact,
    desired: date,
    rules: RuleBook,
    params: PlanParams,
    limit_days: int = 400,
) -> tuple[date, date]:
    """The days around ``desired`` an email may be moved to (SPEC 6).

    The maximal run of days containing ``desired``, capped at ``desired ±
    limit_days``, with no day inside an exclusion window of the rule in effect
    on ``desired``. Compliance goes one step further: a day on which another
    rule of the state is in effect (a law change) and which that rule excludes
    is not allowed either, so balancing never sends into a window under the law
    of the sending day.

    Precondition: ``desired`` is not excluded. If it is (including year-round),
    the interval is ``(desired, desired)``.
    """
    x = desired.toordinal()
    bounds = (max(x - limit_days, _MIN_ORD), min(x + limit_days, _MAX_ORD))
    state = c.state
    if state is None or not rules.rules_for(state):
        return date.fromordinal(bounds[0]), date.fromordinal(bounds[1])
    buffer_days = params.pre_window_buffer_days
    for rule in rules.rules_for(state):
        f, t = rule.effective_from, rule.effective_to
        if (f is None or f <= desired) and (t is None or desired <= t):
            period = (_MIN_ORD, _MAX_ORD)
        else:
            period = (f.toordinal() if f else _MIN_ORD, t.toordinal() if t else _MAX_ORD)
            if period[1] < bounds[0] or period[0] > bounds[1]:
                continue
        lead = rule.before_days + buffer_days
        narrowed = _narrow(rule, c, x, desired.year, bounds, lead, period)
        if narrowed is None:
            return desired, desired
        bounds = narrowed
    return date.fromordinal(bounds[0]), date.fromordinal(bounds[1])


POST_WINDOW_MAX_HOPS = 64
"""Windows a post-window date may have to step over before a free day; more
means rules that exclude (almost) every day, and no make-up email is planned."""


def post_window_date(
    c: ResolvedContact, window_end: date, rules: RuleBook, params: PlanParams
) -> date | None:
    """The date of the post-window email after a window ending on ``window_end``
    (SPEC 5.5): the first later day that is in no exclusion window of the
    contact under the rules in force on that day. A law change can widen a
    window (Virginia's 0-30 rule of early 2025 became 0-60 from 2025-07-01):
    the day after the old window then lies inside the new one, and the email
    steps over it. Inside a year-round rule the search resumes after its
    ``effective_to``; a year-round rule without an end, or more than
    :data:`POST_WINDOW_MAX_HOPS` windows in a row, give None (no email)."""
    state = c.state
    d = window_end
    for _ in range(POST_WINDOW_MAX_HOPS):
        if d >= date.max:
            return None
        d = date.fromordinal(d.toordinal() + 1)
        exc = check_exclusion(c, d, rules, params) if state is not None else None
        if exc is None:
            return d
        if exc.year_round:
            assert state is not None
            rule = rules.rule_on(state, d)
            if rule is None or rule.effective_to is None:
                return None
            d = rule.effective_to
        else:
            assert exc.window_end is not None
            d = exc.window_end
    return None
