-- The plan journal (SPEC 7): one row per insert, update, delete or balancing
-- move of a plan row, appended in the transaction that made the change.
-- Append-only; pruned only by age (journal_retention_days). It keeps what the
-- plan said about a contact after the plan row itself is gone (a skipped row
-- whose event has passed), and lets a sender follow changes without
-- rescanning email_schedules. Event date is the identity's date; the "old_"
-- columns are NULL for an insert, the "new_" columns for a delete.
CREATE TABLE IF NOT EXISTS plan_journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER,
    trigger TEXT,
    at TEXT NOT NULL,
    contact_id INTEGER NOT NULL,
    email_type TEXT NOT NULL,
    event_date TEXT,
    op TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete', 'move')),
    old_desired TEXT,
    old_scheduled TEXT,
    old_status TEXT,
    old_reason TEXT,
    new_desired TEXT,
    new_scheduled TEXT,
    new_status TEXT,
    new_reason TEXT
);
-- One index only (each costs every append): a contact's entries, for explain
-- --history and the audit. Pruning reads the oldest entries by id.
CREATE INDEX IF NOT EXISTS idx_plan_journal_contact ON plan_journal(contact_id, id);

-- Plan rows that go without mailplan's writer: deleted with their contact
-- (the foreign key's cascade, in the upstream transaction). The writer never
-- deletes a plan row of an existing contact, and does not journal the
-- orphans it removes itself, so each deletion is journalled once.
DROP TRIGGER IF EXISTS mailplan_journal_contact_gone;
CREATE TRIGGER mailplan_journal_contact_gone AFTER DELETE ON email_schedules
WHEN OLD.status IN ('pre-scheduled', 'skipped')
    AND NOT EXISTS (SELECT 1 FROM contacts WHERE id = OLD.contact_id)
BEGIN
    INSERT INTO plan_journal (
        run_id, trigger, at, contact_id, email_type, event_date, op,
        old_desired, old_scheduled, old_status, old_reason
    ) VALUES (
        NULL, 'contact deleted', strftime('%Y-%m-%d %H:%M:%f', 'now'),
        OLD.contact_id, OLD.email_type,
        printf('%04d-%02d-%02d', OLD.event_year, OLD.event_month, OLD.event_day),
        'delete', OLD.desired_date, OLD.scheduled_send_date, OLD.status, OLD.skip_reason
    );
END;
