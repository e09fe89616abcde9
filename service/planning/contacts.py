"""Validating a contact and locating it (SPEC 5.1, 5.2).

:func:`resolve_contact` turns the raw text upstream wrote into the few facts the
rules need: a usable email address, real dates, and the state whose law
applies. Problems are kept as sentences so ``explain`` can show them.

The ZIP database is the ``zipcodes`` package (a complete, maintained US ZIP
list, SPEC 14), read from a packed copy of its data shipped with the planner
(``zips.tsv.gz``, built by :mod:`service.tools.zipdata`): loading the package
itself takes about two seconds and ~140 MB in every process, and its own
lookup scans the whole list per call. One dict keyed by the five-digit ZIP is
built from the copy on first use (~50 ms) and kept.
"""

from __future__ import annotations

import gzip
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

from service.planning.dates import parse_date
from service.planning.memo import LIMIT as MEMO_LIMIT
from service.planning.memo import Memo
from service.planning.model import Contact

USPS_CODES: frozenset[str] = frozenset(
    {
        # the 50 states and the District of Columbia
        "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID",
        "IL", "IN", "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO",
        "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA",
        "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
        # territories and freely associated states served by USPS
        "AS", "GU", "MP", "PR", "VI", "FM", "MH", "PW",
        # military post offices
        "AA", "AE", "AP",
    }
)  # fmt: skip
"""Every two-letter code USPS delivers to (the states of the ZIP database)."""

EMAIL_RE: re.Pattern[str] = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]"
)
"""A sane address (SPEC 5.2), matched against the whole text.

One ``@``; a local part of RFC 5322 "atext" characters with single inner dots;
a domain of at least two dot-separated labels of letters, digits and inner
hyphens, the last one (the top-level domain) at least two characters and
starting with a letter. No spaces, no quoting, no IP-literal domains.
"""

_MAX_EMAIL_LENGTH = 254

_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class ZipInfo:
    """What the ZIP database says about one five-digit ZIP code."""

    state: str
    timezone: str | None


@dataclass(frozen=True, slots=True, init=False)
class ResolvedContact:
    """A contact as the rules see it (SPEC 5.1, 5.2).

    ``email_ok`` is False when no email can be planned at all; ``problems``
    lists, in words, everything wrong with the raw row (also when harmless).
    ``state_source`` says where ``state`` came from (``"state"`` column or
    ``"zip"`` code); ``timezone`` is the IANA zone of the ZIP code, when known.
    ``has_location`` is True when the state is known (SPEC 5.2, 5.6).
    """

    id: int
    email_ok: bool
    problems: tuple[str, ...]
    birth_date: date | None
    effective_date: date | None
    state: str | None
    state_source: str | None
    timezone: str | None
    has_location: bool
    carrier: str | None
    failed_underwriting: bool

    def __init__(
        self,
        id: int,
        email_ok: bool,
        problems: tuple[str, ...],
        birth_date: date | None,
        effective_date: date | None,
        state: str | None,
        state_source: str | None,
        timezone: str | None,
        has_location: bool,
        carrier: str | None,
        failed_underwriting: bool,
    ) -> None:
        # One is built per contact of a full recompute: setting the slots
        # directly is much cheaper than the frozen dataclass's generated
        # __init__, and the instance stays frozen all the same.
        _SET_ID(self, id)
        _SET_EMAIL_OK(self, email_ok)
        _SET_PROBLEMS(self, problems)
        _SET_BIRTH_DATE(self, birth_date)
        _SET_EFFECTIVE_DATE(self, effective_date)
        _SET_STATE(self, state)
        _SET_STATE_SOURCE(self, state_source)
        _SET_TIMEZONE(self, timezone)
        _SET_HAS_LOCATION(self, has_location)
        _SET_CARRIER(self, carrier)
        _SET_FAILED_UNDERWRITING(self, failed_underwriting)


def _slot_setter(name: str) -> Callable[[ResolvedContact, Any], None]:
    setter: Callable[[ResolvedContact, Any], None] = ResolvedContact.__dict__[name].__set__
    return setter


_SET_ID = _slot_setter("id")
_SET_EMAIL_OK = _slot_setter("email_ok")
_SET_PROBLEMS = _slot_setter("problems")
_SET_BIRTH_DATE = _slot_setter("birth_date")
_SET_EFFECTIVE_DATE = _slot_setter("effective_date")
_SET_STATE = _slot_setter("state")
_SET_STATE_SOURCE = _slot_setter("state_source")
_SET_TIMEZONE = _slot_setter("timezone")
_SET_HAS_LOCATION = _slot_setter("has_location")
_SET_CARRIER = _slot_setter("carrier")
_SET_FAILED_UNDERWRITING = _slot_setter("failed_underwriting")


def is_valid_email(text: str | None) -> bool:
    """True if ``text`` (surrounding whitespace ignored) is a sane address (SPEC 5.2)."""
    return text is not None and _is_valid_text(text)


_FULLMATCH = EMAIL_RE.fullmatch


def _is_valid_text(text: str) -> bool:
    s = text.strip()
    return len(s) <= _MAX_EMAIL_LENGTH and _FULLMATCH(s) is not None


@cache
def _zip_index() -> dict[str, ZipInfo]:
    # The packed table (service.tools.zipdata) holds the package's data; one
    # ZipInfo per distinct (state, zone) is shared by all its ZIP codes, so
    # the whole directory is one dict of ~43k short strings (a few MB).
    text = gzip.decompress(resources.files("service.planning").joinpath(ZIP_TABLE).read_bytes())
    shared: dict[tuple[str, str], ZipInfo] = {}
    index: dict[str, ZipInfo] = {}
    for line in text.decode("ascii").splitlines():
        zip_code, state, zone_text = line.split("\t")
        key = (state, zone_text)
        info = shared.get(key)
        if info is None:
            info = shared[key] = ZipInfo(state, _known_zone(zone_text))
        index[zip_code] = info
    return index


ZIP_TABLE = "zips.tsv.gz"
"""The packed ZIP directory shipped with the package (``service.tools.zipdata``)."""


def _known_zone(text: str) -> str | None:
    # A few entries carry no zone (military) or a place name instead of one.
    if not text:
        return None
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
    return text


def preload_zip_database() -> int:
    """Build the ZIP index now (~50 ms) rather than on the first lookup.

    Long-running processes call this at start-up so the first contact they plan
    is not slow. Returns the number of ZIP codes known.
    """
    return len(_zip_index())


def zip5(zip_code: str | None) -> str | None:
    """The five-digit ZIP at the start of ``zip_code``, or None if there is none.

    Accepted: ``12345``, ``12345-6789``, ``123456789`` and five digits followed by
    any non-digit text (surrounding whitespace ignored). A ZIP that lost its
    leading zero (``6830``) is not guessed at.
    """
    if zip_code is None:
        return None
    s = zip_code.strip()
    head = s[:5]
    if len(head) != 5 or not head.isascii() or not head.isdigit():
        return None
    if len(s) > 5 and s[5] in _DIGITS and (len(s) != 9 or not s.isascii() or not s.isdigit()):
        return None
    return head


def zip_lookup(zip_code: str | None) -> ZipInfo | None:
    """State and time zone of a ZIP code from its first five digits (SPEC 5.2).

    ``None`` when the text holds no five-digit ZIP or the ZIP is not in the
    database.
    """
    head = zip5(zip_code)
    if head is None:
        return None
    return _zip_index().get(head)


def normalize_state(text: str | None) -> str | None:
    """The USPS code in ``text`` (case-insensitive, spaces ignored), or None."""
    if text is None:
        return None
    code = text.replace(" ", "").strip().upper()
    return code if code in USPS_CODES else None


def _resolve_dates(
    c: Contact, today: date, problems: list[str], parsed: dict[str, date | None]
) -> tuple[date | None, date | None]:
    birth_text = c.birth_date
    birth = None if birth_text is None else _parse_cached(birth_text, parsed)
    if birth is None:
        if birth_text is not None and birth_text.strip():
            problems.append(f"birth date {birth_text!r} is not a real date")
    elif birth > today:
        problems.append(f"birth date {birth.isoformat()} is after today ({today.isoformat()})")
        birth = None
    effective_text = c.effective_date
    effective = None if effective_text is None else _parse_cached(effective_text, parsed)
    if effective is None and effective_text is not None and effective_text.strip():
        problems.append(f"effective date {effective_text!r} is not a real date")
    return birth, effective


def _parse_cached(text: str, parsed: dict[str, date | None]) -> date | None:
    # A book holds far fewer distinct date texts than contacts.
    try:
        return parsed[text]
    except KeyError:
        pass
    if len(parsed) >= MEMO_LIMIT:
        parsed.clear()
    value = parsed[text] = parse_date(text)
    return value


_Location = tuple[str | None, str | None, str | None, tuple[str, ...]]


def _location(
    c: Contact, problems: list[str], locations: dict[tuple[str | None, str | None], Any]
) -> tuple[str | None, str | None, str | None]:
    """:func:`_resolve_location`, memoised per (state, ZIP) text pair."""
    key = (c.state, c.zip_code)
    found: _Location | None = locations.get(key)
    if found is None:
        own: list[str] = []
        state, source, timezone = _resolve_location(c, own)
        if len(locations) >= MEMO_LIMIT:
            locations.clear()
        found = locations[key] = (state, source, timezone, tuple(own))
    if found[3]:
        problems.extend(found[3])
    return found[0], found[1], found[2]


def _resolve_location(c: Contact, problems: list[str]) -> tuple[str | None, str | None, str | None]:
    zip_info: ZipInfo | None = None
    raw_zip = c.zip_code.strip() if c.zip_code is not None else ""
    if raw_zip:
        head = zip5(raw_zip)
        if head is None:
            problems.append(f"ZIP code {c.zip_code!r} is not a five-digit ZIP code")
        else:
            zip_info = _zip_index().get(head)
            if zip_info is None:
                problems.append(f"ZIP code {head} is not in the ZIP database")
    timezone = zip_info.timezone if zip_info is not None else None

    state = normalize_state(c.state)
    if state is not None:
        return state, "state", timezone
    if c.state is not None and c.state.strip():
        problems.append(f"state {c.state!r} is not a USPS state code")
    if zip_info is not None:
        return zip_info.state, "zip", timezone
    problems.append("location unknown: no valid state or ZIP code, so no state rule applies")
    return None, None, timezone


def resolve_contact(c: Contact, today: date, memo: Memo | None = None) -> ResolvedContact:
    """Validate a raw contact and derive its state (SPEC 5.1, 5.2).

    - email: :func:`is_valid_email`; otherwise ``email_ok`` is False.
    - birth / effective date: :func:`~service.planning.dates.parse_date`; a text
      that is not a real date, or a birth date after ``today``, gives ``None``
      and a problem.
    - state: the ``state`` column if it is a USPS code (case-insensitive,
      spaces ignored), else the state of the ZIP code's first five digits,
      else unknown. The time zone always comes from the ZIP code.
    """
    problems: list[str] = []
    email = c.email
    email_ok = email is not None and _is_valid_text(email)
    if not email_ok:
        if email is None or not email.strip():
            problems.append("no email address")
        else:
            problems.append(f"email address {email!r} is not a valid address")
    if memo is None:
        memo = Memo()
    birth, effective = _resolve_dates(c, today, problems, memo.dates)
    state, source, timezone = _location(c, problems, memo.locations)
    carrier = c.carrier
    if carrier is not None:
        carrier = carrier.strip() or None
    return ResolvedContact(
        c.id,
        email_ok,
        tuple(problems) if problems else (),
        birth,
        effective,
        state,
        source,
        timezone,
        state is not None,
        carrier,
        c.failed_underwriting,
    )
