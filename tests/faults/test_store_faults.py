"""Regressions of the store under bad data (issue findings 1, 2, 3; SPEC 13, I4)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from service.daemon.processing import Processor
from service.engine import PlanContext, dry_run_plan
from service.errors import StoreUnavailable
from service.store import open_store
from tests.integration.daemon_helpers import SEED_SQL, TODAY, query, settings

CFG = settings()
CTX = PlanContext.from_settings(CFG)


def _write(db_path: Path, script: str) -> None:
    con = sqlite3.connect(db_path, isolation_level=None, timeout=0.5)
    try:
        con.executescript(script)
    finally:
        con.close()


BAD_COLUMNS = [
    "UPDATE contacts SET state = CAST(x'54c3' AS TEXT) WHERE id = 1",
    "UPDATE contacts SET email = CAST(x'61c3406578' AS TEXT) WHERE id = 1",
    "UPDATE contacts SET birth_date = CAST(x'31393535c3' AS TEXT) WHERE id = 1",
    "UPDATE contacts SET zip_code = CAST(x'3735c3' AS TEXT) WHERE id = 1",
    "UPDATE campaign_types SET target_carriers = CAST(x'c3' AS TEXT) WHERE name = 'renewal'",
    "INSERT INTO scheduler_events (kind, contact_id) VALUES (CAST(x'c3' AS TEXT), 1)",
]


@pytest.mark.parametrize("bad", BAD_COLUMNS)
async def test_invalid_utf8_leaves_the_connection_listening(db_path: Path, bad: str) -> None:
    """One byte x'c3' in a column the planner reads: the batch is planned,
    the bad value is logged, and the daemon's connection keeps no snapshot
    open (another connection's commit moves data_version, upstream writes
    are not refused, a WAL checkpoint completes)."""
    _write(db_path, SEED_SQL)
    columns = {r[1] for r in query(db_path, "PRAGMA table_info(campaign_types)")}
    if "target_carriers" in bad and "target_carriers" not in columns:
        pytest.skip("this schema has no target_carriers column")
    _write(db_path, bad + ";")
    async with open_store(db_path) as store:
        processor = Processor(store, CTX)
        with capture_logs() as logs:
            while await processor.step(TODAY) is not None:
                pass
        assert [e for e in logs if e["event"] == "malformed_data_invalid_utf8"]
        before = await store.data_version()
        _write(db_path, "INSERT INTO contacts (id, email) VALUES (99, 'z@example.com');")
        assert await store.data_version() != before
        con = sqlite3.connect(db_path, timeout=0.5)
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        con.close()
        assert busy == 0
    assert query(db_path, "SELECT count(*) FROM scheduler_events WHERE contact_id != 99") == [(0,)]


async def test_a_missing_database_is_unavailable_not_a_bug(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="does not exist"):
        async with open_store(tmp_path / "nowhere.sqlite3"):
            pass


async def test_dry_run_plans_with_invalid_utf8(db_path: Path) -> None:
    _write(db_path, SEED_SQL)
    _write(db_path, BAD_COLUMNS[0] + ";")
    async with open_store(db_path) as store:
        rows = await dry_run_plan(store, CTX, TODAY)
    assert {r.contact_id for r in rows} >= {2, 3}


OUT_OF_RANGE = [
    "UPDATE contacts SET effective_date = '9999-12-31' WHERE id = 1",
    "UPDATE contacts SET birth_date = '9999-12-31' WHERE id = 2",
    "UPDATE contacts SET birth_date = '0001-01-01', effective_date = '0001-01-01' WHERE id = 3",
    "UPDATE campaign_instances SET active_end_date = '9999-12-31'",
    "UPDATE campaign_instances SET active_start_date = '0001-01-01'",
    "UPDATE contact_campaigns SET trigger_date = '9999-12-31' WHERE contact_id = 1",
    "UPDATE contact_campaigns SET trigger_date = '0001-01-01' WHERE contact_id = 3",
    "UPDATE campaign_types SET days_before_event = 1000000000000",
    "UPDATE campaign_types SET days_before_event = -1000000000000",
]


@pytest.mark.parametrize("change", OUT_OF_RANGE)
async def test_values_out_of_range_never_stop_planning(db_path: Path, change: str) -> None:
    """'9999-12-31' (a common "no end") and absurd day counts: the full
    recompute and the daemon's batches plan every contact, the others as
    before the change."""
    _write(db_path, SEED_SQL)
    async with open_store(db_path) as store:
        before = await dry_run_plan(store, CTX, TODAY)
    _write(db_path, change + ";")
    async with open_store(db_path) as store:
        after = await dry_run_plan(store, CTX, TODAY)
        processor = Processor(store, CTX)
        while await processor.step(TODAY) is not None:
            pass
        assert await store.export_rows() == after
    # Contacts 4..8 are untouched by every change above (none is targeted).
    untouched = {4, 5, 6, 7, 8}
    assert [r for r in after if r.contact_id in untouched] == [
        r for r in before if r.contact_id in untouched
    ]
    assert query(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]
