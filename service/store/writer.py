"""Writing a set of contacts' new plans (SPEC 7).

The new rows are compared with the stored plan rows by identity
``(contact_id, email_type, event date)``: new identities are inserted,
identities whose content changed are updated (with the current run id),
identical ones are left alone (they keep their ``scheduler_run_id`` and
``created_at``), and stored identities that are no longer planned are
deleted. Only plan rows are ever written: every UPDATE and DELETE carries a
status guard, and the rows compared are plan rows only (I4).

``scheduled_send_date`` and ``balance_date`` belong to the balancer. A new
row starts with both at its desired date; an update resets them only when
the row's balancing starts over (new desired date, to or from ``skipped``).
The desired dates whose balancing inputs changed are returned, so the
caller rebalances just those windows (SPEC 6).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date
from typing import Any

import structlog

from service.planning.model import PRE_SCHEDULED, SKIPPED, ContactPlan, PlanRow
from service.store.base import iso
from service.store.loaders import Loaded, LoaderMixin, StoredPlanRow
from service.store.types import WriteResult, WriteStats

log = structlog.get_logger(__name__)

# Positions in StoredPlanRow.content / _content().
_STATUS, _PRIORITY, _DESIRED, _FROM, _TO = 1, 3, 7, 8, 9


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """How rows are written: the local send time and, per contact, the time
    zone of the send instant (only with ``send_in_contact_timezone``)."""

    run_id: str
    today: date | None = None
    send_time: str = "08:30:00"
    timezones: Mapping[int, str | None] | None = None


def _lower_bound(allowed_from: str | None, today: str) -> str | None:
    # Balancing never sends before *today* anyway, so a lower bound on or
    # before today says nothing. Storing it as NULL keeps rows from changing
    # every day just because *today* moved (the planner clamps to today).
    return allowed_from if allowed_from is not None and allowed_from > today else None


def _content(row: PlanRow, send_time: str, tz: str | None, today: str) -> tuple[object, ...]:
    # Same order as loaders.stored_plan_row builds from the stored columns.
    return (
        send_time,
        row.status,
        row.skip_reason,
        row.priority,
        row.template,
        row.campaign_instance_id,
        row.catchup_note,
        row.desired_date.isoformat(),
        _lower_bound(iso(row.allowed_from), today),
        iso(row.allowed_to),
        tz,
    )


def _row_key(row: PlanRow) -> tuple[int, str, int, int, int]:
    ev = row.event_date
    return (row.contact_id, row.email_type, ev.year, ev.month, ev.day)


def _params(row: PlanRow, content: tuple[object, ...], run_id: str) -> dict[str, Any]:
    ev = row.event_date
    return {
        "contact_id": row.contact_id,
        "email_type": row.email_type,
        "event_year": ev.year,
        "event_month": ev.month,
        "event_day": ev.day,
        "send_time": content[0],
        "status": row.status,
        "skip_reason": row.skip_reason,
        "priority": row.priority,
        "template": row.template,
        "campaign_instance_id": row.campaign_instance_id,
        "catchup_note": row.catchup_note,
        "desired_date": content[_DESIRED],
        "allowed_from": content[_FROM],
        "allowed_to": content[_TO],
        "send_timezone": content[10],
        "run_id": run_id,
    }


@dataclass(slots=True)
class PlanDiff:
    """The statements one write needs, and what they mean for balancing."""

    inserts: list[dict[str, Any]]
    updates: list[dict[str, Any]]
    deletes: list[tuple[int]]
    unchanged: int
    touched: set[date]


def diff_plan(
    stored: Iterable[StoredPlanRow],
    rows: Iterable[PlanRow],
    options: WriteOptions,
    taken: AbstractSet[tuple[int, str, int | None, int | None, int | None]] = frozenset(),
) -> PlanDiff:
    """Compare new rows with stored plan rows by identity (pure).

    ``taken`` holds the identities of history rows: such an email is never
    planned again (SPEC 5.10), whatever the planner says.
    """
    today = options.today.isoformat() if options.today else ""
    old = {s.key: s for s in stored}
    tzs = options.timezones or {}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    touched: set[date] = set()
    unchanged = 0
    seen: set[tuple[int, str, int, int, int]] = set()
    for row in rows:
        key = _row_key(row)
        if key in seen or key in taken:
            # The planner's contract is one row per identity, none of them
            # already history; anything else would break the unique index.
            log.warning("plan_identity_refused", contact_id=row.contact_id, type=row.email_type)
            continue
        seen.add(key)
        content = _content(row, options.send_time, tzs.get(row.contact_id), today)
        before = old.pop(key, None)
        if before is None:
            inserts.append(_params(row, content, options.run_id))
            if row.status == PRE_SCHEDULED:
                touched.add(row.desired_date)
            continue
        if _same(before.content, content, today):
            unchanged += 1
            continue
        params = _params(row, content, options.run_id)
        params["id"] = before.id
        restart = (
            not before.balanced
            or before.desired != content[_DESIRED]
            or (before.status == SKIPPED) != (row.status == SKIPPED)
            or row.status == SKIPPED
        )
        params["reset_date"] = content[_DESIRED] if restart else None
        updates.append(params)
        if _balance_inputs(before.content, today) != _balance_inputs(content, today):
            _touch(touched, before)
            if row.status == PRE_SCHEDULED:
                touched.add(row.desired_date)
    deletes = []
    for gone in old.values():
        deletes.append((gone.id,))
        _touch(touched, gone)
    return PlanDiff(inserts, updates, deletes, unchanged, touched)


def _balance_inputs(content: tuple[object, ...], today: str) -> tuple[object, ...]:
    """What load balancing reads of a row: status, priority, desired date,
    allowed interval (SPEC 6)."""
    bound = content[_FROM]
    lower = bound if isinstance(bound, str) and bound > today else None
    return (content[_STATUS], content[_PRIORITY], content[_DESIRED], lower, content[_TO])


def _same(stored: tuple[object, ...], new: tuple[object, ...], today: str) -> bool:
    if stored == new:
        return True
    # A stored lower bound that *today* has since overtaken equals none.
    bound = stored[_FROM]
    if isinstance(bound, str) and bound <= today:
        return stored[:_FROM] == new[:_FROM] and new[_FROM] is None and stored[_TO:] == new[_TO:]
    return False


def _touch(touched: set[date], stored: StoredPlanRow) -> None:
    if stored.status == PRE_SCHEDULED and stored.desired:
        try:
            touched.add(date.fromisoformat(stored.desired[:10]))
        except ValueError:
            return


class WriterMixin(LoaderMixin):
    """The plan writer and the per-contact plan state."""

    async def write_plans(
        self,
        loaded: Loaded,
        plans: Iterable[ContactPlan],
        options: WriteOptions,
    ) -> WriteResult:
        """Write the new plans of ``loaded.scope`` (SPEC 7) and their review dates.

        ``loaded`` is what :meth:`load_scope` / :meth:`iter_loaded_chunks`
        read inside the same transaction. Contacts of the scope without a plan
        (deleted meanwhile, or out of the new set) lose their plan rows.
        """
        plans = list(plans)
        rows = [row for plan in plans for row in plan.rows if loaded.scope.contains(row.contact_id)]
        diff = diff_plan(loaded.stored, rows, options, loaded.history_keys)
        # Deletes first: a deleted identity's slot may be reused by an insert.
        if diff.deletes:
            await self.executemany("delete_plan_row", diff.deletes)
        if diff.updates:
            await self.executemany("update_plan_row", diff.updates)
        inserted = 0
        if diff.inserts:
            inserted = await self.executemany("insert_plan_row", diff.inserts)
            if inserted != len(diff.inserts):
                log.warning("plan_identity_taken_by_history", skipped=len(diff.inserts) - inserted)
        await self._write_states(loaded, plans)
        stats = WriteStats(
            inserted=inserted,
            updated=len(diff.updates),
            deleted=len(diff.deletes),
            unchanged=diff.unchanged,
        )
        return WriteResult(stats=stats, touched=diff.touched)

    async def _write_states(self, loaded: Loaded, plans: list[ContactPlan]) -> None:
        upserts: list[tuple[int, str | None, str | None]] = []
        planned: set[int] = set()
        for plan in plans:
            if not loaded.scope.contains(plan.contact_id):
                continue
            planned.add(plan.contact_id)
            state = (iso(plan.review_date), plan.invalid)
            if loaded.states.get(plan.contact_id) != state:
                upserts.append((plan.contact_id, *state))
        gone = [(cid,) for cid in loaded.states if cid not in planned]
        if gone:
            await self.executemany("delete_plan_state", gone)
        if upserts:
            await self.executemany("upsert_plan_state", upserts)

    async def set_review_dates(self, items: Iterable[tuple[int, date | None]]) -> None:
        """Store review dates (SPEC 5.11) without touching plan rows."""
        await self.executemany("set_review_date", [(c, iso(d)) for c, d in items])

    async def due_contacts(self, today: date) -> list[int]:
        """Contacts whose review date has come (on or before ``today``), in id order."""
        rows = await self.fetchall("due_contacts", {"today": today.isoformat()})
        return [int(r[0]) for r in rows]
