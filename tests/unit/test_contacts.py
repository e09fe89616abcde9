"""Contact validation and location (SPEC 5.1, 5.2)."""

from __future__ import annotations

from datetime import date

import pytest

from service.planning.contacts import (
    USPS_CODES,
    is_valid_email,
    normalize_state,
    preload_zip_database,
    resolve_contact,
    zip5,
    zip_lookup,
)
from service.planning.model import Contact

TODAY = date(2026, 11, 30)


def _contact(**fields: object) -> Contact:
    values: dict[str, object] = {
        "id": 7,
        "email": "ann@example.com",
        "birth_date": "1955-06-15",
        "effective_date": "2020-03-01",
        "state": "CA",
        "zip_code": "90210",
    }
    values.update(fields)
    return Contact(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("ann@example.com", True),
        ("Ann.Lee+promo@mail.example.co.uk", True),
        ("o'neil@example.org", True),
        ("x_y-z@sub-domain.example.io", True),
        ("  ann@example.com  ", True),  # surrounding spaces are ignored
        ("a@b.co", True),
        (None, False),
        ("", False),
        ("ann", False),
        ("ann@", False),
        ("@example.com", False),
        ("ann@example", False),  # domain without a dot
        ("ann@@example.com", False),
        ("ann@ex@ample.com", False),
        ("ann lee@example.com", False),
        ("ann@exa mple.com", False),
        ("ann@example..com", False),
        ("ann@.example.com", False),
        ("ann@example.com.", False),
        (".ann@example.com", False),
        ("ann..lee@example.com", False),
        ("ann@example.c", False),  # one-letter top-level domain
        ("ann@-example.com", False),
        ("ann@example.123", False),  # numeric top-level domain
        ("ann@[127.0.0.1]", False),
        ("ann,lee@example.com", False),
        ("'; DROP TABLE contacts;--@x.com", False),
        ("a" * 250 + "@example.com", False),  # longer than 254
    ],
)
def test_is_valid_email(text: str | None, ok: bool) -> None:
    assert is_valid_email(text) is ok


@pytest.mark.parametrize(
    ("zip_code", "state"),
    [
        ("90210", "CA"),  # Beverly Hills
        ("10001", "NY"),  # Manhattan
        ("20001", "DC"),  # Washington (the original said WA)
        ("73301", "TX"),  # Austin IRS (the original said OK)
        ("06830", "CT"),  # Greenwich: leading zero kept
        ("63101", "MO"),
        ("89101", "NV"),
        ("00501", "NY"),  # Holtsville IRS, a unique ZIP
        ("00601", "PR"),
        ("90210-1234", "CA"),  # ZIP+4
        ("902101234", "CA"),  # ZIP+4 without dash
        (" 90210 ", "CA"),
        ("90210 apt", "CA"),  # first five digits
    ],
)
def test_zip_lookup(zip_code: str, state: str) -> None:
    info = zip_lookup(zip_code)
    assert info is not None
    assert info.state == state


@pytest.mark.parametrize(
    "zip_code",
    [
        None,
        "",
        "9021",  # four digits
        "6830",  # lost leading zero: not guessed
        "902100",  # six digits
        "9021O",  # letter O
        "abcde",
        "00000",  # not a ZIP
        "99999",
        "\u0669\u0660\u0662\u0661\u0660",  # Arabic-Indic digits
    ],
)
def test_zip_lookup_bad(zip_code: str | None) -> None:
    assert zip_lookup(zip_code) is None


@pytest.mark.parametrize(
    ("zip_code", "expected"),
    [
        ("12345", "12345"),
        ("12345-6789", "12345"),
        ("123456789", "12345"),
        ("1234567", None),
        ("1234", None),
        ("", None),
        (None, None),
    ],
)
def test_zip5(zip_code: str | None, expected: str | None) -> None:
    assert zip5(zip_code) == expected


@pytest.mark.parametrize(
    ("zip_code", "timezone"),
    [
        ("90210", "America/Los_Angeles"),
        ("10001", "America/New_York"),
        ("73301", "America/Chicago"),
        ("96799", "Pacific/Pago_Pago"),
        ("09001", None),  # military post office: no zone in the database
    ],
)
def test_zip_timezone(zip_code: str, timezone: str | None) -> None:
    info = zip_lookup(zip_code)
    assert info is not None
    assert info.timezone == timezone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CA", "CA"),
        ("ca", "CA"),
        (" ny ", "NY"),
        ("N Y", "NY"),
        ("Dc", "DC"),
        ("PR", "PR"),
        ("XX", None),
        ("California", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_state(text: str | None, expected: str | None) -> None:
    assert normalize_state(text) == expected


def test_usps_codes() -> None:
    # 50 states + DC + 8 territories/associated states + 3 military codes
    assert len(USPS_CODES) == 62
    assert {"CA", "DC", "PR", "AE"} <= USPS_CODES


@pytest.mark.parametrize(
    ("state", "zip_code", "expected_state", "source", "has_location"),
    [
        ("CA", "90210", "CA", "state", True),
        ("ca", None, "CA", "state", True),  # lowercase state code
        (" tx ", "", "TX", "state", True),
        ("NY", "90210", "NY", "state", True),  # the state column wins over the ZIP
        (None, "90210", "CA", "zip", True),
        ("", "10001", "NY", "zip", True),
        ("XX", "20001", "DC", "zip", True),  # invalid state, ZIP decides
        ("Texas", "73301", "TX", "zip", True),
        (None, None, None, None, False),
        ("", "", None, None, False),
        (None, "00000", None, None, False),  # ZIP not in the database
        ("ZZ", "abc", None, None, False),
    ],
)
def test_resolve_state(
    state: str | None,
    zip_code: str | None,
    expected_state: str | None,
    source: str | None,
    has_location: bool,
) -> None:
    rc = resolve_contact(_contact(state=state, zip_code=zip_code), TODAY)
    assert (rc.state, rc.state_source, rc.has_location) == (expected_state, source, has_location)


def test_resolve_valid_contact() -> None:
    rc = resolve_contact(_contact(carrier=" Acme ", failed_underwriting=True), TODAY)
    assert rc.id == 7
    assert rc.email_ok
    assert rc.problems == ()
    assert rc.birth_date == date(1955, 6, 15)
    assert rc.effective_date == date(2020, 3, 1)
    assert rc.timezone == "America/Los_Angeles"
    assert rc.carrier == "Acme"
    assert rc.failed_underwriting


def test_timezone_comes_from_zip_even_with_state_column() -> None:
    rc = resolve_contact(_contact(state="NY", zip_code="90210"), TODAY)
    assert rc.timezone == "America/Los_Angeles"
    assert resolve_contact(_contact(state="NY", zip_code=None), TODAY).timezone is None


@pytest.mark.parametrize(
    ("fields", "problem_fragments", "email_ok"),
    [
        ({"email": "not-an-email"}, ["email address 'not-an-email' is not a valid address"], False),
        ({"email": None}, ["no email address"], False),
        ({"email": "  "}, ["no email address"], False),
        ({"birth_date": "1955-02-30"}, ["birth date '1955-02-30' is not a real date"], True),
        ({"birth_date": "2026-12-01"}, ["birth date 2026-12-01 is after today (2026-11-30)"], True),
        ({"effective_date": "soon"}, ["effective date 'soon' is not a real date"], True),
        ({"state": "XX", "zip_code": "90210"}, ["state 'XX' is not a USPS state code"], True),
        ({"zip_code": "9021"}, ["ZIP code '9021' is not a five-digit ZIP code"], True),
        ({"zip_code": "00000"}, ["ZIP code 00000 is not in the ZIP database"], True),
        (
            {"state": None, "zip_code": None},
            ["location unknown: no valid state or ZIP code"],
            True,
        ),
    ],
)
def test_resolve_problems(
    fields: dict[str, object], problem_fragments: list[str], email_ok: bool
) -> None:
    rc = resolve_contact(_contact(**fields), TODAY)
    assert rc.email_ok is email_ok
    text = "; ".join(rc.problems)
    for fragment in problem_fragments:
        assert fragment in text
    assert len(rc.problems) == len(problem_fragments)


@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        ("2026-11-30", date(2026, 11, 30)),  # born today: not after today
        ("2026-12-01", None),  # after today
        ("", None),  # missing: no problem, no date
        (None, None),
        ("1960-02-29", date(1960, 2, 29)),
        ("1955-06-15 00:00:00", date(1955, 6, 15)),
    ],
)
def test_resolve_birth_date(birth: str | None, expected: date | None) -> None:
    assert resolve_contact(_contact(birth_date=birth), TODAY).birth_date == expected


def test_missing_dates_are_not_problems() -> None:
    rc = resolve_contact(_contact(birth_date=None, effective_date=""), TODAY)
    assert rc.problems == ()
    assert rc.birth_date is None and rc.effective_date is None


def test_preload_zip_database() -> None:
    # the package lists about 42,000 ZIP codes
    assert 40_000 < preload_zip_database() < 50_000
