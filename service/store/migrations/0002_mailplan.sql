-- Tables owned by mailplan (SPEC 3).

-- Events inbox (SPEC 8.1): written by triggers in the upstream transaction,
-- or inserted explicitly ('recompute_contact', 'recompute_all').
CREATE TABLE IF NOT EXISTS scheduler_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    contact_id INTEGER,
    ref TEXT,
    detail TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);

-- Per-contact plan state: the review date (SPEC 5.11), why a contact cannot
-- be e-mailed at all (if so), and a fingerprint of the plan rows last
-- written, which lets a full recompute skip reading the plan rows of
-- contacts whose plan did not change.
CREATE TABLE IF NOT EXISTS contact_plan_state (
    contact_id INTEGER PRIMARY KEY,
    review_date TEXT,
    invalid TEXT,
    fingerprint TEXT,
    updated_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE INDEX IF NOT EXISTS idx_contact_plan_state_review
    ON contact_plan_state(review_date) WHERE review_date IS NOT NULL;

-- Key/value state: last tick date, the daily capacity snapshots (SPEC 6, 8.4).
CREATE TABLE IF NOT EXISTS scheduler_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (datetime('now'))
);

-- Audit of runs (SPEC 3).
CREATE TABLE IF NOT EXISTS scheduler_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    trigger TEXT NOT NULL,
    today TEXT,
    events_consumed INTEGER NOT NULL DEFAULT 0,
    contacts_recomputed INTEGER NOT NULL DEFAULT 0,
    rows_inserted INTEGER NOT NULL DEFAULT 0,
    rows_updated INTEGER NOT NULL DEFAULT 0,
    rows_deleted INTEGER NOT NULL DEFAULT 0,
    rows_unchanged INTEGER NOT NULL DEFAULT 0,
    windows_rebalanced INTEGER NOT NULL DEFAULT 0,
    rows_moved INTEGER NOT NULL DEFAULT 0,
    duration_ms REAL,
    error TEXT
);

-- Dates left by non-skipped plan rows that stopped being plan rows without
-- mailplan's writer seeing them go: claimed by the sender, deleted with their
-- contact (a foreign-key cascade). The writer adds them to the dates the
-- windowed rebalance covers (SPEC 6) and deletes them.
CREATE TABLE IF NOT EXISTS scheduler_balance_gaps (
    id INTEGER PRIMARY KEY,
    contact_id INTEGER,
    lo TEXT,
    hi TEXT
);
CREATE INDEX IF NOT EXISTS idx_balance_gaps_contact ON scheduler_balance_gaps(contact_id);

-- Load balancing reads the non-skipped plan rows by desired date, by step-1
-- date, and the few rows sent on another day than their step-1 date (the
-- carried ones) (SPEC 6). Partial indexes keep them small: history and
-- skipped rows are never in them, and every index costs each insert.
CREATE INDEX IF NOT EXISTS idx_plan_desired_date
    ON email_schedules(desired_date, email_type) WHERE status = 'pre-scheduled';
CREATE INDEX IF NOT EXISTS idx_plan_balance_date
    ON email_schedules(balance_date) WHERE status = 'pre-scheduled';
CREATE INDEX IF NOT EXISTS idx_plan_off_day
    ON email_schedules(scheduled_send_date)
    WHERE status = 'pre-scheduled' AND scheduled_send_date <> balance_date;
