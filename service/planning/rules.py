"""State exclusion rules as data (SPEC 5.3, 15).

The built-in table is ``states.toml`` next to this module; ``state_rules`` (SPEC
4) names a file of the same format that replaces it. Format::

    version = "2026-11-29"          # optional, free text

    [[rule]]
    state = "VA"                    # USPS code
    kind = "birthday"               # "birthday" | "effective_date" | "year_round"
                                    # | "annual_period"
    before_days = 0                 # whole days >= 0 (0 or absent for year_round)
    after_days = 60
    month_anchored = false          # optional: anchor on the 1st of the anchor's month
    effective_from = 2025-07-01     # optional, inclusive (TOML date or "YYYY-MM-DD")
    effective_to = 2026-12-31       # optional, inclusive
    min_age = 65                    # optional, inclusive, age on the anchor date
    max_age = 75                    # optional, inclusive
    note = "why the rule is what it is"

    [[rule]]                        # an annual period: one span for everyone
    state = "CA"
    kind = "annual_period"
    from = "01-01"                  # MM-DD, first day of the period
    to = "03-31"                    # MM-DD, last day (before `from`: the next year's)
    min_age = 65                    # optional, age on the period's first day
    note = "..."

A state may have several anchored rules (birthday, effective_date,
year_round) whose effective periods do not overlap, and besides them annual
periods whose effective periods do not overlap each other; a rule applies to
an email when the email's desired date is within its period.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Literal

from service.errors import RulesError
from service.planning.contacts import USPS_CODES

RuleKind = Literal["birthday", "effective_date", "year_round", "annual_period"]
RULE_KINDS: tuple[RuleKind, ...] = ("birthday", "effective_date", "year_round", "annual_period")
ANNUAL_PERIOD = "annual_period"
BUILTIN_SOURCE = "<built-in states.toml>"
_REASONS: dict[str, str] = {
    "year_round": "Year-round exclusion for {}",
    "birthday": "Birthday exclusion window for {}",
    "effective_date": "Effective date exclusion window for {}",
    "annual_period": "Annual exclusion period for {}",
}
MonthDay = tuple[int, int]

_MAX_DAYS = 365
_MAX_AGE = 150
_TOP_KEYS = frozenset({"version", "rule"})
_INT_KEYS = ("before_days", "after_days", "min_age", "max_age")
_DATE_KEYS = ("effective_from", "effective_to")
_RULE_KEYS = frozenset(
    {"state", "kind", "month_anchored", "note", "from", "to", *_INT_KEYS, *_DATE_KEYS}
)


@dataclass(frozen=True, slots=True)
class StateRule:
    """One state's rule for one effective period (SPEC 5.3, 15).

    ``effective_from``/``effective_to`` are inclusive, ``None`` is open;
    ``min_age``/``max_age`` are inclusive, ``None`` is open.
    """

    state: str
    kind: RuleKind
    before_days: int = 0
    after_days: int = 0
    month_anchored: bool = False
    effective_from: date | None = None
    effective_to: date | None = None
    min_age: int | None = None
    max_age: int | None = None
    note: str = ""
    period_from: MonthDay | None = None
    """(month, day) of an annual period's first day (SPEC 5.3)."""
    period_to: MonthDay | None = None
    """(month, day) of an annual period's last day; before ``period_from``
    means the period ends in the next year."""
    reason: str = field(init=False, repr=False, compare=False)
    """The fixed skip reason of the rule (SPEC 10), e.g. "Birthday exclusion window for CA"."""
    has_age_range: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in _REASONS:
            raise ValueError(f"unknown rule kind {self.kind!r}")
        # Precomputed because the exclusion check reads them millions of times.
        object.__setattr__(self, "reason", _REASONS[self.kind].format(self.state))
        object.__setattr__(
            self, "has_age_range", self.min_age is not None or self.max_age is not None
        )

    def in_effect(self, on: date) -> bool:
        """True if the rule governs emails desired on ``on`` (SPEC 5.3)."""
        f, t = self.effective_from, self.effective_to
        return (f is None or f <= on) and (t is None or on <= t)

    def applies_to_age(self, age: int) -> bool:
        """True if a contact of ``age`` on the anchor date is covered (SPEC 15)."""
        lo, hi = self.min_age, self.max_age
        return (lo is None or age >= lo) and (hi is None or age <= hi)

    @property
    def annual(self) -> bool:
        """An annual period (checked after, and held besides, the anchored rule)."""
        return self.kind == ANNUAL_PERIOD

    def describe(self) -> str:
        """The rule in words, for ``explain`` and ``status``."""
        if self.kind == "year_round":
            text = f"{self.state}: year-round"
        elif self.period_from is not None and self.period_to is not None:
            text = f"{self.state}: every year from {_md(self.period_from)} to {_md(self.period_to)}"
        else:
            anchor = "birthday" if self.kind == "birthday" else "policy anniversary"
            if self.month_anchored:
                anchor = f"first of the {anchor} month"
            text = f"{self.state}: {anchor}, {self.before_days} before, {self.after_days} after"
        if self.min_age is not None and self.max_age is not None:
            text += f", ages {self.min_age}-{self.max_age}"
        elif self.min_age is not None:
            text += f", ages {self.min_age}+"
        elif self.max_age is not None:
            text += f", ages up to {self.max_age}"
        if self.effective_from is not None:
            text += f", from {self.effective_from.isoformat()}"
        if self.effective_to is not None:
            text += f", until {self.effective_to.isoformat()}"
        return text


def _md(md: MonthDay) -> str:
    return f"{md[0]:02d}-{md[1]:02d}"


def rule_fields(rule: StateRule) -> dict[str, object]:
    """The fields of a rule that shape plans (its note does not), for the
    planning fingerprint (SPEC 4)."""
    return {
        "state": rule.state,
        "kind": rule.kind,
        "before_days": rule.before_days,
        "after_days": rule.after_days,
        "month_anchored": rule.month_anchored,
        "effective_from": rule.effective_from,
        "effective_to": rule.effective_to,
        "min_age": rule.min_age,
        "max_age": rule.max_age,
        "from": _md(rule.period_from) if rule.period_from else None,
        "to": _md(rule.period_to) if rule.period_to else None,
    }


class RuleBook:
    """All state rules, indexed by state for the hot path (SPEC 5.3).

    States are upper-case USPS codes; a state's rules are sorted by start of
    their effective period, which never overlap.
    """

    __slots__ = ("_annual", "_by_state", "rules", "source", "version")

    def __init__(
        self, rules: Iterable[StateRule], source: str = "<rules>", version: str | None = None
    ) -> None:
        self.rules: tuple[StateRule, ...] = tuple(rules)
        self.source = source
        self.version = version
        by_state: dict[str, list[StateRule]] = {}
        annual: dict[str, list[StateRule]] = {}
        for rule in self.rules:
            by_state.setdefault(rule.state, []).append(rule)
            if rule.annual:
                annual.setdefault(rule.state, []).append(rule)
        self._by_state: dict[str, tuple[StateRule, ...]] = {
            state: tuple(sorted(rs, key=_period_start)) for state, rs in by_state.items()
        }
        self._annual: dict[str, tuple[StateRule, ...]] = {
            state: tuple(sorted(rs, key=_period_start)) for state, rs in annual.items()
        }
        _check_overlaps(self.rules, source)

    def rule_on(self, state: str, on: date) -> StateRule | None:
        """The anchored rule (birthday, effective-date window or year-round) of
        ``state`` in effect on ``on``, or None (SPEC 5.3)."""
        rules = self._by_state.get(state)
        if rules is None:
            return None
        for r in rules:
            f, t = r.effective_from, r.effective_to
            if (f is None or f <= on) and (t is None or on <= t) and not r.annual:
                return r
        return None

    def annual_on(self, state: str, on: date) -> StateRule | None:
        """The annual period of ``state`` in effect on ``on``, or None (SPEC 5.3)."""
        for r in self._annual.get(state, ()):
            f, t = r.effective_from, r.effective_to
            if (f is None or f <= on) and (t is None or on <= t):
                return r
        return None

    def rules_for(self, state: str) -> tuple[StateRule, ...]:
        """Every rule of ``state``, in order of effective period."""
        return self._by_state.get(state, ())

    def states(self) -> frozenset[str]:
        """The states that have at least one rule."""
        return frozenset(self._by_state)

    def change_dates(self, state: str) -> tuple[date, ...]:
        """Days on which the rule governing ``state`` changes (SPEC 5.11).

        Each ``effective_from``, and the day after each ``effective_to``, sorted.
        """
        days: set[date] = set()
        for r in self._by_state.get(state, ()):
            if r.effective_from is not None:
                days.add(r.effective_from)
            if r.effective_to is not None and r.effective_to < date.max:
                days.add(r.effective_to + timedelta(days=1))
        return tuple(sorted(days))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleBook) and set(self.rules) == set(other.rules)

    def __hash__(self) -> int:
        return hash(frozenset(self.rules))

    def __repr__(self) -> str:
        return f"RuleBook(source={self.source!r}, rules={len(self.rules)})"


def _period_start(rule: StateRule) -> date:
    return rule.effective_from or date.min


def _check_overlaps(rules: tuple[StateRule, ...], source: str) -> None:
    # Anchored rules and annual periods are checked apart: a state may hold
    # one of each on a day (SPEC 5.3).
    numbered = sorted(
        enumerate(rules, 1), key=lambda nr: (nr[1].state, nr[1].annual, _period_start(nr[1]))
    )
    for (n_prev, prev), (n, rule) in pairwise(numbered):
        if prev.state != rule.state or prev.annual != rule.annual:
            continue
        prev_end = prev.effective_to or date.max
        if prev_end >= _period_start(rule):
            raise RulesError(
                f"{source}: rule {n} ({rule.state}): effective period "
                f"{_period_text(rule)} overlaps rule {n_prev} ({_period_text(prev)}); "
                "each state may have only one rule in effect on any day: "
                "set effective_to on the older rule to the day before effective_from "
                "of the newer one"
            )


def _period_text(rule: StateRule) -> str:
    f = rule.effective_from.isoformat() if rule.effective_from else "open"
    t = rule.effective_to.isoformat() if rule.effective_to else "open"
    return f"{f} .. {t}"


def _show(value: object) -> str:
    """A value as the operator wrote it in TOML."""
    if isinstance(value, date):
        return value.isoformat()
    return repr(value)


class _RuleParser:
    """Validates one ``[[rule]]`` table; every error names file, rule, key and value."""

    def __init__(self, source: str, number: int, table: Mapping[str, object]) -> None:
        self.source = source
        self.number = number
        self.table = table

    def fail(self, key: str, expected: str) -> RulesError:
        value = self.table.get(key)
        state = self.table.get("state")
        where = f" ({state})" if isinstance(state, str) else ""
        return RulesError(
            f"{self.source}: rule {self.number}{where}: key {key!r} = {_show(value)}: {expected}"
        )

    def string(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            if key not in self.table:
                raise self.fail(key, "is required")
            raise self.fail(key, "must be a string")
        return value

    def integer(self, key: str, low: int, high: int) -> int | None:
        if key not in self.table:
            return None
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be a whole number between {low} and {high}")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}")
        return value

    def month_day(self, key: str) -> MonthDay:
        value = self.table.get(key)
        if key not in self.table:
            raise self.fail(key, "is required for an annual_period rule (MM-DD, e.g. '01-31')")
        if isinstance(value, str) and len(value) == 5 and value[2] == "-":
            try:
                # 2000 is a leap year: "02-29" is accepted (Feb 28 in other years).
                parsed = date.fromisoformat(f"2000-{value}")
                return (parsed.month, parsed.day)
            except ValueError:
                pass
        raise self.fail(key, "must be a month and day written 'MM-DD', e.g. '03-31'")

    def day(self, key: str) -> date | None:
        if key not in self.table:
            return None
        value = self.table[key]
        if isinstance(value, str) and len(value) == 10 and value[4] == "-" == value[7]:
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        elif isinstance(value, date) and type(value) is date:
            return value
        raise self.fail(key, "must be a date written YYYY-MM-DD (a TOML date or a string)")

    def parse(self) -> StateRule:
        for key in self.table:
            if key not in _RULE_KEYS:
                raise RulesError(
                    f"{self.source}: rule {self.number}: unknown key {key!r} = "
                    f"{_show(self.table[key])}: allowed keys are {', '.join(sorted(_RULE_KEYS))}"
                )
        state = self.string("state")
        if state not in USPS_CODES:
            raise self.fail("state", "must be an upper-case USPS state code such as 'CA'")
        kind = self.string("kind")
        if kind not in RULE_KINDS:
            raise self.fail("kind", f"must be one of {', '.join(RULE_KINDS)}")
        anchored = self.table.get("month_anchored", False)
        if not isinstance(anchored, bool):
            raise self.fail("month_anchored", "must be true or false")
        before = self.integer("before_days", 0, _MAX_DAYS)
        after = self.integer("after_days", 0, _MAX_DAYS)
        min_age = self.integer("min_age", 0, _MAX_AGE)
        max_age = self.integer("max_age", 0, _MAX_AGE)
        period_from, period_to = self._by_kind(kind, before, after, anchored, min_age, max_age)
        if min_age is not None and max_age is not None and min_age > max_age:
            raise self.fail("max_age", f"must not be below min_age ({min_age})")
        start, end = self.day("effective_from"), self.day("effective_to")
        if start is not None and end is not None and start > end:
            raise self.fail("effective_to", f"must not be before effective_from ({start})")
        return StateRule(
            state=state,
            kind=kind,
            before_days=before or 0,
            after_days=after or 0,
            month_anchored=anchored,
            effective_from=start,
            effective_to=end,
            min_age=min_age,
            max_age=max_age,
            note=self.string("note", ""),
            period_from=period_from,
            period_to=period_to,
        )

    def _by_kind(
        self,
        kind: str,
        before: int | None,
        after: int | None,
        anchored: bool,
        min_age: int | None,
        max_age: int | None,
    ) -> tuple[MonthDay | None, MonthDay | None]:
        """The checks that depend on the rule's kind; an annual period's from/to."""
        if kind == "year_round":
            self._check_year_round(before, after, anchored, min_age, max_age)
            return None, None
        if kind == ANNUAL_PERIOD:
            for key, value in (("before_days", before), ("after_days", after)):
                if value:
                    raise self.fail(key, "must be 0 or absent: an annual period has from/to")
            if anchored:
                raise self.fail("month_anchored", "must be false: an annual period has no anchor")
            return self.month_day("from"), self.month_day("to")
        for key in ("from", "to"):
            if key in self.table:
                raise self.fail(key, "is only allowed on an annual_period rule")
        for key, value in (("before_days", before), ("after_days", after)):
            if value is None:
                raise self.fail(key, f"is required for a {kind} rule")
        return None, None

    def _check_year_round(
        self,
        before: int | None,
        after: int | None,
        anchored: bool,
        min_age: int | None,
        max_age: int | None,
    ) -> None:
        for key, value in (("before_days", before), ("after_days", after)):
            if value:
                raise self.fail(key, "must be 0 or absent: a year_round rule has no window")
        if anchored:
            raise self.fail("month_anchored", "must be false: a year_round rule has no anchor")
        for key, age in (("min_age", min_age), ("max_age", max_age)):
            if age is not None:
                raise self.fail(key, "is not supported on a year_round rule (no anchor date)")


def parse_rules(text: str, source: str) -> RuleBook:
    """Parse and validate a rules file's text (SPEC 5.3); RulesError on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML ({exc}); fix the syntax") from exc
    for key in data:
        if key not in _TOP_KEYS:
            raise RulesError(
                f"{source}: unknown top-level key {key!r}: "
                "allowed are 'version' and [[rule]] tables"
            )
    version = data.get("version")
    if version is not None and not isinstance(version, str):
        raise RulesError(f"{source}: key 'version' = {version!r}: must be a string")
    if "rule" not in data:
        raise RulesError(
            f"{source}: no [[rule]] tables; write 'rule = []' for a file without rules"
        )
    tables = data["rule"]
    if not isinstance(tables, list):
        raise RulesError(f"{source}: 'rule' must be an array of [[rule]] tables")
    rules: list[StateRule] = []
    for number, table in enumerate(tables, 1):
        if not isinstance(table, dict):
            raise RulesError(f"{source}: rule {number}: must be a [[rule]] table")
        rules.append(_RuleParser(source, number, table).parse())
    return RuleBook(rules, source=source, version=version)


def load_rules(path: Path | None = None) -> RuleBook:
    """Load the state rules (SPEC 4 ``state_rules``, 5.3); ``None`` = the built-in table.

    Raises RulesError naming the file, the rule number, the key, the value and
    what is expected; also when the file cannot be read.
    """
    if path is None:
        return builtin_rules()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read the state rules file ({exc})") from exc
    return parse_rules(text, str(path))


def builtin_rules() -> RuleBook:
    """The built-in table of SPEC 15 (parsed on each call: the settings parse it
    once when they are loaded and keep the result)."""
    text = resources.files("service.planning").joinpath("states.toml").read_text("utf-8")
    return parse_rules(text, BUILTIN_SOURCE)
