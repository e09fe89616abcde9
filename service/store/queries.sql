-- Named queries of the store. Each starts with "-- name: NAME"; values are
-- always bound parameters. Two template slots are filled from fixed lists
-- when the queries are loaded, never from data:
--   {carrier}  the carrier column of this database ('current_carrier', or
--              'carrier' in an older one, or NULL);
--   {schedule_columns}, {balance_columns}, {export_columns}
--              the columns of email_schedules that the loaders, the
--              balancer and the export read, as listed once in sql.py;
--   {scope}    which contacts: a query containing it exists in two variants,
--              NAME@range (contact_id BETWEEN :lo AND :hi, for chunks) and
--              NAME@ids (a JSON array of ids in :ids, read with json_each,
--              which keeps the statement cacheable for any number of ids).

-- name: ensure_aep
-- The original's default campaign type, ensured by every init-db; never an
-- instance (SPEC 3).
INSERT INTO campaign_types (
    name, respect_exclusion_windows, enable_followups, days_before_event,
    target_all_contacts, priority, active, spread_evenly, skip_failed_underwriting
)
SELECT 'aep', 1, 1, 30, 1, 30, 1, 0, 0
WHERE NOT EXISTS (SELECT 1 FROM campaign_types WHERE name = 'aep');

-- name: contacts_after
-- Values arrive as text or NULL whatever upstream stored (a ZIP written as a
-- number, a flag written as 'true'), so the loader builds contacts without
-- per-value checks.
SELECT id, CAST(email AS TEXT), CAST(birth_date AS TEXT), CAST(effective_date AS TEXT),
       CAST(state AS TEXT), CAST(zip_code AS TEXT), CAST({carrier} AS TEXT),
       CASE typeof(failed_underwriting)
           WHEN 'integer' THEN failed_underwriting <> 0
           WHEN 'real' THEN failed_underwriting <> 0
           WHEN 'text' THEN lower(trim(failed_underwriting)) IN (SELECT value FROM json_each(:true_words))
           ELSE 0 END
FROM contacts WHERE id > :after ORDER BY id LIMIT :limit;

-- name: contacts_between
-- The contacts of one chunk's id range (a chunk planned again inside the lock).
SELECT id, CAST(email AS TEXT), CAST(birth_date AS TEXT), CAST(effective_date AS TEXT),
       CAST(state AS TEXT), CAST(zip_code AS TEXT), CAST({carrier} AS TEXT),
       CASE typeof(failed_underwriting)
           WHEN 'integer' THEN failed_underwriting <> 0
           WHEN 'real' THEN failed_underwriting <> 0
           WHEN 'text' THEN lower(trim(failed_underwriting)) IN (SELECT value FROM json_each(:true_words))
           ELSE 0 END
FROM contacts WHERE id BETWEEN :lo AND :hi ORDER BY id;

-- name: plan_prints
-- The stored fingerprint column of a range's contacts (input digests, SPEC 12).
SELECT contact_id, fingerprint FROM contact_plan_state WHERE contact_id BETWEEN :lo AND :hi;

-- name: event_seq
-- The last event id ever handed out (AUTOINCREMENT never reuses one): it
-- moves with every upstream change, also one whose event is consumed already.
SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'scheduler_events'), 0);

-- name: contacts_by_ids
SELECT id, CAST(email AS TEXT), CAST(birth_date AS TEXT), CAST(effective_date AS TEXT),
       CAST(state AS TEXT), CAST(zip_code AS TEXT), CAST({carrier} AS TEXT),
       CASE typeof(failed_underwriting)
           WHEN 'integer' THEN failed_underwriting <> 0
           WHEN 'real' THEN failed_underwriting <> 0
           WHEN 'text' THEN lower(trim(failed_underwriting)) IN (SELECT value FROM json_each(:true_words))
           ELSE 0 END
FROM contacts WHERE id IN (SELECT value FROM json_each(:ids)) ORDER BY id;

-- name: count_contacts_with_email
SELECT count(*) FROM contacts WHERE email IS NOT NULL AND trim(email) <> '';

-- name: schedules
-- Plan rows of any age and history rows recent enough to matter (:since is
-- the engine's cut-off; '' keeps everything), in contact order.
SELECT {schedule_columns}
FROM email_schedules
WHERE {scope}
  AND (status IN ('pre-scheduled', 'skipped')
       OR scheduled_send_date >= :since
       OR actual_send_datetime >= :since
       OR sent_at >= :since)
ORDER BY contact_id, id;

-- name: history
-- Like "schedules", history rows only.
SELECT {schedule_columns}
FROM email_schedules
WHERE {scope}
  AND COALESCE(status, '') NOT IN ('pre-scheduled', 'skipped')
  AND (scheduled_send_date >= :since
       OR actual_send_datetime >= :since
       OR sent_at >= :since)
ORDER BY contact_id, id;

-- name: plan_rows
-- Like "schedules", plan rows only.
SELECT {schedule_columns}
FROM email_schedules
WHERE {scope} AND status IN ('pre-scheduled', 'skipped')
ORDER BY contact_id, id;

-- name: orphan_plan_contacts
-- Contacts of a range that hold plan rows but no longer exist.
SELECT DISTINCT contact_id FROM email_schedules
WHERE contact_id BETWEEN :lo AND :hi
  AND status IN ('pre-scheduled', 'skipped')
  AND contact_id NOT IN (SELECT id FROM contacts WHERE id BETWEEN :lo AND :hi);

-- name: targeting
SELECT contact_id, campaign_instance_id, trigger_date, status
FROM contact_campaigns WHERE {scope} ORDER BY contact_id, id;

-- name: clicks
SELECT contact_id, clicked_at
FROM tracking_clicks WHERE {scope} AND clicked_at >= :since ORDER BY contact_id, id;

-- name: contact_events
SELECT contact_id, event_type, metadata, created_at
FROM contact_events WHERE {scope} AND created_at >= :since ORDER BY contact_id, id;

-- name: plan_state
SELECT contact_id, review_date, invalid, fingerprint FROM contact_plan_state WHERE {scope};

-- name: upsert_plan_state
INSERT INTO contact_plan_state (contact_id, review_date, invalid, fingerprint, updated_at)
VALUES (?, ?, ?, ?, datetime('now'))
ON CONFLICT (contact_id) DO UPDATE SET
    review_date = excluded.review_date,
    invalid = excluded.invalid,
    fingerprint = excluded.fingerprint,
    updated_at = excluded.updated_at;

-- name: set_review_date
INSERT INTO contact_plan_state (contact_id, review_date, updated_at)
VALUES (?, ?, datetime('now'))
ON CONFLICT (contact_id) DO UPDATE SET
    review_date = excluded.review_date,
    updated_at = excluded.updated_at;

-- name: delete_plan_state
DELETE FROM contact_plan_state WHERE contact_id = ?;

-- name: clear_balance_gaps
DELETE FROM scheduler_balance_gaps;

-- name: due_contacts
-- A scan in contact order (no index on the review date: migration 0007).
SELECT contact_id FROM contact_plan_state
WHERE review_date IS NOT NULL AND review_date <= :today ORDER BY contact_id;

-- name: campaign_types
SELECT name,
       COALESCE(respect_exclusion_windows, 1), COALESCE(enable_followups, 1),
       COALESCE(days_before_event, 0), COALESCE(target_all_contacts, 0),
       COALESCE(priority, 10), COALESCE(active, 1), COALESCE(spread_evenly, 0),
       COALESCE(skip_failed_underwriting, 0)
FROM campaign_types ORDER BY name;

-- name: campaign_instances
SELECT id, campaign_type, instance_name, email_template, sms_template,
       active_start_date, active_end_date, spread_start_date, spread_end_date,
       target_states, target_carriers
FROM campaign_instances ORDER BY id;

-- name: campaign_type_targets_all
SELECT COALESCE(target_all_contacts, 0) FROM campaign_types WHERE name = :name;

-- name: contacts_of_campaign_instance
SELECT contact_id FROM contact_campaigns WHERE campaign_instance_id = :id
UNION
SELECT contact_id FROM email_schedules WHERE campaign_instance_id = :id;

-- name: contacts_of_campaign_type
SELECT cc.contact_id FROM contact_campaigns AS cc
JOIN campaign_instances AS ci ON ci.id = cc.campaign_instance_id
WHERE ci.campaign_type = :name
UNION
SELECT es.contact_id FROM email_schedules AS es
JOIN campaign_instances AS ci ON ci.id = es.campaign_instance_id
WHERE ci.campaign_type = :name
UNION
SELECT contact_id FROM email_schedules
WHERE substr(email_type, 1, length(:prefix)) = :prefix;

-- name: insert_plan_row
-- OR IGNORE: an identity already taken (by a history row the loader's cut-off
-- left out) is never planned again (SPEC 5.10), and never overwritten.
-- Positional parameters: binding by name costs more than the insert itself
-- at a million rows. Order: identity (1-5), content (6-16, as writer._content),
-- run id, now.
INSERT OR IGNORE INTO email_schedules (
    contact_id, email_type, event_year, event_month, event_day,
    scheduled_send_time, status, skip_reason, priority, email_template,
    campaign_instance_id, catchup_note, desired_date, allowed_from, allowed_to,
    send_timezone, scheduler_run_id, created_at, updated_at,
    balance_date, scheduled_send_date, send_at_utc
) VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?18,
    ?13, ?13, CASE WHEN ?16 IS NOT NULL THEN mailplan_utc(?13, ?6, ?16) END
);

-- name: update_plan_row
-- ?19 is the desired date when the row's balancing starts over (a new
-- desired date, or a change to or from 'skipped'), NULL to keep the
-- balancer's dates. The status guard keeps history rows untouchable (I4).
UPDATE email_schedules SET
    scheduled_send_time = ?6,
    status = ?7,
    skip_reason = ?8,
    priority = ?9,
    email_template = ?10,
    campaign_instance_id = ?11,
    catchup_note = ?12,
    desired_date = ?13,
    allowed_from = ?14,
    allowed_to = ?15,
    send_timezone = ?16,
    scheduler_run_id = ?17,
    updated_at = ?18,
    balance_date = COALESCE(?19, balance_date),
    scheduled_send_date = COALESCE(?19, scheduled_send_date),
    send_at_utc = CASE WHEN ?16 IS NOT NULL
                       THEN mailplan_utc(COALESCE(?19, scheduled_send_date), ?6, ?16) END
WHERE id = ?20 AND status IN ('pre-scheduled', 'skipped');

-- name: delete_plan_row
DELETE FROM email_schedules WHERE id = ? AND status IN ('pre-scheduled', 'skipped');

-- name: fetch_events
SELECT id, kind, contact_id, ref, detail, created_at
FROM scheduler_events WHERE id > :after ORDER BY id LIMIT :limit;

-- name: delete_events
DELETE FROM scheduler_events WHERE id IN (SELECT value FROM json_each(:ids));

-- name: delete_events_upto
DELETE FROM scheduler_events WHERE id <= :id;

-- name: insert_event
INSERT INTO scheduler_events (kind, contact_id, ref, detail) VALUES (?, ?, ?, ?);

-- name: events_summary
SELECT count(*), min(created_at), COALESCE(max(id), 0) FROM scheduler_events;

-- name: max_event_id
SELECT COALESCE(max(id), 0) FROM scheduler_events;

-- name: get_state
SELECT value FROM scheduler_state WHERE key = ?;

-- name: set_state
INSERT INTO scheduler_state (key, value, updated_at) VALUES (?, ?, datetime('now'))
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at;

-- name: delete_state
DELETE FROM scheduler_state WHERE key = ?;

-- name: start_run
INSERT INTO scheduler_runs (started_at, trigger, today)
VALUES (strftime('%Y-%m-%d %H:%M:%f', 'now'), ?, ?);

-- name: finish_run
UPDATE scheduler_runs SET
    finished_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    events_consumed = :events_consumed,
    contacts_recomputed = :contacts_recomputed,
    rows_inserted = :inserted,
    rows_updated = :updated,
    rows_deleted = :deleted,
    rows_unchanged = :unchanged,
    windows_rebalanced = :windows_rebalanced,
    rows_moved = :rows_moved,
    duration_ms = :duration_ms,
    error = :error
WHERE id = :id;

-- name: last_runs
SELECT id, started_at, finished_at, trigger, today, events_consumed,
       contacts_recomputed, rows_inserted, rows_updated, rows_deleted,
       rows_unchanged, windows_rebalanced, rows_moved, duration_ms, error
FROM scheduler_runs ORDER BY id DESC LIMIT ?;

-- name: export_rows
SELECT {export_columns}
FROM email_schedules
WHERE status IN ('pre-scheduled', 'skipped')
ORDER BY contact_id, email_type, event_year, event_month, event_day;

-- name: export_rows_of
SELECT {export_columns}
FROM email_schedules
WHERE {scope} AND status IN ('pre-scheduled', 'skipped')
ORDER BY contact_id, email_type, event_year, event_month, event_day;

-- name: daily_load
SELECT scheduled_send_date, email_type, count(*)
FROM email_schedules
WHERE status = 'pre-scheduled' AND scheduled_send_date BETWEEN :start AND :end
GROUP BY scheduled_send_date, email_type
ORDER BY scheduled_send_date, email_type;

-- name: balance_last_desired
SELECT max(desired_date) FROM email_schedules WHERE status = 'pre-scheduled';

-- name: balance_rows_by_desired
SELECT {balance_columns}
FROM email_schedules
WHERE status = 'pre-scheduled' AND desired_date >= :lo AND desired_date < :hi;

-- name: balance_ed_rows_by_desired
SELECT {balance_columns}
FROM email_schedules
WHERE status = 'pre-scheduled' AND email_type = 'effective_date'
  AND desired_date IN (SELECT value FROM json_each(:days));

-- name: balance_save
UPDATE email_schedules SET
    balance_date = ?1,
    scheduled_send_date = ?2,
    send_at_utc = CASE WHEN send_timezone IS NOT NULL
                       THEN mailplan_utc(?2, scheduled_send_time, send_timezone) END,
    updated_at = ?3
WHERE contact_id = ?4 AND email_type = ?5 AND event_year = ?6 AND event_month = ?7
  AND event_day = ?8 AND status = 'pre-scheduled';

-- name: balance_gaps
-- Rows that left the plan set through someone else (back = 0) or came back
-- into it (back = 1), as the triggers of migration 0006 recorded them.
SELECT id, contact_id, email_type,
       printf('%04d-%02d-%02d', event_year, event_month, event_day),
       COALESCE(priority, 10), desired_date, allowed_from, allowed_to, balance_date,
       scheduled_send_date, back
FROM scheduler_balance_gaps ORDER BY id;

-- name: balance_gaps_upto
-- The gaps recorded up to gap :id, as balance_gaps, without taking them.
SELECT id, contact_id, email_type,
       printf('%04d-%02d-%02d', event_year, event_month, event_day),
       COALESCE(priority, 10), desired_date, allowed_from, allowed_to, balance_date,
       scheduled_send_date, back
FROM scheduler_balance_gaps WHERE id <= :id ORDER BY id;

-- name: bump_plan_version
-- Counts the transactions that change plan rows or their balance (any
-- process): a global rebalance that sees it move by someone else's write
-- while it committed part way does not vouch for the balance.
INSERT INTO scheduler_state (key, value, updated_at) VALUES ('plan_version', '1', datetime('now'))
ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1;

-- name: plan_version
SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM scheduler_state
                 WHERE key = 'plan_version'), 0);

-- name: others_changes
-- The event sequence (event_seq) and the plan version (plan_version) in one
-- read: while neither moves (less this store's own bumps), no one else has
-- changed the rows a read saw.
SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'scheduler_events'), 0),
       COALESCE((SELECT CAST(value AS INTEGER) FROM scheduler_state
                 WHERE key = 'plan_version'), 0);

-- name: balance_gaps_since
SELECT id, COALESCE(desired_date, scheduled_send_date), back
FROM scheduler_balance_gaps WHERE id > :id ORDER BY id;

-- name: delete_balance_gap
DELETE FROM scheduler_balance_gaps WHERE id = ?;

-- name: balance_gaps_keys_since
-- The identities of the gaps recorded after gap :id (a balance saved in parts).
SELECT id, contact_id, email_type,
       printf('%04d-%02d-%02d', event_year, event_month, event_day), back
FROM scheduler_balance_gaps WHERE id > :id ORDER BY id;

-- name: balance_gap_retarget
-- A gap's dates become those of the balance it is a gap in: positional
-- step-1 date, scheduled date, gap id.
UPDATE scheduler_balance_gaps SET balance_date = ?1, scheduled_send_date = ?2 WHERE id = ?3;

-- name: balance_gaps_mark
SELECT COALESCE(max(id), 0) FROM scheduler_balance_gaps;

-- name: forget_balance_gaps_after
DELETE FROM scheduler_balance_gaps WHERE id > :id;

-- name: delete_balance_gaps_upto
DELETE FROM scheduler_balance_gaps WHERE id <= :id;

-- name: balance_days
SELECT day, step1, scheduled FROM balance_days;

-- name: balance_days_add
INSERT INTO balance_days (day, step1, scheduled) VALUES (?1, ?2, ?3)
ON CONFLICT (day) DO UPDATE SET step1 = step1 + excluded.step1,
                                scheduled = scheduled + excluded.scheduled;

-- name: balance_days_prune
DELETE FROM balance_days WHERE step1 = 0 AND scheduled = 0;

-- name: balance_days_clear
DELETE FROM balance_days;

-- name: balance_days_put
INSERT INTO balance_days (day, step1, scheduled) VALUES (?1, ?2, ?3);

-- name: balance_kept_last
-- The rows kept on :day that are not kept by their last allowed day, from
-- the end of the sweep order (the cap boundary of a crowded day).
SELECT {balance_columns}
FROM email_schedules
WHERE status = 'pre-scheduled' AND scheduled_send_date = :day AND balance_date IS NOT NULL
  AND (allowed_to IS NULL OR substr(allowed_to, 1, 10) > :day)
ORDER BY scheduled_send_date DESC, COALESCE(priority, 10) DESC, balance_date DESC,
         contact_id DESC, email_type DESC, event_year DESC, event_month DESC, event_day DESC
LIMIT :n;

-- name: balance_day_rows
SELECT {balance_columns}
FROM email_schedules
WHERE status = 'pre-scheduled' AND scheduled_send_date = :day AND balance_date IS NOT NULL;

-- name: balance_carried_first
-- The carry out of :day (rows that arrived on or before it and are scheduled
-- after it), from the start of the sweep order; :n < 0 reads all.
SELECT {balance_columns}
FROM email_schedules
WHERE status = 'pre-scheduled' AND scheduled_send_date > balance_date
  AND balance_date <= :day AND scheduled_send_date > :day
ORDER BY COALESCE(priority, 10), balance_date, contact_id, email_type,
         event_year, event_month, event_day
LIMIT :n;

-- name: balance_carried_arrivals
-- The rows whose step-1 date is :day and that are scheduled after it, from
-- the start of the sweep order (what a day adds to the carry): one seek of
-- the carried rows' index per priority that has carried rows, the
-- priorities found by seeks too. Reads every such row of the day: the
-- caller asks only for a day with few.
WITH RECURSIVE prio(p) AS (
    SELECT min(COALESCE(priority, 10)) FROM email_schedules
    WHERE status = 'pre-scheduled' AND scheduled_send_date > balance_date
    UNION ALL
    SELECT (SELECT min(COALESCE(priority, 10)) FROM email_schedules
            WHERE status = 'pre-scheduled' AND scheduled_send_date > balance_date
              AND COALESCE(priority, 10) > prio.p)
    FROM prio WHERE p IS NOT NULL
)
SELECT {balance_columns}
FROM prio CROSS JOIN email_schedules
WHERE COALESCE(priority, 10) = prio.p AND status = 'pre-scheduled'
  AND scheduled_send_date > balance_date AND balance_date = :day
  AND scheduled_send_date > :day
ORDER BY COALESCE(priority, 10), contact_id, email_type, event_year, event_month, event_day
LIMIT :n;

-- name: balance_ed_counts
SELECT desired_date, count(*) FROM email_schedules
WHERE status = 'pre-scheduled' AND email_type = 'effective_date'
  AND desired_date IN (SELECT value FROM json_each(:days))
GROUP BY desired_date;

-- name: balance_ed_counts_capped
-- As balance_ed_counts, each count stopping at :at_most (0 for a date without
-- rows): balancing only compares these counts with the soft limit, and a
-- date of an all-contacts campaign holds tens of thousands of rows.
SELECT d.value, (
    SELECT count(*) FROM (
        SELECT 1 FROM email_schedules
        WHERE status = 'pre-scheduled' AND email_type = 'effective_date'
          AND desired_date = d.value
        LIMIT :at_most
    )
) FROM json_each(:days) AS d;

-- name: balance_ed_counts_all
SELECT desired_date, count(*) FROM email_schedules
WHERE status = 'pre-scheduled' AND email_type = 'effective_date'
GROUP BY desired_date;

-- name: balance_rows_before
-- Rows a balance for an earlier day kept before :day (a new day's rebase).
SELECT {balance_columns}
FROM email_schedules
WHERE status = 'pre-scheduled' AND scheduled_send_date < :day AND balance_date IS NOT NULL;

-- name: balance_days_expected
-- What balance_days must hold: the swept rows by step-1 and by scheduled
-- date, with the rows of balance gaps not yet consumed (still counted if
-- gone, not yet counted if back).
SELECT day, sum(a), sum(b) FROM (
    SELECT balance_date AS day, 1 AS a, 0 AS b FROM email_schedules
    WHERE status = 'pre-scheduled' AND balance_date IS NOT NULL
    UNION ALL
    SELECT scheduled_send_date, 0, 1 FROM email_schedules
    WHERE status = 'pre-scheduled' AND balance_date IS NOT NULL
    UNION ALL
    SELECT balance_date, CASE back WHEN 0 THEN 1 ELSE -1 END, 0 FROM scheduler_balance_gaps
    WHERE balance_date IS NOT NULL AND scheduled_send_date IS NOT NULL
    UNION ALL
    SELECT scheduled_send_date, 0, CASE back WHEN 0 THEN 1 ELSE -1 END FROM scheduler_balance_gaps
    WHERE balance_date IS NOT NULL AND scheduled_send_date IS NOT NULL
) GROUP BY day;

-- name: catchup_rows
-- The tick's catch-up move (service/store/catchup.py): the plan rows of contacts
-- :lo..:hi whose desired date is before :today, of contacts that are not due
-- (review date after :today, or none). A range of contacts keeps the rows a
-- move rewrites on few pages (rows are stored about in contact order). The
-- columns are catchup_recheck's: the move uses these rows as read when
-- nothing changed since the read.
SELECT s.id, s.contact_id, s.status = 'pre-scheduled', {balance_columns}
FROM email_schedules AS s
WHERE s.contact_id BETWEEN :lo AND :hi
    AND s.status IN ('pre-scheduled', 'skipped')
    AND s.desired_date < :today
    AND NOT EXISTS (
        SELECT 1 FROM contact_plan_state AS p
        WHERE p.contact_id = s.contact_id AND p.review_date <= :today
    );

-- name: catchup_recheck
-- Of the rows :ids found in a read snapshot, those still to move now (inside
-- the write transaction): still plan rows, desired date still before :today;
-- with the balancer's columns (read as by {balance_columns}) of the swept ones.
SELECT id, contact_id, status = 'pre-scheduled', {balance_columns} FROM email_schedules
WHERE id IN (SELECT value FROM json_each(:ids))
    AND status IN ('pre-scheduled', 'skipped') AND desired_date < :today;

-- name: catchup_journal
-- One journal entry per moved row (SPEC 7), appended before the move, as the
-- writer's update with a new desired date would write it: the balancing
-- starts over at the new desired date.
INSERT INTO plan_journal (
    run_id, trigger, at, contact_id, email_type, event_date, op,
    old_desired, old_scheduled, old_status, old_reason,
    new_desired, new_scheduled, new_status, new_reason
)
SELECT :run, (SELECT trigger FROM scheduler_runs WHERE id = :run),
       COALESCE(:at, strftime('%Y-%m-%d %H:%M:%f', 'now')),
       contact_id, email_type, printf('%04d-%02d-%02d', event_year, event_month, event_day),
       'update', desired_date, scheduled_send_date, status, skip_reason,
       :today, :today, status, skip_reason
FROM email_schedules
WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN ('pre-scheduled', 'skipped');

-- name: catchup_move
-- The move itself (service.planning.review.caught_up_move): the desired date,
-- and the balancer's dates (which start over there, as for the writer's
-- update with a new desired date), to :today; the catch-up noted with the
-- date it was wanted on; a lower bound on or before today is stored as none.
UPDATE email_schedules SET
    catchup_note = COALESCE(catchup_note, 'caught up from ' || desired_date),
    desired_date = :today,
    allowed_from = NULL,
    balance_date = :today,
    scheduled_send_date = :today,
    scheduler_run_id = :run_text,
    updated_at = :now,
    send_at_utc = CASE WHEN send_timezone IS NOT NULL
                       THEN mailplan_utc(:today, scheduled_send_time, send_timezone) END
WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN ('pre-scheduled', 'skipped');

-- name: catchup_through
-- The latest day rows were caught up to (service.store.base.CATCHUP_THROUGH):
-- the moved contacts' stored fingerprints still name the rows before the move,
-- and are trusted only for a plan of that day or later. One row, not one per
-- moved contact. ISO dates compare as text.
INSERT INTO scheduler_state (key, value, updated_at) VALUES (:key, :today, datetime('now'))
ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
WHERE excluded.value > value;

-- Per-batch reads of the daemon's small batches (perf of one change).

-- name: single_all_state
-- Every key/value of scheduler_state, read with BEGIN IMMEDIATE: nobody else
-- can change them while the write transaction holds the lock.
SELECT key, value FROM scheduler_state;

-- name: read_chunk_bound
-- The id of the (:skip + 1)-th contact after :after (the end of a
-- full recompute's read chunk); rowid order, the primary key's b-tree only.
SELECT id FROM contacts WHERE id > :after ORDER BY id LIMIT 1 OFFSET :skip;
