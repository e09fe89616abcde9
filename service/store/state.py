"""mailplan's own small tables: the events inbox, key/value state, the run log.

The :class:`StateMixin` part of the SQLite store (SPEC 3, 8): every method is
one named query of ``queries.sql`` run through :class:`~service.store.base.StoreBase`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

import structlog

from service.store.base import (
    PLAN_FINGERPRINT,
    PLAN_FULL_DAY,
    PLAN_SETTINGS,
    StoreBase,
    ids_param,
    iso,
)
from service.store.types import Event, EventsSummary, PlanBasis, RunRecord, RunStats

log = structlog.get_logger(__name__)


class StateMixin(StoreBase):
    """Events, state and runs of one organisation database."""

    async def write_soon(self, name: str, params: Any = (), *, many: bool = False) -> None:
        """A named write whose result nobody needs: deferred to the next
        statement inside a write transaction (:meth:`execute_later`), run
        at once outside one."""
        if self._tx == "write":
            self.execute_later(name, params, many=many)
        elif many:
            await self.executemany(name, params)
        else:
            await self.execute(name, params)

    # -- events inbox (SPEC 8) -------------------------------------------

    async def fetch_events(self, limit: int, after_id: int = 0) -> list[Event]:
        """Pending events in id order, at most ``limit``, with id > ``after_id``."""
        rows = await self.fetchall("fetch_events", {"after": after_id, "limit": limit})
        return [Event(r[0], str(r[1]), r[2], r[3], r[4], str(r[5])) for r in rows]

    async def delete_events(self, ids: Iterable[int]) -> int:
        """Delete consumed events; the number deleted."""
        return await self.execute("delete_events", {"ids": ids_param(ids)})

    async def delete_events_upto(self, max_id: int) -> int:
        """Delete every event with id <= ``max_id`` (covered by a full recompute)."""
        return await self.execute("delete_events_upto", {"id": max_id})

    async def enqueue_event(
        self,
        kind: str,
        contact_id: int | None = None,
        ref: str | None = None,
        detail: str | None = None,
    ) -> int:
        """Append an explicit event (e.g. ``recompute_contact``, ``recompute_all``)."""
        return await self.execute_insert("insert_event", (kind, contact_id, ref, detail))

    async def events_summary(self) -> EventsSummary:
        row = await self.fetchone("events_summary")
        assert row is not None
        oldest = None
        try:
            if row[1]:
                oldest = datetime.fromisoformat(str(row[1])).replace(tzinfo=UTC)
        except ValueError:
            # An explicit event inserted by upstream with its own notion of a
            # timestamp: the queue still works, only its age is unknown.
            log.warning("event_created_at_unreadable", value=str(row[1]))
        return EventsSummary(pending=int(row[0]), oldest_created_at=oldest, max_id=int(row[2]))

    async def pending_event_count(self) -> int:
        return (await self.events_summary()).pending

    async def max_event_id(self) -> int:
        row = await self.fetchone("max_event_id")
        return int(row[0]) if row else 0

    # -- key/value state -------------------------------------------------

    async def get_state(self, key: str) -> str | None:
        known, value = self.cached_state(key)
        if known:
            return value
        row = await self.fetchone("get_state", (key,))
        return None if row is None else str(row[0])

    async def set_state(self, key: str, value: str) -> None:
        await self.execute("set_state", (key, value))
        self.remember_state(key, value)

    async def delete_state(self, key: str) -> None:
        await self.execute("delete_state", (key,))
        self.remember_state(key, None)

    async def last_tick(self) -> date | None:
        """The *today* of the last calendar tick (SPEC 8.4)."""
        value = await self.get_state("last_tick")
        return None if value is None else date.fromisoformat(value)

    async def set_last_tick(self, day: date) -> None:
        await self.set_state("last_tick", day.isoformat())

    async def plan_fingerprint(self) -> str | None:
        """The planning fingerprint the stored plan follows (SPEC 4)."""
        return await self.get_state(PLAN_FINGERPRINT)

    async def plan_basis(self) -> PlanBasis:
        """What the stored plan was built under (SPEC 4)."""
        day = await self.get_state(PLAN_FULL_DAY)
        return PlanBasis(
            fingerprint=await self.get_state(PLAN_FINGERPRINT),
            settings_json=await self.get_state(PLAN_SETTINGS),
            full_recompute_day=date.fromisoformat(day) if day else None,
        )

    async def set_plan_basis(
        self, fingerprint: str, settings_json: str, full_recompute_day: date | None
    ) -> None:
        """Record the settings the stored plan follows (inside a transaction);
        ``full_recompute_day`` is the *today* a complete recompute under them
        planned for, None while one is still to come."""
        await self.set_state(PLAN_FINGERPRINT, fingerprint)
        await self.set_state(PLAN_SETTINGS, settings_json)
        if full_recompute_day is None:
            await self.delete_state(PLAN_FULL_DAY)
        else:
            await self.set_state(PLAN_FULL_DAY, full_recompute_day.isoformat())

    async def capacity_snapshot(self, day: date) -> int | None:
        """N (contacts with an e-mail) as snapshotted for ``day`` (SPEC 6)."""
        value = await self.get_state(f"capacity:{day.isoformat()}")
        return None if value is None else int(value)

    async def save_capacity_snapshot(self, day: date, contacts_with_email: int) -> None:
        await self.set_state(f"capacity:{day.isoformat()}", str(contacts_with_email))

    # -- runs (SPEC 3) ---------------------------------------------------

    async def start_run(self, trigger: str, today: date | None) -> int:
        """Record the start of a run; its id (also written to plan rows)."""
        return await self.execute_insert("start_run", (trigger, iso(today)))

    async def finish_run(
        self,
        run_id: int,
        stats: RunStats,
        *,
        duration_ms: float | None = None,
        error: str | None = None,
    ) -> None:
        # Inside a write transaction the record goes to the database with
        # the next statement (the COMMIT, usually): nothing waits for it.
        params = {
            "id": run_id,
            "events_consumed": stats.events_consumed,
            "contacts_recomputed": stats.contacts_recomputed,
            "inserted": stats.inserted,
            "updated": stats.updated,
            "deleted": stats.deleted,
            "unchanged": stats.unchanged,
            "windows_rebalanced": stats.windows_rebalanced,
            "rows_moved": stats.rows_moved,
            "duration_ms": duration_ms,
            "error": error,
        }
        await self.write_soon("finish_run", params)

    async def last_runs(self, limit: int = 10) -> list[RunRecord]:
        rows = await self.fetchall("last_runs", (limit,))
        return [
            RunRecord(
                id=r[0],
                started_at=r[1],
                finished_at=r[2],
                trigger=r[3],
                today=r[4],
                stats=RunStats(*r[5:13]),
                duration_ms=r[13],
                error=r[14],
            )
            for r in rows
        ]
