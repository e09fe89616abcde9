"""Schema creation and in-place upgrade of databases made by the original system (SPEC 3)."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import pytest

from service.errors import StoreError
from service.store import init_db, open_store
from service.store.schema import latest_version

# The schema the original system's test-data generator created (contacts and
# email_schedules with its indexes and updated_at trigger).
ORIGINAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  first_name TEXT NOT NULL,
  last_name TEXT NOT NULL,
  email TEXT NOT NULL UNIQUE,
  current_carrier TEXT NOT NULL,
  plan_type TEXT NOT NULL,
  effective_date TEXT NOT NULL,
  birth_date TEXT NOT NULL,
  tobacco_user INTEGER NOT NULL,
  gender TEXT NOT NULL,
  state TEXT NOT NULL,
  zip_code TEXT NOT NULL,
  agent_id INTEGER,
  last_emailed DATETIME,
  phone_number TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'active',
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS email_schedules (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  contact_id INTEGER NOT NULL,
  email_type TEXT NOT NULL,
  scheduled_send_date TEXT NOT NULL,
  scheduled_send_time TEXT NOT NULL DEFAULT '08:30:00',
  status TEXT NOT NULL DEFAULT 'scheduled',
  skip_reason TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  updated_at TEXT NOT NULL DEFAULT (datetime('now')),
  batch_id TEXT,
  event_year INTEGER,
  event_month INTEGER,
  event_day INTEGER,
  catchup_note TEXT,
  sent_at TEXT,
  sendgrid_message_id TEXT,
  sms_sent_at TEXT,
  twilio_sms_id TEXT,
  actual_send_datetime TEXT,
  priority INTEGER DEFAULT 10,
  campaign_instance_id INTEGER,
  email_template TEXT,
  sms_template TEXT,
  scheduler_run_id TEXT,
  metadata TEXT,
  FOREIGN KEY (contact_id) REFERENCES contacts(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS idx_contacts_birth_date ON contacts(birth_date);
CREATE INDEX IF NOT EXISTS idx_contacts_effective_date ON contacts(effective_date);
CREATE INDEX IF NOT EXISTS idx_contacts_state ON contacts(state);
CREATE INDEX IF NOT EXISTS idx_email_schedules_date_time_status
  ON email_schedules(scheduled_send_date, scheduled_send_time, status);
CREATE UNIQUE INDEX IF NOT EXISTS idx_email_schedules_unique
  ON email_schedules(contact_id, email_type, scheduled_send_date);
CREATE INDEX IF NOT EXISTS idx_email_schedules_org_contact ON email_schedules(contact_id);
CREATE INDEX IF NOT EXISTS idx_email_schedules_org_send_date
  ON email_schedules(scheduled_send_date);
CREATE INDEX IF NOT EXISTS idx_email_schedules_status ON email_schedules(status);
CREATE UNIQUE INDEX IF NOT EXISTS idx_email_schedules_unique_event
  ON email_schedules(contact_id, email_type, event_year);
CREATE INDEX IF NOT EXISTS idx_email_schedules_event_date
  ON email_schedules(event_year, event_month, event_day);
CREATE INDEX IF NOT EXISTS idx_schedules_lookup
  ON email_schedules(contact_id, email_type, scheduled_send_date);
CREATE INDEX IF NOT EXISTS idx_schedules_status_date
  ON email_schedules(status, scheduled_send_date);
CREATE INDEX IF NOT EXISTS idx_schedules_run_id ON email_schedules(scheduler_run_id);
CREATE TRIGGER IF NOT EXISTS update_email_schedules_updated_at
AFTER UPDATE ON email_schedules
FOR EACH ROW
BEGIN
    UPDATE email_schedules SET updated_at = CURRENT_TIMESTAMP WHERE id = OLD.id;
END;
"""

# Campaign tables as an older installation had them: instances without the
# targeting columns, which the original read with a fallback.
OLD_CAMPAIGN_TABLES = """
CREATE TABLE campaign_types (
  name TEXT PRIMARY KEY, respect_exclusion_windows INTEGER, enable_followups INTEGER,
  days_before_event INTEGER, target_all_contacts INTEGER, priority INTEGER,
  active INTEGER, spread_evenly INTEGER, skip_failed_underwriting INTEGER
);
CREATE TABLE campaign_instances (
  id INTEGER PRIMARY KEY, campaign_type TEXT, instance_name TEXT, email_template TEXT,
  sms_template TEXT, active_start_date TEXT, active_end_date TEXT, spread_start_date TEXT,
  spread_end_date TEXT, metadata TEXT, created_at TEXT, updated_at TEXT
);
CREATE TABLE contact_campaigns (
  id INTEGER PRIMARY KEY, contact_id INTEGER, campaign_instance_id INTEGER,
  trigger_date TEXT, status TEXT, metadata TEXT, created_at TEXT, updated_at TEXT
);
"""

# fmt: off
CONTACT_ROWS = [
    (1, "Ann", "Lee", "ann@example.com", "Aetna", "PPO", "2021-03-01", "1950-02-14", 0, "F",
     "CA", "90210", 3, None, "", "active", "2024-01-01 00:00:00", "2024-01-01 00:00:00"),
    (2, "Bob", "Ray", "bob@example.com", "Humana", "HMO", "2022-07-15", "1948-02-29", 1, "M",
     "NY", "10001", 4, None, "555", "active", "2024-01-02 00:00:00", "2024-01-02 00:00:00"),
]

# Rows the original scheduler and a sender wrote: placeholder event fields
# (event_year only), every status.
SCHEDULE_ROWS = [
    (1, 1, "birthday", "2025-01-31", "08:30:00", "sent", None, "2025-01-01 00:00:00",
     "2025-01-31 09:00:00", "b1", 2025, 1, 1, None, "2025-01-31 08:30:05", "sg-1", None, None,
     "2025-01-31 08:30:00", 10, None, "birthday_template", None, "run_1", None),
    (2, 1, "effective_date", "2025-02-01", "08:30:00", "pre-scheduled", None,
     "2025-01-01 00:00:00", "2025-01-01 00:00:00", "b1", 2025, None, None, None, None, None,
     None, None, None, 20, None, "effective_date_template", None, "run_1", None),
    (3, 2, "birthday", "2025-02-14", "08:30:00", "skipped", "Year-round exclusion for NY",
     "2025-01-01 00:00:00", "2025-01-01 00:00:00", "b1", 2025, None, None, None, None, None,
     None, None, None, 10, None, None, None, "run_1", None),
]
# fmt: on


def _create_original(path: Path, *, old_campaigns: bool = False) -> None:
    con = sqlite3.connect(path)
    con.executescript(ORIGINAL_SCHEMA)
    if old_campaigns:
        con.executescript(OLD_CAMPAIGN_TABLES)
        con.execute("INSERT INTO campaign_types VALUES ('spring', 1, 0, 7, 0, 15, 1, 0, 0)")
        con.execute(
            "INSERT INTO campaign_instances VALUES (5, 'spring', 's1', 't', NULL, "
            "'2025-03-01', '2025-04-01', NULL, NULL, '{}', NULL, NULL)"
        )
    con.executemany(f"INSERT INTO contacts VALUES ({','.join('?' * 18)})", CONTACT_ROWS)
    con.executemany(f"INSERT INTO email_schedules VALUES ({','.join('?' * 25)})", SCHEDULE_ROWS)
    con.commit()
    con.close()


def _dump(path: Path, table: str, columns: str = "*") -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(f"SELECT {columns} FROM {table} ORDER BY 1").fetchall()
    finally:
        con.close()


def _indexes(path: Path) -> dict[str, tuple[bool, tuple[str, ...]]]:
    con = sqlite3.connect(path)
    try:
        result = {}
        for _, name, unique, *_ in con.execute("PRAGMA index_list(email_schedules)"):
            cols = tuple(r[2] for r in con.execute("SELECT * FROM pragma_index_info(?)", (name,)))
            result[name] = (bool(unique), cols)
        return result
    finally:
        con.close()


def _schema(path: Path) -> list[tuple[object, ...]]:
    return _dump(path, "sqlite_master", "type, name, sql")


ORIGINAL_SCHEDULE_COLUMNS = (
    "id, contact_id, email_type, scheduled_send_date, scheduled_send_time, status, skip_reason, "
    "created_at, updated_at, batch_id, event_year, event_month, event_day, catchup_note, "
    "sent_at, sendgrid_message_id, sms_sent_at, twilio_sms_id, actual_send_datetime, priority, "
    "campaign_instance_id, email_template, sms_template, scheduler_run_id, metadata"
)
ORIGINAL_CONTACT_COLUMNS = (
    "id, first_name, last_name, email, current_carrier, plan_type, effective_date, birth_date, "
    "tobacco_user, gender, state, zip_code, agent_id, last_emailed, phone_number, status, "
    "created_at, updated_at"
)


async def test_fresh_database_gets_every_table_and_the_aep_type(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    assert await init_db(path) == latest_version()
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "contacts",
        "email_schedules",
        "campaign_types",
        "campaign_instances",
        "contact_campaigns",
        "tracking_clicks",
        "contact_events",
        "scheduler_events",
        "contact_plan_state",
        "scheduler_state",
        "scheduler_runs",
    } <= tables
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == latest_version()
    # SPEC 3: aep with the original defaults (1, 1, 30, 1, 30, 1, 0, 0), no instance.
    assert con.execute(
        "SELECT respect_exclusion_windows, enable_followups, days_before_event, "
        "target_all_contacts, priority, active, spread_evenly, skip_failed_underwriting "
        "FROM campaign_types WHERE name = 'aep'"
    ).fetchall() == [(1, 1, 30, 1, 30, 1, 0, 0)]
    assert con.execute("SELECT count(*) FROM campaign_instances").fetchone()[0] == 0
    con.close()


async def test_init_db_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    await init_db(path)
    before = (_schema(path), _dump(path, "campaign_types"), _dump(path, "scheduler_events"))
    await init_db(path)
    assert (_schema(path), _dump(path, "campaign_types"), _dump(path, "scheduler_events")) == before


async def test_init_db_recreates_a_deleted_aep_type(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    await init_db(path)
    con = sqlite3.connect(path)
    con.execute("DELETE FROM campaign_types WHERE name = 'aep'")
    con.commit()
    con.close()
    await init_db(path)
    assert _dump(path, "campaign_types", "name") == [("aep",)]


async def test_original_database_is_upgraded_without_touching_rows(tmp_path: Path) -> None:
    path = tmp_path / "org-1.sqlite3"
    _create_original(path)
    contacts = _dump(path, "contacts")
    schedules = _dump(path, "email_schedules")

    await init_db(path)

    assert _dump(path, "contacts", ORIGINAL_CONTACT_COLUMNS) == contacts
    assert _dump(path, "email_schedules", ORIGINAL_SCHEDULE_COLUMNS) == schedules
    # New contact column filled with its default, new schedule columns empty.
    assert _dump(path, "contacts", "id, failed_underwriting") == [(1, 0), (2, 0)]
    assert (
        _dump(path, "email_schedules", "desired_date, balance_date, allowed_from, allowed_to")
        == [(None, None, None, None)] * 3
    )
    indexes = _indexes(path)
    assert "idx_email_schedules_unique_event" not in indexes
    assert "idx_email_schedules_unique" not in indexes
    assert indexes["idx_email_schedules_identity"] == (
        True,
        ("contact_id", "email_type", "event_year", "event_month", "event_day"),
    )
    # The original's non-unique indexes stay.
    assert "idx_schedules_lookup" in indexes
    # Two follow-ups of one kind in a year are now possible (distinct event dates).
    con = sqlite3.connect(path)
    con.execute(
        "INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status, "
        "event_year, event_month, event_day) VALUES (1, 'followup_cold', '2025-03-03', 'sent', "
        "2025, 3, 1), (1, 'followup_cold', '2025-05-03', 'sent', 2025, 5, 1)"
    )
    con.commit()
    con.close()


async def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "org-1.sqlite3"
    _create_original(path)
    await init_db(path)
    before = (_schema(path), _dump(path, "email_schedules"), _dump(path, "contacts"))
    await init_db(path)
    assert (_schema(path), _dump(path, "email_schedules"), _dump(path, "contacts")) == before


async def test_upgrade_installs_triggers_but_emits_nothing_for_existing_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "org-1.sqlite3"
    _create_original(path)
    await init_db(path)
    # Only the aep type that init-db ensured is an event; the rows already
    # there are covered by the first full recompute.
    assert _dump(path, "scheduler_events", "kind, ref") == [("campaign_type", "aep")]


async def test_old_campaign_tables_gain_targeting_columns(tmp_path: Path) -> None:
    path = tmp_path / "org-2.sqlite3"
    _create_original(path, old_campaigns=True)
    await init_db(path)
    assert _dump(path, "campaign_instances", "id, target_states, target_carriers") == [
        (5, None, None)
    ]
    async with open_store(path) as store:
        campaigns = await store.load_campaigns()
    assert set(campaigns.types) == {"aep", "spring"}
    assert campaigns.instances[0].id == 5
    assert campaigns.instances[0].errors == ()


async def test_older_database_with_carrier_column(tmp_path: Path) -> None:
    path = tmp_path / "org-3.sqlite3"
    con = sqlite3.connect(path)
    con.executescript(ORIGINAL_SCHEMA.replace("current_carrier", "carrier"))
    con.execute(
        "INSERT INTO contacts (id, first_name, last_name, email, carrier, plan_type, "
        "effective_date, birth_date, tobacco_user, gender, state, zip_code) VALUES "
        "(7, 'A', 'B', 'a@example.com', 'Cigna', 'PPO', '2020-01-01', '1950-01-01', 0, 'F', "
        "'TX', '73301')"
    )
    con.commit()
    con.close()
    await init_db(path)
    async with open_store(path) as store:
        assert store.carrier_column == "carrier"
        [data] = await store.load_contacts([7])
    assert data.contact.carrier == "Cigna"


async def test_updated_at_trigger_is_replaced_and_cannot_recurse(tmp_path: Path) -> None:
    path = tmp_path / "org-1.sqlite3"
    _create_original(path)
    await init_db(path)
    con = sqlite3.connect(path)
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert "update_email_schedules_updated_at" not in names
    con.execute("PRAGMA recursive_triggers = ON")
    # A sender's update without updated_at gets a fresh one...
    con.execute("UPDATE email_schedules SET status = 'delivered' WHERE id = 1")
    fresh = con.execute("SELECT updated_at = CURRENT_TIMESTAMP FROM email_schedules WHERE id = 1")
    assert fresh.fetchone()[0] == 1
    # ...and an update that sets updated_at itself keeps its value.
    con.execute("UPDATE email_schedules SET updated_at = '2030-01-01 00:00:00' WHERE id = 2")
    kept = con.execute("SELECT updated_at FROM email_schedules WHERE id = 2").fetchone()[0]
    assert kept == "2030-01-01 00:00:00"
    con.commit()
    con.close()


async def test_open_refuses_missing_and_unmigrated_databases(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite3"
    with pytest.raises(StoreError, match="does not exist"):
        async with open_store(missing):
            pass
    assert not missing.exists()
    path = tmp_path / "org-1.sqlite3"
    _create_original(path)
    with pytest.raises(StoreError, match="init-db"):
        async with open_store(path):
            pass


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    await init_db(path)
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {latest_version() + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer"):
        await init_db(path)


async def test_plan_rows_of_the_original_export_before_the_first_recompute(
    tmp_path: Path,
) -> None:
    path = tmp_path / "org-1.sqlite3"
    _create_original(path)
    await init_db(path)
    async with open_store(path) as store:
        rows = await store.export_rows()
    # Row 2 has only a placeholder event year and no desired date: both fall
    # back to its scheduled date. Row 3 is skipped with its reason.
    assert [
        (
            r.contact_id,
            r.email_type,
            str(r.event_date),
            str(r.desired_date),
            r.status,
            r.skip_reason,
        )
        for r in rows
    ] == [
        (1, "effective_date", "2025-02-01", "2025-02-01", "pre-scheduled", ""),
        (2, "birthday", "2025-02-14", "2025-02-14", "skipped", "Year-round exclusion for NY"),
    ]


async def test_version_6_loses_the_review_date_index_and_keeps_its_review_dates(
    tmp_path: Path,
) -> None:
    # A database planned by version 6 has an index on contact_plan_state's
    # review date; version 7 drops it (the tick scans the table) and leaves
    # every row as it was.
    path = tmp_path / "v6.sqlite3"
    await init_db(path)
    con = sqlite3.connect(path)
    con.execute(
        "CREATE INDEX idx_contact_plan_state_review ON contact_plan_state(review_date) "
        "WHERE review_date IS NOT NULL"
    )
    con.executemany(
        "INSERT INTO contact_plan_state (contact_id, review_date, fingerprint) VALUES (?, ?, ?)",
        [(3, "2026-01-12", "c"), (1, "2026-01-10", "a"), (2, None, "b"), (4, "2026-01-09", None)],
    )
    con.execute("PRAGMA user_version = 6")
    con.commit()
    before = _dump(path, "contact_plan_state", "contact_id, review_date, fingerprint")
    con.close()

    assert await init_db(path) == 7 == latest_version()

    con = sqlite3.connect(path)
    names = {r[0] for r in con.execute("SELECT name FROM pragma_index_list('contact_plan_state')")}
    con.close()
    assert "idx_contact_plan_state_review" not in names
    assert _dump(path, "contact_plan_state", "contact_id, review_date, fingerprint") == before
    async with open_store(path) as store:
        # Due on 2026-01-10: the review dates on or before it, in contact order.
        assert await store.due_contacts(date(2026, 1, 10)) == [1, 4]
        assert await store.due_contacts(date(2026, 1, 8)) == []
