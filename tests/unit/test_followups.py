"""Follow-up emails (SPEC 5.7, 5.10), worked out by hand.

Defaults: follow-up 2 days after the send, lookback 35 days. Contact 1 in TX
(no state rule) without birth or effective date, unless a case says otherwise.
"""

from __future__ import annotations

from datetime import date

import pytest

from service.planning.followups import followup_kind
from service.planning.model import (
    CampaignInstance,
    Campaigns,
    CampaignType,
    Click,
    Contact,
    ContactData,
    ContactEvent,
    ContactPlan,
    HistoryEmail,
)
from service.planning.params import PlanParams
from service.planning.plan import plan_contact
from service.planning.rules import builtin_rules

D = date.fromisoformat
RULES = builtin_rules()
CAMPAIGNS = Campaigns(
    {
        "aep": CampaignType("aep", target_all_contacts=True),
        "newsletter": CampaignType("newsletter", enable_followups=False),
    },
    (CampaignInstance(3, "newsletter"), CampaignInstance(4, "aep")),
)
YES = '{"has_medical_conditions": true}'
NO = '{"has_medical_conditions": false}'


def _sent(
    email_type: str, day: str, status: str = "sent", instance: int | None = None
) -> HistoryEmail:
    return HistoryEmail(1, email_type, status, D(day), None, instance)


def _answer(day: str, metadata: str | None) -> ContactEvent:
    return ContactEvent(1, "eligibility_answered", metadata, D(day))


def _plan(
    history: tuple[HistoryEmail, ...],
    today: str = "2026-05-02",
    clicks: tuple[str, ...] = (),
    events: tuple[ContactEvent, ...] = (),
    state: str = "TX",
    birth: str | None = None,
) -> ContactPlan:
    contact = Contact(1, "pat@example.com", birth, None, state, None)
    data = ContactData(
        contact,
        history=history,
        clicks=tuple(Click(1, D(c)) for c in clicks),
        events=events,
    )
    return plan_contact(data, CAMPAIGNS, RULES, PlanParams(), D(today))


def _followups(plan: ContactPlan) -> list[tuple[str, str, str]]:
    return [
        (r.email_type, r.event_date.isoformat(), r.desired_date.isoformat())
        for r in plan.rows
        if r.email_type.startswith("followup_")
    ]


BIRTHDAY_SENT = (_sent("birthday", "2026-05-01"),)

KIND_CASES = [
    # (clicks, eligibility events, kind) -- engagement counts from the send date on.
    ((), (), "cold"),
    (("2026-05-01",), (), "clicked_no_hq"),
    (("2026-04-30",), (), "cold"),  # clicked before the send
    ((), (_answer("2026-05-02", YES),), "hq_with_yes"),
    ((), (_answer("2026-05-02", NO),), "hq_no_yes"),
    ((), (_answer("2026-05-02", "{not json"),), "hq_no_yes"),
    ((), (_answer("2026-05-02", None),), "hq_no_yes"),
    ((), (_answer("2026-05-02", '{"has_medical_conditions": "true"}'),), "hq_no_yes"),
    (("2026-05-01",), (_answer("2026-05-02", NO),), "hq_no_yes"),  # answer beats click
    ((), (_answer("2026-05-02", NO), _answer("2026-05-02", YES)), "hq_with_yes"),
    ((), (_answer("2026-04-30", YES),), "cold"),  # answered before the send
]


@pytest.mark.parametrize(("clicks", "events", "kind"), KIND_CASES)
def test_kind(clicks: tuple[str, ...], events: tuple[ContactEvent, ...], kind: str) -> None:
    plan = _plan(BIRTHDAY_SENT, clicks=clicks, events=events)
    # Sent 05-01: event date 05-01, desired 05-01 + 2 = 05-03.
    assert _followups(plan) == [(f"followup_{kind}", "2026-05-01", "2026-05-03")]
    (row,) = plan.rows
    assert (row.priority, row.template, row.status) == (50, f"{kind}_template", "pre-scheduled")
    # TX: no window; nothing bounds it above.
    assert (row.allowed_from, row.allowed_to) == (D("2026-05-02"), None)


def test_kind_ignores_other_event_types() -> None:
    data = ContactData(
        Contact(1, "pat@example.com", None, None, "TX", None),
        events=(ContactEvent(1, "page_view", YES, D("2026-05-02")),),
    )
    assert followup_kind(data, D("2026-05-01")) == "cold"


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        # Sent 04-01: live through 04-01 + 35 = 05-06; desired 04-03 is caught up.
        ("2026-05-06", [("followup_cold", "2026-04-01", "2026-05-06")]),
        ("2026-05-07", []),
    ],
)
def test_lookback_edges(today: str, expected: list[tuple[str, str, str]]) -> None:
    plan = _plan((_sent("birthday", "2026-04-01"),), today=today)
    assert _followups(plan) == expected


def test_catch_up() -> None:
    plan = _plan(BIRTHDAY_SENT, today="2026-05-10")
    (row,) = plan.rows
    assert (row.desired_date, row.catchup_note) == (D("2026-05-10"), "caught up from 2026-05-03")
    # No windows (TX): it only follows today until the lookback of the email sent
    # 05-01 ends: 05-01 + 35 days = 06-05 is its last live day.
    assert plan.review_date == D("2026-06-06")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # A follow-up sent on or after the followed send: nothing more.
        (_sent("followup_cold", "2026-05-01"), []),
        # ... or claimed by the sender (a scheduled row counts by its date).
        (_sent("followup_clicked_no_hq", "2026-05-04", "scheduled"), []),
        # One before it belongs to an older email.
        (_sent("followup_cold", "2026-04-30"), [("followup_cold", "2026-05-01", "2026-05-03")]),
    ],
)
def test_already_followed_up(extra: HistoryEmail, expected: list[tuple[str, str, str]]) -> None:
    assert _followups(_plan((*BIRTHDAY_SENT, extra), today="2026-05-02")) == expected


@pytest.mark.parametrize(
    ("history", "expected_event"),
    [
        # The most recent followable email is the one followed.
        ((_sent("birthday", "2026-04-10"), _sent("effective_date", "2026-04-20")), "2026-04-20"),
        ((_sent("post_window", "2026-04-25"),), "2026-04-25"),
        # Campaign types: through the instance (4 is aep, follow-ups enabled) ...
        ((_sent("campaign_aep_4", "2026-04-25", instance=4),), "2026-04-25"),
        # ... or parsed from the type name when the instance is unknown.
        ((_sent("campaign_aep_99", "2026-04-25"),), "2026-04-25"),
        # newsletter has enable_followups off: its email is not followed ...
        ((_sent("campaign_newsletter_3", "2026-04-25", instance=3),), None),
        # ... and does not hide an older followable one.
        (
            (_sent("birthday", "2026-04-10"), _sent("campaign_newsletter_3", "2026-04-25")),
            "2026-04-10",
        ),
        # Unknown campaign type, other types, and emails not (yet) sent: nothing.
        ((_sent("campaign_mystery_5", "2026-04-25"),), None),
        ((_sent("followup_cold", "2026-04-25"),), None),
        ((_sent("birthday", "2026-04-25", status="scheduled"),), None),
        ((_sent("birthday", "2026-04-25", status="delivered"),), "2026-04-25"),
    ],
)
def test_which_email_is_followed(
    history: tuple[HistoryEmail, ...], expected_event: str | None
) -> None:
    rows = _followups(_plan(history, today="2026-05-02"))
    assert [event for _, event, _ in rows] == ([expected_event] if expected_event else [])


def test_future_dated_send_waits_for_its_day() -> None:
    plan = _plan((_sent("birthday", "2026-05-20"),), today="2026-05-10")
    assert _followups(plan) == []
    assert plan.review_date == D("2026-05-20")


def test_subject_to_exclusion_windows() -> None:
    # CA, birthday 1955-06-15: window [2026-03-17, 2026-08-14] holds 05-03.
    plan = _plan(BIRTHDAY_SENT, state="CA", birth="1955-06-15", today="2026-05-02")
    (row,) = [r for r in plan.rows if r.email_type.startswith("followup_")]
    assert (row.status, row.skip_reason) == ("skipped", "Birthday exclusion window for CA")
