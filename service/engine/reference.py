"""The reference plan: dry runs and verification (SPEC 9, 10, invariant I1).

:func:`dry_run_plan` computes in memory what a full recompute would store,
with the same loads, planner and filters as the writer and the pure global
balancer; :func:`verify` compares it with the stored plan and can repair the
drift; :func:`dry_run_contacts` answers the same for a few contacts in
O(contacts) by rolling back a real incremental recompute.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import structlog

from service.engine.core import (
    PlanContext,
    capacity_for,
    load_chunk,
    plan_all,
    recompute_contacts,
)
from service.engine.fullpass import full_recompute
from service.planning.balance import BalanceItem, balance
from service.planning.model import PRE_SCHEDULED
from service.store import DriftReport, ExportRow, Store
from service.store.loaders import MAX_ID
from service.store.writer import kept_rows

log = structlog.get_logger(__name__)


def _export_key(row: ExportRow) -> tuple[int, str, date]:
    return (row.contact_id, row.email_type, row.event_date)


async def dry_run_plan(store: Store, ctx: PlanContext, today: date) -> list[ExportRow]:
    """What a full recompute on ``today`` would store, as export rows (SPEC 10).

    Computed in memory, writing nothing (not even the capacity snapshot):
    the same loads, the same planner, the same filters as the writer, and the
    pure global :func:`balance`.
    """
    return await _dry_run_plan(store, ctx, today)


async def _dry_run_plan(store: Store, ctx: PlanContext, today: date) -> list[ExportRow]:
    # Compact per-row state: every row's export fields, and the balancing
    # input of the non-skipped ones; the plans themselves are dropped per chunk.
    fields: list[tuple[int, str, date, date, str, str]] = []
    items: list[BalanceItem] = []
    async with store.snapshot():
        cap = await capacity_for(store, ctx, today, save=False)
        campaigns = ctx.campaigns or await store.load_campaigns()
        after: int | None = None
        while True:
            loaded = await load_chunk(store, ctx, after, ctx.chunk_size, today, plan_rows=False)
            for plan in plan_all(ctx, campaigns, loaded.contacts, today):
                for _, r in kept_rows(plan, loaded.history_keys):
                    fields.append((r.contact_id, r.email_type, r.event_date, r.desired_date,
                                   r.status, r.skip_reason or ""))  # fmt: skip
                    if r.status == PRE_SCHEDULED:
                        items.append(BalanceItem(r.key, r.priority, r.desired_date,
                                                 r.allowed_from, r.allowed_to))  # fmt: skip
            if loaded.scope.hi == MAX_ID:
                break
            after = loaded.scope.hi
    scheduled = balance(items, cap, today)
    del items
    out = [
        ExportRow(cid, etype, event, desired,
                  scheduled[(cid, etype, event)][1] if status == PRE_SCHEDULED else desired,
                  status, reason)
        for cid, etype, event, desired, status, reason in fields
    ]  # fmt: skip
    out.sort(key=_export_key)
    return out


class _RolledBack(Exception):
    """Raised to leave a transaction whose effect is only looked at."""


async def dry_run_contacts(
    store: Store, ctx: PlanContext, ids: Sequence[int], today: date
) -> list[ExportRow]:
    """What ``recompute --contact`` would store for ``ids``, without storing it.

    The incremental recompute runs for real inside a write transaction (plan,
    write, incremental rebalance), the contacts' rows are read back, and the
    transaction is rolled back: O(contacts + their windows) instead of a dry
    run of the whole book. On a plan that is up to date this equals the rows
    of :func:`dry_run_plan` for these contacts (invariants I1, I2).
    """
    out: list[ExportRow] = []
    try:
        async with store.transaction():
            await recompute_contacts(store, ctx, ids, today, "dry-run", pauses=False)
            out = await store.export_rows(ids)
            raise _RolledBack
    except _RolledBack:
        pass
    return out


async def verify(store: Store, ctx: PlanContext, today: date, *, repair: bool) -> DriftReport:
    """Compare the stored plan with a full recompute; optionally repair it.

    Repairing is a full recompute that compares every stored row (it does
    not trust fingerprints), writing exactly the differences.
    """
    # One read snapshot for both sides: upstream commits meanwhile are no drift.
    async with store.snapshot():
        report = await store.compare_plan(await dry_run_plan(store, ctx, today))
        # The incremental rebalance relies on these (service.store.balance_days).
        report.count_days = await store.balance_days_drift()
    if report.any:
        log.warning("plan_drift", missing=report.missing, extra=report.extra,
                    changed=report.changed, balance_count_days=report.count_days)  # fmt: skip
        if repair:
            report.repair_stats = await full_recompute(
                store, ctx, today, trigger="verify", trust_fingerprints=False
            )
            report.repaired = True
    return report
