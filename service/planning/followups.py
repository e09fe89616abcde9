"""Follow-up emails after an email the contact may have engaged with (SPEC 5.7)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from service.planning.model import (
    BIRTHDAY,
    CAMPAIGN_PREFIX,
    EFFECTIVE_DATE,
    FOLLOWUP_PREFIX,
    POST_WINDOW,
    SENT_STATUSES,
    Campaigns,
    ContactData,
    HistoryEmail,
)
from service.planning.review import ONE_DAY

if TYPE_CHECKING:
    from service.planning.context import ContactContext

FOLLOWUP_PRIORITY = 50
ELIGIBILITY_ANSWERED = "eligibility_answered"
_ALWAYS_FOLLOWED = frozenset({BIRTHDAY, EFFECTIVE_DATE, POST_WINDOW})


def plan_followup(ctx: ContactContext, data: ContactData, campaigns: Campaigns) -> None:
    """At most one follow-up, to the contact's most recent followable email (SPEC 5.7).

    - Followable: a history email with status ``sent``/``delivered``, a send
      date on or before today, of type birthday, effective_date, post_window,
      or a campaign whose type has ``enable_followups`` (see
      :func:`followable`). ``HistoryEmail.send_date`` is already 5.7's date.
      An email dated after today becomes a candidate on its date (5.11).
    - Live while today ≤ send date + ``followup_lookback_days``.
    - None if any history row of a ``followup_*`` type is dated (send date,
      else event date) on or after the followed send date: a follow-up was
      sent or claimed after it.
    - Kind from engagement since the send: at or after the send instant
      where the history row has a time, else on or after the send date
      (:func:`followup_kind`); of several emails sent on the latest day, the
      one sent last is followed;
      type ``followup_<kind>``, event date = the followed send date, desired
      date = send date + ``followup_delay_days`` (caught up if passed),
      checked against exclusion windows, no upper bound on its interval.
    """
    today = ctx.today
    latest: date | None = None
    latest_at: datetime | None = None
    for h in data.history:
        sent = h.send_date
        if sent is None or h.status not in SENT_STATUSES or (latest is not None and sent < latest):
            continue
        if sent == latest and (h.send_at is None or (latest_at and h.send_at <= latest_at)):
            continue
        if not followable(h, campaigns):
            continue
        if sent > today:
            ctx.wake(sent)
        else:
            latest, latest_at = sent, h.send_at
    if latest is None:
        return
    params = ctx.params
    last_day = latest + timedelta(days=params.followup_lookback_days)
    if today > last_day:
        return
    ctx.wake(last_day + ONE_DAY)
    for h in data.history:
        if h.email_type.startswith(FOLLOWUP_PREFIX):
            when = h.send_date or h.event_date
            if when is not None and when >= latest:
                return
    kind = followup_kind(data, latest, latest_at)
    ctx.emit(
        f"{FOLLOWUP_PREFIX}{kind}", latest, latest + timedelta(days=params.followup_delay_days),
        FOLLOWUP_PRIORITY, f"{kind}_template", windows=True,
    )  # fmt: skip


def followable(h: HistoryEmail, campaigns: Campaigns) -> bool:
    """Whether an email of this type gets follow-ups (SPEC 5.7).

    A campaign email's type is found through ``campaign_instance_id`` (its
    instance's type), else parsed from ``campaign_<type>_<instance id>``.
    """
    email_type = h.email_type
    if email_type in _ALWAYS_FOLLOWED:
        return True
    if not email_type.startswith(CAMPAIGN_PREFIX):
        return False
    name: str | None = None
    if h.campaign_instance_id is not None:
        for inst in campaigns.instances:
            if inst.id == h.campaign_instance_id:
                name = inst.campaign_type
                break
    if name is None:
        rest = email_type[len(CAMPAIGN_PREFIX) :]
        head, sep, tail = rest.rpartition("_")
        name = head if sep and tail.isdigit() else rest
    ctype = campaigns.types.get(name)
    return ctype is not None and ctype.enable_followups


def _since(on: date, at: datetime | None, since: date, since_at: datetime | None) -> bool:
    """Engagement at ``on``/``at`` counts from a send at ``since``/``since_at``:
    instant against instant where both are known, else by date (SPEC 5.7)."""
    if since_at is not None and at is not None:
        return at >= since_at
    return on >= since


def followup_kind(data: ContactData, since: date, since_at: datetime | None = None) -> str:
    """The follow-up kind from engagement since the send (SPEC 5.7): at or
    after ``since_at`` (the send instant) where both it and the engagement's
    time are known, else on or after the send date ``since``.

    An ``eligibility_answered`` event → ``hq_with_yes`` if any such event's
    metadata JSON has ``"has_medical_conditions": true`` (invalid JSON counts
    as no), else ``hq_no_yes``; otherwise any click → ``clicked_no_hq``;
    otherwise ``cold``. "Any" rather than "latest" keeps the answer
    independent of the order of same-day events.
    """
    answered = False
    for event in data.events:
        if event.event_type == ELIGIBILITY_ANSWERED and _since(
            event.created_on, event.created_at, since, since_at
        ):
            if _has_medical_conditions(event.metadata):
                return "hq_with_yes"
            answered = True
    if answered:
        return "hq_no_yes"
    for click in data.clicks:
        if _since(click.clicked_on, click.clicked_at, since, since_at):
            return "clicked_no_hq"
    return "cold"


def _has_medical_conditions(metadata: str | None) -> bool:
    if not metadata:
        return False
    try:
        parsed = json.loads(metadata)
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and parsed.get("has_medical_conditions") is True
