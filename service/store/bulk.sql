-- Named statements of the bulk loader (service/store/bulk.py), which fills an
-- empty database in one transaction (mailplan generate). Values are always
-- bound parameters.

-- name: bulk_contact_count
SELECT count(*) FROM contacts;

-- name: bulk_next_schedule_id
SELECT coalesce(max(id), 0) + 1 FROM email_schedules;

-- name: bulk_capture_triggers
-- The event-capture triggers on the tables the loader fills (SPEC 8.1).
SELECT name, sql FROM sqlite_master
WHERE type = 'trigger' AND tbl_name IN (SELECT value FROM json_each(:tables))
ORDER BY name;

-- name: bulk_journal_truncate
PRAGMA journal_mode = TRUNCATE;

-- name: bulk_journal_wal
PRAGMA journal_mode = WAL;

-- name: bulk_insert_contact
INSERT INTO contacts (
    id, first_name, last_name, email, current_carrier, plan_type, effective_date,
    birth_date, tobacco_user, gender, state, zip_code, agent_id, phone_number,
    failed_underwriting, created_at, updated_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: bulk_insert_history
INSERT INTO email_schedules (
    id, contact_id, email_type, scheduled_send_date, scheduled_send_time, status,
    event_year, event_month, event_day, sent_at, actual_send_datetime, priority,
    email_template, batch_id, created_at, updated_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: bulk_insert_click
INSERT INTO tracking_clicks (contact_id, email_schedule_id, clicked_at) VALUES (?, ?, ?);

-- name: bulk_insert_contact_event
INSERT INTO contact_events (contact_id, event_type, metadata, created_at) VALUES (?, ?, ?, ?);

-- name: bulk_insert_campaign_type
INSERT OR IGNORE INTO campaign_types (
    name, respect_exclusion_windows, enable_followups, days_before_event,
    target_all_contacts, priority, active, spread_evenly, skip_failed_underwriting,
    created_at, updated_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: bulk_insert_campaign_instance
INSERT INTO campaign_instances (
    campaign_type, instance_name, email_template, sms_template, active_start_date,
    active_end_date, spread_start_date, spread_end_date, target_states, target_carriers,
    metadata, created_at, updated_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, ?);

-- name: bulk_insert_contact_campaign
INSERT INTO contact_campaigns (
    contact_id, campaign_instance_id, trigger_date, status, metadata, created_at, updated_at
) VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: bulk_recompute_all
INSERT INTO scheduler_events (kind) VALUES ('recompute_all');
