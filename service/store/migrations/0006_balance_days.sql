-- Balancing whose cost per change does not grow with the size of a day
-- (SPEC 6, 12): per-day counts of the non-skipped plan rows, an index in
-- sweep order within each scheduled day, one over the carried rows, and
-- balance gaps that record the row they took away.

-- A gap records the row that left the plan set (or came back into it), so
-- the rebalance can take exactly that row out of the sweep (or put it in).
-- Gaps recorded before this version are covered by the global rebalance
-- that the new balance basis (service/engine/core.py) starts with.
DROP TABLE IF EXISTS scheduler_balance_gaps;
CREATE TABLE scheduler_balance_gaps (
    id INTEGER PRIMARY KEY,
    contact_id INTEGER,
    email_type TEXT,
    event_year INTEGER,
    event_month INTEGER,
    event_day INTEGER,
    priority INTEGER,
    desired_date TEXT,
    allowed_from TEXT,
    allowed_to TEXT,
    balance_date TEXT,
    scheduled_send_date TEXT,
    back INTEGER NOT NULL DEFAULT 0
);

-- How many non-skipped plan rows have each step-1 date (balance_date) and
-- each scheduled date. Kept equal to the table by mailplan's writer and
-- balancer in the transaction that changes the rows, and by the rebalance
-- from the gaps of rows changed by others; rebuilt by every global
-- rebalance. Candidates of a sweep day and the carry into it follow from
-- these by prefix sums.
CREATE TABLE IF NOT EXISTS balance_days (
    day TEXT PRIMARY KEY,
    step1 INTEGER NOT NULL DEFAULT 0,
    scheduled INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The rows kept on a day in the sweep order of SPEC 6 (priority, step-1
-- date, contact, type, event date): the cap boundary of a crowded day is an
-- index seek from either end.
CREATE INDEX IF NOT EXISTS idx_plan_day_order ON email_schedules(
    scheduled_send_date, COALESCE(priority, 10), balance_date, contact_id, email_type,
    event_year, event_month, event_day
) WHERE status = 'pre-scheduled';

-- The rows carried past their step-1 date, in sweep order: the first rows of
-- a day's carry are a seek. Only carried rows are in it.
CREATE INDEX IF NOT EXISTS idx_plan_carried ON email_schedules(
    COALESCE(priority, 10), balance_date, contact_id, email_type,
    event_year, event_month, event_day, scheduled_send_date
) WHERE status = 'pre-scheduled' AND scheduled_send_date > balance_date;

DROP TRIGGER IF EXISTS mailplan_plan_row_gone;
CREATE TRIGGER mailplan_plan_row_gone AFTER DELETE ON email_schedules
WHEN OLD.status = 'pre-scheduled'
    AND NOT EXISTS (SELECT 1 FROM contacts WHERE id = OLD.contact_id)
BEGIN
    INSERT INTO scheduler_balance_gaps (
        contact_id, email_type, event_year, event_month, event_day, priority,
        desired_date, allowed_from, allowed_to, balance_date, scheduled_send_date, back
    ) VALUES (
        OLD.contact_id, OLD.email_type, OLD.event_year, OLD.event_month,
        OLD.event_day, OLD.priority, OLD.desired_date, OLD.allowed_from, OLD.allowed_to,
        OLD.balance_date, OLD.scheduled_send_date, 0
    );
END;

DROP TRIGGER IF EXISTS mailplan_plan_row_crossing;
CREATE TRIGGER mailplan_plan_row_crossing AFTER UPDATE OF status ON email_schedules
WHEN (OLD.status = 'pre-scheduled'
      AND COALESCE(NEW.status, '') NOT IN ('pre-scheduled', 'skipped'))
    OR (NEW.status = 'pre-scheduled'
        AND COALESCE(OLD.status, '') NOT IN ('pre-scheduled', 'skipped'))
BEGIN
    INSERT INTO scheduler_balance_gaps (
        contact_id, email_type, event_year, event_month, event_day, priority,
        desired_date, allowed_from, allowed_to, balance_date, scheduled_send_date, back
    )
    SELECT OLD.contact_id, OLD.email_type, OLD.event_year, OLD.event_month,
           OLD.event_day, OLD.priority, OLD.desired_date, OLD.allowed_from, OLD.allowed_to,
           OLD.balance_date, OLD.scheduled_send_date, 0
    WHERE OLD.status = 'pre-scheduled';
    INSERT INTO scheduler_balance_gaps (
        contact_id, email_type, event_year, event_month, event_day, priority,
        desired_date, allowed_from, allowed_to, balance_date, scheduled_send_date, back
    )
    SELECT NEW.contact_id, NEW.email_type, NEW.event_year, NEW.event_month,
           NEW.event_day, NEW.priority, NEW.desired_date, NEW.allowed_from, NEW.allowed_to,
           NEW.balance_date, NEW.scheduled_send_date, 1
    WHERE NEW.status = 'pre-scheduled';
END;

-- Replaced by the two indexes above: balancing no longer reads rows by
-- step-1 date, nor every row sent on another day than its step-1 date.
DROP INDEX IF EXISTS idx_plan_balance_date;
DROP INDEX IF EXISTS idx_plan_off_day;
