-- The tick finds the contacts whose review date has come (SPEC 5.11) by one
-- scan of contact_plan_state, once a day and outside the write lock (about
-- 60-70 ms at a million contacts), instead of through an index on the date.
-- Review dates do not follow contact order, so that index cost a page of its
-- own in nearly every write of a contact's plan state: at a million contacts
-- it was about a third of the pages an empty plan's writes dirtied, and the
-- full recompute of an empty plan took 64.5 s without it against 75.9 s with
-- it (bench/RESULTS.md).
DROP INDEX IF EXISTS idx_contact_plan_state_review;
