"""Date helpers (SPEC 5.1, 5.4)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.planning.dates import (
    PLANNING_MAX_YEAR,
    PLANNING_MIN_YEAR,
    age_on,
    anniversary,
    is_leap,
    months_between,
    parse_date,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-02-29", date(2024, 2, 29)),  # leap day exists in 2024
        ("1955-06-15", date(1955, 6, 15)),
        ("  1955-06-15 ", date(1955, 6, 15)),  # surrounding whitespace ignored
        ("1955-06-15 00:00:00", date(1955, 6, 15)),
        ("1955-06-15T08:30:00", date(1955, 6, 15)),
        ("1955-06-15T08:30:00Z", date(1955, 6, 15)),
        ("1955-06-15T08:30:00.123456", date(1955, 6, 15)),
        ("1955-06-15 08:30:00.5+02:00", date(1955, 6, 15)),
        ("1955-06-15T08:30", date(1955, 6, 15)),
        (None, None),
        ("", None),
        ("   ", None),
        ("2023-02-29", None),  # 2023 is not a leap year
        ("2024-13-01", None),
        ("2024-00-10", None),
        ("2024-04-31", None),  # April has 30 days
        ("0000-01-01", None),  # year 0 does not exist
        ("2024/01/05", None),
        ("05/01/2024", None),
        ("2024-1-5", None),
        ("20240105", None),  # basic format is not accepted
        ("2024-W01-1", None),  # ISO week date
        ("\u0662\u0660\u0662\u0664-\u0660\u0661-\u0660\u0665", None),  # Arabic-Indic digits
        ("2024-01-05x", None),
        ("2024-01-05 garbage", None),
        ("2024-01-05T25:00:00", None),  # no hour 25
        ("2024-01-05T", None),
        ("NULL", None),
        ("'; DROP TABLE contacts; --", None),
    ],
)
def test_parse_date(text: str | None, expected: date | None) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    ("d", "year", "expected"),
    [
        (date(1960, 2, 29), 2027, date(2027, 2, 28)),  # non-leap: Feb 28
        (date(1960, 2, 29), 2028, date(2028, 2, 29)),  # leap: Feb 29
        (date(1960, 2, 29), 2100, date(2100, 2, 28)),  # 2100 is not leap (century)
        (date(1960, 2, 29), 2000, date(2000, 2, 29)),  # 2000 is leap (400)
        (date(1955, 6, 15), 2026, date(2026, 6, 15)),
        (date(1955, 2, 28), 2028, date(2028, 2, 28)),
        (date(1955, 12, 31), 2026, date(2026, 12, 31)),
    ],
)
def test_anniversary(d: date, year: int, expected: date) -> None:
    assert anniversary(d, year) == expected


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (date(2025, 1, 31), date(2025, 12, 1), 11),  # (0)*12 + 12 - 1 = 11, days ignored
        (date(2025, 1, 1), date(2025, 12, 31), 11),
        (date(2025, 12, 31), date(2026, 1, 1), 1),  # 12 + 1 - 12 = 1
        (date(2020, 6, 15), date(2026, 5, 16), 71),  # 6*12 + 5 - 6 = 71
        (date(2026, 5, 1), date(2026, 5, 31), 0),
        (date(2026, 5, 1), date(2026, 3, 1), -2),
    ],
)
def test_months_between(start: date, end: date, expected: int) -> None:
    assert months_between(start, end) == expected


@pytest.mark.parametrize(
    ("birth", "on", "expected"),
    [
        (date(1961, 6, 15), date(2026, 6, 15), 65),  # 2026 - 1961 = 65 on the birthday
        (date(1961, 6, 15), date(2026, 6, 14), 64),  # the day before
        (date(1961, 6, 15), date(2026, 12, 31), 65),
        (date(1961, 6, 15), date(2026, 1, 1), 64),
        (date(1960, 2, 29), date(2025, 2, 28), 65),  # Feb 29 counts on Feb 28 in 2025
        (date(1960, 2, 29), date(2025, 2, 27), 64),
        (date(1960, 2, 29), date(2024, 2, 28), 63),  # 2024 has a Feb 29: not yet
        (date(1960, 2, 29), date(2024, 2, 29), 64),
        (date(2000, 1, 1), date(2000, 1, 1), 0),
        (date(2000, 1, 2), date(2000, 1, 1), -1),  # before birth
    ],
)
def test_age_on(birth: date, on: date, expected: int) -> None:
    assert age_on(birth, on) == expected


@pytest.mark.parametrize(
    ("year", "leap"), [(2024, True), (2023, False), (1900, False), (2000, True), (2100, False)]
)
def test_is_leap(year: int, leap: bool) -> None:
    assert is_leap(year) is leap


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)))
def test_parse_date_roundtrip(d: date) -> None:
    # Within the planning years a date reads back as itself; beyond them, the
    # year is the nearest bound and month and day are kept (1200 and 2800
    # are both leap years, so a Feb 29 stays one).
    year = min(max(d.year, PLANNING_MIN_YEAR), PLANNING_MAX_YEAR)
    expected = d.replace(year=year)
    assert parse_date(d.isoformat()) == expected
    assert parse_date(f"{d.isoformat()} 12:34:56") == expected


def test_parse_date_keeps_far_dates_computable() -> None:
    assert parse_date("9999-12-31") == date(2800, 12, 31)
    assert parse_date("0001-01-01") == date(1200, 1, 1)
    assert parse_date("0004-02-29") == date(1200, 2, 29)
    assert parse_date("2800-12-31") == date(2800, 12, 31)
    assert parse_date("1200-01-01") == date(1200, 1, 1)


@settings(max_examples=200, deadline=None)
@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2060, 12, 31)),
)
def test_age_on_increments_on_anniversary(birth: date, on: date) -> None:
    """Age changes exactly on the (Feb-28-adjusted) anniversary."""
    step = 1 if on == anniversary(birth, on.year) else 0
    assert age_on(birth, on) == age_on(birth, on - timedelta(days=1)) + step


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789-W+ T:.Z\u0662x", min_size=8, max_size=14))
def test_parse_date_only_accepts_iso_dates(text: str) -> None:
    parsed = parse_date(text)
    if parsed is not None:
        head = text.strip()[:10]
        assert head.isascii() and head[:4].isdigit() and head[5:7].isdigit()
        assert head[8:].isdigit() and head[4] == head[7] == "-"
        assert parsed.isoformat() == head
