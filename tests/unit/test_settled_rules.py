"""The rules the specification settled on 2026-12-01 (SPEC 5.3, 5.5, 5.6, 5.7, 15),
table-driven, each expected date worked out by hand in its comment.

Defaults unless a row says otherwise: pre-window buffer 60 days, birthday email
14 days before, horizon 60 days, the built-in table (SPEC 15).
"""

from __future__ import annotations

from datetime import date, datetime

import pytest

from service.planning.model import (
    CampaignInstance,
    Campaigns,
    CampaignType,
    Click,
    Contact,
    ContactCampaign,
    ContactData,
    ContactPlan,
    HistoryEmail,
    PlanRow,
)
from service.planning.params import PlanParams
from service.planning.plan import plan_contact
from service.planning.rules import RuleBook, builtin_rules, parse_rules

D = date.fromisoformat
BUILTIN = builtin_rules()
NO_CAMPAIGNS = Campaigns()


def _plan(
    state: str,
    birth: str | None,
    today: str,
    effective: str | None = None,
    rules: RuleBook = BUILTIN,
    data: ContactData | None = None,
    campaigns: Campaigns = NO_CAMPAIGNS,
) -> ContactPlan:
    contact = Contact(1, "pat@example.com", birth, effective, state, None)
    return plan_contact(data or ContactData(contact), campaigns, rules, PlanParams(), D(today))


def _row(plan: ContactPlan, email_type: str) -> PlanRow:
    rows = [r for r in plan.rows if r.email_type == email_type]
    assert len(rows) == 1, plan.rows
    return rows[0]


def _has(plan: ContactPlan, email_type: str) -> bool:
    return any(r.email_type == email_type for r in plan.rows)


# --- SPEC 5.5: Virginia's 2025 change -------------------------------------------------------


def test_virginia_2025_post_window_steps_over_the_wider_window_in_force() -> None:
    # VA born 1955-06-20, today 2025-05-01. Birthday 2025-06-20, desired 06-06 (≤ today + 60
    # = 06-30, live). On 06-06 the 0-30 rule is in force (to 2025-06-30): window
    # [06-20 - 60, 06-20 + 30] = [2025-04-21, 2025-07-20], so the email is skipped.
    # The day after, 2025-07-21, is inside the 0-60 rule in force from 2025-07-01:
    # [2025-04-21, 06-20 + 60 = 2025-08-19]. The first free day is 2025-08-20 (the old code
    # planned 2025-07-21). Its interval runs to the day before the 2026 window,
    # 2026-06-20 - 60 = 2026-04-21, so 2026-04-20.
    plan = _plan("VA", "1955-06-20", "2025-05-01")
    bday = _row(plan, "birthday")
    assert (bday.status, bday.skip_reason) == ("skipped", "Birthday exclusion window for VA")
    pw = _row(plan, "post_window")
    assert (pw.event_date, pw.desired_date, pw.status) == (
        D("2025-06-20"),
        D("2025-08-20"),
        "pre-scheduled",
    )
    assert (pw.allowed_from, pw.allowed_to) == (D("2025-08-20"), D("2026-04-20"))


def test_virginia_after_the_change_uses_the_new_window_alone() -> None:
    # VA born 1955-09-10, today 2025-08-01: birthday 2025-09-10, desired 08-27 (live).
    # The 0-60 rule: window [2025-07-12, 2025-11-09] (09-10 - 60: Aug 31 + Jul 12..31 -> 07-12;
    # 09-10 + 60: 20 days to 09-30, 31 to 10-31, 9 -> 11-09). Post-window 2025-11-10.
    plan = _plan("VA", "1955-09-10", "2025-08-01")
    assert _row(plan, "birthday").skip_reason == "Birthday exclusion window for VA"
    assert _row(plan, "post_window").desired_date == D("2025-11-10")


# --- SPEC 5.3: Missouri's start date ---------------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "today", "status", "reason", "allowed_to"),
    [
        # Policy from 2027-09-20 anchors its own window: [09-20 - 30 - 60, 09-20 + 33]
        # = [2027-06-22, 2027-10-23]. Birthday 2027-09-20, desired 09-06: inside, skipped
        # (the old code anchored nothing before the first anniversary and sent it).
        ("1950-09-20", "2027-08-01", "skipped", "Effective date exclusion window for MO", None),
        # Birthday 2027-06-30, desired 06-16 (today 05-01 + 60 = 06-30: live): before the
        # window, allowed up to the day before it starts, 2027-06-21.
        ("1950-06-30", "2027-05-01", "pre-scheduled", None, D("2027-06-21")),
    ],
)
def test_missouri_window_anchored_on_the_effective_date(
    birth: str, today: str, status: str, reason: str | None, allowed_to: date | None
) -> None:
    plan = _plan("MO", birth, today, effective="2027-09-20")
    bday = _row(plan, "birthday")
    assert (bday.status, bday.skip_reason) == (status, reason)
    if allowed_to is not None:
        assert bday.allowed_to == allowed_to


def test_missouri_skip_on_the_start_date_gets_its_post_window_email() -> None:
    # As above: window [2027-06-22, 2027-10-23]; post-window 2027-10-24, event 2027-09-20
    # (the next anchor, 2028-09-20, starts its window on 2028-06-22).
    plan = _plan("MO", "1950-09-20", "2027-08-01", effective="2027-09-20")
    pw = _row(plan, "post_window")
    assert (pw.event_date, pw.desired_date) == (D("2027-09-20"), D("2027-10-24"))


def test_missouri_no_window_before_the_effective_date_lead() -> None:
    # Birthday 2027-06-20, desired 06-06, before the first window (from 06-22); no anchor
    # exists before 2027-09-20 (the old yearly anchor 2026-09-20 covered no day of 2027
    # either, this row shows the lower edge holds): pre-scheduled.
    plan = _plan("MO", "1950-06-20", "2027-05-01", effective="2027-09-20")
    assert _row(plan, "birthday").status == "pre-scheduled"


# --- SPEC 5.3: an annual period crossing the year end with the buffer ------------------------

ANNUAL_TEXT = """
[[rule]]
state = "TX"
kind = "annual_period"
from = "12-01"
to = "01-31"
note = "test: a period for everyone across the year end"
"""


@pytest.mark.parametrize(
    ("birth", "today", "status", "reason", "edge"),
    [
        # Occurrence 2026: [2026-12-01 - 60, 2027-01-31] = [2026-10-02, 2027-01-31]
        # (12-01 - 30 = 11-01, - 30 = 10-02). Birthday 2027-01-20, desired 2027-01-06
        # (≤ 2026-12-01 + 60 = 2027-01-30): inside the 2026 occurrence (the previous
        # year's), skipped; post-window 2027-02-01.
        ("1950-01-20", "2026-12-01", "skipped", "Annual exclusion period for TX", "2027-02-01"),
        # Birthday 2026-10-16, desired 10-02: the buffer's first day, skipped; post-window
        # after the period's end, 2027-02-01.
        ("1950-10-16", "2026-09-01", "skipped", "Annual exclusion period for TX", "2027-02-01"),
        # Birthday 2026-10-15, desired 10-01: the day before the buffer, sent; allowed up to
        # min(event 10-15, 10-01) = 10-01.
        ("1950-10-15", "2026-09-01", "pre-scheduled", None, "2026-10-01"),
        # Birthday 2027-02-15, desired 02-01: the day after the period, sent; allowed from
        # 02-01 (the period ends 01-31).
        ("1950-02-15", "2027-01-01", "pre-scheduled", None, "2027-02-01"),
    ],
)
def test_annual_period_across_the_year_end(
    birth: str, today: str, status: str, reason: str | None, edge: str
) -> None:
    # `edge`: the post-window date of a skipped email, else the allowed interval's bound
    # next to the period.
    plan = _plan("TX", birth, today, rules=parse_rules(ANNUAL_TEXT, "test"))
    bday = _row(plan, "birthday")
    assert (bday.status, bday.skip_reason) == (status, reason)
    if status == "skipped":
        assert _row(plan, "post_window").desired_date == D(edge)
    else:
        assert not _has(plan, "post_window")
        assert D(edge) in (bday.allowed_from, bday.allowed_to)


def test_annual_period_is_checked_after_the_anchored_rule() -> None:
    # CA birthday window [B - 90, B + 60] and an annual period of CA 03-01..03-31.
    # Born 1950-05-10, today 2026-03-15: birthday 2026-05-10, desired 04-26, inside the
    # birthday window [2026-02-09, 2026-07-09]: the birthday reason wins; the post-window
    # date 2026-07-10 is free of both.
    rules = parse_rules(
        """
[[rule]]
state = "CA"
kind = "birthday"
before_days = 30
after_days = 60
note = "test"

[[rule]]
state = "CA"
kind = "annual_period"
from = "03-01"
to = "03-31"
note = "test"
""",
        "test",
    )
    plan = _plan("CA", "1950-05-10", "2026-03-15", rules=rules)
    assert _row(plan, "birthday").skip_reason == "Birthday exclusion window for CA"
    assert _row(plan, "post_window").desired_date == D("2026-07-10")


def test_annual_period_with_ages_counts_the_age_on_its_first_day() -> None:
    # TX 06-01..06-30 for ages 65+. Born 1961-06-10: on 2026-06-01 aged 64 -> no period.
    # Born 1961-06-01: 65 on the first day -> birthday 2026-06-01, desired 05-18, inside
    # [06-01 - 60 = 04-02, 06-30]: skipped.
    rules = parse_rules(
        '[[rule]]\nstate = "TX"\nkind = "annual_period"\nfrom = "06-01"\nto = "06-30"\n'
        'min_age = 65\nnote = "test"\n',
        "test",
    )
    assert _row(_plan("TX", "1961-06-10", "2026-05-01", rules=rules), "birthday").status == (
        "pre-scheduled"
    )
    young_then_old = _plan("TX", "1961-06-01", "2026-05-01", rules=rules)
    assert _row(young_then_old, "birthday").skip_reason == "Annual exclusion period for TX"


# --- SPEC 15: New Mexico's month anchor and the age-65 boundary ------------------------------


@pytest.mark.parametrize(
    ("birth", "today", "status", "post_window"),
    [
        # Anchor 2026-08-01 (first of the birth month). Born 1961-08-15: aged 64 on the
        # anchor (65 only on 08-15), so no window: desired 08-01 is sent.
        ("1961-08-15", "2026-07-01", "pre-scheduled", None),
        # Born 1961-08-01: 65 on the anchor. Window [08-01 - 60, 08-01 + 60] =
        # [2026-06-02, 2026-09-30] (31 days of July, 29 of June; 30 of August, 30 of
        # September). Birthday desired 07-18: skipped; post-window 2026-10-01.
        ("1961-08-01", "2026-07-01", "skipped", "2026-10-01"),
        # Born 1960-08-15: 65 on 2026-08-01 (66 only on 08-15): desired 08-01, skipped.
        ("1960-08-15", "2026-07-01", "skipped", "2026-10-01"),
        # Before the law (from 2026-05-20): born 1950-05-25, birthday 2026-05-25, desired
        # 05-11 < 05-20: the rule does not apply by the desired date; sent.
        ("1950-05-25", "2026-04-01", "pre-scheduled", None),
    ],
)
def test_new_mexico_month_anchor_and_age_65(
    birth: str, today: str, status: str, post_window: str | None
) -> None:
    plan = _plan("NM", birth, today)
    bday = _row(plan, "birthday")
    assert bday.status == status
    if status == "skipped":
        assert bday.skip_reason == "Birthday exclusion window for NM"
        assert _row(plan, "post_window").desired_date == D(post_window or "")
    else:
        assert not _has(plan, "post_window")


def test_new_mexico_law_start_bounds_the_allowed_interval() -> None:
    # Born 1950-05-30, today 2026-05-01: anchor 2026-05-01 (first of May), window
    # [2026-03-02, 2026-06-30], but the law governs only from 2026-05-20 (a rule applies by
    # the desired date). Birthday 2026-05-30, desired 05-16 < 05-20: sent. Balancing may
    # not carry it into the new law's window: allowed_to = min(event 05-30, 05-19) = 05-19.
    plan = _plan("NM", "1950-05-30", "2026-05-01")
    bday = _row(plan, "birthday")
    assert (bday.status, bday.desired_date, bday.allowed_to) == (
        "pre-scheduled",
        D("2026-05-16"),
        D("2026-05-19"),
    )


def test_every_builtin_row_has_a_source_note_with_its_check_date() -> None:
    assert "NM" in BUILTIN.states()
    for rule in BUILTIN.rules:
        assert "2026-11" in rule.note, rule
        assert len(rule.note) > 40, rule


# --- SPEC 5.6: campaigns ----------------------------------------------------------------------


def _campaign_plan(today: str, inst: CampaignInstance, ctype: CampaignType) -> ContactPlan:
    contact = Contact(1, "pat@example.com", None, None, "TX", "75001")
    targeting = (ContactCampaign(1, inst.id, D("2026-04-05")),)
    data = ContactData(contact, targeting=targeting)
    return _plan("TX", None, today, data=data, campaigns=Campaigns({ctype.name: ctype}, (inst,)))


def test_targeted_email_raised_past_its_trigger_is_not_planned() -> None:
    # Trigger 2026-04-05, 7 days before -> 03-29, raised to active_start 04-10 > trigger.
    ctype = CampaignType("renewal", days_before_event=7)
    inst = CampaignInstance(5, "renewal", active_start_date=D("2026-04-10"))
    plan = _campaign_plan("2026-03-01", inst, ctype)
    assert plan.rows == ()
    assert any("after the trigger date" in note for note in plan.notes)


def test_targeted_email_raised_up_to_its_trigger_is_planned() -> None:
    # Raised to active_start 04-05 = the trigger: planned on 04-05, allowed to 04-05.
    ctype = CampaignType("renewal", days_before_event=7)
    inst = CampaignInstance(5, "renewal", active_start_date=D("2026-04-05"))
    row = _row(_campaign_plan("2026-03-01", inst, ctype), "campaign_renewal_5")
    assert (row.desired_date, row.allowed_to) == (D("2026-04-05"), D("2026-04-05"))


def test_campaign_interval_ends_at_active_end_date() -> None:
    # All-contacts type: sends on active_start 03-10; the instance ends 03-20, so balancing
    # may carry it at most to 03-20.
    ctype = CampaignType("aep", target_all_contacts=True)
    inst = CampaignInstance(4, "aep", active_start_date=D("2026-03-10"),
                            active_end_date=D("2026-03-20"))  # fmt: skip
    contact = Contact(1, "pat@example.com", None, None, "TX", "75001")
    plan = _plan(
        "TX", None, "2026-03-01", data=ContactData(contact),
        campaigns=Campaigns({"aep": ctype}, (inst,)),
    )  # fmt: skip
    row = _row(plan, "campaign_aep_4")
    assert (row.desired_date, row.allowed_to) == (D("2026-03-10"), D("2026-03-20"))


# --- SPEC 5.7: engagement counted from the send instant --------------------------------------


@pytest.mark.parametrize(
    ("click", "kind"),
    [
        # Sent 2026-05-01 15:00; a click at 09:00 the same day came before it: cold
        # (the old code counted the whole send date).
        ((date(2026, 5, 1), datetime(2026, 5, 1, 9, 0)), "followup_cold"),
        ((date(2026, 5, 1), datetime(2026, 5, 1, 15, 0)), "followup_clicked_no_hq"),
        ((date(2026, 5, 1), datetime(2026, 5, 1, 16, 30)), "followup_clicked_no_hq"),
        # A click without a time counts by date: on the send date.
        ((date(2026, 5, 1), None), "followup_clicked_no_hq"),
        ((date(2026, 4, 30), None), "followup_cold"),
    ],
)
def test_followup_engagement_from_the_send_instant(
    click: tuple[date, datetime | None], kind: str
) -> None:
    # Follow-up desired 2026-05-03 (sent + 2), today 2026-05-02.
    sent = HistoryEmail(1, "birthday", "sent", D("2026-05-01"), D("2026-05-15"),
                        send_at=datetime(2026, 5, 1, 15, 0))  # fmt: skip
    contact = Contact(1, "pat@example.com", None, None, "TX", None)
    data = ContactData(contact, history=(sent,), clicks=(Click(1, *click),))
    plan = _plan("TX", None, "2026-05-02", data=data)
    follow = [r for r in plan.rows if r.email_type.startswith("followup_")]
    assert [(r.email_type, r.desired_date) for r in follow] == [(kind, D("2026-05-03"))]
