"""The fixed "showcase" contacts 1..n of ``mailplan generate``.

One contact in every state that has a rule, Feb 29 dates, missing and wrong
locations, bad addresses and dates: even a tiny generated database covers
every rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from service.planning.dates import is_leap

# fmt: off
RULE_STATES = (
    "CA", "ID", "IL", "IN", "KY", "LA", "MD", "NV", "OK", "OR", "UT", "VA", "WY",
    "MO", "CT", "MA", "NY", "WA",
)
# fmt: on


@dataclass(frozen=True, slots=True)
class Showcase:
    """One fixed contact: (state, zip, birth, effective, email form, failed uw) overrides."""

    label: str
    state: str | None = None
    zip_code: str | None = None
    birth: str | None = None
    effective: str | None = None
    email: str | None = None
    failed_underwriting: bool = False


def leap_years(first: int, last: int) -> list[int]:
    return [y for y in range(first, last + 1) if is_leap(y)]


def showcase(today: date) -> tuple[Showcase, ...]:
    """The fixed cases of contacts 1..n (every rule state and every awkward input)."""
    near = today + timedelta(days=30)
    # Birthdays inside the horizon make the rule of each state visible at once.
    soon_birth = date(near.year - 70, near.month, min(near.day, 28)).isoformat()
    # A policy anniversary on the 1st of a month 32..62 days ahead.
    soon = today + timedelta(days=62)
    soon_effective = date(soon.year - 3, soon.month, 1).isoformat()
    cases = [
        Showcase(f"rule state {st}", state=st, birth=soon_birth, effective=soon_effective)
        for st in RULE_STATES
    ]
    leap = leap_years(today.year - 90, today.year - 60)[-1]
    cases += [
        Showcase("Feb 29 birthday in CA", state="CA", birth=f"{leap}-02-29"),
        Showcase("Feb 29 birthday in NV", state="NV", birth=f"{leap}-02-29"),
        Showcase("Feb 29 effective date in MO", state="MO", effective="2024-02-29"),
        Showcase("Feb 29 birthday, no rule state", state="TX", birth=f"{leap}-02-29"),
        Showcase("state from ZIP (Los Angeles)", state="", zip_code="90012"),
        Showcase("state from ZIP (Kansas City, MO)", state="", zip_code="64105"),
        Showcase("ZIP+4 only (Brooklyn)", state="", zip_code="11201-1234"),
        Showcase("lower-case state", state="or"),
        Showcase("unknown state text with ZIP", state="Calif", zip_code="94103"),
        Showcase("no state, no ZIP", state="", zip_code=""),
        Showcase("no state, bad ZIP", state="", zip_code="ABCDE"),
        Showcase("empty email", email=""),
        Showcase("email without @", email="no-at-sign.example.com"),
        Showcase("birth date not a real date", birth="1950-02-30"),
        Showcase("birth date in the future", birth=f"{today.year + 30}-06-15"),
        Showcase("effective date with a time part", effective=f"{soon_effective} 00:00:00"),
        Showcase("effective date next year", effective=f"{today.year + 1}-01-01"),
        Showcase("failed underwriting in TX", state="TX", failed_underwriting=True),
        Showcase("failed underwriting in CA", state="CA", failed_underwriting=True),
    ]
    return tuple(cases)


def apply_showcase(
    rows: list[tuple[object, ...]], cases: Sequence[Showcase], zips: dict[str, tuple[str, ...]]
) -> None:
    """Overwrite contacts 1..len(cases) (the first rows of the first batch) with the fixed cases."""
    for k, case in enumerate(cases[: len(rows)]):
        row = list(rows[k])
        cid = int(str(row[0]))
        if case.state is not None:
            row[10] = case.state
            codes = zips.get(case.state.upper())
            if case.zip_code is None and codes:
                row[11] = codes[cid % len(codes)]
        elif not row[10] or str(row[10]) not in zips:
            row[10], row[11] = "TX", zips["TX"][cid % len(zips["TX"])]
        if case.zip_code is not None:
            row[11] = case.zip_code
        if case.birth is not None:
            row[7] = case.birth
        elif len(str(row[7])) != 10:
            row[7] = "1955-07-04"
        if case.effective is not None:
            row[6] = case.effective
        elif len(str(row[6])) != 10:
            row[6] = "2019-05-01"
        row[3] = case.email if case.email is not None else f"showcase.{cid}@example.com"
        row[14] = int(case.failed_underwriting)
        rows[k] = tuple(row)
