"""``mailplan generate``: deterministic, realistic, covering every awkward case."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import pytest

from service.errors import InputError, MailplanError
from service.planning.contacts import is_valid_email, resolve_contact
from service.planning.model import Contact
from service.planning.rules import builtin_rules
from service.store import init_db
from service.store.bulk import bulk_load
from service.tools.generate import _drawn_apart, _load, generate, next_aep_season
from service.tools.showcase import showcase

TODAY = date(2026, 11, 29)

# The original system's contacts table (bin/generate_test_data.ml of the seed):
# NOT NULL everywhere and a UNIQUE email, which generate must respect.
ORIGINAL_CONTACTS = """
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_name TEXT NOT NULL, last_name TEXT NOT NULL, email TEXT NOT NULL UNIQUE,
    current_carrier TEXT NOT NULL, plan_type TEXT NOT NULL, effective_date TEXT NOT NULL,
    birth_date TEXT NOT NULL, tobacco_user INTEGER NOT NULL, gender TEXT NOT NULL,
    state TEXT NOT NULL, zip_code TEXT NOT NULL, agent_id INTEGER, last_emailed DATETIME,
    phone_number TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'active',
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
"""


async def make(path: Path, n: int, seed: int, today: date = TODAY) -> Path:
    await init_db(path)
    conn = sqlite3.connect(path)
    # Events init-db itself queued (its own defaults) are not generate's.
    conn.execute("DELETE FROM scheduler_events")
    conn.commit()
    conn.close()
    if n:
        generate(path, n, seed, today)
    return path


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in (
                "contacts",
                "email_schedules",
                "tracking_clicks",
                "contact_events",
                "contact_campaigns",
            )
        } | {
            "campaign_types": conn.execute(
                "SELECT name, respect_exclusion_windows, enable_followups, days_before_event, "
                "target_all_contacts, priority, active, spread_evenly, skip_failed_underwriting "
                "FROM campaign_types ORDER BY name"
            ).fetchall(),
            "campaign_instances": conn.execute(
                "SELECT id, campaign_type, instance_name, active_start_date, active_end_date, "
                "spread_start_date, spread_end_date, target_states FROM campaign_instances"
            ).fetchall(),
        }
    finally:
        conn.close()


def contacts_of(path: Path) -> list[Contact]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT id, email, birth_date, effective_date, state, zip_code, current_carrier, "
            "failed_underwriting FROM contacts ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [Contact(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) for r in rows]


async def test_generate_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = dump(await make(tmp_path / "a.sqlite3", 3000, seed=7))
    b = dump(await make(tmp_path / "b.sqlite3", 3000, seed=7))
    c = dump(await make(tmp_path / "c.sqlite3", 3000, seed=8))
    assert a == b
    assert a["contacts"] != c["contacts"]
    assert len(a["contacts"]) == 3000


async def test_drawing_apart_gives_the_same_data(tmp_path: Path) -> None:
    # Above one batch the rows are drawn in a second process; with batches of 700
    # the 3,000 contacts are 5 batches, drawn once here and once apart: the same
    # draws in the same order, so every table must be identical.
    dumps = []
    for apart in (False, True):
        path = tmp_path / f"apart-{apart}.sqlite3"
        await make(path, 0, seed=7)  # migrated, events cleared; loaded below
        with bulk_load(path) as load:
            _load(load, 3000, 7, TODAY, batch=700, apart=apart)
        dumps.append(dump(path))
    assert dumps[0] == dumps[1]
    assert len(dumps[1]["contacts"]) == 3000
    assert dumps[1]["contacts"][2999][0] == 3000


def test_a_failing_drawing_process_is_a_clear_error() -> None:
    # The last representable date: the birth/effective tables of _Columns reach a
    # year past it, so the drawing process fails and the loader must say so.
    with pytest.raises(MailplanError, match="year 10000 is out of range"):
        list(_drawn_apart((10, 1, date.max, 1, 5)))


@pytest.fixture(scope="module")
def generate_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import anyio

    path = tmp_path_factory.mktemp("gen") / "sample.sqlite3"
    anyio.run(make, path, 5000, 3)
    return path


def test_ids_are_one_to_n(generate_sample: Path) -> None:
    ids = [c.id for c in contacts_of(generate_sample)]
    assert ids == list(range(1, 5001))


def test_every_rule_state_is_covered(generate_sample: Path) -> None:
    resolved = [resolve_contact(c, TODAY) for c in contacts_of(generate_sample)]
    states = {rc.state for rc in resolved if rc.email_ok}
    assert builtin_rules().states() <= states


def test_awkward_inputs_are_present(generate_sample: Path) -> None:
    contacts = contacts_of(generate_sample)
    resolved = [resolve_contact(c, TODAY) for c in contacts]
    assert any((c.birth_date or "").endswith("-02-29") for c in contacts)
    assert any((c.effective_date or "").startswith("2024-02-29") for c in contacts)
    assert any(not is_valid_email(c.email) for c in contacts)
    assert any(c.state == "" and c.zip_code == "" for c in contacts)  # no location at all
    assert any(rc.state_source == "zip" for rc in resolved)  # state from the ZIP only
    assert any(rc.state is None for rc in resolved)
    assert any(c.failed_underwriting for c in contacts)
    assert any(rc.problems for rc in resolved)  # bad dates are reported, not fatal
    assert sum(is_valid_email(c.email) for c in contacts) > 4800  # mostly good data


def test_no_nulls_and_unique_emails(generate_sample: Path) -> None:
    conn = sqlite3.connect(generate_sample)
    try:
        nulls = conn.execute(
            "SELECT count(*) FROM contacts WHERE email IS NULL OR state IS NULL "
            "OR zip_code IS NULL OR birth_date IS NULL OR effective_date IS NULL"
        ).fetchone()[0]
        dupes = conn.execute("SELECT count(*) - count(DISTINCT email) FROM contacts").fetchone()[0]
    finally:
        conn.close()
    assert nulls == 0
    assert dupes == 0


def test_campaigns_history_and_engagement(generate_sample: Path) -> None:
    conn = sqlite3.connect(generate_sample)
    try:
        instances = conn.execute(
            "SELECT campaign_type, active_end_date FROM campaign_instances ORDER BY id"
        ).fetchall()
        targets = conn.execute("SELECT count(*) FROM contact_campaigns").fetchone()[0]
        sent = conn.execute(
            "SELECT count(*) FROM email_schedules WHERE status IN ('sent', 'delivered')"
        ).fetchone()[0]
        plan = conn.execute(
            "SELECT count(*) FROM email_schedules WHERE status IN ('pre-scheduled', 'skipped')"
        ).fetchone()[0]
        clicks = conn.execute("SELECT count(*) FROM tracking_clicks").fetchone()[0]
        answers = conn.execute(
            "SELECT count(*) FROM contact_events WHERE event_type = 'eligibility_answered'"
        ).fetchone()[0]
        events = conn.execute("SELECT kind FROM scheduler_events").fetchall()
    finally:
        conn.close()
    # At Nov 29 the 2026 AEP campaign (from Sep 15) has begun: the 2027 season is generated.
    assert ("aep", "2027-12-07") in instances
    assert {t for t, _ in instances} == {"aep", "medicare_newsletter", "plan_review"}
    assert targets > 0 and sent > 0 and clicks > 0 and answers > 0
    assert plan == 0  # generate writes upstream data only; planning is mailplan's
    assert events == [("recompute_all",)]


@pytest.mark.parametrize(
    ("today", "season"),
    [
        # The campaign starts 30 days before Oct 15, i.e. on Sep 15: a season whose
        # campaign has begun (on or after Sep 15) is not generated; the next one is.
        (date(2026, 11, 29), (date(2027, 10, 15), date(2027, 12, 7))),
        (date(2026, 9, 15), (date(2027, 10, 15), date(2027, 12, 7))),
        (date(2026, 9, 14), (date(2026, 10, 15), date(2026, 12, 7))),
        (date(2026, 1, 1), (date(2026, 10, 15), date(2026, 12, 7))),
    ],
)
def test_next_aep_season(today: date, season: tuple[date, date]) -> None:
    assert next_aep_season(today) == season


async def test_capture_triggers_survive_generate(tmp_path: Path) -> None:
    path = await make(tmp_path / "t.sqlite3", 100, seed=1)
    conn = sqlite3.connect(path)
    try:
        conn.execute("UPDATE contacts SET state = 'TX' WHERE id = 5")
        conn.commit()
        kinds = conn.execute("SELECT kind, contact_id FROM scheduler_events ORDER BY id").fetchall()
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    assert kinds == [("recompute_all", None), ("contact", 5)]
    assert mode == "wal"


async def test_refuses_a_database_with_contacts(tmp_path: Path) -> None:
    path = await make(tmp_path / "full.sqlite3", 10, seed=1)
    with pytest.raises(InputError, match="already holds 10 contacts"):
        generate(path, 10, 1, TODAY)


async def test_original_schema_constraints_hold(tmp_path: Path) -> None:
    path = tmp_path / "original.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(ORIGINAL_CONTACTS)
    conn.close()
    await make(path, 2000, seed=11)
    assert len(contacts_of(path)) == 2000


def test_showcase_contacts_are_the_first_ids(generate_sample: Path) -> None:
    contacts = contacts_of(generate_sample)
    cases = showcase(TODAY)
    for number, case in enumerate(cases, 1):
        c = contacts[number - 1]
        assert c.id == number
        if case.state is not None:
            assert c.state == case.state, case.label
        if case.zip_code is not None:
            assert c.zip_code == case.zip_code, case.label
        if case.birth is not None:
            assert c.birth_date == case.birth, case.label
        if case.email is not None:
            assert c.email == case.email, case.label
        assert c.failed_underwriting == case.failed_underwriting, case.label
