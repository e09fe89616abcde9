"""State rules as data (SPEC 5.3, 15)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from service.errors import ConfigError, RulesError
from service.planning.rules import (
    BUILTIN_SOURCE,
    RuleBook,
    StateRule,
    builtin_rules,
    load_rules,
    parse_rules,
)

# The SPEC 15 table, row by row:
# (state, kind, before, after, month_anchored, effective_from, effective_to, min_age, max_age)
SECTION_15 = [
    ("CA", "birthday", 30, 60, False, None, None, None, None),
    ("ID", "birthday", 0, 63, False, date(2022, 3, 1), None, None, None),
    ("IL", "birthday", 0, 45, False, date(2022, 1, 1), None, 65, 75),
    ("IN", "birthday", 0, 60, False, date(2026, 1, 1), None, 65, None),
    ("KY", "birthday", 0, 60, False, date(2024, 1, 1), None, None, None),
    ("LA", "birthday", 0, 63, False, date(2022, 8, 1), None, None, None),
    ("MD", "birthday", 0, 30, False, date(2023, 7, 1), None, None, None),
    ("NV", "birthday", 0, 60, True, date(2022, 1, 1), None, None, None),
    ("OK", "birthday", 0, 60, False, None, None, None, None),
    ("OR", "birthday", 30, 31, False, None, None, None, None),
    ("UT", "birthday", 0, 60, False, date(2025, 5, 7), None, None, None),
    ("VA", "birthday", 0, 30, False, None, date(2025, 6, 30), None, None),
    ("VA", "birthday", 0, 60, False, date(2025, 7, 1), None, None, None),
    ("WY", "birthday", 0, 63, False, date(2025, 6, 4), None, None, None),
    # SB 21 (2026): no effective date in the bill, 90 days after adjournment (SPEC 15)
    ("NM", "birthday", 0, 60, True, date(2026, 5, 20), None, 65, None),
    ("MO", "effective_date", 30, 33, False, None, None, None, None),
    ("CT", "year_round", 0, 0, False, None, None, None, None),
    ("MA", "year_round", 0, 0, False, None, None, None, None),
    ("NY", "year_round", 0, 0, False, None, None, None, None),
    ("WA", "year_round", 0, 0, False, None, None, None, None),
]


def _shape(r: StateRule) -> tuple[object, ...]:
    return (
        r.state,
        r.kind,
        r.before_days,
        r.after_days,
        r.month_anchored,
        r.effective_from,
        r.effective_to,
        r.min_age,
        r.max_age,
    )


def test_builtin_table_is_section_15() -> None:
    book = builtin_rules()
    assert sorted(_shape(r) for r in book.rules) == sorted(SECTION_15)
    assert book.states() == frozenset(row[0] for row in SECTION_15)
    assert book.source == BUILTIN_SOURCE
    assert load_rules().rules == book.rules  # the same table, parsed again


@pytest.mark.parametrize(
    ("state", "words"),
    [
        # SPEC 15: each row's statute or regulation, with the date it was checked.
        ("CA", ("Cal. Ins. Code §10192.11", "30 days before", "checked 2026-11")),
        ("IL", ("215 ILCS 5/363", "same issuer or affiliate", "checked 2026-11")),
        ("UT", ("same insurer", "checked 2026-11")),
        ("OR", ("30 days before to 30 days after", "31 days after", "checked 2026-11")),
        ("MO", ("30 days before to 30 after", "33 days after", "checked 2026-11")),
        ("NM", ("SB 21 (2026)", "signature was not confirmed", "checked 2026-11")),
    ],
)
def test_builtin_notes(state: str, words: tuple[str, ...]) -> None:
    (rule,) = builtin_rules().rules_for(state)
    for word in words:
        assert word in rule.note


@pytest.mark.parametrize(
    ("state", "on", "expected"),
    [
        # VA: 0-30 up to 2025-06-30 inclusive, 0-60 from 2025-07-01
        ("VA", date(2020, 1, 1), (0, 30)),
        ("VA", date(2025, 6, 30), (0, 30)),
        ("VA", date(2025, 7, 1), (0, 60)),
        ("VA", date(2030, 1, 1), (0, 60)),
        # effective_from: the day before has no rule, the day itself has
        ("ID", date(2022, 2, 28), None),
        ("ID", date(2022, 3, 1), (0, 63)),
        ("IL", date(2021, 12, 31), None),
        ("IL", date(2022, 1, 1), (0, 45)),
        ("IN", date(2025, 12, 31), None),
        ("IN", date(2026, 1, 1), (0, 60)),
        ("KY", date(2023, 12, 31), None),
        ("KY", date(2024, 1, 1), (0, 60)),
        ("LA", date(2022, 7, 31), None),
        ("LA", date(2022, 8, 1), (0, 63)),
        ("MD", date(2023, 6, 30), None),
        ("MD", date(2023, 7, 1), (0, 30)),
        ("NV", date(2021, 12, 31), None),
        ("NV", date(2022, 1, 1), (0, 60)),
        ("UT", date(2025, 5, 6), None),
        ("UT", date(2025, 5, 7), (0, 60)),
        ("WY", date(2025, 6, 3), None),
        ("WY", date(2025, 6, 4), (0, 63)),
        # no effective period: always
        ("CA", date(1990, 1, 1), (30, 60)),
        ("OR", date(2026, 1, 1), (30, 31)),
        ("MO", date(2026, 1, 1), (30, 33)),
        ("NY", date(2026, 1, 1), (0, 0)),
        # no rule at all
        ("TX", date(2026, 1, 1), None),
        ("ca", date(2026, 1, 1), None),  # lookups take normalised upper-case codes
    ],
)
def test_rule_on(state: str, on: date, expected: tuple[int, int] | None) -> None:
    rule = builtin_rules().rule_on(state, on)
    if expected is None:
        assert rule is None
    else:
        assert rule is not None
        assert (rule.before_days, rule.after_days) == expected
        assert rule.in_effect(on)


@pytest.mark.parametrize(
    ("state", "age", "applies"),
    [
        ("IL", 64, False),
        ("IL", 65, True),
        ("IL", 75, True),
        ("IL", 76, False),
        ("IN", 64, False),
        ("IN", 65, True),
        ("IN", 110, True),
        ("CA", 0, True),
        ("CA", 120, True),
    ],
)
def test_applies_to_age(state: str, age: int, applies: bool) -> None:
    rule = builtin_rules().rule_on(state, date(2026, 6, 1))
    assert rule is not None
    assert rule.applies_to_age(age) is applies


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("VA", (date(2025, 7, 1),)),  # day after VA's effective_to == next rule's from
        ("IN", (date(2026, 1, 1),)),
        ("CA", ()),
        ("TX", ()),
    ],
)
def test_change_dates(state: str, expected: tuple[date, ...]) -> None:
    assert builtin_rules().change_dates(state) == expected


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("CA", "Birthday exclusion window for CA"),
        ("MO", "Effective date exclusion window for MO"),
        ("NY", "Year-round exclusion for NY"),
    ],
)
def test_reason_text(state: str, reason: str) -> None:
    (rule,) = builtin_rules().rules_for(state)
    assert rule.reason == reason


def test_describe() -> None:
    book = builtin_rules()
    il = book.rule_on("IL", date(2026, 1, 1))
    nv = book.rule_on("NV", date(2026, 1, 1))
    ny = book.rule_on("NY", date(2026, 1, 1))
    assert il is not None and nv is not None and ny is not None
    assert il.describe() == "IL: birthday, 0 before, 45 after, ages 65-75, from 2022-01-01"
    assert nv.describe() == ("NV: first of the birthday month, 0 before, 60 after, from 2022-01-01")
    assert ny.describe() == "NY: year-round"


GOOD = """
version = "test"

[[rule]]
state = "TX"
kind = "effective_date"
before_days = 10
after_days = 20
month_anchored = true
effective_from = "2030-01-01"
effective_to = 2030-12-31
min_age = 70
note = "hypothetical"

[[rule]]
state = "TX"
kind = "year_round"
effective_from = 2031-01-01
"""


def test_load_custom_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD, encoding="utf-8")
    book = load_rules(path)
    assert book.version == "test"
    assert book.states() == frozenset({"TX"})
    assert book.rule_on("TX", date(2029, 12, 31)) is None
    first = book.rule_on("TX", date(2030, 1, 1))
    assert first is not None
    assert _shape(first) == (
        "TX",
        "effective_date",
        10,
        20,
        True,
        date(2030, 1, 1),
        date(2030, 12, 31),
        70,
        None,
    )
    second = book.rule_on("TX", date(2031, 1, 1))
    assert second is not None and second.kind == "year_round"
    assert book.change_dates("TX") == (date(2030, 1, 1), date(2031, 1, 1))


def test_empty_rule_list_is_allowed() -> None:
    assert parse_rules("rule = []\n", "x.toml").rules == ()


def _rule(**fields: object) -> str:
    base: dict[str, object] = {
        "state": '"CA"',
        "kind": '"birthday"',
        "before_days": "30",
        "after_days": "60",
    }
    base.update(fields)
    lines = [f"{k} = {v}" for k, v in base.items() if v is not None]
    return "[[rule]]\n" + "\n".join(lines) + "\n"


OK_RULE = _rule(state='"OK"', before_days="0")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        # unknown key, with its value and the allowed keys
        (OK_RULE + _rule(colour='"red"'), ["rule 2", "'colour'", "'red'", "allowed keys"]),
        # wrong types
        (_rule(before_days='"30"'), ["rule 1", "'before_days'", "'30'", "whole number"]),
        (_rule(after_days="true"), ["rule 1", "'after_days'", "True", "whole number"]),
        (_rule(after_days="6.5"), ["rule 1", "'after_days'", "6.5", "whole number"]),
        (_rule(month_anchored='"yes"'), ["'month_anchored'", "'yes'", "true or false"]),
        (_rule(note="3"), ["'note'", "3", "string"]),
        (_rule(state="6"), ["'state'", "6", "string"]),
        # negative and oversized days
        (OK_RULE + _rule(before_days="-3"), ["rule 2", "'before_days'", "-3", "between 0"]),
        (_rule(after_days="400"), ["'after_days'", "400", "between 0 and 365"]),
        # missing keys
        (_rule(state=None), ["rule 1", "'state'", "required"]),
        (_rule(kind=None), ["rule 1", "'kind'", "required"]),
        (_rule(after_days=None), ["rule 1", "'after_days'", "required"]),
        # bad values
        (_rule(kind='"birthdays"'), ["'kind'", "'birthdays'", "birthday, effective_date"]),
        (_rule(state='"ZZ"'), ["'state'", "'ZZ'", "USPS"]),
        (_rule(state='"ca"'), ["'state'", "'ca'", "upper-case"]),
        # dates
        (_rule(effective_from='"2025-02-30"'), ["'effective_from'", "'2025-02-30'", "date"]),
        (_rule(effective_from='"next year"'), ["'effective_from'", "'next year'", "date"]),
        (_rule(effective_from="2025"), ["'effective_from'", "2025", "date"]),
        (_rule(effective_from="2025-01-01T00:00:00"), ["'effective_from'", "date"]),
        (
            _rule(effective_from="2025-07-01", effective_to="2025-06-30"),
            ["'effective_to'", "2025-06-30", "before effective_from"],
        ),
        # ages
        (_rule(min_age="-1"), ["'min_age'", "-1", "between 0"]),
        (_rule(min_age="76", max_age="75"), ["'max_age'", "75", "below min_age"]),
        # year-round rules have no window
        (
            _rule(kind='"year_round"', before_days="0", after_days="5"),
            ["'after_days'", "5", "year_round rule has no window"],
        ),
        (
            _rule(kind='"year_round"', before_days="0", after_days="0", min_age="65"),
            ["'min_age'", "year_round"],
        ),
        (
            _rule(kind='"year_round"', before_days="0", after_days="0", month_anchored="true"),
            ["'month_anchored'", "year_round"],
        ),
        # overlapping periods of one state
        (
            _rule(state='"VA"', effective_to="2025-07-01")
            + _rule(state='"VA"', effective_from="2025-07-01"),
            ["rule 2", "VA", "overlaps rule 1", "effective_to"],
        ),
        (_rule() + _rule(effective_from="2030-01-01"), ["rule 2", "overlaps rule 1"]),
        # file-level problems
        ('version = "x"\n', ["no [[rule]] tables"]),
        ("rule = 3\n", ["array of [[rule]] tables"]),
        ("rule = [1]\n", ["rule 1", "[[rule]] table"]),
        ('states = "CA"\n' + _rule(), ["unknown top-level key", "'states'"]),
        ("version = 1\n" + _rule(), ["'version'", "string"]),
        ("[[rule]\nstate=", ["not valid TOML"]),
    ],
)
def test_bad_rules_file(tmp_path: Path, text: str, fragments: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    message = str(info.value)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message
    assert isinstance(info.value, ConfigError)  # exit code 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "nope.toml")


def test_rulebook_rejects_overlap_built_in_code() -> None:
    with pytest.raises(RulesError, match="overlaps"):
        RuleBook(
            [
                StateRule("CA", "birthday", 0, 30, effective_to=date(2025, 1, 1)),
                StateRule("CA", "birthday", 0, 60, effective_from=date(2025, 1, 1)),
            ]
        )


def test_unknown_kind_in_code() -> None:
    with pytest.raises(ValueError, match="unknown rule kind"):
        StateRule("CA", "weekly", 0, 30)  # type: ignore[arg-type]


def test_equality_ignores_order() -> None:
    a = StateRule("CA", "birthday", 30, 60)
    b = StateRule("NY", "year_round")
    assert RuleBook([a, b]) == RuleBook([b, a])
    assert RuleBook([a]) != RuleBook([b])
