"""Planning parameters: the section-4 keys the pure core needs.

Built from the validated configuration at the edge (``service.config``); the
planning core never reads configuration itself.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TIMEZONE = "America/Chicago"
"""The organisation's zone unless configured (SPEC 4)."""

DEFAULT_SEND_TIME = "08:30"
"""The local send time unless configured (SPEC 4), as configured: ``HH:MM``."""


def send_time_column(send_time: str) -> str:
    """``scheduled_send_time`` as the original writes it: ``HH:MM`` -> ``HH:MM:SS``."""
    return send_time + ":00" if send_time.count(":") == 1 else send_time


@dataclass(frozen=True, slots=True)
class PlanParams:
    """Tunables of the planning rules (SPEC 4); defaults are the original's."""

    horizon_days: int = 60
    birthday_days_before: int = 14
    effective_date_days_before: int = 30
    effective_date_first_email_months: int = 11
    pre_window_buffer_days: int = 60
    followup_delay_days: int = 2
    followup_lookback_days: int = 35
    max_emails_per_period: int = 3
    period_days: int = 30
    enable_post_window_emails: bool = True
    exclude_failed_underwriting_global: bool = False
    send_without_zipcode_for_universal: bool = True


@dataclass(frozen=True, slots=True)
class BalanceParams:
    """Tunables of load balancing (SPEC 4, 6), before the daily cap is known."""

    daily_send_percentage_cap: float = 0.07
    daily_cap: int | None = None
    overage_threshold: float = 1.2
    ed_daily_soft_limit: int = 15
    ed_smoothing_window_days: int = 5
