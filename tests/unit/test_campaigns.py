"""Campaign emails (SPEC 5.6, 5.10), worked out by hand.

Unless a case says otherwise: today 2026-09-01 (horizon end 10-31), contact 7
in TX (no state rule), carrier Humana, no birth or effective date.
"""

from __future__ import annotations

from datetime import date

import pytest

from service.planning.campaigns import campaign_config_errors
from service.planning.model import (
    CampaignInstance,
    Campaigns,
    CampaignType,
    Contact,
    ContactCampaign,
    ContactData,
    ContactPlan,
    HistoryEmail,
)
from service.planning.params import PlanParams
from service.planning.plan import plan_contact
from service.planning.rules import builtin_rules

D = date.fromisoformat
RULES = builtin_rules()
TODAY = "2026-09-01"

ALL = CampaignType("aep", target_all_contacts=True, priority=30)
SPREAD = CampaignType("spread", target_all_contacts=True, spread_evenly=True)
TARGETED = CampaignType("renewal", days_before_event=30, priority=25)


def _contact(
    cid: int = 7,
    state: str | None = "TX",
    carrier: str | None = "Humana",
    birth: str | None = None,
    failed: bool = False,
) -> Contact:
    return Contact(cid, "pat@example.com", birth, None, state, None, carrier, failed)


def _plan(
    ctype: CampaignType,
    inst: CampaignInstance,
    contact: Contact | None = None,
    triggers: tuple[tuple[str | None, str], ...] = (),
    params: PlanParams | None = None,
    today: str = TODAY,
    history: tuple[HistoryEmail, ...] = (),
) -> ContactPlan:
    contact = contact or _contact()
    targeting = tuple(
        ContactCampaign(contact.id, inst.id, D(t) if t else None, status) for t, status in triggers
    )
    data = ContactData(contact, history=history, targeting=targeting)
    campaigns = Campaigns({ctype.name: ctype}, (inst,))
    return plan_contact(data, campaigns, RULES, params or PlanParams(), D(today))


def _campaign_rows(plan: ContactPlan) -> list[tuple[str, str, str, str]]:
    return [
        (r.email_type, r.event_date.isoformat(), r.desired_date.isoformat(), r.status)
        for r in plan.rows
        if r.email_type.startswith("campaign_")
    ]


@pytest.mark.parametrize(
    ("cid", "desired"),
    [
        # span = (10-10 - 10-01) + 1 = 10 days; desired = 10-01 + (id mod 10).
        (7, "2026-10-08"),
        (23, "2026-10-04"),
        (10, "2026-10-01"),
        (19, "2026-10-10"),
    ],
)
def test_spread(cid: int, desired: str) -> None:
    inst = CampaignInstance(
        1, "spread", email_template="spread_tpl", spread_start_date=D("2026-10-01"),
        spread_end_date=D("2026-10-10"), active_end_date=D("2026-10-31"),
    )  # fmt: skip
    plan = _plan(SPREAD, inst, _contact(cid))
    (row,) = plan.rows
    # All-contacts: the event date is the computed date.
    assert (row.email_type, row.event_date, row.desired_date) == (
        "campaign_spread_1", D(desired), D(desired),
    )  # fmt: skip
    assert (row.priority, row.template, row.campaign_instance_id) == (30, "spread_tpl", 1)
    assert (row.allowed_from, row.allowed_to) == (D(TODAY), D("2026-10-31"))


def test_spread_date_after_end_plans_nothing() -> None:
    inst = CampaignInstance(
        1, "spread", spread_start_date=D("2026-10-01"), spread_end_date=D("2026-10-10"),
        active_end_date=D("2026-10-05"),
    )  # fmt: skip
    assert _plan(SPREAD, inst).rows == ()  # contact 7 -> 10-08 > 10-05


def test_targeted() -> None:
    # trigger 10-15 - 30 days = 09-15; event date = trigger; bounded by the trigger.
    inst = CampaignInstance(2, "renewal", email_template="renewal_tpl")
    (row,) = _plan(TARGETED, inst, triggers=(("2026-10-15", "pending"),)).rows
    assert (row.email_type, row.event_date, row.desired_date, row.status) == (
        "campaign_renewal_2", D("2026-10-15"), D("2026-09-15"), "pre-scheduled",
    )  # fmt: skip
    assert (row.priority, row.template) == (25, "renewal_tpl")
    assert (row.allowed_from, row.allowed_to) == (D(TODAY), D("2026-10-15"))


def test_targeted_interval_ends_at_active_end_if_earlier() -> None:
    inst = CampaignInstance(2, "renewal", active_end_date=D("2026-10-10"))
    (row,) = _plan(TARGETED, inst, triggers=(("2026-10-15", "pending"),)).rows
    assert row.allowed_to == D("2026-10-10")


@pytest.mark.parametrize(
    ("triggers", "expected"),
    [
        ((("2026-10-15", "sent"),), []),  # not pending
        ((("2026-10-15", "pending"), ("2026-10-15", "pending")), ["2026-10-15"]),  # duplicate
        ((("2026-10-20", "pending"), ("2026-10-15", "pending")), ["2026-10-15", "2026-10-20"]),
        ((("2026-08-31", "pending"),), []),  # trigger passed (today > trigger)
        ((("2026-09-01", "pending"),), ["2026-09-01"]),  # last live day, caught up
    ],
)
def test_targeting_rows(triggers: tuple[tuple[str, str], ...], expected: list[str]) -> None:
    inst = CampaignInstance(2, "renewal")
    plan = _plan(TARGETED, inst, triggers=triggers)
    assert [r.event_date.isoformat() for r in plan.rows] == expected


def test_targeted_without_trigger_is_noted() -> None:
    inst = CampaignInstance(2, "renewal")
    plan = _plan(TARGETED, inst, triggers=((None, "pending"),))
    assert plan.rows == ()
    assert any("without a trigger date" in n for n in plan.notes)


def test_all_contacts_sends_on_start_date() -> None:
    inst = CampaignInstance(
        3, "aep", active_start_date=D("2026-09-20"), active_end_date=D("2026-12-07")
    )
    (row,) = _plan(ALL, inst).rows
    assert (row.email_type, row.event_date, row.desired_date) == (
        "campaign_aep_3", D("2026-09-20"), D("2026-09-20"),
    )  # fmt: skip
    # Not a targeted campaign: bounded by the instance's end, not by its event date.
    assert (row.allowed_from, row.allowed_to) == (D(TODAY), D("2026-12-07"))


def test_raised_to_start() -> None:
    # 10-15 - 30 = 09-15 < start 09-25 -> 09-25; the event date stays the trigger.
    inst = CampaignInstance(2, "renewal", active_start_date=D("2026-09-25"))
    (row,) = _plan(TARGETED, inst, triggers=(("2026-10-15", "pending"),)).rows
    assert (row.event_date, row.desired_date) == (D("2026-10-15"), D("2026-09-25"))


def test_raised_past_trigger_is_not_planned() -> None:
    inst = CampaignInstance(2, "renewal", active_start_date=D("2026-10-20"))
    plan = _plan(TARGETED, inst, triggers=(("2026-10-15", "pending"),))
    assert plan.rows == ()
    assert any("after the trigger date" in n for n in plan.notes)


@pytest.mark.parametrize(
    ("start", "end", "trigger"),
    [
        (None, "2026-11-30", "2026-12-31"),  # 12-31 - 30 = 12-01 > end 11-30
        ("2026-08-01", "2026-08-31", "2026-09-15"),  # ended yesterday
    ],
)
def test_after_end_nothing(start: str | None, end: str, trigger: str) -> None:
    inst = CampaignInstance(
        2, "renewal", active_start_date=D(start) if start else None, active_end_date=D(end)
    )
    assert _plan(TARGETED, inst, triggers=((trigger, "pending"),)).rows == ()


def test_catch_up() -> None:
    inst = CampaignInstance(
        3, "aep", active_start_date=D("2026-08-15"), active_end_date=D("2026-12-31")
    )
    (row,) = _plan(ALL, inst).rows
    assert (row.event_date, row.desired_date, row.catchup_note) == (
        D("2026-08-15"), D(TODAY), "caught up from 2026-08-15",
    )  # fmt: skip


def test_beyond_horizon_is_reviewed_when_it_enters() -> None:
    inst = CampaignInstance(3, "aep", active_start_date=D("2026-12-01"))
    plan = _plan(ALL, inst)
    assert plan.rows == ()
    assert plan.review_date == D("2026-10-02")  # 12-01 - 60 days


def test_no_date_is_a_config_error_and_plans_nothing() -> None:
    inst = CampaignInstance(3, "aep", instance_name="AEP 2026")
    assert _plan(ALL, inst).rows == ()
    (error,) = campaign_config_errors(Campaigns({"aep": ALL}, (inst,)))
    assert error.startswith("campaign instance 3 (AEP 2026): yields no send date")


def test_config_errors() -> None:
    types = {"aep": ALL, "spread": SPREAD, "renewal": TARGETED}
    instances = (
        CampaignInstance(9, "nope"),
        CampaignInstance(
            8, "renewal", active_start_date=D("2026-10-01"), active_end_date=D("2026-09-01")
        ),
        CampaignInstance(
            7, "spread", spread_start_date=D("2026-10-10"), spread_end_date=D("2026-10-01")
        ),
        CampaignInstance(6, "aep", errors=("active_end_date 'soon' is not a date",)),
        CampaignInstance(5, "renewal"),  # targeted: the date comes from the trigger: fine
    )
    errors = campaign_config_errors(Campaigns(types, instances))
    assert [e.split(":")[0] for e in errors] == [
        "campaign instance 6",  # its own error ...
        "campaign instance 6",  # ... and no date (the unreadable end is None)
        "campaign instance 7",
        "campaign instance 8",
        "campaign instance 9",
    ]
    assert "unknown campaign type 'nope'" in errors[-1]
    assert "before active_start_date" in errors[-2]
    assert "before spread_start_date" in errors[-3]


def test_instance_with_unreadable_dates_plans_nothing() -> None:
    inst = CampaignInstance(3, "aep", active_start_date=D("2026-09-20"), errors=("bad",))
    assert _plan(ALL, inst).rows == ()


def test_inactive_type_plans_nothing() -> None:
    inactive = CampaignType("aep", target_all_contacts=True, active=False)
    inst = CampaignInstance(3, "aep", active_start_date=D("2026-09-20"))
    assert _plan(inactive, inst).rows == ()


TARGET_CASES = [
    # (target_states, target_carriers, state, carrier, send_without_zipcode, recipient)
    (None, None, "TX", None, True, True),
    ("ca, tx", None, "TX", None, True, True),  # case and spaces ignored
    ("CA", None, "TX", None, True, False),
    ("ALL", None, "TX", None, True, True),
    ("", "", "TX", None, True, True),
    (None, "Aetna,humana", "TX", "HUMANA", True, True),
    (None, "Aetna", "TX", "Humana", True, False),
    (None, "Aetna", "TX", None, True, False),
    ("TX", "Humana", "TX", "humana", True, True),
    # Without location: universal campaigns take them only with the flag (SPEC 14) ...
    (None, None, None, None, True, True),
    (None, None, None, None, False, False),
    ("ALL", "all", None, None, False, False),
    # ... and targeted ones never (they need the location).
    ("CA", None, None, None, True, False),
    (None, "Humana", None, "Humana", True, False),
    # With location, the flag does not matter.
    (None, None, "TX", None, False, True),
]


@pytest.mark.parametrize(("states", "carriers", "state", "carrier", "flag", "in_"), TARGET_CASES)
def test_all_contacts_targeting(
    states: str | None,
    carriers: str | None,
    state: str | None,
    carrier: str | None,
    flag: bool,
    in_: bool,
) -> None:
    inst = CampaignInstance(
        3, "aep", active_start_date=D("2026-09-20"), target_states=states, target_carriers=carriers
    )
    params = PlanParams(send_without_zipcode_for_universal=flag)
    plan = _plan(ALL, inst, _contact(state=state, carrier=carrier), params=params)
    assert len(plan.rows) == (1 if in_ else 0)


def test_targeting_lists_do_not_apply_to_targeted_types() -> None:
    inst = CampaignInstance(2, "renewal", target_states="CA")
    assert len(_plan(TARGETED, inst, triggers=(("2026-10-15", "pending"),)).rows) == 1


FAILED_CASES = [
    # (type name, type skips failed underwriting, global flag, failed, expected reason)
    ("aep", False, True, True, None),  # aep is exempt from the global rule
    ("news", False, True, True, "Failed underwriting"),
    ("news", True, False, True, "Failed underwriting (the campaign type skips it)"),
    ("aep", True, True, True, "Failed underwriting (the campaign type skips it)"),
    ("news", True, True, False, None),  # contact did not fail underwriting
    ("news", False, False, True, None),
]


@pytest.mark.parametrize(("name", "type_skips", "glob", "failed", "reason"), FAILED_CASES)
def test_failed_underwriting(
    name: str, type_skips: bool, glob: bool, failed: bool, reason: str | None
) -> None:
    ctype = CampaignType(name, target_all_contacts=True, skip_failed_underwriting=type_skips)
    inst = CampaignInstance(3, name, active_start_date=D("2026-09-20"))
    params = PlanParams(exclude_failed_underwriting_global=glob)
    (row,) = _plan(ctype, inst, _contact(failed=failed), params=params).rows
    assert row.skip_reason == reason
    assert row.status == ("skipped" if reason else "pre-scheduled")


@pytest.mark.parametrize(
    ("respect", "status", "reason", "allowed"),
    [
        # CA birthday 1955-10-15: window [2026-07-17, 2026-12-14] holds 09-20.
        (True, "skipped", "Birthday exclusion window for CA", (None, None)),
        (False, "pre-scheduled", None, (D(TODAY), D("2026-12-31"))),
    ],
)
def test_exclusion_windows_if_type_respects_them(
    respect: bool, status: str, reason: str | None, allowed: tuple[date | None, date | None]
) -> None:
    ctype = CampaignType("aep", target_all_contacts=True, respect_exclusion_windows=respect)
    inst = CampaignInstance(
        3, "aep", active_start_date=D("2026-09-20"), active_end_date=D("2026-12-31")
    )
    plan = _plan(ctype, inst, _contact(state="CA", birth="1955-10-15"))
    (row,) = [r for r in plan.rows if r.email_type == "campaign_aep_3"]
    assert (row.status, row.skip_reason, (row.allowed_from, row.allowed_to)) == (
        status, reason, allowed,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("birth", "today", "start", "allowed"),
    [
        # CA birthday 03-15: windows [2025-12-15, 2026-05-14] and [2026-12-15, 2027-05-14];
        # 09-20 lies in the free run [05-15, 12-14]: from today, to 12-14 (< end 12-31).
        ("1955-03-15", TODAY, "2026-09-20", ("2026-09-01", "2026-12-14")),
        # CA birthday 06-15: window [03-17, 08-14] holds today (07-01); desired 08-20 is
        # after it: the run starts on 08-15 and reaches the 2027 window (03-17): end 12-31.
        ("1955-06-15", "2026-07-01", "2026-08-20", ("2026-08-15", "2026-12-31")),
    ],
)
def test_allowed_interval_from_exclusion_run(
    birth: str, today: str, start: str, allowed: tuple[str, str]
) -> None:
    inst = CampaignInstance(3, "aep", active_start_date=D(start), active_end_date=D("2026-12-31"))
    plan = _plan(ALL, inst, _contact(state="CA", birth=birth), today=today)
    (row,) = [r for r in plan.rows if r.email_type == "campaign_aep_3"]
    assert row.status == "pre-scheduled"
    assert (row.allowed_from, row.allowed_to) == (D(allowed[0]), D(allowed[1]))


def test_sent_campaign_is_not_planned_again() -> None:
    inst = CampaignInstance(3, "aep", active_start_date=D("2026-08-20"))
    sent = HistoryEmail(7, "campaign_aep_3", "sent", D("2026-08-20"), D("2026-08-20"), 3)
    plan = _plan(ALL, inst, history=(sent,))
    assert _campaign_rows(plan) == []


def test_one_row_per_identity() -> None:
    # Spread targeted type: the row without trigger plans nothing; the row triggered on
    # 10-08 is sent on its spread date 10-01 + (7 mod 10) = 10-08: exactly one row.
    ctype = CampaignType("renewal", spread_evenly=True)
    inst = CampaignInstance(
        2, "renewal", spread_start_date=D("2026-10-01"), spread_end_date=D("2026-10-10")
    )
    plan = _plan(ctype, inst, triggers=((None, "pending"), ("2026-10-08", "pending")))
    assert _campaign_rows(plan) == [
        ("campaign_renewal_2", "2026-10-08", "2026-10-08", "pre-scheduled")
    ]
