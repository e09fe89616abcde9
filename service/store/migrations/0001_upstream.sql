-- Upstream tables (SPEC 3), created only where missing, so a database made by
-- the original system keeps its tables, constraints and rows as they are.
-- A fresh database gets lenient versions: nullable columns, no UNIQUE e-mail,
-- because real books hold contacts without an address or with shared ones.
--
-- "-- @add-column TABLE COLUMN DEFINITION" lines are applied by the migration
-- runner before the statements, only when the column is missing (SQLite has no
-- ADD COLUMN IF NOT EXISTS). They bring older databases up to the columns
-- mailplan reads; new columns are nullable or carry a default, so existing
-- rows keep their values.

-- @add-column contacts failed_underwriting INTEGER NOT NULL DEFAULT 0
-- @add-column campaign_instances target_states TEXT
-- @add-column campaign_instances target_carriers TEXT
-- @add-column email_schedules event_year INTEGER
-- @add-column email_schedules event_month INTEGER
-- @add-column email_schedules event_day INTEGER
-- @add-column email_schedules catchup_note TEXT
-- @add-column email_schedules sent_at TEXT
-- @add-column email_schedules actual_send_datetime TEXT
-- @add-column email_schedules priority INTEGER DEFAULT 10
-- @add-column email_schedules campaign_instance_id INTEGER
-- @add-column email_schedules email_template TEXT
-- @add-column email_schedules sms_template TEXT
-- @add-column email_schedules scheduler_run_id TEXT
-- @add-column email_schedules desired_date TEXT
-- @add-column email_schedules balance_date TEXT
-- @add-column email_schedules allowed_from TEXT
-- @add-column email_schedules allowed_to TEXT
-- @add-column email_schedules send_timezone TEXT
-- @add-column email_schedules send_at_utc TEXT

CREATE TABLE IF NOT EXISTS contacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_name TEXT,
    last_name TEXT,
    email TEXT,
    current_carrier TEXT,
    plan_type TEXT,
    effective_date TEXT,
    birth_date TEXT,
    tobacco_user INTEGER,
    gender TEXT,
    state TEXT,
    zip_code TEXT,
    agent_id INTEGER,
    last_emailed DATETIME,
    phone_number TEXT DEFAULT '',
    status TEXT DEFAULT 'active',
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    failed_underwriting INTEGER NOT NULL DEFAULT 0
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
    desired_date TEXT,
    balance_date TEXT,
    allowed_from TEXT,
    allowed_to TEXT,
    send_timezone TEXT,
    send_at_utc TEXT,
    FOREIGN KEY (contact_id) REFERENCES contacts(id) ON DELETE CASCADE
);

CREATE TABLE IF NOT EXISTS campaign_types (
    name TEXT PRIMARY KEY,
    respect_exclusion_windows INTEGER NOT NULL DEFAULT 1,
    enable_followups INTEGER NOT NULL DEFAULT 1,
    days_before_event INTEGER NOT NULL DEFAULT 0,
    target_all_contacts INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 10,
    active INTEGER NOT NULL DEFAULT 1,
    spread_evenly INTEGER NOT NULL DEFAULT 0,
    skip_failed_underwriting INTEGER NOT NULL DEFAULT 0,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS campaign_instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_type TEXT NOT NULL,
    instance_name TEXT NOT NULL DEFAULT '',
    email_template TEXT,
    sms_template TEXT,
    active_start_date TEXT,
    active_end_date TEXT,
    spread_start_date TEXT,
    spread_end_date TEXT,
    target_states TEXT,
    target_carriers TEXT,
    metadata TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS contact_campaigns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER NOT NULL,
    campaign_instance_id INTEGER NOT NULL,
    trigger_date TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    metadata TEXT,
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS tracking_clicks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER NOT NULL,
    email_schedule_id INTEGER,
    clicked_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    url TEXT,
    metadata TEXT
);

CREATE TABLE IF NOT EXISTS contact_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    metadata TEXT,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- The original unique index on (contact_id, email_type, event_year) cannot
-- hold two follow-ups of one kind in a year; the identity is the full event
-- date (SPEC 2, 3). The original unique index on (contact_id, email_type,
-- scheduled_send_date) goes too: the scheduled date is the balancer's, two
-- occurrences of one type may legitimately share a day, and moving rows past
-- each other inside one batch of updates would trip it. A plain index with
-- the same columns (idx_schedules_lookup) keeps the lookups fast.
DROP INDEX IF EXISTS idx_email_schedules_unique_event;
DROP INDEX IF EXISTS idx_email_schedules_unique;
CREATE UNIQUE INDEX IF NOT EXISTS idx_email_schedules_identity
    ON email_schedules(contact_id, email_type, event_year, event_month, event_day);

CREATE INDEX IF NOT EXISTS idx_contact_campaigns_contact ON contact_campaigns(contact_id);
CREATE INDEX IF NOT EXISTS idx_contact_campaigns_instance ON contact_campaigns(campaign_instance_id);
CREATE INDEX IF NOT EXISTS idx_tracking_clicks_contact ON tracking_clicks(contact_id);
CREATE INDEX IF NOT EXISTS idx_contact_events_contact ON contact_events(contact_id);
