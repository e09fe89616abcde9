"""Calendar arithmetic shared by every planning rule (SPEC 5.1, 5.4).

All functions are pure and cheap: they run several times per contact on books
of a million contacts.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

_DIGITS = frozenset("0123456789")

PLANNING_MIN_YEAR = 1200
PLANNING_MAX_YEAR = 2800
"""Years a parsed date is kept within. Upstream writes ``9999-12-31`` ("no
end") or ``0001-01-01`` ("unknown"), where one more year of arithmetic leaves
Python's calendar. Every rule looks a bounded number of years around *today*,
so a year beyond these bounds plans exactly as the bound does; the month and
day are kept (both bounds are leap years, so Feb 29 stays Feb 29)."""


def parse_date(text: str | None) -> date | None:
    """Parse an upstream date column (SPEC 5.1).

    Accepts ``YYYY-MM-DD``, optionally followed by a time part separated by a
    space or ``T`` (``HH:MM[:SS[.ffffff]]`` with an optional ``Z`` or UTC
    offset). Surrounding whitespace is ignored. A year outside
    ``PLANNING_MIN_YEAR..PLANNING_MAX_YEAR`` is read as the nearest bound.
    Returns ``None`` for empty
    text, anything else, and dates that do not exist (``2023-02-29``): an
    invalid date makes the contact invalid for that email, it is never fatal.
    """
    if text is None:
        return None
    s = text.strip()
    head = s[:10]
    # With dashes at 4 and 7, fromisoformat accepts only YYYY-MM-DD of ASCII digits
    # (its other 10-character form, the week date "2024-W01-1", has no dash at 7).
    if len(head) != 10 or head[4] != "-" or head[7] != "-":
        return None
    try:
        parsed = date.fromisoformat(head)
    except ValueError:
        return None
    if not PLANNING_MIN_YEAR <= parsed.year <= PLANNING_MAX_YEAR:
        year = min(max(parsed.year, PLANNING_MIN_YEAR), PLANNING_MAX_YEAR)
        parsed = parsed.replace(year=year)
    if len(s) == 10:
        return parsed
    sep, rest = s[10], s[11:]
    if sep not in " Tt" or not rest or rest[0] not in _DIGITS:
        return None
    try:
        time.fromisoformat(rest.strip())
    except ValueError:
        return None
    return parsed


def parse_instant(text: str | None) -> datetime | None:
    """The instant of an upstream timestamp column that has a time part
    (SPEC 5.7), as a naive UTC datetime; None for a date alone or anything
    :func:`parse_date` refuses. A time without an offset is taken as UTC,
    as SQLite's ``CURRENT_TIMESTAMP`` writes it."""
    if text is None or parse_date(text) is None:
        return None
    s = text.strip()
    if len(s) == 10:
        return None
    try:
        parsed = datetime.fromisoformat(s.replace("t", "T").replace("z", "Z"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def is_leap(year: int) -> bool:
    """Gregorian leap year."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def anniversary(d: date, year: int) -> date:
    """The anniversary of ``d`` in ``year`` (SPEC 5.1).

    A Feb 29 date falls on Feb 28 in a non-leap year (the original crashed
    here, SPEC 14).
    """
    if d.month == 2 and d.day == 29 and not is_leap(year):
        return date(year, 2, 28)
    return date(year, d.month, d.day)


def months_between(start: date, end: date) -> int:
    """Calendar months from ``start`` to ``end``, days ignored (SPEC 5.4).

    ``(end.year - start.year) * 12 + end.month - start.month``; negative when
    ``end`` is in an earlier month.
    """
    return (end.year - start.year) * 12 + end.month - start.month


def age_on(birth: date, on: date) -> int:
    """Age in whole years on ``on`` of someone born on ``birth`` (SPEC 15).

    A Feb 29 birthday is reached on Feb 28 in non-leap years, consistently
    with :func:`anniversary`. Negative if ``on`` is before ``birth``.
    """
    years = on.year - birth.year
    bm, bd = birth.month, birth.day
    if bm == 2 and bd == 29 and not is_leap(on.year):
        bd = 28
    if (on.month, on.day) < (bm, bd):
        years -= 1
    return years
