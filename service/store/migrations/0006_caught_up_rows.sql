-- The tick's catch-up move (SPEC 5.10, 5.11): caught-up plan rows, in contact
-- order, found without reading the whole plan. Only caught-up rows are in it,
-- so the writer's and the balancer's other writes do not maintain it.
CREATE INDEX IF NOT EXISTS idx_plan_caught_up
    ON email_schedules(contact_id, desired_date)
    WHERE catchup_note IS NOT NULL AND status IN ('pre-scheduled', 'skipped');
