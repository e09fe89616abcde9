"""The stored plan follows the settings and the laws in force (SPEC 3, 4).

One regression test per finding of the issue that introduced the planning
fingerprint; each failed on the code before it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from service.config import Settings, load_settings
from service.engine import PlanContext, full_recompute, recompute_contacts
from service.errors import StoreError
from service.store import init_db, open_store
from tests.integration.daemon_helpers import (
    SEED_SQL,
    TODAY,
    assert_plan_is_full_recompute,
    export_and_expected,
    pending_events,
    query,
    running_daemon,
    settings,
    upstream,
)
from tests.integration.test_cli import mailplan

DAY = TODAY.isoformat()


def _stored_settings(db: Path) -> dict[str, object]:
    rows = query(db, "SELECT value FROM scheduler_state WHERE key = 'plan_settings'")
    assert rows, "no settings recorded with the plan"
    value = json.loads(str(rows[0][0]))
    assert isinstance(value, dict)
    return value


@pytest.fixture
async def seeded(tmp_path: Path) -> Path:
    db = tmp_path / "org.sqlite3"
    await init_db(db)
    upstream(db, SEED_SQL)
    return db


# --- finding 1: an original database lacking a column mailplan reads -------------------------

ORIGINAL_WITHOUT_OPTIONAL = """
CREATE TABLE contacts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, first_name TEXT NOT NULL, last_name TEXT NOT NULL,
  email TEXT NOT NULL UNIQUE, current_carrier TEXT NOT NULL, plan_type TEXT NOT NULL,
  effective_date TEXT NOT NULL, birth_date TEXT NOT NULL, tobacco_user INTEGER NOT NULL,
  gender TEXT NOT NULL, state TEXT NOT NULL, zip_code TEXT NOT NULL, agent_id INTEGER,
  last_emailed DATETIME, phone_number TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'active', created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  crm_ref TEXT NOT NULL DEFAULT 'x', loyalty_points INTEGER
);
CREATE TABLE email_schedules (
  id INTEGER PRIMARY KEY AUTOINCREMENT, contact_id INTEGER NOT NULL,
  email_type TEXT NOT NULL, scheduled_send_date TEXT NOT NULL,
  scheduled_send_time TEXT NOT NULL DEFAULT '08:30:00',
  status TEXT NOT NULL DEFAULT 'scheduled', skip_reason TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now')),
  updated_at TEXT NOT NULL DEFAULT (datetime('now')), batch_id TEXT,
  event_year INTEGER, sent_at TEXT, sendgrid_message_id TEXT, opened_by TEXT,
  FOREIGN KEY (contact_id) REFERENCES contacts(id) ON DELETE CASCADE
);
CREATE TABLE contact_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, contact_id INTEGER NOT NULL,
  created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, event_type TEXT NOT NULL
);
CREATE TABLE tracking_clicks (
  id INTEGER PRIMARY KEY AUTOINCREMENT, contact_id INTEGER NOT NULL,
  clicked_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP, user_agent TEXT
);
CREATE TABLE campaign_types (
  name TEXT PRIMARY KEY, respect_exclusion_windows INTEGER, days_before_event INTEGER,
  target_all_contacts INTEGER, priority INTEGER, active INTEGER
);
CREATE INDEX idx_contacts_state ON contacts(state);
CREATE INDEX idx_contacts_crm ON contacts(crm_ref, state);
CREATE UNIQUE INDEX idx_email_schedules_unique_event
  ON email_schedules(contact_id, email_type, event_year);
CREATE INDEX idx_schedules_opened ON email_schedules(opened_by) WHERE opened_by IS NOT NULL;
CREATE INDEX idx_events_type ON contact_events(event_type, created_at);
INSERT INTO contacts (id, first_name, last_name, email, current_carrier, plan_type,
    effective_date, birth_date, tobacco_user, gender, state, zip_code) VALUES
  (1, 'Ann', 'Lee', 'ann@example.com', 'Aetna', 'G', '2019-04-15', '1955-03-20', 0, 'F',
   'CA', '90210'),
  (2, 'Bob', 'Ray', 'bob@example.com', 'Humana', 'N', '2018-03-01', '1956-04-02', 0, 'M',
   'TX', '75001');
INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status, event_year,
    sent_at) VALUES (2, 'birthday', '2026-02-20', 'sent', 2026, '2026-02-20 14:00:00');
INSERT INTO contact_events (contact_id, event_type) VALUES (2, 'eligibility_answered');
INSERT INTO tracking_clicks (contact_id, clicked_at) VALUES (2, '2026-02-21 10:00:00');
"""


def test_original_database_lacking_read_columns_is_upgraded_and_planned(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite3"
    con = sqlite3.connect(db)
    con.executescript(ORIGINAL_WITHOUT_OPTIONAL)
    con.close()
    init = mailplan("init-db", "--db", db)
    assert init.returncode == 0, init.stderr
    # init-db says which columns it added, among them those the original never read.
    for column in ("contact_events.metadata", "tracking_clicks.email_schedule_id",
                   "contacts.failed_underwriting", "campaign_types.enable_followups",
                   "email_schedules.actual_send_datetime"):  # fmt: skip
        assert column in init.stdout
    again = mailplan("init-db", "--db", db)
    assert again.returncode == 0 and "added" not in again.stdout
    run = mailplan("recompute", "--db", db, "--all", "--today", DAY)
    assert run.returncode == 0, run.stderr
    export = mailplan("export", "--db", db)
    dry = mailplan("recompute", "--db", db, "--all", "--dry-run", "--format", "csv",
                   "--today", DAY)  # fmt: skip
    assert export.returncode == 0 and dry.returncode == 0
    assert export.stdout == dry.stdout
    assert "1,birthday,2026-03-20" in export.stdout
    # The follow-up to contact 2's birthday email (sent 2026-02-20, lookback 35 days):
    # engagement by eligibility answer, metadata NULL -> hq_no_yes, on 02-22 -> caught up.
    assert "2,followup_hq_no_yes,2026-02-20,2026-03-01" in export.stdout
    # Extra columns and rows are untouched.
    assert query(db, "SELECT crm_ref, loyalty_points FROM contacts ORDER BY id") == [
        ("x", None),
        ("x", None),
    ]


def test_commands_refuse_an_out_of_date_schema(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite3"
    old = mailplan("init-db", "--db", db)
    assert old.returncode == 0
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE contact_events DROP COLUMN metadata")
    con.commit()
    con.close()
    for command in (("export",), ("status",), ("recompute", "--all", "--today", DAY)):
        result = mailplan(*command, "--db", db)
        assert result.returncode == 2, (command, result.stderr)
        assert "contact_events.metadata" in result.stderr
        assert "run `mailplan init-db" in result.stderr
        assert "Traceback" not in result.stderr
    fixed = mailplan("init-db", "--db", db)
    assert "contact_events.metadata" in fixed.stdout
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 4")
    con.commit()
    con.close()
    stale = mailplan("export", "--db", db)
    assert stale.returncode == 2
    assert "schema version 4" in stale.stderr and "mailplan init-db" in stale.stderr


# --- finding 2: the rules file edited in place, then SIGHUP -----------------------------------

TX_WINDOW = (
    '[[rule]]\nstate = "TX"\nkind = "birthday"\nbefore_days = 0\nafter_days = 5\nnote = "t"\n'
)
TX_YEAR_ROUND = '[[rule]]\nstate = "TX"\nkind = "year_round"\nnote = "t"\n'


async def test_rules_file_edited_and_reloaded_rebuilds_the_plan(
    seeded: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(TX_WINDOW)
    overrides = {"state_rules": str(rules), "daily_cap": 3}

    def load() -> Settings:
        return load_settings(None, {}, overrides)

    first = load_settings(None, {}, overrides)
    async with running_daemon(seeded, first, reload_settings=load) as run:
        await run.settle()
        before = query(seeded, "SELECT count(*) FROM email_schedules WHERE skip_reason = "
                               "'Year-round exclusion for TX'")  # fmt: skip
        assert before == [(0,)]
        loaded_fingerprint = first.fingerprint()
        rules.write_text(TX_YEAR_ROUND)
        # The loaded settings keep the rules they parsed (the old code re-read the file,
        # so "old" and "new" fingerprints were equal after the edit); a reload differs.
        assert first.fingerprint() == loaded_fingerprint
        assert load_settings(None, {}, overrides).fingerprint() != loaded_fingerprint
        tx_rule = first.rules().rule_on("TX", TODAY)
        assert tx_rule is not None and tx_rule.kind == "birthday"
        with capture_logs() as logs:
            run.daemon.wake("reload")
            await run.settle()
            await run.settle()
        assert any(e["event"] == "reload_applied" and e["planning_changed"] for e in logs)
        assert any(e["event"] == "plan_settings_differ" for e in logs)
    skipped = query(seeded, "SELECT DISTINCT contact_id FROM email_schedules WHERE skip_reason "
                            "= 'Year-round exclusion for TX'")  # fmt: skip
    assert [r[0] for r in skipped] == [1]  # contact 1 is the valid TX contact
    await assert_plan_is_full_recompute(seeded, load_settings(None, {}, overrides), TODAY)


# --- finding 3: a restart with other settings -------------------------------------------------


async def test_restart_with_other_settings_rebuilds_the_plan(seeded: Path) -> None:
    wide = settings(horizon_days=90)
    async with running_daemon(seeded, wide) as run:
        await run.settle()
    await assert_plan_is_full_recompute(seeded, wide, TODAY)
    assert _stored_settings(seeded)["horizon_days"] == 90
    default = settings()
    with capture_logs() as logs:
        async with running_daemon(seeded, default) as run:
            await run.settle()
            await run.settle()
    differ = [e for e in logs if e["event"] == "plan_settings_differ"]
    assert differ and differ[0]["when"] == "start"
    assert "horizon_days (stored 90, now 60)" in differ[0]["keys"]
    await assert_plan_is_full_recompute(seeded, default, TODAY)
    assert _stored_settings(seeded)["horizon_days"] == 60
    assert pending_events(seeded) == 0


# --- finding 4: commands read the units' environment file -------------------------------------


def test_commands_read_the_env_file_and_refuse_to_mix_settings(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite3"
    assert mailplan("init-db", "--db", db).returncode == 0
    upstream(db, SEED_SQL)
    env_file = tmp_path / "mailplan.env"
    env_file.write_text("# as the unit's EnvironmentFile\nMAILPLAN_HORIZON_DAYS=90\n"
                        "MAILPLAN_DAILY_CAP='3'\nOTHER_VARIABLE=ignored\n")  # fmt: skip
    env = {"MAILPLAN_ENV_FILE": str(env_file)}
    full = mailplan("recompute", "--db", db, "--all", "--today", DAY, env=env)
    assert full.returncode == 0, full.stderr
    assert _stored_settings(db)["horizon_days"] == 90
    # With the daemon's settings (the same env file) a contact may be recomputed ...
    one = mailplan("recompute", "--db", db, "--contact", "1", "--today", DAY, env=env)
    assert one.returncode == 0, one.stderr
    # ... without them it is refused, naming the keys, and nothing is written.
    before = query(db, "SELECT count(*), max(id) FROM scheduler_runs")
    refused = mailplan("recompute", "--db", db, "--contact", "1", "--today", DAY)
    assert refused.returncode == 2
    assert "horizon_days (stored 90, now 60)" in refused.stderr
    assert "daily_cap (stored 3, now None)" in refused.stderr
    assert query(db, "SELECT count(*), max(id) FROM scheduler_runs") == before
    # Read-only commands warn.
    dry = mailplan("recompute", "--db", db, "--all", "--dry-run", "--today", DAY)
    assert dry.returncode == 0 and "horizon_days (stored 90, now 60)" in dry.stderr
    explain = mailplan("explain", "--db", db, "--contact", "1", "--today", DAY)
    assert explain.returncode == 0 and "warning" in explain.stderr
    status = mailplan("status", "--db", db, "--json", "--today", DAY)
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert "horizon_days (stored 90, now 60)" in info["settings_differ"]
    assert info["stored_fingerprint"] != info["settings_fingerprint"]
    assert info["fingerprint_matches"] is False
    assert info["plan_full_recompute_day"] == DAY
    same = json.loads(mailplan("status", "--db", db, "--json", "--today", DAY, env=env).stdout)
    assert same["settings_differ"] == [] and same["fingerprint_matches"] is True
    # A bad line in the file is a configuration error naming the file and line.
    env_file.write_text("MAILPLAN_HORIZON_DAYS 90\n")
    bad = mailplan("status", "--db", db, env=env)
    assert bad.returncode == 2 and "line 1" in bad.stderr and str(env_file) in bad.stderr


# --- finding 5: the first daemon start after `recompute --all` --------------------------------


def test_daemon_start_after_recompute_all_does_not_plan_everything_again(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite3"
    assert mailplan("init-db", "--db", db).returncode == 0
    upstream(db, SEED_SQL)
    cap = ("--set", "daily_cap=3")
    full = mailplan("recompute", "--db", db, "--all", "--today", DAY, *cap)
    assert full.returncode == 0, full.stderr
    rows = query(db, "SELECT id, scheduler_run_id FROM email_schedules ORDER BY id")
    daemon = mailplan("run", "--db", db, "--once", "--today", DAY, *cap)
    assert daemon.returncode == 0, daemon.stderr
    events = [json.loads(line)["event"] for line in daemon.stdout.splitlines() if line]
    assert "tick_done" in events
    assert "fanout_started" not in events and "plan_settings_differ" not in events
    assert query(db, "SELECT id, scheduler_run_id FROM email_schedules ORDER BY id") == rows
    assert pending_events(db) == 0
    # Other settings at the next start: the daemon notices and rebuilds.
    other = mailplan("run", "--db", db, "--once", "--today", DAY, "--set", "daily_cap=4")
    lines = [json.loads(line) for line in other.stdout.splitlines() if line]
    differ = [e for e in lines if e["event"] == "plan_settings_differ"]
    assert differ and "daily_cap (stored 3, now 4)" in differ[0]["keys"]
    assert any(e["event"] == "fanout_finished" for e in lines)


# --- finding 6: writes inside a read snapshot --------------------------------------------------


async def test_writes_inside_a_read_snapshot_fail_loudly(seeded: Path) -> None:
    ctx = PlanContext.from_settings(settings())
    async with open_store(seeded) as store:
        async with store.snapshot():
            assert store.in_snapshot and not store.in_write_transaction
            with pytest.raises(RuntimeError, match=r"inside store\.transaction"):
                await recompute_contacts(store, ctx, [1], TODAY, "test")
            with pytest.raises(StoreError, match="read snapshot"):
                await store.set_state("x", "y")
        async with store.transaction():
            assert store.in_write_transaction and not store.in_snapshot
            async with store.snapshot():  # a snapshot inside a write transaction is it
                await store.set_state("x", "y")
    assert query(seeded, "SELECT value FROM scheduler_state WHERE key = 'x'") == [("y",)]


async def test_export_equals_dry_run_after_recompute_all(seeded: Path) -> None:
    # Sanity of the helpers used above: a full recompute records its day.
    cfg = settings()
    async with open_store(seeded) as store:
        await full_recompute(store, PlanContext.from_settings(cfg), TODAY)
        basis = await store.plan_basis()
    assert basis.fingerprint == cfg.fingerprint() and basis.full_recompute_day == TODAY
    actual, expected = await export_and_expected(seeded, cfg, TODAY)
    assert actual == expected


async def test_a_balancing_key_alone_rebalances_after_the_rebuild(seeded: Path) -> None:
    # Only daily_cap changes: no plan row changes, so no window is touched, yet the
    # scheduled dates must follow the new cap (found by the settings property).
    # Six TX contacts (no state rule) born on 03-20: six birthday emails desired 03-06.
    # Cap 3 (threshold floor(3 x 1.2) = 3) keeps three that day, cap 1 keeps one.
    upstream(seeded, "INSERT INTO contacts (id, email, birth_date, state) VALUES "
             + ", ".join(f"({i}, 'c{i}@example.com', '1950-03-20', 'TX')" for i in range(30, 36))
             + ";")  # fmt: skip
    wide = settings(daily_cap=3)
    narrow = settings(daily_cap=1)
    async with running_daemon(seeded, wide, reload_settings=lambda: narrow) as run:
        await run.settle()
        await assert_plan_is_full_recompute(seeded, wide, TODAY)
        run.daemon.wake("reload")
        await run.settle()
        await run.settle()
    actual, expected = await export_and_expected(seeded, narrow, TODAY)
    _, under_wide = await export_and_expected(seeded, wide, TODAY)
    assert under_wide != expected, (
        "the caps must give different plans for this test to mean anything"
    )
    assert actual == expected
