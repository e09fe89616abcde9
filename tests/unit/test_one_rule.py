"""One rule, one meaning: the planner's inlined fast paths agree with the named rules.

The Feb 29 rule (SPEC 5.1) and the age on an anchor (SPEC 15) are written once
in :mod:`service.planning.dates` (``anniversary``, ``age_on``); the
per-contact loops of the anniversary planner and of the exclusion check carry
inlined copies for speed. These properties hold the copies to the named rules
through the planner's observable results.
"""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from service.planning.contacts import resolve_contact
from service.planning.dates import age_on, anniversary
from service.planning.exclusion import check_exclusion
from service.planning.model import BIRTHDAY, EFFECTIVE_DATE, Campaigns, Contact, ContactData
from service.planning.params import PlanParams
from service.planning.plan import plan_contact
from service.planning.rules import builtin_rules

RULES = builtin_rules()
PARAMS = PlanParams(horizon_days=400)

# Feb 29 is drawn often: it is the case the copies exist for.
BIRTHS = st.one_of(
    st.dates(date(1930, 1, 1), date(1962, 12, 31)),
    st.sampled_from([date(y, 2, 29) for y in (1936, 1944, 1952, 1960)]),
)
TODAYS = st.dates(date(2025, 1, 1), date(2031, 12, 31))


def _contact(birth: date, effective: date | None = None, state: str = "TX") -> Contact:
    return Contact(
        1,
        "a@example.com",
        birth.isoformat(),
        None if effective is None else effective.isoformat(),
        state,
        None,
    )


@settings(max_examples=300)
@given(birth=BIRTHS, today=TODAYS)
def test_birthday_event_dates_are_the_named_anniversary(birth: date, today: date) -> None:
    plan = plan_contact(ContactData(_contact(birth)), Campaigns(), RULES, PARAMS, today)
    events = [r.event_date for r in plan.rows if r.email_type == BIRTHDAY]
    assert events, "a 400-day horizon always holds a birthday"
    for event in events:
        assert event == anniversary(birth, event.year)


@settings(max_examples=300)
@given(
    effective=st.one_of(
        st.dates(date(2000, 1, 1), date(2024, 12, 31)),
        st.sampled_from([date(2008, 2, 29), date(2016, 2, 29), date(2020, 2, 29)]),
    ),
    today=TODAYS,
)
def test_policy_anniversaries_are_the_named_anniversary(effective: date, today: date) -> None:
    contact = _contact(date(1950, 6, 1), effective)
    plan = plan_contact(ContactData(contact), Campaigns(), RULES, PARAMS, today)
    for row in plan.rows:
        if row.email_type == EFFECTIVE_DATE:
            assert row.event_date == anniversary(effective, row.event_date.year)
            assert row.event_date > effective


@settings(max_examples=300)
@given(birth=BIRTHS, offset=st.integers(-120, 120), year=st.integers(2026, 2031))
def test_window_anchors_are_the_named_anniversary(birth: date, offset: int, year: int) -> None:
    # California: 30 days before to 60 after the birthday, no ages (SPEC 15);
    # with the 60-day buffer a window covers [A - 90, A + 60].
    rc = resolve_contact(_contact(birth, state="CA"), date(year, 1, 1))
    anchor = anniversary(birth, year)
    day = anchor + timedelta(days=offset)
    found = check_exclusion(rc, day, RULES, PlanParams())
    inside = -90 <= offset <= 60
    if inside:
        assert found is not None
        assert found.anchor is not None
        assert found.anchor == anniversary(birth, found.anchor.year)
    if found is not None and found.anchor is not None:
        assert found.anchor == anniversary(birth, found.anchor.year)
        assert found.window_start == found.anchor - timedelta(days=90)
        assert found.window_end == found.anchor + timedelta(days=60)


@settings(max_examples=300)
@given(birth=BIRTHS, year=st.integers(2026, 2031))
def test_age_ranges_use_the_named_age(birth: date, year: int) -> None:
    # Illinois: 0 before, 45 after the birthday, ages 65 to 75 on the anchor
    # (SPEC 15). The birthday itself is inside any window it anchors.
    rc = resolve_contact(_contact(birth, state="IL"), date(year, 1, 1))
    anchor = anniversary(birth, year)
    found = check_exclusion(rc, anchor, RULES, PlanParams())
    assert (found is not None) == (65 <= age_on(birth, anchor) <= 75)


@settings(max_examples=300)
@given(birth=BIRTHS, year=st.integers(2027, 2031))
def test_month_anchored_age_ranges_use_the_named_age(birth: date, year: int) -> None:
    # New Mexico: windows anchored on the first of the birth month, 0 before and
    # 60 after, ages 65 and over on the anchor, in force from 2026-05-20 (SPEC 15).
    rc = resolve_contact(_contact(birth, state="NM"), date(year, 1, 1))
    anchor = date(year, birth.month, 1)
    found = check_exclusion(rc, anchor, RULES, PlanParams())
    assert (found is not None) == (age_on(birth, anchor) >= 65)
    if found is not None:
        assert found.anchor == anchor
