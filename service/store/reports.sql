-- Named queries of the plan journal (SPEC 7) and of the reports that read it
-- (explain --history, audit, status). Same conventions as queries.sql.

-- name: journal_append
-- Positional: run id, time (NULL: the database's clock), contact id, type,
-- event date, operation, old desired/scheduled/status/reason, new
-- desired/scheduled/status/reason, the run's trigger.
INSERT INTO plan_journal (
    run_id, trigger, at, contact_id, email_type, event_date, op,
    old_desired, old_scheduled, old_status, old_reason,
    new_desired, new_scheduled, new_status, new_reason
) VALUES (
    ?1, ?15, COALESCE(?2, strftime('%Y-%m-%d %H:%M:%f', 'now')),
    ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14
);

-- name: run_trigger
SELECT trigger FROM scheduler_runs WHERE id = ?;

-- name: journal_move
-- A balancing move: the row's scheduled date changes to ?3. Appended before
-- the balancer's UPDATE, so the old date is still in the row; nothing is
-- appended when the date stays. Positional: run id, time, new scheduled date,
-- identity (contact, type, event year, month, day).
INSERT INTO plan_journal (
    run_id, trigger, at, contact_id, email_type, event_date, op,
    old_desired, old_scheduled, old_status, old_reason,
    new_desired, new_scheduled, new_status, new_reason
)
SELECT ?1, (SELECT trigger FROM scheduler_runs WHERE id = ?1),
       COALESCE(?2, strftime('%Y-%m-%d %H:%M:%f', 'now')),
       contact_id, email_type, printf('%04d-%02d-%02d', event_year, event_month, event_day),
       'move', desired_date, scheduled_send_date, status, skip_reason,
       desired_date, ?3, status, skip_reason
FROM email_schedules
WHERE contact_id = ?4 AND email_type = ?5 AND event_year = ?6 AND event_month = ?7
  AND event_day = ?8 AND status = 'pre-scheduled' AND scheduled_send_date IS NOT ?3;

-- name: journal_inserts_last
-- The journal of the :count rows one write has just inserted, when each of
-- its inserts took effect: AUTOINCREMENT gave them the :count largest ids,
-- one after another (nothing else inserts plan rows inside the write's
-- transaction). One statement instead of a bound row per insert; in
-- insertion order. (An insert that OR IGNORE refused uses up an id too: then
-- the writer journals its inserts row by row.)
INSERT INTO plan_journal (
    run_id, trigger, at, contact_id, email_type, event_date, op,
    old_desired, old_scheduled, old_status, old_reason,
    new_desired, new_scheduled, new_status, new_reason
)
SELECT :run, :trigger, COALESCE(:at, strftime('%Y-%m-%d %H:%M:%f', 'now')),
       contact_id, email_type, printf('%04d-%02d-%02d', event_year, event_month, event_day),
       'insert', NULL, NULL, NULL, NULL,
       desired_date, scheduled_send_date, status, skip_reason
FROM email_schedules
WHERE id > (SELECT max(id) FROM email_schedules) - :count
ORDER BY id;

-- name: plan_identity_exists
SELECT 1 FROM email_schedules
WHERE contact_id = ?1 AND email_type = ?2 AND event_year = ?3 AND event_month = ?4
  AND event_day = ?5 AND status IN ('pre-scheduled', 'skipped') AND scheduler_run_id = ?6;

-- name: journal_prune
-- Those of the :limit oldest entries (by id, which follows time) written
-- before :before: one prune is a short write transaction and reads no more
-- than :limit rows, without an index on the time.
DELETE FROM plan_journal WHERE id IN (
    SELECT id FROM (SELECT id, at FROM plan_journal ORDER BY id LIMIT :limit)
    WHERE at < :before
);

-- name: journal_of_contact
SELECT id, run_id, trigger, at, contact_id, email_type, event_date, op,
       old_desired, old_scheduled, old_status, old_reason,
       new_desired, new_scheduled, new_status, new_reason
FROM plan_journal WHERE contact_id = :contact ORDER BY id;

-- name: journal_of_identities
-- The journal of every identity of history rows sent in a period (audit).
SELECT j.id, j.run_id, j.trigger, j.at, j.contact_id, j.email_type, j.event_date, j.op,
       j.old_desired, j.old_scheduled, j.old_status, j.old_reason,
       j.new_desired, j.new_scheduled, j.new_status, j.new_reason
FROM plan_journal AS j
WHERE j.contact_id IN (SELECT value FROM json_each(:ids))
ORDER BY j.contact_id, j.id;

-- name: history_rows_of
-- Every history row of some contacts (any status mailplan does not own), with
-- the instants its send date is read from (SPEC 5.7).
SELECT id, contact_id, email_type, status,
       printf('%04d-%02d-%02d', event_year, event_month, event_day),
       actual_send_datetime, sent_at, scheduled_send_date, campaign_instance_id
FROM email_schedules
WHERE contact_id IN (SELECT value FROM json_each(:ids))
  AND COALESCE(status, '') NOT IN ('pre-scheduled', 'skipped')
ORDER BY contact_id, id;

-- name: history_contacts_between
-- Contacts with a history row whose send date may fall in :lo..:hi (the
-- instants are compared by their first ten characters, the date).
SELECT DISTINCT contact_id FROM email_schedules
WHERE COALESCE(status, '') NOT IN ('pre-scheduled', 'skipped')
  AND substr(COALESCE(actual_send_datetime, sent_at, scheduled_send_date), 1, 10)
      BETWEEN :lo AND :hi
ORDER BY contact_id;

-- name: journal_summary
SELECT count(*), min(at), max(at) FROM plan_journal;

-- name: contacts_upto
-- How many contacts have an id up to :after, and how many there are (the
-- progress of a pass over every contact in id order).
SELECT (SELECT count(*) FROM contacts WHERE id <= :after), (SELECT count(*) FROM contacts);

-- name: wanted_on
-- Non-skipped plan rows that want one day, and how many of them are
-- effective-date emails (why explain says a row was moved).
SELECT count(*), COALESCE(sum(email_type = 'effective_date'), 0)
FROM email_schedules WHERE status = 'pre-scheduled' AND desired_date = :day;

-- name: max_contact_id
SELECT COALESCE(max(id), 0) FROM contacts;

-- name: skipped_load
-- Skipped plan rows per desired day (they are never sent; the plot shows them).
SELECT desired_date, count(*) FROM email_schedules
WHERE status = 'skipped' AND desired_date BETWEEN :start AND :end
GROUP BY desired_date ORDER BY desired_date;

-- name: sent_load
-- History rows per send date (SPEC 5.7's date), for days before today.
SELECT substr(COALESCE(actual_send_datetime, sent_at, scheduled_send_date), 1, 10) AS day,
       count(*)
FROM email_schedules
WHERE COALESCE(status, '') NOT IN ('pre-scheduled', 'skipped')
  AND substr(COALESCE(actual_send_datetime, sent_at, scheduled_send_date), 1, 10)
      BETWEEN :start AND :end
GROUP BY day ORDER BY day;

-- name: existing_contacts
SELECT id FROM contacts WHERE id IN (SELECT value FROM json_each(:ids));
