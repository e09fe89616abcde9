"""Limits across one contact's emails: same-day campaigns (SPEC 5.8), frequency (5.9).

Both work in place on the contact's list of rows and turn losing rows into
skipped rows (with their reason, without an allowed interval); they never drop
a row.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import replace
from datetime import date, timedelta

from service.planning.model import CAMPAIGN_PREFIX, PRE_SCHEDULED, HistoryEmail, PlanRow
from service.planning.params import PlanParams

FREQUENCY_LIMIT = "Frequency limit exceeded"


def skip_row(row: PlanRow, reason: str) -> PlanRow:
    """``row`` as a skipped row with ``reason``; skipped rows carry no allowed interval."""
    return replace(row, status="skipped", skip_reason=reason, allowed_from=None, allowed_to=None)


def conflict_reason(day: date) -> str:
    """The fixed skip reason of SPEC 5.8 / 10."""
    return f"Campaign priority conflict on {day.isoformat()}"


def resolve_campaign_conflicts(rows: list[PlanRow]) -> None:
    """Keep one non-skipped campaign email per desired date (SPEC 5.8).

    The one with the lowest priority number stays (ties: lowest instance id,
    then earliest event date, so two emails of one instance are decided too);
    the others become skipped "Campaign priority conflict on <date>".
    """
    candidates = [
        i
        for i, row in enumerate(rows)
        if row.status == PRE_SCHEDULED and row.email_type.startswith(CAMPAIGN_PREFIX)
    ]
    if len(candidates) < 2:
        return
    by_day: dict[date, list[int]] = {}
    for i in candidates:
        by_day.setdefault(rows[i].desired_date, []).append(i)
    for day, indexes in by_day.items():
        if len(indexes) < 2:
            continue
        indexes.sort(key=lambda i: _conflict_order(rows[i]))
        reason = conflict_reason(day)
        for i in indexes[1:]:
            rows[i] = skip_row(rows[i], reason)


def _conflict_order(row: PlanRow) -> tuple[int, int, date, str]:
    instance = row.campaign_instance_id if row.campaign_instance_id is not None else 0
    return (row.priority, instance, row.event_date, row.email_type)


def apply_frequency_limit(
    rows: list[PlanRow], history: tuple[HistoryEmail, ...], params: PlanParams
) -> None:
    """At most ``max_emails_per_period`` emails in any ``period_days`` consecutive days (5.9).

    Counted: every history row by its send date (a claimed row's send date is
    its scheduled date), and every admitted non-skipped plan row by its
    desired date. Plan rows are admitted in order (priority, desired date,
    email_type, event date); a row that would make any window of
    ``period_days`` days containing its date hold more than the maximum is
    skipped "Frequency limit exceeded". Skipped rows never count (SPEC 14).
    """
    limit = params.max_emails_per_period
    live = [i for i, row in enumerate(rows) if row.status == PRE_SCHEDULED]
    if not live:
        return
    if len(history) + len(live) <= limit:
        return
    counted = sorted(h.send_date for h in history if h.send_date is not None)
    if len(counted) + len(live) <= limit:
        return
    live.sort(key=lambda i: _admission_order(rows[i]))
    span = timedelta(days=params.period_days - 1)
    for i in live:
        day = rows[i].desired_date
        if fits(counted, day, span, limit):
            insort(counted, day)
        else:
            rows[i] = skip_row(rows[i], FREQUENCY_LIMIT)


def _admission_order(row: PlanRow) -> tuple[int, date, str, date]:
    return (row.priority, row.desired_date, row.email_type, row.event_date)


def fits(counted: list[date], day: date, span: timedelta, limit: int) -> bool:
    """Whether one more email on ``day`` keeps every window containing it within ``limit``.

    ``counted`` is sorted; a window is ``[s, s + span]`` with ``s ≤ day ≤ s +
    span``. The fullest such window starts at ``day - span`` or ends on one of
    the counted dates after ``day`` (moving the window right only gains dates
    when its end reaches one), so only those windows are checked.
    """
    lo = bisect_left(counted, day - span)
    hi = bisect_right(counted, day + span)
    if hi - lo < limit:
        return True
    ends = [day]
    ends.extend(d for d in counted[bisect_right(counted, day) : hi])
    for end in ends:
        start = end - span
        if start < day - span:
            start = day - span
        n = bisect_right(counted, end) - bisect_left(counted, start)
        if n >= limit:
            return False
    return True
