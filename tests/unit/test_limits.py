"""Same-day campaign conflicts (SPEC 5.8) and the frequency limit (5.9), by hand.

Defaults: at most 3 emails in any 30 consecutive days.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from service.planning.limits import apply_frequency_limit, fits, resolve_campaign_conflicts
from service.planning.model import (
    CampaignInstance,
    Campaigns,
    CampaignType,
    Contact,
    ContactData,
    HistoryEmail,
    PlanRow,
)
from service.planning.params import PlanParams
from service.planning.plan import plan_contact
from service.planning.rules import builtin_rules

D = date.fromisoformat


def _row(
    email_type: str,
    desired: str,
    priority: int,
    instance: int | None = None,
    status: str = "pre-scheduled",
) -> PlanRow:
    day = D(desired)
    return PlanRow(
        1, email_type, day, day, "skipped" if status == "skipped" else "pre-scheduled",
        "earlier reason" if status == "skipped" else None, priority, None, instance, None,
        day, day,
    )  # fmt: skip


def _outcome(rows: list[PlanRow]) -> list[tuple[str, str, str | None]]:
    return [(r.email_type, r.status, r.skip_reason) for r in rows]


CONFLICT = "Campaign priority conflict on 2026-10-01"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # Lowest priority number stays.
        (
            [_row("campaign_a_1", "2026-10-01", 30, 1), _row("campaign_b_2", "2026-10-01", 20, 2)],
            [("campaign_a_1", "skipped", CONFLICT), ("campaign_b_2", "pre-scheduled", None)],
        ),
        # Tie on priority: lowest instance id stays.
        (
            [_row("campaign_a_7", "2026-10-01", 30, 7), _row("campaign_b_5", "2026-10-01", 30, 5)],
            [("campaign_a_7", "skipped", CONFLICT), ("campaign_b_5", "pre-scheduled", None)],
        ),
        # Different days: no conflict.
        (
            [_row("campaign_a_1", "2026-10-01", 30, 1), _row("campaign_b_2", "2026-10-02", 20, 2)],
            [("campaign_a_1", "pre-scheduled", None), ("campaign_b_2", "pre-scheduled", None)],
        ),
        # Non-campaign emails on the same day are not involved.
        (
            [_row("birthday", "2026-10-01", 10), _row("campaign_a_1", "2026-10-01", 30, 1)],
            [("birthday", "pre-scheduled", None), ("campaign_a_1", "pre-scheduled", None)],
        ),
        # An already skipped campaign email does not win or lose.
        (
            [
                _row("campaign_a_1", "2026-10-01", 10, 1, status="skipped"),
                _row("campaign_b_2", "2026-10-01", 30, 2),
            ],
            [
                ("campaign_a_1", "skipped", "earlier reason"),
                ("campaign_b_2", "pre-scheduled", None),
            ],
        ),
        # Three on one day: one stays.
        (
            [
                _row("campaign_a_3", "2026-10-01", 30, 3),
                _row("campaign_b_2", "2026-10-01", 30, 2),
                _row("campaign_c_1", "2026-10-01", 40, 1),
            ],
            [
                ("campaign_a_3", "skipped", CONFLICT),
                ("campaign_b_2", "pre-scheduled", None),
                ("campaign_c_1", "skipped", CONFLICT),
            ],
        ),
    ],
)
def test_conflicts(rows: list[PlanRow], expected: list[tuple[str, str, str | None]]) -> None:
    resolve_campaign_conflicts(rows)
    assert _outcome(rows) == expected
    for row in rows:
        if row.status == "skipped" and row.skip_reason == CONFLICT:
            assert (row.allowed_from, row.allowed_to) == (None, None)


def _hist(*days: str) -> tuple[HistoryEmail, ...]:
    return tuple(HistoryEmail(1, "birthday", "sent", D(d)) for d in days)


LIMIT = "Frequency limit exceeded"

FREQUENCY_CASES = [
    # History 01-01, 01-10; a row on 01-20 makes 3 in [01-01, 01-30]: fits. A second
    # row on 01-25 would make 4 in [12-27, 01-25]: skipped.
    (
        _hist("2026-01-01", "2026-01-10"),
        [_row("birthday", "2026-01-20", 10), _row("post_window", "2026-01-25", 40)],
        [None, LIMIT],
    ),
    # History 01-01, 01-10, 01-20: 01-30 would be the 4th in [01-01, 01-30] ...
    (
        _hist("2026-01-01", "2026-01-10", "2026-01-20"),
        [_row("birthday", "2026-01-30", 10)],
        [LIMIT],
    ),
    # ... 01-31 is not: [01-02, 01-31] holds only 01-10 and 01-20.
    (_hist("2026-01-01", "2026-01-10", "2026-01-20"), [_row("birthday", "2026-01-31", 10)], [None]),
    # Windows reaching forward count too: 02-01 with 02-20, 02-25, 02-28 after it makes
    # 4 in [02-01, 03-02] (the original only looked back).
    (
        _hist("2026-01-15", "2026-02-20", "2026-02-25", "2026-02-28"),
        [_row("birthday", "2026-02-01", 10)],
        [LIMIT],
    ),
    # Without 02-28: [02-01, 03-02] holds 2, [01-03, 02-01] holds 1: fits.
    (_hist("2026-01-15", "2026-02-20", "2026-02-25"), [_row("birthday", "2026-02-01", 10)], [None]),
    # A window straddling the row: 01-20 and 02-10 in history, plan rows on 01-30 (p10),
    # 02-05 (p20): [01-20, 02-18] would hold 01-20, 01-30, 02-05, 02-10 = 4.
    (
        _hist("2026-01-20", "2026-02-10"),
        [_row("birthday", "2026-01-30", 10), _row("effective_date", "2026-02-05", 20)],
        [None, LIMIT],
    ),
    # Admission by priority, not by list order: the priority-10 row wins.
    (
        _hist("2026-01-01", "2026-01-02"),
        [_row("followup_cold", "2026-01-05", 50), _row("birthday", "2026-01-20", 10)],
        [LIMIT, None],
    ),
    # Same priority: earlier desired date first.
    (
        _hist("2026-01-01", "2026-01-02"),
        [_row("campaign_b_2", "2026-01-09", 30, 2), _row("campaign_a_1", "2026-01-08", 30, 1)],
        [LIMIT, None],
    ),
    # Skipped rows never count: the skipped 01-15 row leaves room for 01-20.
    (
        _hist("2026-01-01", "2026-01-10"),
        [_row("campaign_a_1", "2026-01-15", 30, 1, "skipped"), _row("birthday", "2026-01-20", 10)],
        ["earlier reason", None],
    ),
]


@pytest.mark.parametrize(("history", "rows", "reasons"), FREQUENCY_CASES)
def test_frequency(
    history: tuple[HistoryEmail, ...], rows: list[PlanRow], reasons: list[str | None]
) -> None:
    apply_frequency_limit(rows, history, PlanParams())
    assert [r.skip_reason for r in rows] == reasons
    for row in rows:
        if row.skip_reason == LIMIT:
            assert (row.status, row.allowed_from, row.allowed_to) == ("skipped", None, None)


def test_frequency_other_parameters() -> None:
    # At most 1 email in 7 days: rows on 01-01 and 01-07 share [01-01, 01-07]; 01-08 does not.
    rows = [
        _row("birthday", "2026-01-01", 10),
        _row("a", "2026-01-07", 20),
        _row("b", "2026-01-08", 30),
    ]
    apply_frequency_limit(rows, (), PlanParams(max_emails_per_period=1, period_days=7))
    assert [r.skip_reason for r in rows] == [None, LIMIT, None]


@pytest.mark.parametrize(
    ("counted", "day", "ok"),
    [
        ([], "2026-01-10", True),
        (["2026-01-01", "2026-01-02"], "2026-01-10", True),
        (["2026-01-01", "2026-01-02", "2026-01-03"], "2026-01-10", False),
        (["2026-01-01", "2026-01-02", "2026-01-03"], "2026-02-02", True),  # 02-02 - 29 = 01-04
        (["2026-01-01", "2026-02-01", "2026-02-02"], "2026-01-15", True),  # never 3 in one span
        (["2026-01-10", "2026-02-05", "2026-02-08"], "2026-01-15", False),  # [01-10, 02-08]
    ],
)
def test_fits(counted: list[str], day: str, ok: bool) -> None:
    assert fits([D(c) for c in counted], D(day), timedelta(days=29), 3) is ok


def test_frequency_through_plan_contact() -> None:
    # Birthday 2026-05-20 (desired 05-06) and two campaign emails on 05-01 and 05-10,
    # plus history on 04-20: 4 in [04-20, 05-19] -> the lowest-ranked (priority 30,
    # later desired date) campaign email is skipped.
    types = {"aep": CampaignType("aep", target_all_contacts=True, priority=30)}
    instances = (
        CampaignInstance(1, "aep", active_start_date=D("2026-05-01")),
        CampaignInstance(2, "aep", active_start_date=D("2026-05-10")),
    )
    contact = Contact(1, "pat@example.com", "1960-05-20", None, "TX", None)
    history = (HistoryEmail(1, "newsletter", "sent", D("2026-04-20")),)
    plan = plan_contact(
        ContactData(contact, history=history), Campaigns(types, instances), builtin_rules(),
        PlanParams(), D("2026-04-25"),
    )  # fmt: skip
    assert [(r.email_type, r.skip_reason) for r in plan.rows] == [
        ("birthday", None),
        ("campaign_aep_1", None),
        ("campaign_aep_2", LIMIT),
    ]
