-- The tick's catch-up move (SPEC 5.10, 5.11): the plan rows whose desired
-- date has passed, found without reading the whole plan.
CREATE INDEX IF NOT EXISTS idx_plan_catch_up
    ON email_schedules(desired_date, contact_id)
    WHERE status IN ('pre-scheduled', 'skipped');
