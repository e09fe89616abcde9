"""Configuration (SPEC 4): defaults, every key valid and invalid, precedence."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from service import config, config_checks
from service.config import KEYS, Settings, load_settings, parse_assignment
from service.errors import ConfigError, RulesError
from service.planning.params import BalanceParams, PlanParams


@pytest.fixture(autouse=True)
def config_no_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read a real /etc/mailplan/mailplan.toml of the machine running the tests."""
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def write(tmp_path: Path, text: str, name: str = "mailplan.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# The defaults column of the SPEC section-4 table, copied by hand.
SPEC_DEFAULTS = {
    "timezone": "America/Chicago",
    "send_time": "08:30",
    "send_in_contact_timezone": False,
    "horizon_days": 60,
    "birthday_days_before": 14,
    "effective_date_days_before": 30,
    "effective_date_first_email_months": 11,
    "pre_window_buffer_days": 60,
    "followup_delay_days": 2,
    "followup_lookback_days": 35,
    "max_emails_per_period": 3,
    "period_days": 30,
    "daily_send_percentage_cap": 0.07,
    "daily_cap": None,
    "overage_threshold": 1.2,
    "ed_daily_soft_limit": 15,
    "ed_smoothing_window_days": 5,
    "enable_post_window_emails": True,
    "exclude_failed_underwriting_global": False,
    "send_without_zipcode_for_universal": True,
    "state_rules": None,
    # SPEC 7: the plan journal is kept 400 days by default.
    "journal_retention_days": 400,
}


def test_defaults_are_the_spec_table() -> None:
    s = load_settings(None, {}, {})
    for key, expected in SPEC_DEFAULTS.items():
        assert getattr(s, key) == expected, key
    assert s.db is None and s.inbox is None
    assert set(SPEC_DEFAULTS) | {"db", "inbox"} == set(KEYS)


def test_every_key_has_a_check() -> None:
    assert set(config_checks.CHECKS) == set(KEYS)


def test_journal_retention_is_not_a_planning_key() -> None:
    # It does not change the plan (SPEC 7), so it must not change the fingerprint.
    base = load_settings(None, {}, {})
    kept = load_settings(None, {}, {"journal_retention_days": 30})
    assert kept.journal_retention_days == 30
    assert kept.fingerprint() == base.fingerprint()
    assert "journal_retention_days" not in kept.planning_values()


# (key, value as the TOML file gives it, value as an env string, typed result)
VALID = [
    ("timezone", "America/New_York", "America/New_York", "America/New_York"),
    ("timezone", "UTC", "UTC", "UTC"),
    ("send_time", "07:05", "07:05", "07:05"),
    ("send_time", "23:59", "23:59", "23:59"),
    ("send_time", "00:00", "00:00", "00:00"),
    ("send_in_contact_timezone", True, "true", True),
    ("send_in_contact_timezone", False, "no", False),
    ("horizon_days", 90, "90", 90),
    ("horizon_days", 0, "0", 0),
    ("birthday_days_before", 21, "21", 21),
    ("effective_date_days_before", 0, "0", 0),
    ("effective_date_first_email_months", 12, "12", 12),
    ("pre_window_buffer_days", 0, "0", 0),
    ("followup_delay_days", 3, "3", 3),
    ("followup_lookback_days", 60, "60", 60),
    ("max_emails_per_period", 5, "5", 5),
    ("period_days", 7, "7", 7),
    ("daily_send_percentage_cap", 0.5, "0.5", 0.5),
    ("daily_send_percentage_cap", 1, "1", 1.0),  # the upper end of (0, 1] is allowed
    ("daily_cap", 500, "500", 500),
    ("daily_cap", 1, "1", 1),
    ("overage_threshold", 1.0, "1.0", 1.0),
    ("overage_threshold", 2, "2", 2.0),
    ("ed_daily_soft_limit", 0, "0", 0),
    ("ed_smoothing_window_days", 1, "1", 1),
    ("enable_post_window_emails", False, "0", False),
    ("exclude_failed_underwriting_global", True, "on", True),
    ("send_without_zipcode_for_universal", False, "off", False),
    (
        "db",
        "/var/lib/mailplan/org.sqlite3",
        "/var/lib/mailplan/org.sqlite3",
        Path("/var/lib/mailplan/org.sqlite3"),
    ),
    ("inbox", "/srv/inbox", "/srv/inbox", Path("/srv/inbox")),
]


@pytest.mark.parametrize(("key", "toml_value", "env_value", "expected"), VALID)
def test_valid_values_from_file_env_and_flags(
    tmp_path: Path, key: str, toml_value: object, env_value: str, expected: object
) -> None:
    toml_text = f"{key} = {_toml(toml_value)}\n"
    from_file = load_settings(write(tmp_path, toml_text), {}, {})
    from_env = load_settings(None, {config.env_name(key): env_value}, {})
    from_flag = load_settings(None, {}, {key: env_value})
    assert getattr(from_file, key) == expected
    assert getattr(from_env, key) == expected
    assert getattr(from_flag, key) == expected


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


# (key, raw value, a fragment of the rule the message must state)
INVALID = [
    ("timezone", "Mars/Base", "not a known IANA time zone (use e.g. America/Chicago)"),
    ("timezone", "", "IANA time zone"),
    ("timezone", 5, "IANA time zone"),
    ("send_time", "8:30", "HH:MM"),
    ("send_time", "24:00", "HH:MM"),
    ("send_time", "08:60", "HH:MM"),
    ("send_time", "08:30:00", "HH:MM"),
    ("send_time", 830, "must be a string"),
    ("send_in_contact_timezone", "maybe", "true or false"),
    ("send_in_contact_timezone", 1, "true or false"),
    ("horizon_days", -1, "must not be negative"),
    ("horizon_days", "sixty", "whole number"),
    ("horizon_days", 1.5, "whole number"),
    ("horizon_days", True, "whole number"),
    ("horizon_days", 100000, "at most 3660"),
    ("birthday_days_before", -14, "must not be negative"),
    ("effective_date_days_before", -1, "must not be negative"),
    ("effective_date_first_email_months", -1, "between 0 and 120"),
    ("pre_window_buffer_days", -60, "must not be negative"),
    ("followup_delay_days", -2, "must not be negative"),
    ("followup_lookback_days", -35, "must not be negative"),
    ("max_emails_per_period", 0, "between 1 and 1000"),
    ("period_days", 0, "must not be less than 1"),
    ("period_days", -30, "must not be less than 1"),
    ("daily_send_percentage_cap", 0, "(0, 1]"),
    ("daily_send_percentage_cap", 1.5, "(0, 1]"),
    ("daily_send_percentage_cap", -0.07, "(0, 1]"),
    ("daily_send_percentage_cap", "7%", "must be a number"),
    ("daily_send_percentage_cap", "nan", "finite"),
    ("daily_cap", 0, "at least 1"),
    ("daily_cap", -5, "at least 1"),
    ("overage_threshold", 0.9, "between 1.0 and 100"),
    ("ed_daily_soft_limit", -1, "between 0 and"),
    ("ed_smoothing_window_days", 0, "between 1 and 366"),
    ("enable_post_window_emails", "yes please", "true or false"),
    ("exclude_failed_underwriting_global", 2, "true or false"),
    ("send_without_zipcode_for_universal", "", "true or false"),
]


@pytest.mark.parametrize(("key", "raw", "rule"), INVALID)
def test_invalid_values_name_key_value_and_rule(key: str, raw: object, rule: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {}, {key: raw})
    message = str(err.value)
    assert message.startswith(f"{key}={raw!r} (from the command line): ")
    assert rule in message


def test_invalid_value_in_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'timezone = "Mars/Base"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(path, {}, {})
    assert str(err.value) == (
        f"timezone='Mars/Base' (from configuration file {str(path)!r}): "
        "not a known IANA time zone (use e.g. America/Chicago)"
    )


def test_invalid_value_in_env_names_the_variable() -> None:
    with pytest.raises(
        ConfigError,
        match=r"horizon_days='-5' \(from environment variable "
        r"MAILPLAN_HORIZON_DAYS\): must not be negative",
    ):
        load_settings(None, {"MAILPLAN_HORIZON_DAYS": "-5"}, {})


def test_precedence_file_then_env_then_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "horizon_days = 10\nperiod_days = 20\nmax_emails_per_period = 4\n")
    env = {"MAILPLAN_HORIZON_DAYS": "11", "MAILPLAN_PERIOD_DAYS": "21"}
    s = load_settings(path, env, {"horizon_days": "12"})
    assert s.horizon_days == 12  # flag beats env beats file
    assert s.period_days == 21  # env beats file
    assert s.max_emails_per_period == 4  # file beats default
    assert s.birthday_days_before == 14  # default


def test_flag_none_means_not_given(tmp_path: Path) -> None:
    s = load_settings(None, {"MAILPLAN_HORIZON_DAYS": "11"}, {"horizon_days": None})
    assert s.horizon_days == 11


def test_unknown_key_in_file_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, "horizon_day = 10\n")
    with pytest.raises(
        ConfigError,
        match=r"unknown configuration key 'horizon_day'.*"
        r"did you mean 'horizon_days'",
    ):
        load_settings(path, {}, {})


def test_unknown_env_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match="MAILPLAN_HORIZON"):
        load_settings(None, {"MAILPLAN_HORIZON": "10"}, {})


def test_cli_only_env_variables_are_not_keys() -> None:
    s = load_settings(None, {"MAILPLAN_LOG_FORMAT": "console", "PATH": "/bin"}, {})
    assert s == Settings()


def test_unknown_flag_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown configuration key 'colour'"):
        load_settings(None, {}, {"colour": "blue"})


def test_table_value_is_a_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "[horizon_days]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"horizon_days=.*whole number"):
        load_settings(path, {}, {})


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", {}, {})


def test_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "horizon_days = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, {}, {})


def test_default_file_used_only_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "etc.toml"
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", default)
    assert load_settings(None, {}, {}).horizon_days == 60
    default.write_text("horizon_days = 45\n")
    assert load_settings(None, {}, {}).horizon_days == 45


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "horizon_days = 33\n")
    assert load_settings(None, {"MAILPLAN_CONFIG": str(path)}, {}).horizon_days == 33


def test_daily_cap_unset_from_env() -> None:
    assert load_settings(None, {"MAILPLAN_DAILY_CAP": ""}, {}).daily_cap is None


RULES = """
[[rule]]
state = "TX"
kind = "birthday"
before_days = 0
after_days = 10
note = "test"
"""


def test_state_rules_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path, RULES, "rules.toml")
    s = load_settings(None, {}, {"state_rules": str(path)})
    assert s.state_rules == path
    assert s.rules().states() == frozenset({"TX"})


def test_state_rules_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "rules.toml"
    with pytest.raises(
        ConfigError,
        match=r"state_rules='.*rules.toml' \(from the command "
        r"line\): file not found",
    ):
        load_settings(None, {}, {"state_rules": str(missing)})


def test_state_rules_broken_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[[rule]]\nstate = "TX"\nkind = "sometimes"\n', "rules.toml")
    with pytest.raises(RulesError, match=r"rules\.toml"):
        load_settings(None, {}, {"state_rules": str(path)})


def test_builtin_rules_by_default() -> None:
    assert "CA" in Settings().rules().states()


def test_params() -> None:
    s = load_settings(
        None, {}, {"horizon_days": 90, "daily_cap": 100, "enable_post_window_emails": False}
    )
    assert s.plan_params() == PlanParams(horizon_days=90, enable_post_window_emails=False)
    assert s.balance_params() == BalanceParams(daily_cap=100)
    assert s.send_clock == time(8, 30)
    assert s.tz.key == "America/Chicago"


def test_fingerprint(tmp_path: Path) -> None:
    base = Settings().fingerprint()
    assert base == Settings().fingerprint()
    assert len(base) == 64
    # Where the database is does not change the plan.
    assert Settings(db=Path("/x.sqlite3"), inbox=Path("/in")).fingerprint() == base
    assert Settings(horizon_days=61).fingerprint() != base
    assert Settings(send_time="09:00").fingerprint() != base
    path = write(tmp_path, RULES, "rules.toml")
    with_file = Settings(state_rules=path).fingerprint()
    assert with_file != base
    copy = write(tmp_path, RULES, "copy.toml")
    assert Settings(state_rules=copy).fingerprint() == with_file  # same content, other name
    path.write_text(RULES.replace("after_days = 10", "after_days = 11"))
    assert Settings(state_rules=path).fingerprint() != with_file


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("horizon_days=90", ("horizon_days", "90")),
        ("daily-cap=", ("daily_cap", "")),
        (" send_time = 07:00", ("send_time", " 07:00")),
    ],
)
def test_parse_assignment(text: str, expected: tuple[str, str]) -> None:
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["horizon_days", "=5", ""])
def test_parse_assignment_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignment(text)


# --- the planning fingerprint and the units' environment files (SPEC 4) ---------------------


def test_fingerprint_is_fixed_when_the_settings_are_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, RULES, "rules.toml")
    loaded = Settings(state_rules=path)
    before = loaded.fingerprint()
    path.write_text(RULES.replace("after_days = 10", "after_days = 11"))
    # The rules were parsed once: the loaded settings keep them (and their fingerprint).
    assert loaded.fingerprint() == before
    tx = loaded.rules().rules[0]
    assert tx.after_days == 10
    assert Settings(state_rules=path).fingerprint() != before


def test_fingerprint_ignores_comments_order_and_notes(tmp_path: Path) -> None:
    two = RULES + '\n[[rule]]\nstate = "NY"\nkind = "year_round"\nnote = "a"\n'
    swapped = '[[rule]]\nstate = "NY"\nkind = "year_round"\nnote = "other note"\n' + RULES
    first = Settings(state_rules=write(tmp_path, two, "a.toml")).fingerprint()
    second = Settings(state_rules=write(tmp_path, "# comment\n" + swapped, "b.toml"))
    assert second.fingerprint() == first


def test_differing_keys_name_each_key_with_both_values(tmp_path: Path) -> None:
    stored = Settings(horizon_days=90).planning_json()
    now = Settings(state_rules=write(tmp_path, RULES, "rules.toml"))
    keys = config.differing_keys(stored, now.planning_json())
    assert keys == [
        "horizon_days (stored 90, now 60)",
        f"state_rules (stored built-in content, now {tmp_path / 'rules.toml'} content)",
    ]
    assert config.differing_keys(now.planning_json(), now.planning_json()) == []
    assert config.differing_keys(None, now.planning_json()) == [
        "no settings are recorded with the stored plan"
    ]
    # db and inbox are not planning keys
    assert (
        config.differing_keys(
            Settings(db=Path("/a")).planning_json(), Settings(db=Path("/b")).planning_json()
        )
        == []
    )


def test_environment_files_are_read_like_systemd(tmp_path: Path) -> None:
    common = write(tmp_path, "# comment\n; also\nMAILPLAN_HORIZON_DAYS=90\n"
                   "MAILPLAN_SEND_TIME='09:15'\n\nPATH_LIKE=x\n", "mailplan.env")  # fmt: skip
    org = write(tmp_path, 'MAILPLAN_HORIZON_DAYS="75"\n', "org.env")
    environ = {config.ENV_ENV_FILE: f"{common}:{org}", "MAILPLAN_DAILY_CAP": "5"}
    merged, origin = config.environment_with_files(environ)
    assert merged["MAILPLAN_HORIZON_DAYS"] == "75"  # the later file wins
    assert merged["MAILPLAN_SEND_TIME"] == "09:15"
    assert "MAILPLAN_DAILY_CAP" not in origin  # the process environment wins and is its own
    s = load_settings(None, merged, {}, origin)
    assert (s.horizon_days, s.send_time, s.daily_cap) == (75, "09:15", 5)
    # The process environment wins over the files.
    merged, origin = config.environment_with_files({**environ, "MAILPLAN_HORIZON_DAYS": "61"})
    assert load_settings(None, merged, {}, origin).horizon_days == 61
    # Messages name the file a bad value came from.
    bad = write(tmp_path, "MAILPLAN_HORIZON_DAYS=-1\n", "bad.env")
    merged, origin = config.environment_with_files({config.ENV_ENV_FILE: str(bad)})
    with pytest.raises(ConfigError, match=r"MAILPLAN_HORIZON_DAYS in '.*bad\.env'"):
        load_settings(None, merged, {}, origin)


def test_environment_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.environment_with_files({config.ENV_ENV_FILE: str(tmp_path / "missing.env")})
    broken = write(tmp_path, "MAILPLAN_HORIZON_DAYS 90\n", "broken.env")
    with pytest.raises(ConfigError, match="line 1: expected KEY=VALUE"):
        config.environment_with_files({config.ENV_ENV_FILE: str(broken)})
