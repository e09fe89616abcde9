"""``mailplan explain`` (SPEC 10) on a hand-built database: the exact words of
each kind of decision, worked out by hand from the SPEC (today 2026-11-29,
default settings, daily_cap=1 so that three emails on one day move)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli import mailplan

TODAY = "2026-11-29"
CAP = ("--set", "daily_cap=1")
CONTACTS = [
    # id, email, state, birth date
    (1, "ca@example.com", "CA", "1956-12-28"),
    (2, "ny@example.com", "NY", "1950-12-20"),
    (3, "busy@example.com", "TX", "1950-12-20"),
    (4, "clicked@example.com", "TX", "1950-06-15"),
    (5, "later@example.com", "TX", "1950-06-15"),
    (6, "six@example.com", "TX", "1950-12-20"),
    (7, "seven@example.com", "TX", "1950-12-20"),
    (8, "eight@example.com", "TX", "1950-12-20"),
]
HISTORY = [
    # contact, type, event (y, m, d), sent at
    (3, "newsletter", (2026, 11, 10), "2026-11-10T14:30:00Z"),
    (3, "newsletter", (2026, 11, 15), "2026-11-15T14:30:00Z"),
    (3, "newsletter", (2026, 11, 20), "2026-11-20T14:30:00Z"),
    (4, "birthday", (2026, 12, 9), "2026-11-25T14:30:00Z"),
]


@pytest.fixture(scope="module")
def explained_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("explain") / "org.sqlite3"
    assert mailplan("init-db", "--db", db).returncode == 0
    con = sqlite3.connect(db)
    con.executemany(
        "INSERT INTO contacts (id, email, state, birth_date) VALUES (?, ?, ?, ?)", CONTACTS
    )
    con.executemany(
        "INSERT INTO email_schedules (contact_id, email_type, status, event_year, event_month,"
        " event_day, actual_send_datetime, scheduled_send_date)"
        " VALUES (?, ?, 'sent', ?, ?, ?, ?, substr(?, 1, 10))",
        [(c, t, *ev, at, at) for c, t, ev, at in HISTORY],
    )
    con.execute(
        "INSERT INTO tracking_clicks (contact_id, clicked_at) VALUES (4, '2026-11-26 10:00:00')"
    )
    con.commit()
    con.close()
    done = mailplan("recompute", "--db", db, "--all", "--today", TODAY, *CAP)
    assert done.returncode == 0, done.stderr
    return db


def explain(db: Path, contact: int, *extra: str) -> dict[str, Any]:
    result = mailplan("explain", "--db", db, "--contact", str(contact), "--today", TODAY,
                      "--json", *CAP, *extra)  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def row(doc: dict[str, Any], email_type: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [r for r in doc["rows"] if r["email_type"] == email_type]
    assert len(found) == 1, doc["rows"]
    return found[0]


def test_exclusion_window_and_post_window(explained_db: Path) -> None:
    doc = explain(explained_db, 1)
    bday = row(doc, "birthday")
    # Birthday 2026-12-28, desired 14 days before = 2026-12-14. CA: 30 before, 60 after,
    # plus the 60-day buffer: 2026-12-28 - 90 = 2026-09-29 .. 2026-12-28 + 60 = 2027-02-26.
    assert bday["summary"] == "skipped: Birthday exclusion window for CA"
    assert bday["details"] == [
        "its desired date 2026-12-14 is inside the window from 2026-09-29 to 2027-02-26 "
        "(first and last day)",
        "rule CA: birthday, 30 before, 60 after (source: Cal. Ins. Code §10192.11 (birthday "
        "rule, 60 days from the birthday, 2020); the 30 days before are what many carriers "
        "accept, kept as the wider window; checked 2026-11)",
        # 2026 - 1956
        "anchored on the birthday 2026-12-28; the contact is 70 on that day",
        # 2026-12-28 - 30 = 2026-11-28
        "the first day includes pre_window_buffer_days = 60 days before the law's window "
        "(2026-11-28 to 2027-02-26)",
        "a post-window email makes up for it after the window",
    ]
    assert bday["facts"]["age_on_anchor"] == 70
    post = row(doc, "post_window")
    # The day after the window's last day, 2027-02-26.
    assert post["summary"] == "planned for 2027-02-27"
    assert post["details"][0] == (
        "make-up email for the email of 2026-12-28 that an exclusion window skipped: the "
        "first day after that window which no window of the rules then in force covers is "
        "2027-02-27"
    )
    assert (
        # Balancing never moves it into a window (SPEC 5.5): the next one starts
        # 2027-12-28 - 90 = 2027-09-29.
        "load balancing may send it from 2027-02-27 to 2027-09-28 without entering an "
        "exclusion window"
    ) in post["details"]


def test_year_round(explained_db: Path) -> None:
    bday = row(explain(explained_db, 2), "birthday")
    assert bday["summary"] == "skipped: Year-round exclusion for NY"
    (detail,) = bday["details"]
    assert detail.startswith("rule NY: year-round (")
    assert detail.endswith("): no marketing email on any day of the year")


def test_frequency_skip_names_the_emails_that_filled_the_period(explained_db: Path) -> None:
    bday = row(explain(explained_db, 3), "birthday")
    # Desired 2026-12-06; the 30 days 2026-11-07 .. 2026-12-06 hold the three sends.
    assert bday["summary"] == "skipped: Frequency limit exceeded"
    assert bday["details"] == [
        "the 30 days from 2026-11-07 to 2026-12-06 already hold 3 emails (at most 3 "
        "allowed): newsletter sent 2026-11-10; newsletter sent 2026-11-15; newsletter sent "
        "2026-11-20"
    ]


def test_followup_names_its_email_and_engagement(explained_db: Path) -> None:
    doc = explain(explained_db, 4)
    fu = row(doc, "followup_clicked_no_hq")
    # Sent 2026-11-25, desired 2 days later (11-27), caught up to today.
    assert fu["event_date"] == "2026-11-25"
    assert fu["summary"] == "planned for 2026-11-29"
    assert (
        "follows the birthday email sent 2026-11-25, the most recent followable email "
        "within followup_lookback_days = 35; desired 2 days after it"
    ) in fu["details"]
    assert "engagement: a click on 2026-11-26 -> clicked_no_hq" in fu["details"]


def test_not_planned_yet_says_when(explained_db: Path) -> None:
    doc = explain(explained_db, 5)
    assert doc["rows"] == []
    assert doc["no_rows_because"] == "nothing is due within the horizon yet (see below)"
    bday, ed = doc["upcoming"]
    # Next birthday 2027-06-15, desired 2027-06-01; within 60 days of today from
    # 2027-06-01 - 60 = 2027-04-02 (31 days back to 05-01, 29 more).
    assert bday["summary"] == "not planned yet: the next one is on 2027-06-15, wanted 2027-06-01"
    assert bday["details"] == [
        "it enters the plan on 2027-04-02, when its desired date is within horizon_days = 60 "
        "of today",
        "the contact's review date is 2027-04-02: the daily tick recomputes it then",
    ]
    assert ed["summary"] == "no effective date email: the contact has no valid date for it"
    text = mailplan("explain", "--db", explained_db, "--contact", "5", "--today", TODAY, *CAP)
    assert "Plan rows: none: nothing is due within the horizon yet (see below)." in text.stdout


def test_balancing_move_and_history(explained_db: Path) -> None:
    doc = explain(explained_db, 8, "--history")
    bday = row(doc, "birthday")
    # Contacts 6, 7, 8 want 2026-12-06; cap 1, threshold floor(1 x 1.2) = 1: 6 stays,
    # 7 and 8 go to 12-07, where 7 stays (lower contact id) and 8 goes on to 12-08.
    assert (
        "wanted 2026-12-06; scheduled 2026-12-08: the daily cap: 3 emails want 2026-12-06; a "
        "day holding more than 1 (cap 1 x overage_threshold) keeps 1 by priority and carries "
        "the rest to the next day"
    ) in bday["details"]
    words = [(e["op"], e["trigger"], e["words"]) for e in doc["history"]["journal"]]
    assert words == [
        ("insert", "cli", "planned: pre-scheduled, desired 2026-12-06, scheduled 2026-12-06"),
        ("move", "cli", "moved by balancing from 2026-12-06 to 2026-12-08"),
    ]


def test_unknown_contact_is_an_error(explained_db: Path) -> None:
    result = mailplan("explain", "--db", explained_db, "--contact", "999999", "--today", TODAY)
    assert result.returncode == 1
    assert "No such contact" in result.stdout
    assert result.stderr.endswith(f"mailplan: error: no contact 999999 in {explained_db}; "
                                  "check the id\n")  # fmt: skip
