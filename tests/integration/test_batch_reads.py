"""A small batch's reads: one hand-over to the store, never stale (SPEC 8.3)."""

from __future__ import annotations

from pathlib import Path

from service import engine
from service.engine import PlanContext
from service.store import SqliteStore, open_store
from service.store.types import Scope
from tests.integration.daemon_helpers import SEED_SQL, TODAY, query, settings, upstream


async def test_load_scope_reads_campaigns_with_the_contacts(db_path: Path) -> None:
    upstream(db_path, SEED_SQL)
    async with open_store(db_path) as store:
        loaded = await store.load_scope(Scope.of_ids([1, 3, 99]), with_campaigns=True)
        plain = await store.load_scope(Scope.of_ids([1, 3, 99]))
    # SEED_SQL: type 'renewal' (priority 25, 7 days before, follow-ups on)
    # besides the schema's own 'aep', one instance 10 'spring'; contacts 1
    # and 3 are targeted, 99 does not exist.
    assert loaded.campaigns is not None
    assert sorted(loaded.campaigns.types) == ["aep", "renewal"]
    renewal = loaded.campaigns.types["renewal"]
    assert (renewal.priority, renewal.days_before_event, renewal.enable_followups) == (25, 7, True)
    assert [i.id for i in loaded.campaigns.instances] == [10]
    assert plain.campaigns is None
    assert [d.contact.id for d in loaded.contacts] == [1, 3]
    assert [d.contact.id for d in plain.contacts] == [1, 3]
    # The targeting rows came with them (contact 1 -> 2026-03-25, 3 -> 2026-04-01).
    targets = {d.contact.id: [str(c.trigger_date) for c in d.targeting]
               for d in loaded.contacts}  # fmt: skip
    assert targets == {1: ["2026-03-25"], 3: ["2026-04-01"]}


def _campaign_rows(db_path: Path, cid: int) -> list[tuple[object, ...]]:
    return query(
        db_path,
        "SELECT email_type FROM email_schedules WHERE contact_id = ? "
        "AND email_type LIKE 'campaign_%' AND status IN ('pre-scheduled', 'skipped')",
        (cid,),
    )


async def _recompute(store: SqliteStore, ctx: PlanContext, ids: list[int]) -> None:
    async with store.transaction():
        run_id = await store.start_run("events", TODAY)
        await engine.recompute_contacts(store, ctx, ids, TODAY, run_id)


async def test_a_campaign_change_between_batches_is_planned_by_the_next(db_path: Path) -> None:
    # Campaigns are read with every batch: a batch after an upstream change
    # of the campaign tables plans with the new rows, on the same connection
    # and the same PlanContext as the batch before.
    upstream(db_path, SEED_SQL)
    ctx = PlanContext.from_settings(settings())
    async with open_store(db_path) as store:
        await _recompute(store, ctx, [1])
        # Contact 1's trigger 2026-03-25, 7 days before: one campaign e-mail
        # (2026-03-18) inside the 60-day horizon of 2026-03-01.
        assert len(_campaign_rows(db_path, 1)) == 1
        upstream(db_path, "UPDATE campaign_types SET active = 0 WHERE name = 'renewal';")
        await _recompute(store, ctx, [1])
        # An inactive type plans nothing (SPEC 5.6).
        assert _campaign_rows(db_path, 1) == []
        upstream(db_path, "UPDATE campaign_types SET active = 1 WHERE name = 'renewal';")
        await _recompute(store, ctx, [1])
        assert len(_campaign_rows(db_path, 1)) == 1
