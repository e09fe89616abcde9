"""Validation of the configuration keys (SPEC 4): one check per key.

Each check turns a raw value (TOML value, environment text or ``--set``
text) into the typed value, or raises ``ValueError`` with the rule, which
:mod:`service.config` reports with the key, the value and where it came from.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.planning.flags import parse_flag

MAX_DAYS = 3660
"""Upper bound for day counts: ten years is already far beyond any sane plan."""

# --- validation -----------------------------------------------------------------------------

Check = Callable[[Any], Any]
"""Turns a raw value into the typed value or raises ValueError(rule)."""


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        flag = parse_flag(raw)
        if flag is not None:
            return flag
    raise ValueError("must be true or false")


def _int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("must be a whole number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
        return int(raw)
    raise ValueError("must be a whole number")


def _float(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("must be a number")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
    else:
        raise ValueError("must be a number")
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _days(low: int) -> Check:
    def check(raw: Any) -> int:
        value = _int(raw)
        if value < low:
            what = "negative" if low == 0 else f"less than {low}"
            raise ValueError(f"must not be {what} (a number of days, {low}..{MAX_DAYS})")
        if value > MAX_DAYS:
            raise ValueError(f"must be at most {MAX_DAYS} days")
        return value

    return check


def _count(low: int, high: int, unit: str) -> Check:
    def check(raw: Any) -> int:
        value = _int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} {unit}")
        return value

    return check


def _fraction(raw: Any) -> float:
    value = _float(raw)
    if not 0.0 < value <= 1.0:
        raise ValueError("must be a fraction in (0, 1], e.g. 0.07 for 7 %")
    return value


def _threshold(raw: Any) -> float:
    value = _float(raw)
    if not 1.0 <= value <= 100.0:
        raise ValueError("must be a factor between 1.0 and 100 (e.g. 1.2 = 20 % above the cap)")
    return value


def _daily_cap(raw: Any) -> int | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in {"", "none", "unset"}):
        return None
    value = _int(raw)
    if value < 1:
        raise ValueError("must be at least 1 (leave it unset to use daily_send_percentage_cap)")
    return value


def _timezone(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be an IANA time zone name (use e.g. America/Chicago)")
    name = raw.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("not a known IANA time zone (use e.g. America/Chicago)") from None
    return name


def _send_time(raw: Any) -> str:
    text = raw.strip() if isinstance(raw, str) else None
    match = re.fullmatch(r"(\d{2}):(\d{2})", text or "")
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise ValueError("must be a 24-hour time HH:MM, e.g. 08:30")
    return f"{match[1]}:{match[2]}"


def _path(raw: Any) -> Path:
    if isinstance(raw, Path):
        return raw
    if isinstance(raw, str) and raw.strip():
        return Path(raw.strip()).expanduser()
    raise ValueError("must be a file path")


def _optional_path(raw: Any) -> Path | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _path(raw)


def _str_only(check: Check) -> Check:
    """Refuse non-strings for string keys (TOML numbers are not time zones)."""

    def wrapped(raw: Any) -> Any:
        if not isinstance(raw, str):
            raise ValueError("must be a string")
        return check(raw)

    return wrapped


CHECKS: dict[str, Check] = {
    "timezone": _timezone,
    "send_time": _str_only(_send_time),
    "send_in_contact_timezone": _bool,
    "horizon_days": _days(0),
    "birthday_days_before": _days(0),
    "effective_date_days_before": _days(0),
    "effective_date_first_email_months": _count(0, 120, "months"),
    "pre_window_buffer_days": _days(0),
    "followup_delay_days": _days(0),
    "followup_lookback_days": _days(0),
    "max_emails_per_period": _count(1, 1000, "emails"),
    "period_days": _days(1),
    "daily_send_percentage_cap": _fraction,
    "daily_cap": _daily_cap,
    "overage_threshold": _threshold,
    "ed_daily_soft_limit": _count(0, 10_000_000, "emails"),
    "ed_smoothing_window_days": _count(1, 366, "days"),
    "enable_post_window_emails": _bool,
    "exclude_failed_underwriting_global": _bool,
    "send_without_zipcode_for_universal": _bool,
    "state_rules": _optional_path,
    "journal_retention_days": _days(1),
    "db": _optional_path,
    "inbox": _optional_path,
}
