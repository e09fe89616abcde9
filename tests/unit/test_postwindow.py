"""Post-window emails (SPEC 5.5), worked out by hand.

CA (SPEC 15): birthday window 30 days before, 60 after; with the default
60-day pre-window buffer an occurrence anchored at B covers [B - 90, B + 60].
For B = 2026-06-15 that is [2026-03-17, 2026-08-14]: the post-window email
goes out on 2026-08-15.
"""

from __future__ import annotations

from datetime import date

import pytest

from service.planning.model import Campaigns, Contact, ContactData, ContactPlan, HistoryEmail
from service.planning.params import PlanParams
from service.planning.plan import plan_contact
from service.planning.rules import builtin_rules

D = date.fromisoformat
RULES = builtin_rules()


def _plan(
    today: str,
    birth: str | None = "1955-06-15",
    effective: str | None = None,
    state: str = "CA",
    params: PlanParams | None = None,
    history: tuple[HistoryEmail, ...] = (),
    failed: bool = False,
) -> ContactPlan:
    contact = Contact(1, "pat@example.com", birth, effective, state, None, None, failed)
    data = ContactData(contact, history=history)
    return plan_contact(data, Campaigns(), RULES, params or PlanParams(), D(today))


def _pw(plan: ContactPlan) -> list[tuple[str, str]]:
    return [
        (r.event_date.isoformat(), r.desired_date.isoformat())
        for r in plan.rows
        if r.email_type == "post_window"
    ]


def test_skipped_birthday_gives_post_window_on_window_end_plus_one() -> None:
    # 04-02 + 60 = 06-01 = B - 14: the birthday email is live, inside [03-17, 08-14].
    plan = _plan("2026-04-02")
    bday, pw = plan.rows
    assert (bday.email_type, bday.status, bday.skip_reason) == (
        "birthday", "skipped", "Birthday exclusion window for CA",
    )  # fmt: skip
    assert (pw.email_type, pw.event_date, pw.desired_date, pw.status) == (
        "post_window", D("2026-06-15"), D("2026-08-15"), "pre-scheduled",
    )  # fmt: skip
    assert (pw.priority, pw.template, pw.catchup_note) == (40, "post_window_template", None)
    # Not checked against windows, but balancing never moves it into one (SPEC 5.5):
    # its interval is the free run from 08-15 to the day before the 2027 window,
    # 2027-06-15 - 90 = 2027-03-17, so 2027-03-16.
    assert (pw.allowed_from, pw.allowed_to) == (D("2026-08-15"), D("2027-03-16"))


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        ("2026-04-01", []),  # birthday not yet in the horizon (06-01 > 05-31)
        ("2026-06-15", [("2026-06-15", "2026-08-15")]),  # birthday's last live day
        ("2026-06-16", [("2026-06-15", "2026-08-15")]),  # survives the birthday
        ("2026-08-15", [("2026-06-15", "2026-08-15")]),  # its own day
        ("2026-08-16", []),  # passed
    ],
)
def test_post_window_lifetime(today: str, expected: list[tuple[str, str]]) -> None:
    assert _pw(_plan(today)) == expected


def test_window_across_new_year_from_last_years_birthday() -> None:
    # B = 2026-12-20, window end = 12-20 + 60 = 2027-02-18 (11 days to Dec 31, 49 more).
    plan = _plan("2027-01-10", birth="1950-12-20")
    assert _pw(plan) == [("2026-12-20", "2027-02-19")]


def test_one_post_window_per_window_occurrence() -> None:
    # Birthday B = 06-15 (desired 06-01) and policy anniversary A = 07-01 (desired
    # 06-01): both in CA's window [03-17, 08-14] -> one post-window email whose event
    # date is the earlier event date, 06-15.
    plan = _plan("2026-04-02", effective="2019-07-01")
    skipped = [(r.email_type, r.skip_reason) for r in plan.rows if r.status == "skipped"]
    assert skipped == [
        ("birthday", "Birthday exclusion window for CA"),
        ("effective_date", "Birthday exclusion window for CA"),
    ]
    assert _pw(plan) == [("2026-06-15", "2026-08-15")]


def test_effective_date_window() -> None:
    # MO: 30 before, 33 after the policy anniversary. A = 2026-05-10: [02-09, 06-12];
    # desired 04-10 (live on 03-01: horizon end 04-30) is inside -> post-window 06-13.
    plan = _plan("2026-03-01", birth=None, effective="2018-05-10", state="MO")
    ed, pw = plan.rows
    assert (ed.status, ed.skip_reason) == ("skipped", "Effective date exclusion window for MO")
    assert (pw.event_date, pw.desired_date) == (D("2026-05-10"), D("2026-06-13"))


def test_month_anchored_window() -> None:
    # NV anchors on the first of the birth month: A = 2026-06-01, [04-02, 07-31].
    assert _pw(_plan("2026-04-02", state="NV")) == [("2026-06-15", "2026-08-01")]


def test_not_for_year_round_exclusion() -> None:
    plan = _plan("2026-04-02", state="NY")
    assert [r.skip_reason for r in plan.rows] == ["Year-round exclusion for NY"]


def test_disabled() -> None:
    plan = _plan("2026-04-02", params=PlanParams(enable_post_window_emails=False))
    assert [r.email_type for r in plan.rows] == ["birthday"]


def test_not_for_failed_underwriting_skips() -> None:
    params = PlanParams(exclude_failed_underwriting_global=True)
    plan = _plan("2026-04-02", params=params, failed=True)
    assert [(r.email_type, r.skip_reason) for r in plan.rows] == [
        ("birthday", "Failed underwriting")
    ]


def test_not_planned_when_in_history() -> None:
    claimed = HistoryEmail(1, "post_window", "scheduled", D("2026-08-15"), D("2026-06-15"))
    assert _pw(_plan("2026-06-20", history=(claimed,))) == []
    # The source itself was sent (say before a rule change): nothing to make up for.
    sent = HistoryEmail(1, "birthday", "sent", D("2026-06-01"), D("2026-06-15"))
    plan = _plan("2026-06-10", history=(sent,))
    assert [r.email_type for r in plan.rows] == ["followup_cold"]  # the follow-up of 5.7
