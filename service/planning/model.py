"""Plain data the planning core works on (SPEC section 3).

Everything here is immutable and free of I/O: the store builds these from
database rows, the planning functions turn them into :class:`PlanRow` values.
Dates are ``datetime.date``; raw text from upstream tables is kept as text
where validating it is itself a planning rule (5.1, 5.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

PRE_SCHEDULED = "pre-scheduled"
SKIPPED = "skipped"
PLAN_STATUSES = frozenset({PRE_SCHEDULED, SKIPPED})
"""Statuses owned by mailplan; every other status is history (SPEC 2)."""

SENT_STATUSES = frozenset({"sent", "delivered"})
"""History statuses that count as "sent" for follow-ups (SPEC 5.7)."""

BIRTHDAY = "birthday"
EFFECTIVE_DATE = "effective_date"
POST_WINDOW = "post_window"
FOLLOWUP_PREFIX = "followup_"
CAMPAIGN_PREFIX = "campaign_"

RowKey = tuple[int, str, date]
"""Identity of a plan row: (contact_id, email_type, event date) (SPEC 2)."""


@dataclass(frozen=True, slots=True)
class Contact:
    """One row of ``contacts`` as upstream wrote it (unvalidated text)."""

    id: int
    email: str | None
    birth_date: str | None
    effective_date: str | None
    state: str | None
    zip_code: str | None
    carrier: str | None = None
    failed_underwriting: bool = False


@dataclass(frozen=True, slots=True)
class CampaignType:
    """One row of ``campaign_types`` (SPEC 3)."""

    name: str
    respect_exclusion_windows: bool = True
    enable_followups: bool = True
    days_before_event: int = 0
    target_all_contacts: bool = False
    priority: int = 30
    active: bool = True
    spread_evenly: bool = False
    skip_failed_underwriting: bool = False


@dataclass(frozen=True, slots=True)
class CampaignInstance:
    """One row of ``campaign_instances`` (SPEC 3); dates already parsed.

    A date column that holds text that is not a date is kept as ``None`` and the
    problem is listed in ``errors`` so ``status`` can report it.
    """

    id: int
    campaign_type: str
    instance_name: str = ""
    email_template: str | None = None
    sms_template: str | None = None
    active_start_date: date | None = None
    active_end_date: date | None = None
    spread_start_date: date | None = None
    spread_end_date: date | None = None
    target_states: str | None = None
    target_carriers: str | None = None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContactCampaign:
    """One targeting row of ``contact_campaigns`` (SPEC 5.6)."""

    contact_id: int
    campaign_instance_id: int
    trigger_date: date | None
    status: str = "pending"


@dataclass(frozen=True, slots=True)
class HistoryEmail:
    """A row of ``email_schedules`` owned by the sender (any non-plan status).

    ``send_date`` is the date of ``actual_send_datetime``, else of ``sent_at``,
    else ``scheduled_send_date`` (SPEC 5.7); ``send_at`` is the instant (naive
    UTC) of the same column when it has a time part; ``event_date`` is built
    from ``event_year/month/day`` when those form a real date.
    """

    contact_id: int
    email_type: str
    status: str
    send_date: date | None
    event_date: date | None = None
    campaign_instance_id: int | None = None
    send_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Click:
    """A row of ``tracking_clicks``."""

    contact_id: int
    clicked_on: date
    clicked_at: datetime | None = None
    """The instant (naive UTC) when ``clicked_at`` has a time part."""


@dataclass(frozen=True, slots=True)
class ContactEvent:
    """A row of ``contact_events`` (engagement, SPEC 5.7)."""

    contact_id: int
    event_type: str
    metadata: str | None
    created_on: date
    created_at: datetime | None = None
    """The instant (naive UTC) when ``created_at`` has a time part."""


@dataclass(frozen=True, slots=True)
class ContactData:
    """Everything the planner needs to know about one contact."""

    contact: Contact
    history: tuple[HistoryEmail, ...] = ()
    targeting: tuple[ContactCampaign, ...] = ()
    clicks: tuple[Click, ...] = ()
    events: tuple[ContactEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class Campaigns:
    """The organisation-wide campaign configuration (SPEC 5.6)."""

    types: dict[str, CampaignType] = field(default_factory=dict)
    instances: tuple[CampaignInstance, ...] = ()


Status = Literal["pre-scheduled", "skipped"]


@dataclass(frozen=True, slots=True)
class PlanRow:
    """One planned email of one contact, before load balancing.

    ``allowed_from``/``allowed_to`` bound the days on which load balancing may
    send the row (SPEC 6, "Balancing never breaks a rule"); ``allowed_to`` is
    ``None`` where nothing bounds it. Both always contain ``desired_date``.
    """

    contact_id: int
    email_type: str
    event_date: date
    desired_date: date
    status: Status
    skip_reason: str | None
    priority: int
    template: str | None
    campaign_instance_id: int | None = None
    catchup_note: str | None = None
    allowed_from: date | None = None
    allowed_to: date | None = None

    @property
    def key(self) -> RowKey:
        return (self.contact_id, self.email_type, self.event_date)


@dataclass(frozen=True, slots=True)
class ContactPlan:
    """The planner's answer for one contact.

    ``review_date`` is the first day after *today* on which the plan can change
    through the passage of time alone (SPEC 5.11), ``None`` if never.
    ``notes`` are human-readable decisions for ``explain``; ``invalid`` is set
    when the contact cannot be emailed at all (bad address).
    """

    contact_id: int
    rows: tuple[PlanRow, ...]
    review_date: date | None
    notes: tuple[str, ...] = ()
    invalid: str | None = None
