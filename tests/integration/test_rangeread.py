"""A planning process's own read of a chunk (SPEC 12) reads what the store reads."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import pytest

from service import engine
from service.config import Settings
from service.engine import PlanContext
from service.store import open_store
from service.store.rangeread import RangeReader
from service.store.types import Scope
from service.tools.generate import generate

TODAY = date(2026, 11, 29)
SINCE = date(2025, 11, 29)


@pytest.fixture
def book(db_path: Path) -> Path:
    generate(db_path, 120, seed=5, today=TODAY)
    con = sqlite3.connect(db_path)
    # History of every kind for contact 7: a sent e-mail, a click, an event.
    con.executescript(
        """
        INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status)
          VALUES (7, 'birthday', '2026-06-01', 'sent');
        INSERT INTO tracking_clicks (contact_id, clicked_at) VALUES (7, '2026-10-01 10:00:00');
        INSERT INTO contact_events (contact_id, event_type, created_at)
          VALUES (7, 'eligibility_answered', '2026-10-02 09:00:00');
        DELETE FROM contacts WHERE id = 9;
        """
    )
    con.commit()
    con.close()
    return db_path


@pytest.fixture
async def planned(book: Path) -> Path:
    # Planned once, so that every contact has its stored fingerprints.
    async with open_store(book) as store:
        await engine.full_recompute(store, PlanContext.from_settings(Settings()), TODAY)
    return book


@pytest.mark.parametrize(
    "scope",
    [Scope.of_range(5, 40), Scope.of_range(7, 9), Scope.of_range(1, 10**9)],
    ids=["a range with a deleted contact", "a range of three", "everyone"],
)
async def test_the_reader_reads_what_the_store_reads(planned: Path, scope: Scope) -> None:
    async with open_store(planned) as store:
        source = store.chunk_source()
        assert source is not None
        async with store.snapshot():
            expected = await store.read_chunk(
                None, 0, since=SINCE, engagement_since=SINCE, scope=scope
            )
    reader = RangeReader(source)
    try:
        got = reader.read_range(scope, SINCE, SINCE)
    finally:
        reader.close()
    assert got == expected
    # What is compared is not empty: contact 7's history is read by both.
    assert 7 in [r[0] for r in got.contact_rows]
    assert got.related.schedules and got.related.clicks and got.related.events
    assert got.prints and all(got.prints.values())
    # No plan rows of a contact that no longer exists: the deleted one had none.
    assert not got.untidy
