"""Typed, validated configuration (SPEC section 4).

Sources, later ones winning: the TOML file (``--config``, or
``/etc/mailplan/mailplan.toml`` when it exists), environment variables
``MAILPLAN_<KEY>``, then command-line flags. Every value is checked here, once,
at the edge; an invalid value raises :class:`ConfigError` naming the key, the
value, where it came from and the rule it breaks. Modules receive a
:class:`Settings` (or the parameter objects built from it) and never read
configuration themselves.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.config_checks import CHECKS
from service.errors import ConfigError
from service.planning.params import (
    DEFAULT_SEND_TIME,
    DEFAULT_TIMEZONE,
    BalanceParams,
    PlanParams,
)

if TYPE_CHECKING:
    from service.planning.rules import RuleBook

DEFAULT_CONFIG_PATH = Path("/etc/mailplan/mailplan.toml")
DEFAULT_ENV_FILE = Path("/etc/mailplan/mailplan.env")
"""The environment file the systemd units name (``EnvironmentFile=``)."""
ENV_PREFIX = "MAILPLAN_"
ENV_CONFIG = "MAILPLAN_CONFIG"
ENV_ENV_FILE = "MAILPLAN_ENV_FILE"
ENV_LOG_FORMAT = "MAILPLAN_LOG_FORMAT"
ENV_LOG_LEVEL = "MAILPLAN_LOG_LEVEL"
CLI_ONLY_ENV = frozenset({ENV_CONFIG, ENV_ENV_FILE, ENV_LOG_FORMAT, ENV_LOG_LEVEL})
"""``MAILPLAN_`` variables read by the command line itself, not settings keys."""


_PLAN = PlanParams()
_BALANCE = BalanceParams()
"""The defaults of the planning keys live with the parameters the core reads."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every section-4 key, plus the database path and inbox folder.

    ``db`` and ``inbox`` are not planning parameters: they may come from the
    file or the environment (``MAILPLAN_DB``) like any key, so that a service
    unit can name only ``--config``.
    """

    timezone: str = DEFAULT_TIMEZONE
    send_time: str = DEFAULT_SEND_TIME
    send_in_contact_timezone: bool = False
    horizon_days: int = _PLAN.horizon_days
    birthday_days_before: int = _PLAN.birthday_days_before
    effective_date_days_before: int = _PLAN.effective_date_days_before
    effective_date_first_email_months: int = _PLAN.effective_date_first_email_months
    pre_window_buffer_days: int = _PLAN.pre_window_buffer_days
    followup_delay_days: int = _PLAN.followup_delay_days
    followup_lookback_days: int = _PLAN.followup_lookback_days
    max_emails_per_period: int = _PLAN.max_emails_per_period
    period_days: int = _PLAN.period_days
    daily_send_percentage_cap: float = _BALANCE.daily_send_percentage_cap
    daily_cap: int | None = _BALANCE.daily_cap
    overage_threshold: float = _BALANCE.overage_threshold
    ed_daily_soft_limit: int = _BALANCE.ed_daily_soft_limit
    ed_smoothing_window_days: int = _BALANCE.ed_smoothing_window_days
    enable_post_window_emails: bool = _PLAN.enable_post_window_emails
    exclude_failed_underwriting_global: bool = _PLAN.exclude_failed_underwriting_global
    send_without_zipcode_for_universal: bool = _PLAN.send_without_zipcode_for_universal
    state_rules: Path | None = None
    journal_retention_days: int = 400
    db: Path | None = None
    inbox: Path | None = None
    rulebook: RuleBook | None = field(default=None, init=False, compare=False, repr=False)
    """The rules in force, parsed once when the settings are built (SPEC 4):
    editing the file afterwards changes nothing until the settings are
    loaded again (a restart or SIGHUP), which then sees the difference."""

    def __post_init__(self) -> None:
        # Also under dataclasses.replace: the rules always match state_rules.
        from service.planning.rules import load_rules

        object.__setattr__(self, "rulebook", load_rules(self.state_rules))

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The organisation's time zone (defines *today*)."""
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def send_clock(self) -> time:
        """``send_time`` as a :class:`datetime.time`."""
        hours, minutes = self.send_time.split(":")
        return time(int(hours), int(minutes))

    def plan_params(self) -> PlanParams:
        """The tunables of the planning rules (SPEC 5)."""
        return PlanParams(**{f.name: getattr(self, f.name) for f in fields(PlanParams)})

    def balance_params(self) -> BalanceParams:
        """The tunables of load balancing (SPEC 6)."""
        return BalanceParams(**{f.name: getattr(self, f.name) for f in fields(BalanceParams)})

    def rules(self) -> RuleBook:
        """The state exclusion rules in force: the built-in table or the
        ``state_rules`` file, as parsed when these settings were built."""
        assert self.rulebook is not None
        return self.rulebook

    def planning_values(self) -> dict[str, object]:
        """Every scalar key that can change the plan (the rules enter by content)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in SCALAR_KEYS}

    def planning_record(self) -> dict[str, object]:
        """Every section-4 key with its value, the rules by their content's
        digest (and where they came from): what is stored with the plan so a
        difference can be named key by key (SPEC 4)."""
        record: dict[str, object] = dict(self.planning_values())
        record["state_rules"] = {
            "digest": rules_digest(self.rules()),
            "source": str(self.state_rules) if self.state_rules else "built-in",
        }
        return record

    def planning_json(self) -> str:
        """:meth:`planning_record` as canonical JSON."""
        return json.dumps(self.planning_record(), sort_keys=True)

    def fingerprint(self) -> str:
        """The planning fingerprint (SPEC 4): a SHA-256 of every section-4 key.

        Two settings with equal fingerprints produce the same plan for the same
        data and *today*. The rules enter by their parsed content, not by path
        or text: an edited ``state_rules`` file changes the fingerprint (once
        the settings are loaded again), a copy of the built-in table under
        another name, or a comment edit, does not.
        """
        record = dict(self.planning_values())
        record["state_rules"] = rules_digest(self.rules())
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


# journal_retention_days says how long the plan journal is kept (SPEC 7); it
# never changes a plan, so it is not part of the planning fingerprint.
SCALAR_KEYS = frozenset(
    f.name
    for f in fields(Settings)
    if f.name not in {"db", "inbox", "state_rules", "rulebook", "journal_retention_days"}
)
"""The section-4 keys other than ``state_rules`` (which enters by content)."""
PLANNING_KEYS = frozenset({*SCALAR_KEYS, "state_rules"})
"""Every section-4 key: the keys of the planning fingerprint."""
KEYS: tuple[str, ...] = tuple(f.name for f in fields(Settings) if f.name != "rulebook")


def _rule_value(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value


def rules_digest(book: RuleBook) -> str:
    """SHA-256 of the rules' parsed content, independent of their order in the file."""
    from service.planning.rules import rule_fields

    rows = sorted(
        json.dumps({k: _rule_value(v) for k, v in rule_fields(rule).items()}, sort_keys=True)
        for rule in book.rules
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def differing_keys(stored_json: str | None, current_json: str) -> list[str]:
    """The section-4 keys whose values differ between two
    :meth:`Settings.planning_json` records (the stored plan's and the current
    settings'), each as ``key (stored X, now Y)``; one explanatory entry when
    nothing readable is stored."""
    stored = _json_object(stored_json)
    if stored is None:
        return ["no settings are recorded with the stored plan"]
    now = _json_object(current_json) or {}
    out: list[str] = []
    for key in sorted(PLANNING_KEYS):
        old, new = stored.get(key), now.get(key)
        if key == "state_rules":
            old_d = old.get("digest") if isinstance(old, dict) else None
            new_d = new.get("digest") if isinstance(new, dict) else None
            if old_d != new_d:
                old_src = old.get("source") if isinstance(old, dict) else None
                new_src = new.get("source") if isinstance(new, dict) else None
                out.append(f"state_rules (stored {old_src} content, now {new_src} content)")
        elif old != new:
            out.append(f"{key} (stored {old!r}, now {new!r})")
    return out


def _json_object(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def env_name(key: str) -> str:
    """The environment variable that overrides ``key``."""
    return ENV_PREFIX + key.upper()


def _unknown_key(key: str, source: str) -> ConfigError:
    near = difflib.get_close_matches(key, KEYS, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return ConfigError(
        f"unknown configuration key {key!r} in {source}{hint}; known keys: {', '.join(KEYS)}"
    )


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {str(path)!r} not found; "
            "pass an existing file with --config or leave --config out"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"configuration file {str(path)!r} is not valid TOML: {exc}; fix the file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {str(path)!r} cannot be read: {exc}") from None


def _from_env(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """key -> (raw text, variable name) for every ``MAILPLAN_`` settings variable."""
    by_var = {env_name(k): k for k in KEYS}
    found: dict[str, tuple[str, str]] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in CLI_ONLY_ENV:
            continue
        key = by_var.get(var)
        if key is None:
            raise _unknown_key(var[len(ENV_PREFIX) :].lower(), f"environment variable {var}")
        found[key] = (environ[var], var)
    return found


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of a systemd ``EnvironmentFile`` (``#`` and ``;``
    start comments, values may be quoted)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"environment file {str(path)!r} cannot be read: {exc}") from None
    found: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text[0] in "#;":
            continue
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(
                f"environment file {str(path)!r} line {number}: expected KEY=VALUE, "
                f"got {text[:80]!r}; fix the line"
            )
        found[key] = _unquote(value.strip())
    return found


def environment_with_files(environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The process environment on top of the environment files the units name.

    The files are those of ``MAILPLAN_ENV_FILE`` (several separated by
    ``:``, read in order, later ones winning; every one must exist), else
    ``/etc/mailplan/mailplan.env`` when it exists. Variables already in the
    process environment win, as under systemd, where the unit's files are the
    environment. Returns the merged environment and, for each variable taken
    from a file, that file (for messages).
    """
    files: list[Path] = []
    named = environ.get(ENV_ENV_FILE)
    if named:
        for part in named.split(":"):
            if part.strip():
                path = Path(part.strip()).expanduser()
                if not path.is_file():
                    raise ConfigError(
                        f"{ENV_ENV_FILE}={named!r}: environment file {str(path)!r} not found; "
                        "point it at the file the service unit names, or unset it"
                    )
                files.append(path)
    elif DEFAULT_ENV_FILE.is_file():
        files.append(DEFAULT_ENV_FILE)
    merged: dict[str, str] = {}
    origin: dict[str, str] = {}
    for path in files:
        for key, value in read_env_file(path).items():
            merged[key] = value
            origin[key] = str(path)
    for key, value in environ.items():
        merged[key] = value
        origin.pop(key, None)
    return merged, origin


def load_settings(
    config_path: Path | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, object],
    env_origin: Mapping[str, str] | None = None,
) -> Settings:
    """Build and validate the settings: file < environment < ``overrides`` (CLI flags).

    ``config_path`` None means the default file when it exists, else defaults
    only. ``MAILPLAN_CONFIG`` in ``environ`` names the file when
    ``config_path`` is None. Overrides whose value is None are ignored (a flag
    that was not given). ``env_origin`` names the environment file a variable
    came from (see :func:`environment_with_files`), for messages.
    """
    origin = env_origin or {}
    raw: dict[str, tuple[Any, str]] = {}
    path = config_path
    if path is None and environ.get(ENV_CONFIG):
        path = Path(environ[ENV_CONFIG])
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        for key, value in _read_file(path).items():
            if key not in CHECKS:
                raise _unknown_key(key, f"configuration file {str(path)!r}")
            raw[key] = (value, f"configuration file {str(path)!r}")
    for key, (text, var) in _from_env(environ).items():
        where = f" in {origin[var]!r}" if var in origin else ""
        raw[key] = (text, f"environment variable {var}{where}")
    for key, value in overrides.items():
        if key not in CHECKS:
            raise _unknown_key(key, "command-line flags")
        if value is not None:
            raw[key] = (value, "the command line")

    values: dict[str, Any] = {}
    for key, (value, source) in raw.items():
        try:
            values[key] = CHECKS[key](value)
        except ValueError as exc:
            raise ConfigError(f"{key}={_show(value)} (from {source}): {exc}") from None
    _check_rules(values.get("state_rules"), raw.get("state_rules", (None, ""))[1])
    return Settings(**values)


def _show(value: object) -> str:
    return repr(str(value)) if isinstance(value, Path) else repr(value)


def _check_rules(path: Path | None, source: str) -> None:
    """A missing rules file stops start-up with a message naming the key
    (SPEC 13); the file is parsed, once, when the settings are built."""
    if path is not None and not path.is_file():
        raise ConfigError(
            f"state_rules={str(path)!r} (from {source}): file not found; "
            "point it at a readable rules file or remove the key to use the built-in table"
        )


def parse_assignment(text: str) -> tuple[str, str]:
    """Split a ``--set KEY=VALUE`` flag; the value stays text and is checked later."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set horizon_days=90")
    return key, value
