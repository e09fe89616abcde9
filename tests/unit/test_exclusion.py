"""Exclusion windows and the allowed interval (SPEC 5.3, 6, 15).

Expected dates are worked out by hand. Day-of-year helps: in 2026 (not leap)
the days before each month are Jan 0, Feb 31, Mar 59, Apr 90, May 120, Jun 151,
Jul 181, Aug 212, Sep 243, Oct 273, Nov 304, Dec 334; so 2026-06-15 is day 166
and 2026-06-01 day 152. In 2024 (leap) add one from March: 2024-06-15 is day 167.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.planning.contacts import ResolvedContact, resolve_contact
from service.planning.dates import age_on, anniversary
from service.planning.exclusion import Exclusion, allowed_interval, check_exclusion
from service.planning.model import Contact
from service.planning.params import PlanParams
from service.planning.rules import RuleBook, StateRule, builtin_rules

BOOK = builtin_rules()
P60 = PlanParams()  # pre_window_buffer_days = 60, the default
P0 = PlanParams(pre_window_buffer_days=0)


def _rc(
    state: str | None, birth: date | None = None, effective: date | None = None
) -> ResolvedContact:
    return ResolvedContact(
        id=1,
        email_ok=True,
        problems=(),
        birth_date=birth,
        effective_date=effective,
        state=state,
        state_source="state" if state else None,
        timezone=None,
        has_location=state is not None,
        carrier=None,
        failed_underwriting=False,
    )


BIRTH = date(1955, 6, 15)  # 71 on 2026-06-15: inside IL's 65-75 and IN's 65+
POLICY = date(2020, 6, 15)  # MO anniversary 2026-06-15

# (state, params, day before the window, first day, last day, day after, anchor)
# first = anchor - before - buffer, last = anchor + after (day-of-year arithmetic).
WINDOWS = [
    # CA 30/60: 166-90 = 76 -> Mar 17; 166+60 = 226 -> Aug 14; buffer 0: 166-30 = 136 -> May 16
    ("CA", P60, date(2026, 3, 16), date(2026, 3, 17), date(2026, 8, 14), date(2026, 8, 15)),
    ("CA", P0, date(2026, 5, 15), date(2026, 5, 16), date(2026, 8, 14), date(2026, 8, 15)),
    # ID 0/63: 166-60 = 106 -> Apr 16; 166+63 = 229 -> Aug 17
    ("ID", P60, date(2026, 4, 15), date(2026, 4, 16), date(2026, 8, 17), date(2026, 8, 18)),
    ("ID", P0, date(2026, 6, 14), date(2026, 6, 15), date(2026, 8, 17), date(2026, 8, 18)),
    # IL 0/45: 166+45 = 211 -> Jul 30
    ("IL", P60, date(2026, 4, 15), date(2026, 4, 16), date(2026, 7, 30), date(2026, 7, 31)),
    ("IL", P0, date(2026, 6, 14), date(2026, 6, 15), date(2026, 7, 30), date(2026, 7, 31)),
    # IN 0/60: 166+60 = 226 -> Aug 14
    ("IN", P60, date(2026, 4, 15), date(2026, 4, 16), date(2026, 8, 14), date(2026, 8, 15)),
    ("IN", P0, date(2026, 6, 14), date(2026, 6, 15), date(2026, 8, 14), date(2026, 8, 15)),
    # KY 0/60
    ("KY", P60, date(2026, 4, 15), date(2026, 4, 16), date(2026, 8, 14), date(2026, 8, 15)),
    ("KY", P0, date(2026, 6, 14), date(2026, 6, 15), date(2026, 8, 14), date(2026, 8, 15)),
    # LA 0/63
    ("LA", P60, date(2026, 4, 15), date(2026, 4, 16), date(2026, 8, 17), date(2026, 8, 18)),
    ("LA", P0, date(2026, 6, 14), date(2026, 6, 15), date(2026, 8, 17), date(2026, 8, 18)),
    # MD 0/30: 166+30 = 196 -> Jul 15
    ("MD", P60, date(2026, 4, 15), date(2026, 4, 16), date(2026, 7, 15), date(2026, 7, 16)),
    ("MD", P0, date(2026, 6, 14), date(2026, 6, 15), date(2026, 7, 15), date(2026, 7, 16)),
    # NV 0/60 anchored on Jun 1 (day 152): 152-60 = 92 -> Apr 2; 152+60 = 212 -> Jul 31
    ("NV", P60, date(2026, 4, 1), date(2026, 4, 2), date(2026, 7, 31), date(2026, 8, 1)),
    ("NV", P0, date(2026, 5, 31), date(2026, 6, 1), date(2026, 7, 31), date(2026, 8, 1)),
    # OK 0/60
    ("OK", P60, date(2026, 4, 15), date(2026, 4, 16), date(2026, 8, 14), date(2026, 8, 15)),
    ("OK", P0, date(2026, 6, 14), date(2026, 6, 15), date(2026, 8, 14), date(2026, 8, 15)),
    # OR 30/31: start as CA; 166+31 = 197 -> Jul 16
    ("OR", P60, date(2026, 3, 16), date(2026, 3, 17), date(2026, 7, 16), date(2026, 7, 17)),
    ("OR", P0, date(2026, 5, 15), date(2026, 5, 16), date(2026, 7, 16), date(2026, 7, 17)),
    # UT 0/60
    ("UT", P60, date(2026, 4, 15), date(2026, 4, 16), date(2026, 8, 14), date(2026, 8, 15)),
    ("UT", P0, date(2026, 6, 14), date(2026, 6, 15), date(2026, 8, 14), date(2026, 8, 15)),
    # VA from 2025-07-01: 0/60
    ("VA", P60, date(2026, 4, 15), date(2026, 4, 16), date(2026, 8, 14), date(2026, 8, 15)),
    ("VA", P0, date(2026, 6, 14), date(2026, 6, 15), date(2026, 8, 14), date(2026, 8, 15)),
    # VA up to 2025-06-30: 0/30, seen in 2024 (leap, 2024-06-15 = day 167):
    # 167-60 = 107 -> Apr 16 (Apr starts after day 91); 167+30 = 197 -> Jul 15 (after 182)
    ("VA", P60, date(2024, 4, 15), date(2024, 4, 16), date(2024, 7, 15), date(2024, 7, 16)),
    ("VA", P0, date(2024, 6, 14), date(2024, 6, 15), date(2024, 7, 15), date(2024, 7, 16)),
    # WY 0/63
    ("WY", P60, date(2026, 4, 15), date(2026, 4, 16), date(2026, 8, 17), date(2026, 8, 18)),
    ("WY", P0, date(2026, 6, 14), date(2026, 6, 15), date(2026, 8, 17), date(2026, 8, 18)),
    # MO 30/33 on the policy anniversary 2026-06-15: 166-90 -> Mar 17; 166+33 = 199 -> Jul 18
    ("MO", P60, date(2026, 3, 16), date(2026, 3, 17), date(2026, 7, 18), date(2026, 7, 19)),
    ("MO", P0, date(2026, 5, 15), date(2026, 5, 16), date(2026, 7, 18), date(2026, 7, 19)),
]


@pytest.mark.parametrize(("state", "params", "before", "first", "last", "after"), WINDOWS)
def test_window_edges(
    state: str, params: PlanParams, before: date, first: date, last: date, after: date
) -> None:
    c = _rc(state, BIRTH, POLICY)
    anchor = date(first.year, 6, 1) if state == "NV" else date(first.year, 6, 15)
    kind = "Effective date" if state == "MO" else "Birthday"
    expected = Exclusion(f"{kind} exclusion window for {state}", False, first, last, anchor)
    for inside in (first, anchor, last):
        assert check_exclusion(c, inside, BOOK, params) == expected, inside
    for outside in (before, after):
        assert check_exclusion(c, outside, BOOK, params) is None, outside


@pytest.mark.parametrize("state", ["CT", "MA", "NY", "WA"])
@pytest.mark.parametrize("day", [date(2026, 1, 1), date(2026, 6, 15), date(2027, 12, 31)])
def test_year_round(state: str, day: date) -> None:
    expected = Exclusion(f"Year-round exclusion for {state}", True, None, None, None)
    assert check_exclusion(_rc(state, BIRTH, POLICY), day, BOOK, P60) == expected
    # also without any date known, and with buffer 0
    assert check_exclusion(_rc(state), day, BOOK, P0) == expected


# Birthdays 10 days after the rule's effective_from: the day before effective_from lies in
# the geometric window (anchor - 11 >= anchor - 60) but no rule is in effect yet.
@pytest.mark.parametrize(
    ("state", "birth", "day_before", "start_day", "anchor"),
    [
        ("ID", date(1955, 3, 11), date(2022, 2, 28), date(2022, 3, 1), date(2022, 3, 11)),
        ("IL", date(1955, 1, 11), date(2021, 12, 31), date(2022, 1, 1), date(2022, 1, 11)),
        ("IN", date(1955, 1, 11), date(2025, 12, 31), date(2026, 1, 1), date(2026, 1, 11)),
        ("KY", date(1955, 1, 11), date(2023, 12, 31), date(2024, 1, 1), date(2024, 1, 11)),
        ("LA", date(1955, 8, 11), date(2022, 7, 31), date(2022, 8, 1), date(2022, 8, 11)),
        ("MD", date(1955, 7, 11), date(2023, 6, 30), date(2023, 7, 1), date(2023, 7, 11)),
        # NV anchors on the first of the birth month: 2022-01-01 itself
        ("NV", date(1955, 1, 11), date(2021, 12, 31), date(2022, 1, 1), date(2022, 1, 1)),
        ("UT", date(1955, 5, 17), date(2025, 5, 6), date(2025, 5, 7), date(2025, 5, 17)),
        ("WY", date(1955, 6, 14), date(2025, 6, 3), date(2025, 6, 4), date(2025, 6, 14)),
    ],
)
def test_effective_from_boundary(
    state: str, birth: date, day_before: date, start_day: date, anchor: date
) -> None:
    c = _rc(state, birth)
    assert check_exclusion(c, day_before, BOOK, P60) is None
    exc = check_exclusion(c, start_day, BOOK, P60)
    assert exc is not None and exc.anchor == anchor


@pytest.mark.parametrize(
    ("day", "expected_end"),
    [
        # birthday May 20; old rule (to 2025-06-30): May 20 + 30 = Jun 19 (11 to May 31, +19)
        (date(2025, 6, 19), date(2025, 6, 19)),
        (date(2025, 6, 20), None),
        (date(2025, 6, 30), None),  # old rule still in effect: outside its window
        # new rule from 2025-07-01: May 20 + 60 = Jul 19 (11 to May 31, 30 to Jun 30, +19)
        (date(2025, 7, 1), date(2025, 7, 19)),
        (date(2025, 7, 19), date(2025, 7, 19)),
        (date(2025, 7, 20), None),
    ],
)
def test_virginia_law_change(day: date, expected_end: date | None) -> None:
    exc = check_exclusion(_rc("VA", date(1955, 5, 20)), day, BOOK, P60)
    assert (exc.window_end if exc else None) == expected_end


@pytest.mark.parametrize(
    ("state", "birth", "day", "excluded"),
    [
        # IL covers ages 65-75 on the birthday (2026-06-15)
        ("IL", date(1962, 6, 15), date(2026, 6, 15), False),  # 64
        ("IL", date(1961, 6, 15), date(2026, 6, 15), True),  # 65
        ("IL", date(1951, 6, 15), date(2026, 6, 15), True),  # 75
        ("IL", date(1950, 6, 15), date(2026, 6, 15), False),  # 76
        # the age counted is the one on the anchor, not on the checked day: born 1961-08-01,
        # on 2026-07-15 still 64 but the window's birthday (2026-08-01) makes 65
        ("IL", date(1961, 8, 1), date(2026, 7, 15), True),
        ("IL", date(1961, 8, 1), date(2025, 7, 15), False),  # 2025-08-01: 64
        # turning 76 on 2026-06-15: the window after the 75th birthday still applies in 2025
        ("IL", date(1950, 6, 15), date(2025, 7, 1), True),
        # Feb 29 birthday: 65 on 2025-02-28 (2025 is not leap), the anchor of that year
        ("IL", date(1960, 2, 29), date(2025, 2, 28), True),
        ("IL", date(1960, 2, 29), date(2024, 2, 29), False),  # 64 on 2024-02-29
        # IN is 65 and over
        ("IN", date(1962, 6, 15), date(2026, 6, 15), False),  # 64
        ("IN", date(1961, 6, 15), date(2026, 6, 15), True),  # 65
        ("IN", date(1930, 6, 15), date(2026, 6, 15), True),  # 96
        # unknown birth date: no birthday window at all
        ("IL", None, date(2026, 6, 15), False),
        # CA has no age range
        ("CA", date(2000, 6, 15), date(2026, 6, 15), True),
    ],
)
def test_age_ranges(state: str, birth: date | None, day: date, excluded: bool) -> None:
    assert (check_exclusion(_rc(state, birth), day, BOOK, P60) is not None) is excluded


@pytest.mark.parametrize(
    ("state", "params", "day", "window"),
    [
        # CA, born 1960-02-29. 2027 is not leap: anchor 2027-02-28.
        # end Feb 28 + 60 = Apr 29 (31 to Mar 31, +29); start Feb 28 - 90 = 2026-11-30
        # (28 back to Jan 31, 31 to Dec 31, 30 to Dec 1, 1 to Nov 30).
        ("CA", P60, date(2027, 4, 29), (date(2026, 11, 30), date(2027, 4, 29))),
        ("CA", P60, date(2027, 4, 30), None),
        ("CA", P60, date(2026, 11, 30), (date(2026, 11, 30), date(2027, 4, 29))),
        ("CA", P60, date(2026, 11, 29), None),
        # 2028 is leap: anchor 2028-02-29. start Feb 29 - 90 = 2027-12-01 (29 to Jan 31,
        # 31 to Dec 31, 30 to Dec 1); end Feb 29 + 60 = Apr 29 (31 to Mar 31, +29)
        ("CA", P60, date(2027, 11, 30), None),
        ("CA", P60, date(2027, 12, 1), (date(2027, 12, 1), date(2028, 4, 29))),
        ("CA", P60, date(2028, 4, 29), (date(2027, 12, 1), date(2028, 4, 29))),
        # MD 0/30 with no buffer: the window starts on the anchor itself
        ("MD", P0, date(2027, 2, 27), None),
        ("MD", P0, date(2027, 2, 28), (date(2027, 2, 28), date(2027, 3, 30))),  # Feb 28 + 30
        ("MD", P0, date(2028, 2, 28), None),
        ("MD", P0, date(2028, 2, 29), (date(2028, 2, 29), date(2028, 3, 30))),  # Feb 29 + 30
        # NV anchors on Feb 1 whatever the year: Feb 1 + 60 = Apr 2 (27 to Feb 28, 31, +2)
        ("NV", P0, date(2027, 4, 2), (date(2027, 2, 1), date(2027, 4, 2))),
        ("NV", P0, date(2027, 4, 3), None),
    ],
)
def test_feb_29_birthday(
    state: str, params: PlanParams, day: date, window: tuple[date, date] | None
) -> None:
    exc = check_exclusion(_rc(state, date(1960, 2, 29)), day, BOOK, params)
    assert ((exc.window_start, exc.window_end) if exc else None) == window


@pytest.mark.parametrize(
    ("birth", "day", "excluded", "anchor"),
    [
        # born Jun 28: anchor Jun 1 (not Jun 28). Window Apr 2 .. Jul 31 (see WINDOWS).
        (date(1955, 6, 28), date(2026, 7, 31), True, date(2026, 6, 1)),
        (date(1955, 6, 28), date(2026, 8, 1), False, None),  # Jun 28 + 60 would reach Aug 27
        (date(1955, 6, 28), date(2026, 8, 27), False, None),
        (date(1955, 6, 28), date(2026, 4, 2), True, date(2026, 6, 1)),
        (date(1955, 6, 28), date(2026, 4, 1), False, None),
        # born Jun 1: the same window
        (date(1955, 6, 1), date(2026, 7, 31), True, date(2026, 6, 1)),
    ],
)
def test_nevada_month_anchor(birth: date, day: date, excluded: bool, anchor: date | None) -> None:
    exc = check_exclusion(_rc("NV", birth), day, BOOK, P60)
    assert (exc is not None) is excluded
    assert (exc.anchor if exc else None) == anchor


@pytest.mark.parametrize(
    ("state", "birth", "day", "anchor"),
    [
        # CA, January birthday seen from December: anchor 2026-01-10 of the NEXT year.
        # start Jan 10 - 90 = 2025-10-12 (10 to Dec 31, 30 to Dec 1, 30 to Nov 1, 20 to Oct 12)
        ("CA", date(1955, 1, 10), date(2025, 12, 20), date(2026, 1, 10)),
        ("CA", date(1955, 1, 10), date(2025, 10, 12), date(2026, 1, 10)),
        ("CA", date(1955, 1, 10), date(2025, 10, 11), None),
        # OK, December birthday seen in February: anchor 2026-12-20 of the PREVIOUS year.
        # end Dec 20 + 60 = 2027-02-18 (11 to Dec 31, 31 to Jan 31, +18)
        ("OK", date(1955, 12, 20), date(2027, 2, 18), date(2026, 12, 20)),
        ("OK", date(1955, 12, 20), date(2027, 2, 19), None),
        ("OK", date(1955, 12, 20), date(2027, 1, 1), date(2026, 12, 20)),
    ],
)
def test_windows_crossing_year_end(state: str, birth: date, day: date, anchor: date | None) -> None:
    exc = check_exclusion(_rc(state, birth), day, BOOK, P60)
    assert (exc.anchor if exc else None) == anchor


@pytest.mark.parametrize(
    ("effective", "day", "anchor"),
    [
        # SPEC 5.3 (2026-12-01): the effective date itself and its anniversaries anchor
        # windows, none before it. MO: 30 before, 33 after, buffer 60 -> lead 90.
        (date(2023, 5, 1), date(2023, 5, 1), date(2023, 5, 1)),
        (date(2023, 5, 1), date(2024, 5, 1), date(2024, 5, 1)),
        # 2023-05-01 - 90 = 2023-01-31 (30 days of April, 31 of March, 28 of February
        # and one of January): the first day of the first window; no 2022 anchor exists
        (date(2023, 5, 1), date(2023, 1, 31), date(2023, 5, 1)),
        (date(2023, 5, 1), date(2023, 1, 30), None),
        # first anniversary 2026-06-15 of a 2025-06-15 policy: window from Mar 17 (WINDOWS)
        (date(2025, 6, 15), date(2026, 3, 17), date(2026, 6, 15)),
        # the start day's own window is [2025-03-17, 2025-07-18] (06-15 + 33)
        (date(2025, 6, 15), date(2025, 7, 1), date(2025, 6, 15)),
        (date(2025, 6, 15), date(2025, 7, 18), date(2025, 6, 15)),
        (date(2025, 6, 15), date(2025, 7, 19), None),
        # Feb 29 policy: 2024-02-29 anchors its own window (to 2024-04-02 = 02-29 + 33);
        # 2025's anniversary is Feb 28, window from 2024-11-30 (Feb 28 - 90)
        (date(2024, 2, 29), date(2024, 2, 29), date(2024, 2, 29)),
        (date(2024, 2, 29), date(2024, 4, 3), None),
        (date(2024, 2, 29), date(2024, 11, 29), None),
        (date(2024, 2, 29), date(2024, 11, 30), date(2025, 2, 28)),
        # a policy starting in the future: its start anchors [2026-10-03, 2027-02-03]
        (date(2027, 1, 1), date(2026, 12, 1), date(2027, 1, 1)),
        (date(2027, 1, 1), date(2026, 10, 2), None),
        (date(2027, 1, 1), date(2025, 12, 1), None),
        (date(2027, 1, 1), date(2027, 12, 1), date(2028, 1, 1)),
    ],
)
def test_effective_date_anchors(effective: date, day: date, anchor: date | None) -> None:
    exc = check_exclusion(_rc("MO", BIRTH, effective), day, BOOK, P60)
    assert (exc.anchor if exc else None) == anchor
    if exc:
        assert exc.reason == "Effective date exclusion window for MO"


@pytest.mark.parametrize(
    ("contact", "day"),
    [
        (_rc("TX", BIRTH, POLICY), date(2026, 6, 15)),  # a state with no rule
        (_rc("DC", BIRTH, POLICY), date(2026, 6, 15)),
        (_rc(None, BIRTH, POLICY), date(2026, 6, 15)),  # unknown state
        (_rc("CA", None, POLICY), date(2026, 6, 15)),  # birthday rule, no birth date
        (_rc("MO", BIRTH, None), date(2026, 6, 15)),  # anniversary rule, no policy
        (_rc("IN", BIRTH), date(2025, 6, 15)),  # IN has no rule before 2026
    ],
)
def test_no_exclusion(contact: ResolvedContact, day: date) -> None:
    assert check_exclusion(contact, day, BOOK, P60) is None


@pytest.mark.parametrize(
    ("state", "zip_code", "reason"),
    [
        (None, "90210", "Birthday exclusion window for CA"),
        (None, "10001", "Year-round exclusion for NY"),
        (None, "20001", None),  # DC: no rule (the original mapped it to WA, year-round)
        (None, "73301", None),  # TX: no rule (the original mapped it to OK)
        ("ny", None, "Year-round exclusion for NY"),  # lowercase state code
        ("ca", "10001", "Birthday exclusion window for CA"),  # the state column wins
        (None, "9021", None),  # bad ZIP: unknown state, no rule
        (None, "00000", None),
    ],
)
def test_state_from_contact_row(
    state: str | None, zip_code: str | None, reason: str | None
) -> None:
    raw = Contact(1, "a@example.com", "1955-06-15", None, state, zip_code)
    c = resolve_contact(raw, date(2026, 6, 1))
    exc = check_exclusion(c, date(2026, 6, 15), BOOK, P60)
    assert (exc.reason if exc else None) == reason


def test_overlapping_occurrences_report_latest_end() -> None:
    # CA with a 300-day buffer: lead 330. The 2026 occurrence starts 2026-06-15 - 330 =
    # 2025-07-20 (day 166 - 330 = -164 -> 2025 day 201 = Jul 20), the 2025 one ends
    # 2025-08-14. 2025-08-01 is in both; the later one is reported.
    params = PlanParams(pre_window_buffer_days=300)
    exc = check_exclusion(_rc("CA", BIRTH), date(2025, 8, 1), BOOK, params)
    assert exc is not None
    assert (exc.window_start, exc.window_end, exc.anchor) == (
        date(2025, 7, 20),
        date(2026, 8, 14),
        date(2026, 6, 15),
    )


# --- allowed_interval ---------------------------------------------------------


@pytest.mark.parametrize(
    ("contact", "desired", "params", "limit", "expected"),
    [
        # CA: previous window ends 2026-08-14, next starts 2027-03-17 (2027 like 2026)
        (_rc("CA", BIRTH), date(2026, 9, 1), P60, 400, (date(2026, 8, 15), date(2027, 3, 16))),
        # buffer 0: next window starts 2027-05-16
        (_rc("CA", BIRTH), date(2026, 9, 1), P0, 400, (date(2026, 8, 15), date(2027, 5, 15))),
        # limit 10 days: Sep 1 -/+ 10
        (_rc("CA", BIRTH), date(2026, 9, 1), P60, 10, (date(2026, 8, 22), date(2026, 9, 11))),
        # the edges themselves: desired on the first free day
        (_rc("CA", BIRTH), date(2026, 8, 15), P60, 400, (date(2026, 8, 15), date(2027, 3, 16))),
        (_rc("CA", BIRTH), date(2027, 3, 16), P60, 400, (date(2026, 8, 15), date(2027, 3, 16))),
        # no rule: desired -/+ 400. 2026-09-01 - 365 = 2025-09-01, - 35 = 2025-07-28;
        # + 365 = 2027-09-01, + 35 = 2027-10-06
        (_rc("TX", BIRTH), date(2026, 9, 1), P60, 400, (date(2025, 7, 28), date(2027, 10, 6))),
        (_rc(None, BIRTH), date(2026, 9, 1), P60, 400, (date(2025, 7, 28), date(2027, 10, 6))),
        (_rc("CA", None), date(2026, 9, 1), P60, 400, (date(2025, 7, 28), date(2027, 10, 6))),
        # OK December birthday: window 2025-10-21 .. 2026-02-18 (Dec 20 - 60 = Oct 21:
        # 20 to Nov 30, 30 to Oct 31, 10 to Oct 21); next 2026-10-21 .. 2027-02-18
        (
            _rc("OK", date(1955, 12, 20)),
            date(2026, 5, 1),
            P60,
            400,
            (date(2026, 2, 19), date(2026, 10, 20)),
        ),
        # MO policy anniversary: window ends 2026-07-18, next starts 2027-03-17
        (
            _rc("MO", BIRTH, POLICY),
            date(2026, 8, 1),
            P60,
            400,
            (date(2026, 7, 19), date(2027, 3, 16)),
        ),
        # VA law change. Born May 20; desired 2025-06-25 under the 0-30 rule (window ends
        # Jun 19). From 2025-07-01 the 0-60 rule excludes Jul 1 .. Jul 19 as well: the
        # interval stops on Jun 30, never sending into the new law's window.
        (
            _rc("VA", date(1955, 5, 20)),
            date(2025, 6, 25),
            P60,
            400,
            (date(2025, 6, 20), date(2025, 6, 30)),
        ),
        # IN before its rule: 2025-12-01 has no rule, but the 2026 window (Jan 11 - 60 =
        # 2025-11-12 .. Jan 11 + 60 = 2026-03-12) counts from 2026-01-01. Lower end
        # 2025-12-01 - 400 = 2024-10-27 (-365 -> 2024-12-01, -35 -> Oct 27).
        (
            _rc("IN", date(1955, 1, 11)),
            date(2025, 12, 1),
            P60,
            400,
            (date(2024, 10, 27), date(2025, 12, 31)),
        ),
        # IL born 1961-08-01: the 2025 birthday (64) has no window, 2026 (65) does:
        # 2026-08-01 - 60 = 2026-06-02 (31 to Jul 1, 29 to Jun 2). Lower end
        # 2025-09-01 - 400 = 2024-07-28.
        (
            _rc("IL", date(1961, 8, 1)),
            date(2025, 9, 1),
            P60,
            400,
            (date(2024, 7, 28), date(2026, 6, 1)),
        ),
        # precondition broken: desired excluded (year-round or in a window)
        (_rc("NY", BIRTH), date(2026, 9, 1), P60, 400, (date(2026, 9, 1), date(2026, 9, 1))),
        (_rc("CA", BIRTH), date(2026, 7, 1), P60, 400, (date(2026, 7, 1), date(2026, 7, 1))),
    ],
)
def test_allowed_interval(
    contact: ResolvedContact,
    desired: date,
    params: PlanParams,
    limit: int,
    expected: tuple[date, date],
) -> None:
    assert allowed_interval(contact, desired, BOOK, params, limit) == expected


def test_allowed_interval_year_round_from_a_date() -> None:
    book = RuleBook(
        [
            StateRule("TX", "birthday", 0, 30, effective_to=date(2026, 12, 31)),
            StateRule("TX", "year_round", effective_from=date(2027, 1, 1)),
        ]
    )
    # born Jun 15: the 2026 window ends Jul 15; from 2027-01-01 everything is excluded
    c = _rc("TX", BIRTH)
    assert allowed_interval(c, date(2026, 9, 1), book, P60) == (
        date(2026, 7, 16),
        date(2026, 12, 31),
    )


def test_long_window_counts_only_in_neighbouring_years() -> None:
    # An anniversary rule 365 days before, buffer 120: lead 485. Policy from 2025-01-10,
    # which anchors the first window (SPEC 5.3): it starts 2025-01-10 - 485 = 2023-09-13
    # (10 days to 2024-12-31, 366 to 2023-12-31 across Feb 29, 31 to Nov 30, 30 to Oct 31,
    # 31 to Sep 30, 17 to Sep 13). An occurrence counts only for days of the years
    # 2024..2026, and no anchor exists before the effective date.
    book = RuleBook([StateRule("TX", "effective_date", 365, 0)])
    params = PlanParams(pre_window_buffer_days=120)
    c = _rc("TX", BIRTH, date(2025, 1, 10))
    assert check_exclusion(c, date(2023, 12, 31), book, params) is None
    exc = check_exclusion(c, date(2024, 1, 1), book, params)
    assert exc is not None
    assert (exc.window_start, exc.window_end) == (date(2023, 9, 13), date(2025, 1, 10))
    # 2025-01-01 is in the 2025 and the 2026 occurrence (2026-01-10 - 485 = 2024-09-12):
    # the one that ends last is reported
    exc = check_exclusion(c, date(2025, 1, 1), book, params)
    assert exc is not None
    assert (exc.window_start, exc.window_end) == (date(2024, 9, 12), date(2026, 1, 10))
    # 2023-12-01 - 400 = 2022-10-27 (365 days back to 2022-12-01, then 30 + 5)
    assert allowed_interval(c, date(2023, 12, 1), book, params) == (
        date(2022, 10, 27),
        date(2023, 12, 31),
    )


# --- properties against a brute-force reading of SPEC 5.3 ---------------------


def _occurrence(
    c: ResolvedContact, rule: StateRule, buffer: int, year: int
) -> tuple[date, date, date] | None:
    base = c.birth_date if rule.kind == "birthday" else c.effective_date
    if base is None:
        return None
    occurrence = anniversary(base, year)
    if rule.kind == "effective_date" and occurrence < base:
        return None
    anchor = occurrence.replace(day=1) if rule.month_anchored else occurrence
    if rule.kind == "effective_date" and occurrence == base:
        anchor = base  # the policy's own year: the effective date itself
    if rule.min_age is not None or rule.max_age is not None:
        if c.birth_date is None or not rule.applies_to_age(age_on(c.birth_date, anchor)):
            return None
    start = anchor - timedelta(days=rule.before_days + buffer)
    return start, anchor + timedelta(days=rule.after_days), anchor


def _brute_by_rule(
    c: ResolvedContact, day: date, rule: StateRule, buffer: int
) -> tuple[date | None, date | None, date | None] | None:
    if rule.kind == "year_round":
        return (None, None, None)
    hits = [
        occ
        for year in (day.year - 1, day.year, day.year + 1)
        if (occ := _occurrence(c, rule, buffer, year)) is not None and occ[0] <= day <= occ[1]
    ]
    return max(hits, key=lambda occ: occ[1]) if hits else None


def _annual_occurrence(
    c: ResolvedContact, rule: StateRule, buffer: int, year: int
) -> tuple[date, date, date] | None:
    # SPEC 5.3: [Y-from - buffer, Y-to], `to` in the next year when it precedes `from`.
    assert rule.period_from is not None and rule.period_to is not None
    start = anniversary(date(2000, *rule.period_from), year)
    end_year = year + 1 if rule.period_to < rule.period_from else year
    end = anniversary(date(2000, *rule.period_to), end_year)
    if rule.min_age is not None or rule.max_age is not None:
        if c.birth_date is None or not rule.applies_to_age(age_on(c.birth_date, start)):
            return None
    return start - timedelta(days=buffer), end, start


def _brute_annual(
    c: ResolvedContact, day: date, rule: StateRule, buffer: int
) -> tuple[date, date, date] | None:
    hits = [
        occ
        for year in (day.year - 1, day.year, day.year + 1)
        if (occ := _annual_occurrence(c, rule, buffer, year)) is not None
        and occ[0] <= day <= occ[1]
    ]
    return max(hits, key=lambda occ: occ[1]) if hits else None


def _brute(c: ResolvedContact, day: date, book: RuleBook, buffer: int) -> object:
    # The anchored rule first, then the annual period (SPEC 5.3).
    rule = book.rule_on(c.state, day) if c.state else None
    hit = _brute_by_rule(c, day, rule, buffer) if rule else None
    if hit is not None:
        return hit
    annual = book.annual_on(c.state, day) if c.state else None
    return _brute_annual(c, day, annual, buffer) if annual else None


def _as_tuple(exc: Exclusion | None) -> object:
    return (exc.window_start, exc.window_end, exc.anchor) if exc else None


_DAYS = st.dates(min_value=date(2021, 1, 1), max_value=date(2029, 12, 31))
_BIRTHS = st.one_of(
    st.dates(min_value=date(1920, 1, 1), max_value=date(2010, 12, 31)),
    st.sampled_from([date(1952, 2, 29), date(1960, 2, 29), date(1956, 12, 31), date(1956, 1, 1)]),
)
_POLICIES = st.one_of(st.none(), st.dates(min_value=date(2015, 1, 1), max_value=date(2030, 12, 31)))


@st.composite
def _rule_books(draw: st.DrawFn) -> RuleBook:
    """The built-in table, or a random rule set for TX (long windows, ages, law changes)."""
    if draw(st.booleans()):
        return BOOK
    kind = draw(st.sampled_from(["birthday", "effective_date", "year_round"]))
    window = kind != "year_round"
    min_age = draw(st.none() | st.integers(50, 80)) if window else None
    max_age = draw(st.none() | st.integers(60, 90)) if window else None
    if min_age is not None and max_age is not None and max_age < min_age:
        min_age, max_age = max_age, min_age
    first = StateRule(
        "TX",
        kind,  # type: ignore[arg-type]
        before_days=draw(st.integers(0, 365)) if window else 0,
        after_days=draw(st.integers(0, 365)) if window else 0,
        month_anchored=draw(st.booleans()) if window else False,
        min_age=min_age,
        max_age=max_age,
    )
    extra: list[StateRule] = []
    if draw(st.booleans()):
        # An annual period besides the anchored rule (SPEC 5.3), at times crossing the
        # year end or limited to ages and to an effective period.
        days = st.dates(min_value=date(2000, 1, 1), max_value=date(2000, 12, 31))
        p_from, p_to = draw(days), draw(days)
        age = draw(st.none() | st.integers(55, 80))
        extra.append(
            StateRule(
                "TX",
                "annual_period",
                min_age=age,
                effective_from=draw(
                    st.none() | st.dates(min_value=date(2022, 1, 1), max_value=date(2028, 1, 1))
                ),
                period_from=(p_from.month, p_from.day),
                period_to=(p_to.month, p_to.day),
            )
        )
    if draw(st.booleans()):
        return RuleBook([first, *extra])
    change = draw(st.dates(min_value=date(2022, 1, 1), max_value=date(2028, 12, 31)))
    second = StateRule(
        "TX", "birthday", draw(st.integers(0, 60)), draw(st.integers(0, 90)), effective_from=change
    )
    older = StateRule(
        first.state,
        first.kind,
        first.before_days,
        first.after_days,
        first.month_anchored,
        None,
        change - timedelta(days=1),
        first.min_age,
        first.max_age,
    )
    return RuleBook([older, second, *extra])


@st.composite
def _contacts(draw: st.DrawFn, book: RuleBook) -> ResolvedContact:
    states = sorted(book.states() | {"DC"})
    state = draw(st.none() | st.sampled_from(states))
    return _rc(state, draw(st.none() | _BIRTHS), draw(_POLICIES))


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(0, 400))
def test_check_exclusion_matches_brute_force(data: st.DataObject, buffer: int) -> None:
    book = data.draw(_rule_books())
    c = data.draw(_contacts(book))
    params = PlanParams(pre_window_buffer_days=buffer)
    for day in data.draw(st.lists(_DAYS, min_size=1, max_size=20)):
        assert _as_tuple(check_exclusion(c, day, book, params)) == _brute(c, day, book, buffer)


@settings(max_examples=200, deadline=None)
@given(st.data(), st.integers(0, 120), st.integers(0, 200))
def test_allowed_interval_is_safe_and_maximal(data: st.DataObject, buffer: int, limit: int) -> None:
    book = data.draw(_rule_books())
    c = data.draw(_contacts(book))
    desired = data.draw(_DAYS)
    params = PlanParams(pre_window_buffer_days=buffer)
    main = book.rule_on(c.state, desired) if c.state else None
    main_annual = book.annual_on(c.state, desired) if c.state else None

    def excluded(day: date) -> bool:
        under_main = main is not None and _brute_by_rule(c, day, main, buffer) is not None
        under_annual = (
            main_annual is not None and _brute_annual(c, day, main_annual, buffer) is not None
        )
        return under_main or under_annual or _brute(c, day, book, buffer) is not None

    lo, hi = allowed_interval(c, desired, book, params, limit)
    if excluded(desired):
        assert (lo, hi) == (desired, desired)
        return
    assert desired - timedelta(days=limit) <= lo <= desired <= hi
    assert hi <= desired + timedelta(days=limit)
    day = lo
    while day <= hi:
        assert not excluded(day), day
        day += timedelta(days=1)
    # maximal: the next day out is excluded, or the limit was reached
    assert lo == desired - timedelta(days=limit) or excluded(lo - timedelta(days=1))
    assert hi == desired + timedelta(days=limit) or excluded(hi + timedelta(days=1))
