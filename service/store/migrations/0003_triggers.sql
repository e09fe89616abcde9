-- Event capture (SPEC 8.1): every upstream change appends to scheduler_events
-- in the same transaction. Kinds and columns are a contract with the daemon's
-- handlers; an update emits one event for the old and one for the new row
-- where they can differ, because a change affects whoever the row concerned
-- before and after it.

DROP TRIGGER IF EXISTS mailplan_contacts_insert;
CREATE TRIGGER mailplan_contacts_insert AFTER INSERT ON contacts
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('contact', NEW.id);
END;

DROP TRIGGER IF EXISTS mailplan_contacts_update;
CREATE TRIGGER mailplan_contacts_update AFTER UPDATE ON contacts
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('contact', NEW.id);
    INSERT INTO scheduler_events (kind, contact_id)
        SELECT 'contact', OLD.id WHERE OLD.id IS NOT NEW.id;
END;

DROP TRIGGER IF EXISTS mailplan_contacts_delete;
CREATE TRIGGER mailplan_contacts_delete AFTER DELETE ON contacts
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('contact', OLD.id);
END;

-- campaign_type: ref = type name, detail = target_all_contacts as '0'/'1'.
DROP TRIGGER IF EXISTS mailplan_campaign_types_insert;
CREATE TRIGGER mailplan_campaign_types_insert AFTER INSERT ON campaign_types
BEGIN
    INSERT INTO scheduler_events (kind, ref, detail)
    VALUES ('campaign_type', NEW.name,
            CASE WHEN NEW.target_all_contacts THEN '1' ELSE '0' END);
END;

DROP TRIGGER IF EXISTS mailplan_campaign_types_update;
CREATE TRIGGER mailplan_campaign_types_update AFTER UPDATE ON campaign_types
BEGIN
    INSERT INTO scheduler_events (kind, ref, detail)
    VALUES ('campaign_type', OLD.name,
            CASE WHEN OLD.target_all_contacts THEN '1' ELSE '0' END);
    INSERT INTO scheduler_events (kind, ref, detail)
    VALUES ('campaign_type', NEW.name,
            CASE WHEN NEW.target_all_contacts THEN '1' ELSE '0' END);
END;

DROP TRIGGER IF EXISTS mailplan_campaign_types_delete;
CREATE TRIGGER mailplan_campaign_types_delete AFTER DELETE ON campaign_types
BEGIN
    INSERT INTO scheduler_events (kind, ref, detail)
    VALUES ('campaign_type', OLD.name,
            CASE WHEN OLD.target_all_contacts THEN '1' ELSE '0' END);
END;

-- campaign_instance: ref = instance id, detail = its campaign type.
DROP TRIGGER IF EXISTS mailplan_campaign_instances_insert;
CREATE TRIGGER mailplan_campaign_instances_insert AFTER INSERT ON campaign_instances
BEGIN
    INSERT INTO scheduler_events (kind, ref, detail)
    VALUES ('campaign_instance', CAST(NEW.id AS TEXT), NEW.campaign_type);
END;

DROP TRIGGER IF EXISTS mailplan_campaign_instances_update;
CREATE TRIGGER mailplan_campaign_instances_update AFTER UPDATE ON campaign_instances
BEGIN
    INSERT INTO scheduler_events (kind, ref, detail)
    VALUES ('campaign_instance', CAST(OLD.id AS TEXT), OLD.campaign_type);
    INSERT INTO scheduler_events (kind, ref, detail)
    VALUES ('campaign_instance', CAST(NEW.id AS TEXT), NEW.campaign_type);
END;

DROP TRIGGER IF EXISTS mailplan_campaign_instances_delete;
CREATE TRIGGER mailplan_campaign_instances_delete AFTER DELETE ON campaign_instances
BEGIN
    INSERT INTO scheduler_events (kind, ref, detail)
    VALUES ('campaign_instance', CAST(OLD.id AS TEXT), OLD.campaign_type);
END;

-- contact_campaign: contact_id, ref = campaign instance id.
DROP TRIGGER IF EXISTS mailplan_contact_campaigns_insert;
CREATE TRIGGER mailplan_contact_campaigns_insert AFTER INSERT ON contact_campaigns
BEGIN
    INSERT INTO scheduler_events (kind, contact_id, ref)
    VALUES ('contact_campaign', NEW.contact_id, CAST(NEW.campaign_instance_id AS TEXT));
END;

DROP TRIGGER IF EXISTS mailplan_contact_campaigns_update;
CREATE TRIGGER mailplan_contact_campaigns_update AFTER UPDATE ON contact_campaigns
BEGIN
    INSERT INTO scheduler_events (kind, contact_id, ref)
    VALUES ('contact_campaign', OLD.contact_id, CAST(OLD.campaign_instance_id AS TEXT));
    INSERT INTO scheduler_events (kind, contact_id, ref)
    VALUES ('contact_campaign', NEW.contact_id, CAST(NEW.campaign_instance_id AS TEXT));
END;

DROP TRIGGER IF EXISTS mailplan_contact_campaigns_delete;
CREATE TRIGGER mailplan_contact_campaigns_delete AFTER DELETE ON contact_campaigns
BEGIN
    INSERT INTO scheduler_events (kind, contact_id, ref)
    VALUES ('contact_campaign', OLD.contact_id, CAST(OLD.campaign_instance_id AS TEXT));
END;

-- engagement: tracking_clicks and contact_events, by contact.
DROP TRIGGER IF EXISTS mailplan_tracking_clicks_insert;
CREATE TRIGGER mailplan_tracking_clicks_insert AFTER INSERT ON tracking_clicks
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('engagement', NEW.contact_id);
END;

DROP TRIGGER IF EXISTS mailplan_tracking_clicks_update;
CREATE TRIGGER mailplan_tracking_clicks_update AFTER UPDATE ON tracking_clicks
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('engagement', NEW.contact_id);
    INSERT INTO scheduler_events (kind, contact_id)
        SELECT 'engagement', OLD.contact_id WHERE OLD.contact_id IS NOT NEW.contact_id;
END;

DROP TRIGGER IF EXISTS mailplan_tracking_clicks_delete;
CREATE TRIGGER mailplan_tracking_clicks_delete AFTER DELETE ON tracking_clicks
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('engagement', OLD.contact_id);
END;

DROP TRIGGER IF EXISTS mailplan_contact_events_insert;
CREATE TRIGGER mailplan_contact_events_insert AFTER INSERT ON contact_events
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('engagement', NEW.contact_id);
END;

DROP TRIGGER IF EXISTS mailplan_contact_events_update;
CREATE TRIGGER mailplan_contact_events_update AFTER UPDATE ON contact_events
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('engagement', NEW.contact_id);
    INSERT INTO scheduler_events (kind, contact_id)
        SELECT 'engagement', OLD.contact_id WHERE OLD.contact_id IS NOT NEW.contact_id;
END;

DROP TRIGGER IF EXISTS mailplan_contact_events_delete;
CREATE TRIGGER mailplan_contact_events_delete AFTER DELETE ON contact_events
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('engagement', OLD.contact_id);
END;

-- history: an email_schedules row with a history status (anything but
-- 'pre-scheduled'/'skipped') inserted or deleted, a status crossing between
-- the plan set and history, or a history row whose planning-relevant content
-- changes ('scheduled' -> 'sent', a send time filled in: follow-ups and the
-- frequency limit read these). mailplan writes only plan rows with plan
-- statuses, so its own writes never match these conditions.
DROP TRIGGER IF EXISTS mailplan_history_insert;
CREATE TRIGGER mailplan_history_insert AFTER INSERT ON email_schedules
WHEN COALESCE(NEW.status, '') NOT IN ('pre-scheduled', 'skipped')
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('history', NEW.contact_id);
END;

DROP TRIGGER IF EXISTS mailplan_history_delete;
CREATE TRIGGER mailplan_history_delete AFTER DELETE ON email_schedules
WHEN COALESCE(OLD.status, '') NOT IN ('pre-scheduled', 'skipped')
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('history', OLD.contact_id);
END;

DROP TRIGGER IF EXISTS mailplan_history_update;
CREATE TRIGGER mailplan_history_update AFTER UPDATE ON email_schedules
WHEN (COALESCE(OLD.status, '') IN ('pre-scheduled', 'skipped'))
         <> (COALESCE(NEW.status, '') IN ('pre-scheduled', 'skipped'))
    OR (COALESCE(NEW.status, '') NOT IN ('pre-scheduled', 'skipped')
        AND (NEW.status IS NOT OLD.status
             OR NEW.contact_id IS NOT OLD.contact_id
             OR NEW.email_type IS NOT OLD.email_type
             OR NEW.scheduled_send_date IS NOT OLD.scheduled_send_date
             OR NEW.sent_at IS NOT OLD.sent_at
             OR NEW.actual_send_datetime IS NOT OLD.actual_send_datetime
             OR NEW.event_year IS NOT OLD.event_year
             OR NEW.event_month IS NOT OLD.event_month
             OR NEW.event_day IS NOT OLD.event_day
             OR NEW.campaign_instance_id IS NOT OLD.campaign_instance_id))
BEGIN
    INSERT INTO scheduler_events (kind, contact_id) VALUES ('history', NEW.contact_id);
    INSERT INTO scheduler_events (kind, contact_id)
        SELECT 'history', OLD.contact_id WHERE OLD.contact_id IS NOT NEW.contact_id;
END;

-- Balancing bookkeeping, not events: a non-skipped plan row that leaves the
-- plan set through someone else (claimed by the sender, deleted by a cascade
-- or an upstream without foreign keys), or a history row put back into it,
-- leaves the dates it occupied in the balance. mailplan never moves a row
-- between the plan set and history, and deletes only rows of contacts that
-- exist (or are already gone), so its own writes add nothing here but the
-- rare orphan it removes itself.
DROP TRIGGER IF EXISTS mailplan_plan_row_gone;
CREATE TRIGGER mailplan_plan_row_gone AFTER DELETE ON email_schedules
WHEN OLD.status = 'pre-scheduled'
    AND NOT EXISTS (SELECT 1 FROM contacts WHERE id = OLD.contact_id)
BEGIN
    INSERT INTO scheduler_balance_gaps (contact_id, lo, hi)
    VALUES (OLD.contact_id, COALESCE(OLD.desired_date, OLD.scheduled_send_date),
            OLD.scheduled_send_date);
END;

DROP TRIGGER IF EXISTS mailplan_plan_row_crossing;
CREATE TRIGGER mailplan_plan_row_crossing AFTER UPDATE OF status ON email_schedules
WHEN (OLD.status = 'pre-scheduled'
      AND COALESCE(NEW.status, '') NOT IN ('pre-scheduled', 'skipped'))
    OR (NEW.status = 'pre-scheduled'
        AND COALESCE(OLD.status, '') NOT IN ('pre-scheduled', 'skipped'))
BEGIN
    INSERT INTO scheduler_balance_gaps (contact_id, lo, hi)
    SELECT OLD.contact_id, COALESCE(OLD.desired_date, OLD.scheduled_send_date),
           OLD.scheduled_send_date
    WHERE OLD.status = 'pre-scheduled';
    INSERT INTO scheduler_balance_gaps (contact_id, lo, hi)
    SELECT NEW.contact_id, COALESCE(NEW.desired_date, NEW.scheduled_send_date),
           NEW.scheduled_send_date
    WHERE NEW.status = 'pre-scheduled';
END;

-- The original kept updated_at fresh with an unconditional AFTER UPDATE
-- trigger that updated the row a second time on every change. This one only
-- fills it in when the writer did not set it itself (mailplan always does),
-- and cannot recurse even with recursive_triggers on: its own update makes
-- OLD.updated_at equal CURRENT_TIMESTAMP or different from NEW.updated_at.
DROP TRIGGER IF EXISTS update_email_schedules_updated_at;
DROP TRIGGER IF EXISTS mailplan_email_schedules_updated_at;
CREATE TRIGGER mailplan_email_schedules_updated_at AFTER UPDATE ON email_schedules
WHEN NEW.updated_at IS OLD.updated_at AND OLD.updated_at IS NOT CURRENT_TIMESTAMP
BEGIN
    UPDATE email_schedules SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id;
END;
