"""Random upstream changes and end-state checks of the crash and concurrency suites.

Every change is a real upstream write in a transaction of this (the test)
process, through its own connection: contacts' dates, states and deletes,
new contacts, campaign types and instances, ``contact_campaigns``, and the
sender moving planned rows into its history. The checks are those of SPEC 11
(I1, I4, I5): the stored plan equals a full recompute, no event is left, no
plan identity is duplicated, and no history row seen at any time changed.
"""

from __future__ import annotations

import random
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import anyio

from service.store import init_db
from tests.faults.blackbox import mailplan
from tests.integration.daemon_helpers import assert_plan_is_full_recompute, settings

CFG = settings()
STATES = ["TX", "CA", "NY", "MO", "NV", "OK", "ID", "KY", "MD", "VA", "WA", "OR", "ZZ", " ca "]
HISTORY_SQL = (
    "SELECT id, contact_id, email_type, scheduled_send_date, status, event_year, "
    "event_month, event_day FROM email_schedules "
    "WHERE status NOT IN ('pre-scheduled', 'skipped') ORDER BY id"
)


def book(path: Path, contacts: int, seed: int, today: date) -> Path:
    """A generated book (all states, Feb 29s, bad data, history rows, campaigns)."""
    anyio.run(init_db, path)
    done = mailplan("generate", "--db", str(path), "--contacts", str(contacts),
                    "--seed", str(seed), "--today", today.isoformat())  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


def _day(rng: random.Random, lo: int, hi: int) -> str:
    return (date(lo, 1, 1) + timedelta(days=rng.randrange((hi - lo) * 365))).isoformat()


def one_change(con: sqlite3.Connection, rng: random.Random, next_id: list[int], max_id: int) -> str:
    """Apply one random upstream change in the open transaction; its kind.

    Existing contacts touched are those with ids up to ``max_id``; new ones
    take ids from ``next_id``."""
    cid = rng.randint(1, max_id)
    kind = rng.choice(["birth", "effective", "state", "state", "delete", "insert", "campaign",
                       "instance", "target", "untarget", "sent", "sent"])  # fmt: skip
    if kind == "birth":
        con.execute("UPDATE contacts SET birth_date = ? WHERE id = ?", (_day(rng, 1940, 1961), cid))
    elif kind == "effective":
        con.execute("UPDATE contacts SET effective_date = ? WHERE id = ?",
                    (_day(rng, 2010, 2027), cid))  # fmt: skip
    elif kind == "state":
        con.execute("UPDATE contacts SET state = ? WHERE id = ?", (rng.choice(STATES), cid))
    elif kind == "delete":
        con.execute("DELETE FROM contacts WHERE id = ?", (cid,))
    elif kind == "insert":
        next_id[0] += 1
        con.execute(
            "INSERT INTO contacts (id, email, birth_date, effective_date, state, zip_code) "
            "VALUES (?, ?, ?, ?, ?, '75001')",
            (next_id[0], f"n{next_id[0]}@example.com", _day(rng, 1940, 1961),
             _day(rng, 2010, 2026), rng.choice(STATES)),
        )  # fmt: skip
    elif kind == "campaign":
        con.execute("UPDATE campaign_types SET priority = ?, days_before_event = ? "
                    "WHERE rowid = (SELECT rowid FROM campaign_types ORDER BY random() LIMIT 1)",
                    (rng.randint(1, 40), rng.randint(0, 30)))  # fmt: skip
    elif kind == "instance":
        start = _day(rng, 2026, 2027)
        con.execute(
            "UPDATE campaign_instances SET active_start_date = ?, active_end_date = date(?, ?) "
            "WHERE id = (SELECT id FROM campaign_instances ORDER BY random() LIMIT 1)",
            (start, start, f"+{rng.randint(10, 120)} days"),
        )  # fmt: skip
    elif kind == "target":
        con.execute(
            "INSERT INTO contact_campaigns (contact_id, campaign_instance_id, trigger_date, status)"
            " SELECT ?, id, ?, 'pending' FROM campaign_instances ORDER BY random() LIMIT 1",
            (cid, _day(rng, 2026, 2027)),
        )  # fmt: skip
    elif kind == "untarget":
        con.execute("DELETE FROM contact_campaigns WHERE contact_id = ?", (cid,))
    else:  # the sender takes a planned row (it becomes history)
        con.execute(
            "UPDATE email_schedules SET status = 'sent', sent_at = datetime('now') WHERE id = "
            "(SELECT id FROM email_schedules WHERE status = 'pre-scheduled' "
            "ORDER BY id LIMIT 1 OFFSET ?)",
            (rng.randrange(50),),
        )  # fmt: skip
    return kind


def burst(db: Path, rng: random.Random, next_id: list[int], transactions: int, max_id: int) -> int:
    """Several upstream transactions of 1..20 changes; the changes made."""
    con = sqlite3.connect(db, timeout=10, isolation_level=None)
    made = 0
    try:
        for _ in range(transactions):
            con.execute("BEGIN IMMEDIATE")
            for _ in range(rng.randint(1, 20)):
                one_change(con, rng, next_id, max_id)
                made += 1
            con.execute("COMMIT")
    finally:
        con.close()
    return made


def history(db: Path) -> dict[int, tuple[object, ...]]:
    con = sqlite3.connect(db, timeout=10)
    try:
        return {row[0]: row for row in con.execute(HISTORY_SQL)}
    finally:
        con.close()


def max_contact_id(db: Path) -> int:
    con = sqlite3.connect(db, timeout=10)
    try:
        return int(con.execute("SELECT coalesce(max(id), 0) FROM contacts").fetchone()[0])
    finally:
        con.close()


def assert_final_state(db: Path, seen_history: dict[int, tuple[object, ...]], today: date) -> None:
    """I1, I4, I5 after the last drain."""
    con = sqlite3.connect(db, timeout=10)
    try:
        assert con.execute("SELECT count(*) FROM scheduler_events").fetchone() == (0,)
        duplicates = con.execute(
            "SELECT contact_id, email_type, event_year, event_month, event_day, count(*) "
            "FROM email_schedules GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1"
        ).fetchall()
        assert duplicates == []
    finally:
        con.close()
    now = history(db)
    changed = {i: (row, now.get(i)) for i, row in seen_history.items() if now.get(i) != row}
    assert changed == {}, f"history rows changed or deleted: {list(changed.items())[:5]}"
    anyio.run(assert_plan_is_full_recompute, db, CFG, today)
