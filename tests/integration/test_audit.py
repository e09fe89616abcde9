"""``mailplan audit`` (SPEC 10) on a hand-built database: one send per finding,
each with its exact expected text, worked out by hand from the SPEC."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

from service.commands.audit import AuditParams, run_audit
from service.config import Settings
from service.store import open_store
from tests.integration.test_cli import mailplan

CONTACTS = [
    # id, email, state, birth_date
    (1, "ca@example.com", "CA", "1955-05-10"),
    (2, "tx@example.com", "TX", "1950-01-15"),
    (3, "not-an-address", "TX", "1950-01-15"),
    (4, "skip@example.com", "TX", "1950-06-14"),
    (5, "gone@example.com", "TX", "1950-06-14"),
    (6, "late@example.com", "TX", "1950-06-14"),
    (7, "ny@example.com", "NY", "1950-01-15"),
]
SENDS = [
    # id, contact, type, status, event (y, m, d), actual_send_datetime, scheduled date
    (101, 1, "birthday", "sent", (2026, 5, 10), "2026-05-20T13:30:00Z", "2026-05-20"),
    (102, 1, "birthday", "sent", (2025, 5, 10), "2025-04-01T13:30:00Z", "2025-04-01"),
    (201, 2, "campaign_aep_1", "sent", (2026, 5, 1), None, "2026-05-01"),
    (202, 2, "campaign_aep_2", "delivered", (2026, 5, 10), None, "2026-05-10"),
    (203, 2, "campaign_aep_3", "sent", (2026, 5, 20), None, "2026-05-20"),
    (204, 2, "campaign_aep_5", "scheduled", (2026, 5, 25), None, "2026-05-25"),
    (205, 2, "campaign_aep_4", "sent", (2026, 5, 30), None, "2026-05-30"),
    (301, 3, "campaign_aep_1", "sent", (2026, 5, 15), None, "2026-05-15"),
    (401, 4, "birthday", "sent", (2026, 6, 14), "2026-05-31 13:30:00", "2026-05-31"),
    (501, 5, "birthday", "sent", (2026, 6, 14), "2026-05-03T13:30:00Z", "2026-05-03"),
    (601, 6, "birthday", "sent", (2026, 6, 14), "2026-05-10T13:30:00Z", "2026-05-10"),
    (701, 7, "campaign_aep_1", "sent", (2026, 5, 12), None, "2026-05-12"),
]
JOURNAL = [
    # run, trigger, at, contact, type, event, op, new status, new reason
    (8, "tick", "2026-05-01 10:00:00.000", 4, "birthday", "2026-06-14", "insert",
     "pre-scheduled", None),
    (9, "tick", "2026-05-20 09:00:00.000", 4, "birthday", "2026-06-14", "update",
     "skipped", "Frequency limit exceeded"),
    (8, "tick", "2026-05-01 10:00:00.000", 5, "birthday", "2026-06-14", "insert",
     "pre-scheduled", None),
    (10, "events", "2026-05-02 07:00:00.000", 5, "birthday", "2026-06-14", "delete", None, None),
    (8, "tick", "2026-05-01 10:00:00.000", 6, "birthday", "2026-06-14", "insert",
     "pre-scheduled", None),
    # after the send: no finding
    (11, "events", "2026-05-11 07:00:00.000", 6, "birthday", "2026-06-14", "delete", None, None),
]  # fmt: skip


def build(path: Path) -> None:
    con = sqlite3.connect(path)
    con.executemany(
        "INSERT INTO contacts (id, email, state, birth_date) VALUES (?, ?, ?, ?)", CONTACTS
    )
    # aep respects exclusion windows (init-db's default type, SPEC 3).
    con.executemany(
        "INSERT INTO email_schedules (id, contact_id, email_type, status, event_year,"
        " event_month, event_day, actual_send_datetime, scheduled_send_date)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(i, c, t, s, *ev, a, d) for i, c, t, s, ev, a, d in SENDS],
    )
    con.executemany(
        "INSERT INTO plan_journal (run_id, trigger, at, contact_id, email_type, event_date, op,"
        " new_status, new_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        JOURNAL,
    )
    con.commit()
    con.close()


async def test_each_finding_with_its_words(db_path: Path) -> None:
    build(db_path)
    s = Settings()
    async with open_store(db_path, readonly=True) as store:
        findings, checked = await run_audit(
            store, rules=s.rules(), plan_params=s.plan_params(), params=AuditParams(3, 30),
            start=date(2026, 5, 1), end=date(2026, 5, 31),
        )  # fmt: skip
    # 102 (2025) is outside the period and 204 was never sent: 10 sends checked.
    assert checked == 10
    got = {(f.history_id, f.kind): f.detail for f in findings}
    assert got == {
        # CA: birthday 30 before, 60 after; anchor 2026-05-10, statutory window
        # (no pre-window buffer): 05-10 - 30 = 04-10 .. 05-10 + 60 = 07-09.
        (101, "exclusion_window"): "sent 2026-05-20 inside Birthday exclusion window for CA "
        "(2026-04-10 to 2026-07-09, anchor 2026-05-10); rule CA: birthday, 30 before, 60 after",
        # 05-01, 05-10, 05-20, 05-30 (204 is only scheduled): the 30 days ending
        # 05-30 start 05-01 and hold four sends, one more than 3.
        (205, "frequency_limit"): "sent 2026-05-30 as email 4 in the 30 days 2026-05-01 to "
        "2026-05-30 (limit 3; history rows 201, 202, 203, 205)",
        (301, "invalid_address"): "sent 2026-05-15 to an invalid address 'not-an-address'",
        (401, "withdrawn"): "sent 2026-05-31, but the plan had skipped it at "
        "2026-05-20 09:00:00.000 UTC (run 9, tick): Frequency limit exceeded",
        (501, "withdrawn"): "sent 2026-05-03, but the plan had deleted it at "
        "2026-05-02 07:00:00.000 UTC (run 10, events)",
        # NY is year-round (SPEC 15).
        (701, "exclusion_window"): "sent 2026-05-12 under Year-round exclusion for NY; "
        "rule NY: year-round",
    }


def test_cli_exit_codes_and_formats(tmp_path: Path) -> None:
    db = tmp_path / "audit.sqlite3"
    assert mailplan("init-db", "--db", db).returncode == 0
    clean = mailplan("audit", "--db", db, "--from", "2026-05-01", "--to", "2026-05-31")
    assert clean.returncode == 0, clean.stderr
    assert (
        clean.stdout
        == "Audit of sends from 2026-05-01 to 2026-05-31: 0 sent emails checked, no findings.\n"
    )
    build(db)
    found = mailplan("audit", "--db", db, "--from", "2026-05-01", "--to", "2026-05-31",
                     "--format", "json")  # fmt: skip
    assert found.returncode == 1, found.stderr
    # A warning line for the journal (journalctl -p warning) besides the report.
    warning = json.loads(found.stderr.splitlines()[-1])
    assert (warning["event"], warning["level"], warning["findings"]) == (
        "audit_findings",
        "warning",
        6,
    )
    doc = json.loads(found.stdout)
    assert doc["sends_checked"] == 10
    assert sorted(f["kind"] for f in doc["findings"]) == [
        "exclusion_window", "exclusion_window", "frequency_limit", "invalid_address",
        "withdrawn", "withdrawn",
    ]  # fmt: skip
    table = mailplan("audit", "--db", db, "--from", "2026-05-01", "--to", "2026-05-31")
    assert table.returncode == 1
    assert table.stdout.splitlines()[0] == (
        "Audit of sends from 2026-05-01 to 2026-05-31: 10 sent emails checked, 6 findings "
        "(2 exclusion window, 1 frequency limit, 1 invalid address, 2 withdrawn)."
    )
    backwards = mailplan("audit", "--db", db, "--from", "2026-06-01", "--to", "2026-05-31")
    assert backwards.returncode == 2
    assert "--from 2026-06-01 is after --to 2026-05-31" in backwards.stderr
