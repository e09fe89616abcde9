"""Writing a set of contacts' new plans (SPEC 7).

The new rows are compared with the stored plan rows by identity
``(contact_id, email_type, event date)``: new identities are inserted,
identities whose content changed are updated (with the current run id),
identical ones are left alone (they keep their ``scheduler_run_id`` and
``created_at``), and stored identities that are no longer planned are
deleted. Only plan rows are ever written: every UPDATE and DELETE carries a
status guard, the rows compared are plan rows only, and an identity held by
a history row is never inserted (I4).

``scheduled_send_date`` and ``balance_date`` belong to the balancer. A new
row starts with both at its desired date; an update resets them only when
the row's balancing starts over (new desired date, to or from ``skipped``).
The writer returns the dates the windowed rebalance must cover
(``service.rebalance``): for every row whose balancing inputs changed, its
new desired date, its old desired date and every day from there to its old
scheduled date.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import structlog

from service.planning.model import PRE_SCHEDULED, SKIPPED, ContactPlan, PlanRow
from service.store.base import ids_param, iso, utc_now_text
from service.store.loaders import Loaded, LoaderMixin, StoredPlanRow
from service.store.types import WriteResult, WriteStats

log = structlog.get_logger(__name__)

Key5 = tuple[int, str, int | None, int | None, int | None]

# Positions in StoredPlanRow.content and in the new rows' content tuples.
_STATUS, _PRIORITY, _DESIRED, _FROM, _TO = 1, 3, 7, 8, 9
_MAX_TOUCH_SPAN = 400
"""Longest old desired..scheduled span added to the touched dates, in days."""


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """How rows are written: the run id, *today*, the local send time and,
    per contact, the time zone of the send instant (only with
    ``send_in_contact_timezone``)."""

    run_id: str
    today: date | None = None
    send_time: str = "08:30:00"
    timezones: Mapping[int, str | None] | None = None


@dataclass(slots=True)
class PlanDiff:
    """The statements one write needs, and what they mean for balancing."""

    inserts: list[dict[str, Any]]
    updates: list[dict[str, Any]]
    deletes: list[tuple[int]]
    unchanged: int
    touched: set[date]


def _balance_inputs(content: tuple[object, ...], today: str) -> tuple[object, ...]:
    """What load balancing reads of a row (SPEC 6). A lower bound on or before
    *today* bounds nothing: the balancer never sends before today."""
    bound = content[_FROM]
    lower = bound if isinstance(bound, str) and bound > today else None
    return (content[_STATUS], content[_PRIORITY], content[_DESIRED], lower, content[_TO])


def _same(stored: tuple[object, ...], new: tuple[object, ...], today: str) -> bool:
    if stored == new:
        return True
    # The planner clamps allowed_from to *today*, which moves every day; a
    # stored bound that today has overtaken equals the new "none".
    bound = stored[_FROM]
    return (
        isinstance(bound, str)
        and bound <= today
        and new[_FROM] is None
        and stored[:_FROM] == new[:_FROM]
        and stored[_TO:] == new[_TO:]
    )


def _touch_old(touched: set[date], stored: StoredPlanRow) -> None:
    """The dates a stored non-skipped row occupied in the previous balance."""
    if stored.status == PRE_SCHEDULED:
        touch_span(touched, stored.desired, stored.scheduled)


def touch_span(touched: set[date], desired: str | None, scheduled: str | None) -> None:
    """Every day from a row's desired date to its scheduled date (either order)."""
    try:
        first = date.fromisoformat((desired or scheduled or "")[:10])
        second = date.fromisoformat(scheduled[:10]) if scheduled else first
    except ValueError:
        return
    lo, hi = min(first, second), max(first, second)
    hi = min(hi, lo + timedelta(days=_MAX_TOUCH_SPAN))
    day = lo
    while day <= hi:
        touched.add(day)
        day += timedelta(days=1)


class _Differ:
    """The per-row work of :func:`diff_plan`, with the per-write constants."""

    __slots__ = ("isos", "now", "run_id", "send_time", "today", "tzs")

    def __init__(self, options: WriteOptions) -> None:
        self.today = options.today.isoformat() if options.today else ""
        self.tzs = options.timezones or {}
        self.send_time, self.run_id, self.now = options.send_time, options.run_id, utc_now_text()
        self.isos: dict[date, str] = {}

    def iso(self, d: date) -> str:
        # Rows share few distinct dates; isoformat() per row adds up.
        text = self.isos.get(d)
        if text is None:
            text = self.isos[d] = d.isoformat()
        return text

    def content(self, row: PlanRow) -> tuple[object, ...]:
        """Same fields and order as loaders.stored_plan_row builds from the columns."""
        low, high = row.allowed_from, row.allowed_to
        lower = None if low is None else self.iso(low)
        if lower is not None and lower <= self.today:
            lower = None
        return (
            self.send_time, row.status, row.skip_reason, row.priority, row.template,
            row.campaign_instance_id, row.catchup_note, self.iso(row.desired_date), lower,
            None if high is None else self.iso(high), self.tzs.get(row.contact_id),
        )  # fmt: skip

    def params(self, row: PlanRow, content: tuple[object, ...]) -> dict[str, Any]:
        ev = row.event_date
        return {
            "contact_id": row.contact_id, "email_type": row.email_type,
            "event_year": ev.year, "event_month": ev.month, "event_day": ev.day,
            "send_time": self.send_time, "status": row.status, "skip_reason": row.skip_reason,
            "priority": row.priority, "template": row.template,
            "campaign_instance_id": row.campaign_instance_id, "catchup_note": row.catchup_note,
            "desired_date": content[_DESIRED], "allowed_from": content[_FROM],
            "allowed_to": content[_TO], "send_timezone": content[10], "run_id": self.run_id,
            "now": self.now,
        }  # fmt: skip


def diff_plan(
    stored: Iterable[StoredPlanRow],
    rows: Iterable[PlanRow],
    options: WriteOptions,
    taken: AbstractSet[Key5] = frozenset(),
) -> PlanDiff:
    """Compare new rows with stored plan rows by identity (pure).

    ``taken`` holds the identities of history rows: such an email is never
    planned again (SPEC 5.10), whatever the planner says.
    """
    differ = _Differ(options)
    today = differ.today
    old = {s.key: s for s in stored}
    diff = PlanDiff([], [], [], 0, set())
    touched = diff.touched
    seen: set[Key5] = set()
    for row in rows:
        ev = row.event_date
        key: Key5 = (row.contact_id, row.email_type, ev.year, ev.month, ev.day)
        if key in seen or key in taken:
            # One row per identity, none of them history: anything else
            # would break the unique index or rewrite the sender's row.
            log.warning("plan_identity_refused", contact_id=row.contact_id, type=row.email_type)
            continue
        seen.add(key)
        content = differ.content(row)
        before = old.pop(key, None)
        if before is None:
            diff.inserts.append(differ.params(row, content))
            if row.status == PRE_SCHEDULED:
                touched.add(row.desired_date)
        elif before.balanced and _same(before.content, content, today):
            diff.unchanged += 1
        else:
            params = differ.params(row, content)
            params["id"] = before.id
            restart = not before.balanced or before.desired != content[_DESIRED]
            restart = restart or before.status == SKIPPED or row.status == SKIPPED
            params["reset_date"] = content[_DESIRED] if restart else None
            diff.updates.append(params)
            if _balance_inputs(before.content, today) != _balance_inputs(content, today):
                _touch_old(touched, before)
                if row.status == PRE_SCHEDULED:
                    touched.add(row.desired_date)
    for gone in old.values():
        diff.deletes.append((gone.id,))
        _touch_old(touched, gone)
    return diff


class WriterMixin(LoaderMixin):
    """The plan writer and the per-contact plan state."""

    async def write_plans(
        self,
        loaded: Loaded,
        plans: Iterable[ContactPlan],
        options: WriteOptions,
    ) -> WriteResult:
        """Write the new plans of ``loaded.scope`` (SPEC 7) and their review dates.

        ``loaded`` is what :meth:`load_scope` / :meth:`load_chunk` read inside
        the same transaction. Contacts of the scope without a plan (deleted
        meanwhile, or not in ``plans``) lose their plan rows.
        """
        plans = [p for p in plans if loaded.scope.contains(p.contact_id)]
        rows = [row for plan in plans for row in plan.rows if row.contact_id == plan.contact_id]
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
        if loaded.gaps:
            for _, lo, hi in loaded.gaps:
                touch_span(diff.touched, lo, hi)
            await self.execute("delete_balance_gaps", {"ids": ids_param(g[0] for g in loaded.gaps)})
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
        states = loaded.states
        for plan in plans:
            planned.add(plan.contact_id)
            state = (iso(plan.review_date), plan.invalid)
            if states.get(plan.contact_id) != state:
                upserts.append((plan.contact_id, *state))
        gone = [(cid,) for cid in states if cid not in planned]
        if gone:
            await self.executemany("delete_plan_state", gone)
        if upserts:
            await self.executemany("upsert_plan_state", upserts)

    async def clear_balance_gaps(self) -> None:
        """Forget recorded balance gaps: a global rebalance covers them all."""
        await self.execute("clear_balance_gaps")

    async def set_review_dates(self, items: Iterable[tuple[int, date | None]]) -> None:
        """Store review dates (SPEC 5.11) without touching plan rows."""
        await self.executemany("set_review_date", [(c, iso(d)) for c, d in items])

    async def due_contacts(self, today: date) -> list[int]:
        """Contacts whose review date has come (on or before ``today``), in id order."""
        rows = await self.fetchall("due_contacts", {"today": today.isoformat()})
        return [int(r[0]) for r in rows]
