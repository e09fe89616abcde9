"""plan_contact as a whole (SPEC 5, 6's allowed intervals): examples and properties."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.planning.contacts import resolve_contact
from service.planning.exclusion import check_exclusion
from service.planning.model import (
    CampaignInstance,
    Campaigns,
    CampaignType,
    Contact,
    ContactData,
    ContactPlan,
    HistoryEmail,
)
from service.planning.params import PlanParams
from service.planning.plan import campaign_config_errors, plan_contact
from service.planning.rules import RuleBook, builtin_rules
from tests.unit.test_review import scenarios

D = date.fromisoformat
RULES = builtin_rules()
Scenario = tuple[ContactData, Campaigns, PlanParams, date, RuleBook]
T = TypeVar("T")


def test_invalid_email_plans_nothing() -> None:
    contact = Contact(1, "pat at example", "1960-05-20", "2010-04-10", "TX", None)
    plan = plan_contact(ContactData(contact), Campaigns(), RULES, PlanParams(), D("2026-04-01"))
    assert plan.rows == ()
    assert plan.invalid is not None and "pat at example" in plan.invalid
    assert plan.review_date is None


def test_full_example() -> None:
    # CA contact 4, birthday 1955-06-15 (window [2026-03-17, 2026-08-14]), today 04-02:
    # - birthday 06-15: desired 06-01, in the window -> skipped, post-window on 08-15;
    # - two all-contacts campaigns on 05-01 (priority 30 and 20, not respecting windows):
    #   same day -> the priority-20 one stays, the other is skipped as a conflict;
    # - follow-up to the birthday email of last year? No: sent 2025-06-01 is far outside
    #   the 35-day lookback. Follow-up to the campaign email sent 03-30: desired 04-01,
    #   caught up to 04-02, inside the window -> skipped.
    types = {
        "aep": CampaignType("aep", respect_exclusion_windows=False, target_all_contacts=True),
        "promo": CampaignType(
            "promo", respect_exclusion_windows=False, target_all_contacts=True, priority=20
        ),
    }
    instances = (
        CampaignInstance(1, "aep", active_start_date=D("2026-05-01")),
        CampaignInstance(2, "promo", active_start_date=D("2026-05-01")),
    )
    history = (
        HistoryEmail(4, "birthday", "sent", D("2025-06-01"), D("2025-06-15")),
        HistoryEmail(4, "campaign_aep_9", "delivered", D("2026-03-30"), D("2026-03-30")),
    )
    contact = Contact(4, "pat@example.com", "1955-06-15", None, "CA", None)
    plan = plan_contact(
        ContactData(contact, history=history), Campaigns(types, instances), RULES, PlanParams(),
        D("2026-04-02"),
    )  # fmt: skip
    assert [
        (r.email_type, r.event_date.isoformat(), r.desired_date.isoformat(), r.skip_reason)
        for r in plan.rows
    ] == [
        ("birthday", "2026-06-15", "2026-06-01", "Birthday exclusion window for CA"),
        ("campaign_aep_1", "2026-05-01", "2026-05-01", "Campaign priority conflict on 2026-05-01"),
        ("campaign_promo_2", "2026-05-01", "2026-05-01", None),
        ("followup_cold", "2026-03-30", "2026-04-02", "Birthday exclusion window for CA"),
        ("post_window", "2026-06-15", "2026-08-15", None),
    ]
    # The caught-up follow-up moves daily: reviewed tomorrow.
    assert plan.review_date == D("2026-04-03")
    assert campaign_config_errors(Campaigns(types, instances)) == []


def _check_intervals(scenario: Scenario, plan: ContactPlan) -> None:
    data, campaigns, params, today, rules = scenario
    rc = resolve_contact(data.contact, today)
    instances = {inst.id: inst for inst in campaigns.instances}
    for row in plan.rows:
        if row.status == "skipped":
            assert (row.allowed_from, row.allowed_to) == (None, None)
            continue
        low, high = row.allowed_from, row.allowed_to
        assert low is not None and today <= low <= row.desired_date
        assert high is None or row.desired_date <= high
        # Post-window emails are never checked, but never moved into a window (SPEC 5.5).
        checked = row.email_type in (
            "birthday", "effective_date", "post_window"
        ) or row.email_type.startswith("followup_")  # fmt: skip
        if row.email_type in ("birthday", "effective_date"):
            assert high is not None and high <= row.event_date
        if row.campaign_instance_id is not None:
            inst = instances[row.campaign_instance_id]
            ctype = campaigns.types[inst.campaign_type]
            checked = ctype.respect_exclusion_windows
            if inst.active_end_date is not None:
                assert high is not None and high <= inst.active_end_date
            if not ctype.target_all_contacts and row.event_date != row.desired_date:
                assert high is not None and high <= row.event_date
        if checked:
            last = high if high is not None else low + timedelta(days=400)
            day = low
            while day <= last:
                assert check_exclusion(rc, day, rules, params) is None, (row, day)
                day += timedelta(days=1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_allowed_intervals_never_break_a_rule(scenario: Scenario) -> None:
    data, campaigns, params, today, rules = scenario
    plan = plan_contact(data, campaigns, rules, params, today)
    keys = [(r.email_type, r.event_date) for r in plan.rows]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    _check_intervals(scenario, plan)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_input_order(
    scenario: Scenario, rnd: random.Random
) -> None:
    data, campaigns, params, today, rules = scenario
    first = plan_contact(data, campaigns, rules, params, today)
    assert plan_contact(data, campaigns, rules, params, today) == first

    def shuffled(items: tuple[T, ...]) -> tuple[T, ...]:
        out = list(items)
        rnd.shuffle(out)
        return tuple(out)

    reordered = ContactData(
        data.contact,
        shuffled(data.history),
        shuffled(data.targeting),
        shuffled(data.clicks),
        shuffled(data.events),
    )
    assert plan_contact(reordered, campaigns, rules, params, today) == first
