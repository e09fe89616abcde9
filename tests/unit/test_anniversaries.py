"""Birthday and effective-date emails (SPEC 5.4, 5.10), worked out by hand.

Defaults (SPEC 4): horizon 60 days, birthday 14 days before, effective date 30
days before, first effective-date email after 11 months. TX has no state rule,
so rows there are never skipped by a window and their allowed interval is
[today, event date].
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
    birth: str | None = None,
    effective: str | None = None,
    today: str = "2026-01-01",
    state: str | None = "TX",
    params: PlanParams | None = None,
    history: tuple[HistoryEmail, ...] = (),
    failed: bool = False,
) -> ContactPlan:
    contact = Contact(1, "pat@example.com", birth, effective, state, None, None, failed)
    data = ContactData(contact, history=history)
    return plan_contact(data, Campaigns(), RULES, params or PlanParams(), D(today))


def _rows(plan: ContactPlan) -> list[tuple[str, str, str, str, str | None]]:
    return [
        (r.email_type, r.event_date.isoformat(), r.desired_date.isoformat(), r.status,
         r.catchup_note)
        for r in plan.rows
    ]  # fmt: skip


BIRTHDAY_CASES = [
    # B = 2026-05-20, desired = B - 14 = 05-06; enters the horizon on 05-06 - 60 = 03-07.
    ("1960-05-20", "2026-03-01", [], "2026-03-07"),
    # 03-07 + 60 = 05-06: live. TX has no windows: from 05-07 on the row is caught
    # up and only follows today (the catch-up move) until its event date, so the
    # plan first differs from that move on 05-21, when the row is gone.
    ("1960-05-20", "2026-03-07",
     [("birthday", "2026-05-20", "2026-05-06", "pre-scheduled", None)], "2026-05-21"),
    # Desired date passed: caught up to today, moving daily by the catch-up move.
    ("1960-05-20", "2026-05-10",
     [("birthday", "2026-05-20", "2026-05-10", "pre-scheduled", "caught up from 2026-05-06")],
     "2026-05-21"),
    # Last live day is the birthday itself (today <= event date).
    ("1960-05-20", "2026-05-20",
     [("birthday", "2026-05-20", "2026-05-20", "pre-scheduled", "caught up from 2026-05-06")],
     "2026-05-21"),
    # The day after: gone; next one desired 2027-05-06, enters on 2027-03-07.
    ("1960-05-20", "2026-05-21", [], "2027-03-07"),
    # Feb 29 in a non-leap year falls on Feb 28: desired 02-14, horizon end 03-02;
    # the row ends after 02-28.
    ("1956-02-29", "2027-01-01",
     [("birthday", "2027-02-28", "2027-02-14", "pre-scheduled", None)], "2027-03-01"),
    # ... and on Feb 29 in a leap year: desired 02-15, horizon end 03-10.
    ("1956-02-29", "2028-01-10",
     [("birthday", "2028-02-29", "2028-02-15", "pre-scheduled", None)], "2028-03-01"),
    # Dec 31 birthday seen on Dec 31: this year's is caught up (desired 12-17).
    ("1950-12-31", "2026-12-31",
     [("birthday", "2026-12-31", "2026-12-31", "pre-scheduled", "caught up from 2026-12-17")],
     "2027-01-01"),
    # Early January birthday seen in November: next year's occurrence.
    # B = 2027-01-05, desired 2026-12-22 <= 11-25 + 60 = 2027-01-24.
    # The row ends after 2027-01-05.
    ("1950-01-05", "2026-11-25",
     [("birthday", "2027-01-05", "2026-12-22", "pre-scheduled", None)], "2027-01-06"),
]  # fmt: skip


@pytest.mark.parametrize(("birth", "today", "rows", "review"), BIRTHDAY_CASES)
def test_birthday(birth: str, today: str, rows: list[object], review: str) -> None:
    plan = _plan(birth=birth, today=today)
    assert _rows(plan) == rows
    assert plan.review_date == D(review)


def test_birthday_row_fields_and_interval() -> None:
    plan = _plan(birth="1960-05-20", today="2026-03-07")
    (row,) = plan.rows
    assert (row.priority, row.template, row.skip_reason) == (10, "birthday_template", None)
    # No rule in TX: [today, event date].
    assert (row.allowed_from, row.allowed_to) == (D("2026-03-07"), D("2026-05-20"))


@pytest.mark.parametrize(
    ("birth", "problem"),
    [
        # A birth date after today is invalid for birthday emails (5.1).
        ("2030-01-01", "after today"),
        # Not a real date.
        ("1960-02-30", "not a real date"),
    ],
)
def test_bad_birth_date_gives_no_birthday_email(birth: str, problem: str) -> None:
    plan = _plan(birth=birth, today="2026-01-01")
    assert plan.rows == ()
    assert any(problem in note for note in plan.notes)


def test_future_birth_date_becomes_valid_on_that_day() -> None:
    plan = _plan(birth="2026-03-01", today="2026-01-01")
    assert plan.review_date == D("2026-03-01")


ED_CASES = [
    # ED 2025-02-01: A = 2026-02-01, desired 2026-01-02; months 2025-02 -> 2026-01 = 11 >= 11.
    ("2025-02-01", 11, "2026-01-01", [("effective_date", "2026-02-01", "2026-01-02")]),
    # ED 2025-03-01: desired 2026-01-30; months 2025-03 -> 2026-01 = 10 < 11: not planned.
    ("2025-03-01", 11, "2026-01-01", []),
    # ... but planned when the first email may come after 10 months.
    ("2025-03-01", 10, "2026-01-01", [("effective_date", "2026-03-01", "2026-01-30")]),
    # ED 2025-03-31: desired 2026-03-01 (30 days before 03-31); 12 months; 01-15 + 60 = 03-16.
    ("2025-03-31", 11, "2026-01-15", [("effective_date", "2026-03-31", "2026-03-01")]),
    # ED 2025-02-28: A 2026-02-28, desired 2026-01-29; months 11.
    ("2025-02-28", 11, "2026-01-01", [("effective_date", "2026-02-28", "2026-01-29")]),
    # ED on Feb 29: A = 2025-02-28, desired 2025-01-29; months 2024-02 -> 2025-01 = 11.
    ("2024-02-29", 11, "2025-01-10", [("effective_date", "2025-02-28", "2025-01-29")]),
    # ... in a leap year A = 2028-02-29, desired 2028-01-30.
    ("2024-02-29", 11, "2028-01-10", [("effective_date", "2028-02-29", "2028-01-30")]),
    # The effective date itself is not an anniversary: ED 2026-01-20 gives nothing
    # in January 2026 (first anniversary 2027-01-20 is beyond the horizon).
    ("2026-01-20", 0, "2026-01-01", []),
    # An old policy: A 2026-03-01, desired 2026-01-30, years of months.
    ("2010-03-01", 11, "2026-01-01", [("effective_date", "2026-03-01", "2026-01-30")]),
]


@pytest.mark.parametrize(("effective", "months", "today", "rows"), ED_CASES)
def test_effective_date(effective: str, months: int, today: str, rows: list[object]) -> None:
    plan = _plan(
        effective=effective, today=today,
        params=PlanParams(effective_date_first_email_months=months),
    )  # fmt: skip
    assert [
        (r.email_type, r.event_date.isoformat(), r.desired_date.isoformat()) for r in plan.rows
    ] == rows
    for row in plan.rows:
        assert (row.priority, row.template, row.status) == (
            20, "effective_date_template", "pre-scheduled",
        )  # fmt: skip


def test_effective_date_months_measured_before_catch_up() -> None:
    # ED 2025-03-01, desired 2026-01-30 (10 months). Seen on 2026-02-15 the email would
    # be caught up to February (11 months), but the rule uses the desired date: still none.
    plan = _plan(effective="2025-03-01", today="2026-02-15")
    assert plan.rows == ()


def test_effective_date_liveness_ends_after_event() -> None:
    # A = 2026-03-01: on the day, caught up from 01-30; the day after, gone.
    on_day = _plan(effective="2020-03-01", today="2026-03-01")
    assert _rows(on_day) == [
        ("effective_date", "2026-03-01", "2026-03-01", "pre-scheduled", "caught up from 2026-01-30")
    ]
    assert _plan(effective="2020-03-01", today="2026-03-02").rows == ()


def test_future_effective_date_plans_its_first_anniversary_later() -> None:
    # ED 2026-06-01: first anniversary 2027-06-01, desired 2027-05-02, enters on 2027-03-03.
    plan = _plan(effective="2026-06-01", today="2026-01-01")
    assert plan.rows == ()
    assert plan.review_date == D("2027-03-03")


@pytest.mark.parametrize(("flag", "count"), [(True, 1), (False, 0)])
def test_unknown_state_needs_send_without_zipcode(flag: bool, count: int) -> None:
    params = PlanParams(send_without_zipcode_for_universal=flag)
    plan = _plan(birth="1960-05-20", today="2026-03-07", state=None, params=params)
    assert len(plan.rows) == count


def test_failed_underwriting_global_gives_skipped_rows() -> None:
    params = PlanParams(exclude_failed_underwriting_global=True)
    plan = _plan(birth="1960-05-20", today="2026-03-07", failed=True, params=params)
    (row,) = plan.rows
    assert (row.status, row.skip_reason) == ("skipped", "Failed underwriting")
    assert (row.desired_date, row.allowed_from, row.allowed_to) == (D("2026-05-06"), None, None)
    # Without the global flag, failed underwriting does not matter for anniversaries.
    assert _plan(birth="1960-05-20", today="2026-03-07", failed=True).rows[0].status == (
        "pre-scheduled"
    )


def test_sent_occurrence_is_not_planned_again() -> None:
    sent = HistoryEmail(1, "birthday", "sent", D("2026-05-06"), D("2026-05-20"))
    assert _plan(birth="1960-05-20", today="2026-03-07", history=(sent,)).rows == ()
    # A history row of another occurrence does not hide this one.
    old = HistoryEmail(1, "birthday", "sent", D("2025-05-06"), D("2025-05-20"))
    assert len(_plan(birth="1960-05-20", today="2026-03-07", history=(old,)).rows) == 1


def test_year_round_state_skips() -> None:
    plan = _plan(birth="1960-05-20", today="2026-03-07", state="NY")
    (row,) = plan.rows
    assert (row.status, row.skip_reason) == ("skipped", "Year-round exclusion for NY")
