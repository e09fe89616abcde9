"""Review dates (SPEC 5.11, invariant I3): hand-worked cases and a property test.

The property: for random contacts, plan(today) equals plan(d) for every day d
strictly between today and the review date. ``allowed_from`` is the one field
allowed to move: it is ``max(today, start of the exclusion-free run)``, so on
day d it must equal ``max(allowed_from on today, d)`` exactly; everything else,
``allowed_to`` included, must be identical. (The balancer clamps intervals to
its own *today*, so a stored ``allowed_from`` that lags behind is harmless.)
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.planning.contacts import ResolvedContact, resolve_contact
from service.planning.exclusion import allowed_interval, check_exclusion
from service.planning.model import (
    CampaignInstance,
    Campaigns,
    CampaignType,
    Click,
    Contact,
    ContactCampaign,
    ContactData,
    ContactEvent,
    ContactPlan,
    HistoryEmail,
)
from service.planning.params import PlanParams
from service.planning.plan import plan_contact
from service.planning.review import (
    caught_up_move,
    excluded_run_end,
    free_run_end,
    next_rule_change,
)
from service.planning.rules import RuleBook, StateRule, builtin_rules

D = date.fromisoformat
RULES = builtin_rules()
# The built-in table plus annual periods (SPEC 5.3): one across the year end with an
# age range, one coming into force in 2026, one beside MO's effective-date window.
WITH_ANNUAL = RuleBook(
    [
        *RULES.rules,
        StateRule("CA", "annual_period", min_age=70, period_from=(12, 15), period_to=(1, 20)),
        StateRule(
            "TX",
            "annual_period",
            effective_from=date(2026, 1, 1),
            period_from=(6, 1),
            period_to=(6, 30),
        ),
        StateRule("MO", "annual_period", period_from=(2, 29), period_to=(3, 10)),
    ]
)
SCAN_DAYS = 400


def _days(n: int) -> timedelta:
    return timedelta(days=n)


REVIEW_CASES = [
    # (birth, effective, state, today, review) -- no campaigns, no history.
    # Nothing dated: nothing can ever change.
    (None, None, "TX", "2026-01-01", None),
    # Birthday 05-20 (desired 05-06) enters the horizon on 05-06 - 60 = 03-07.
    ("1960-05-20", None, "TX", "2026-03-01", "2026-03-07"),
    # Live row desired 05-06 (TX has no windows): from 05-07 it is caught up and
    # only follows today (the catch-up move) until its event date 05-20.
    ("1960-05-20", None, "TX", "2026-04-01", "2026-05-21"),
    # Birthday and effective date: the earlier entry wins. ED 2010-04-10: A 2026-04-10,
    # desired 03-11, enters on 01-10; birthday enters on 03-07.
    ("1960-05-20", "2010-04-10", "TX", "2026-01-01", "2026-01-10"),
    # CA: the post-window email of 2026-06-15 (on 08-15) outlives the birthday; next
    # change is the day after it (the 2027 birthday enters the horizon on 2027-04-02).
    ("1955-06-15", None, "CA", "2026-06-20", "2026-08-16"),
    ("1955-06-15", None, "CA", "2026-08-16", "2027-04-02"),
]


@pytest.mark.parametrize(("birth", "effective", "state", "today", "review"), REVIEW_CASES)
def test_review_date(
    birth: str | None, effective: str | None, state: str, today: str, review: str | None
) -> None:
    contact = Contact(1, "pat@example.com", birth, effective, state, None)
    plan = plan_contact(ContactData(contact), Campaigns(), RULES, PlanParams(), D(today))
    assert plan.review_date == (D(review) if review else None)


def test_invalid_contact_is_never_reviewed() -> None:
    contact = Contact(1, "not an address", "1960-05-20", None, "TX", None)
    plan = plan_contact(ContactData(contact), Campaigns(), RULES, PlanParams(), D("2026-03-01"))
    assert (plan.rows, plan.review_date) == ((), None)
    assert plan.invalid is not None


def test_followup_reviewed_when_lookback_ends() -> None:
    # Followed-up already (follow-up sent 05-02): no row. Sent 05-01, lookback ends 06-05.
    history = (
        HistoryEmail(1, "birthday", "sent", D("2026-05-01")),
        HistoryEmail(1, "followup_cold", "sent", D("2026-05-03")),
    )
    contact = Contact(1, "pat@example.com", None, None, "TX", None)
    plan = plan_contact(
        ContactData(contact, history=history), Campaigns(), RULES, PlanParams(), D("2026-05-10")
    )
    assert plan.rows == ()
    assert plan.review_date is not None and plan.review_date <= D("2026-06-06")


# ---------------------------------------------------------------- property test

STATES = [None, "CA", "NV", "MO", "NY", "VA", "IL", "IN", "OR", "ID", "KY", "TX", "FL", "NM"]
HISTORY_TYPES = [
    "birthday", "effective_date", "post_window", "campaign_aep_1", "campaign_news_2",
    "campaign_promo_3", "followup_cold", "followup_hq_with_yes", "newsletter",
]  # fmt: skip
METADATA = [None, '{"has_medical_conditions": true}', '{"has_medical_conditions": false}', "{"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ContactData, Campaigns, PlanParams, date, RuleBook]:
    """A random contact with history, engagement, campaigns and targeting around today."""
    today = draw(st.dates(date(2025, 1, 1), date(2027, 12, 31)))

    def near(days: int) -> st.SearchStrategy[date]:
        return st.dates(today - _days(days), today + _days(days))

    leap_days = st.sampled_from([date(1952, 2, 29), date(1956, 2, 29), date(2020, 2, 29)])
    birth = draw(st.one_of(st.none(), st.dates(date(1940, 1, 1), today + _days(300)), leap_days))
    effective = draw(
        st.one_of(st.none(), st.dates(date(2015, 1, 1), today + _days(300)), leap_days)
    )
    cid = draw(st.integers(1, 10_000))
    contact = Contact(
        cid,
        "pat@example.com",
        birth.isoformat() if birth else draw(st.sampled_from([None, "1960-02-30"])),
        effective.isoformat() if effective else None,
        draw(st.sampled_from(STATES)),
        None,
        draw(st.sampled_from([None, "Humana", "Aetna"])),
        draw(st.booleans()),
    )
    history = draw(
        st.lists(
            st.builds(
                HistoryEmail,
                st.just(cid),
                st.sampled_from(HISTORY_TYPES),
                st.sampled_from(["sent", "delivered", "scheduled", "failed"]),
                st.one_of(st.none(), near(60)),
                st.one_of(st.none(), near(200)),
                st.sampled_from([None, 1, 2, 3]),
            ),
            max_size=4,
        )
    )
    clicks = draw(st.lists(st.builds(Click, st.just(cid), near(60)), max_size=2))
    events = draw(
        st.lists(
            st.builds(
                ContactEvent,
                st.just(cid),
                st.sampled_from(["eligibility_answered", "page_view"]),
                st.sampled_from(METADATA),
                near(60),
            ),
            max_size=2,
        )
    )
    types = {
        name: CampaignType(
            name,
            respect_exclusion_windows=draw(st.booleans()),
            enable_followups=draw(st.booleans()),
            days_before_event=draw(st.integers(0, 40)),
            target_all_contacts=draw(st.booleans()),
            priority=draw(st.integers(5, 45)),
            active=draw(st.sampled_from([True, True, True, False])),
            spread_evenly=draw(st.booleans()),
            skip_failed_underwriting=draw(st.booleans()),
        )
        for name in ("aep", "news", "promo")
    }
    optional = st.one_of(st.none(), near(200))
    instances = tuple(
        CampaignInstance(
            iid,
            draw(st.sampled_from(["aep", "news", "promo"])),
            email_template=f"t{iid}",
            active_start_date=draw(optional),
            active_end_date=draw(optional),
            spread_start_date=draw(optional),
            spread_end_date=draw(st.one_of(st.none(), near(200))),
            target_states=draw(st.sampled_from([None, "CA,TX", "ALL", "ny", ""])),
            target_carriers=draw(st.sampled_from([None, "humana", "ALL"])),
        )
        for iid in range(1, draw(st.integers(0, 3)) + 1)
    )
    targeting = draw(
        st.lists(
            st.builds(
                ContactCampaign,
                st.just(cid),
                st.integers(1, 3),
                st.one_of(st.none(), near(200)),
                st.sampled_from(["pending", "pending", "sent"]),
            ),
            max_size=3,
        )
    )
    params = PlanParams(
        horizon_days=draw(st.sampled_from([30, 60, 90])),
        enable_post_window_emails=draw(st.booleans()),
        exclude_failed_underwriting_global=draw(st.booleans()),
        send_without_zipcode_for_universal=draw(st.booleans()),
        effective_date_first_email_months=draw(st.sampled_from([0, 11, 13])),
        pre_window_buffer_days=draw(st.sampled_from([60, 60, 20])),
    )
    data = ContactData(contact, tuple(history), tuple(targeting), tuple(clicks), tuple(events))
    rules = draw(st.sampled_from([RULES, WITH_ANNUAL]))
    return data, Campaigns(types, instances), params, today, rules


def assert_same_plan(before: ContactPlan, after: ContactPlan, day: date) -> None:
    """``after`` (planned on ``day``) equals ``before`` moved to ``day`` by time
    alone: caught-up rows at ``day``, every lower bound at least ``day``."""
    assert after.invalid == before.invalid
    assert len(after.rows) == len(before.rows), (before.rows, after.rows)
    for old, new in zip(before.rows, after.rows, strict=True):
        low = old.allowed_from
        if old.desired_date < day:
            # Caught up by now (perhaps already on today).
            note = old.catchup_note or f"caught up from {old.desired_date.isoformat()}"
            expected = replace(
                old, desired_date=day, catchup_note=note, allowed_from=None if low is None else day
            )
        else:
            expected = replace(old, allowed_from=None if low is None else max(low, day))
        assert new == expected, (day, old, new)
    assert caught_up_move(before, day).rows == after.rows


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_plan_is_constant_until_review_date(
    scenario: tuple[ContactData, Campaigns, PlanParams, date, RuleBook],
) -> None:
    data, campaigns, params, today, rules = scenario
    first = plan_contact(data, campaigns, rules, params, today)
    if first.review_date is not None:
        assert first.review_date > today
    stop = today + _days(SCAN_DAYS)
    if first.review_date is not None and first.review_date < stop:
        stop = first.review_date
    day = today + _days(1)
    while day < stop:
        assert_same_plan(first, plan_contact(data, campaigns, rules, params, day), day)
        day += _days(1)


# ------------------------------------------- the catch-up move's exclusion ends

# Rules with law changes and ages, so rule changes and annual periods are met.
MOVING_RULES = RuleBook(
    [
        *WITH_ANNUAL.rules,
        StateRule("AR", "birthday", before_days=0, after_days=45, effective_to=date(2026, 3, 31)),
        StateRule("AR", "birthday", before_days=10, after_days=90, effective_from=date(2026, 4, 1)),
        StateRule("WI", "effective_date", before_days=5, after_days=40, min_age=66),
        StateRule("WI", "annual_period", period_from=(10, 1), period_to=(10, 20)),
    ]
)


@st.composite
def exclusion_days(draw: st.DrawFn) -> tuple[ResolvedContact, date, PlanParams]:
    today = draw(st.dates(date(2025, 1, 1), date(2027, 12, 31)))
    birth = draw(st.one_of(st.none(), st.dates(date(1940, 1, 1), date(1962, 12, 31))))
    effective = draw(st.one_of(st.none(), st.dates(date(2015, 1, 1), date(2026, 12, 31))))
    state = draw(st.sampled_from(["CA", "NV", "MO", "NY", "VA", "AR", "WI", "TX", "OR"]))
    contact = Contact(
        1,
        "pat@example.com",
        birth.isoformat() if birth else None,
        effective.isoformat() if effective else None,
        state,
        None,
    )
    params = PlanParams(pre_window_buffer_days=draw(st.sampled_from([0, 20, 60])))
    return resolve_contact(contact, today), today, params


@settings(max_examples=400, deadline=None)
@given(exclusion_days())
def test_exclusion_decision_constant_until_its_run_ends(
    case: tuple[ResolvedContact, date, PlanParams],
) -> None:
    """What the review date relies on for a caught-up row (its desired date is
    *today*): until the next rule change and the end the helpers report, the
    exclusion decision on each day is the one of ``today`` (a skipped row's
    reason and window end), or, for a free day, no window and the same end of
    the exclusion-free run (the row's ``allowed_to``)."""
    rc, today, params = case
    rules = MOVING_RULES
    assert rc.state is not None
    stop = next_rule_change(rules, rc.state, today, {}) or date.max
    exc = check_exclusion(rc, today, rules, params)
    if exc is not None:
        stop = min(stop, excluded_run_end(rc, today, exc, rules, params))
        want: object = (exc.reason, exc.year_round, exc.window_end)
    else:
        high = allowed_interval(rc, today, rules, params)[1]
        stop = min(stop, free_run_end(today, high, None))
        want = high
    assert stop > today
    day = today + _days(1)
    while day < min(stop, today + _days(SCAN_DAYS)):
        found = check_exclusion(rc, day, rules, params)
        if exc is not None:
            assert found is not None, day
            assert (found.reason, found.year_round, found.window_end) == want, day
        else:
            assert found is None, day
            assert allowed_interval(rc, day, rules, params)[1] == want, day
        day += _days(1)


def test_caught_up_row_waits_for_its_event() -> None:
    # TX has no rules. Birthday 1960-05-20, desired 05-20 - 14 = 05-06; on 05-10 it
    # is caught up (desired 05-10) and only follows today until its event date
    # 05-20: the plan differs from its catch-up move first on 05-21.
    contact = Contact(1, "pat@example.com", "1960-05-20", None, "TX", None)
    plan = plan_contact(ContactData(contact), Campaigns(), RULES, PlanParams(), D("2026-05-10"))
    assert [(r.email_type, r.desired_date, r.catchup_note) for r in plan.rows] == [
        ("birthday", D("2026-05-10"), "caught up from 2026-05-06")
    ]
    assert plan.review_date == D("2026-05-21")
    moved = caught_up_move(plan, D("2026-05-15"))
    assert moved.rows[0].desired_date == D("2026-05-15")
