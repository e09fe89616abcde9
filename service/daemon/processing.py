"""Draining the events inbox (SPEC 8.3).

Each :meth:`Processor.step` is one short write transaction that either

- takes a batch of events in id order (at most ``max_events`` events and
  ``max_contacts`` affected contacts), recomputes the affected contacts, writes
  their plans, rebalances the touched windows, records a run and deletes the
  events; or
- works off one chunk of a large fan-out (an event that reaches everyone, or
  more contacts than one batch may hold), keeping its progress in
  ``scheduler_state`` so a restart resumes where it stopped; the fan-out's
  events are deleted with its last chunk.

Everything a step does commits together or not at all. A crash only repeats
work, which is harmless because recomputing a contact is idempotent (I5, I6).
Malformed events are logged and consumed with the batch that meets them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import structlog

from handlers import EVERYONE, MalformedEvent, affected_by
from service import engine
from service.engine import PlanContext
from service.engine.pacing import ChunkSizer
from service.store import Event, RunStats, Store
from service.store.loaders import MAX_ID

log = structlog.get_logger(__name__)

INLINE_CONTACTS = 20
"""A batch of at most this many contacts runs its statements on the event
loop's thread (:meth:`~service.store.interface.Store.statements_inline`)."""

FANOUT_KEY = "fanout"
"""scheduler_state key holding the progress of the current fan-out (JSON)."""


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How much one transaction may take on (SPEC 8.3: short transactions)."""

    max_events: int = 500
    max_contacts: int = 1000
    chunk_contacts: int = 1000


@dataclass(frozen=True, slots=True)
class FanOut:
    """A fan-out in progress.

    ``everyone`` walks every contact id (including ids of deleted contacts
    that still have plan rows) and consumes every event with id <= ``upto``
    with its last chunk; otherwise the contacts are those of event ``upto``
    alone, resolved again on each chunk, and that event is consumed with the
    last one. ``after`` is the last contact id done.
    """

    upto: int
    everyone: bool
    after: int | None = None

    def dumps(self) -> str:
        return json.dumps({"upto": self.upto, "everyone": self.everyone, "after": self.after})

    @classmethod
    def loads(cls, text: str) -> FanOut | None:
        try:
            raw = json.loads(text)
            after = raw.get("after")
            return cls(
                upto=int(raw["upto"]),
                everyone=bool(raw["everyone"]),
                after=None if after is None else int(after),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


@dataclass(slots=True)
class StepReport:
    """What one transaction did."""

    kind: Literal["batch", "fanout"]
    run_id: int
    events: int
    rejected: int
    contacts: int
    stats: RunStats
    ms: float
    finished: bool = True


@dataclass(slots=True)
class _Batch:
    events: list[Event] = field(default_factory=list)
    contacts: set[int] = field(default_factory=set)
    rejected: int = 0
    fanout: FanOut | None = None


class Processor:
    """Turns pending events into plan writes, one transaction per step.

    Holds no state between steps except which kind of work goes next, so a
    new processor on the same database carries on where an old one stopped.
    """

    def __init__(self, store: Store, ctx: PlanContext, limits: BatchLimits | None = None) -> None:
        self.store = store
        self.ctx = ctx
        self.limits = limits or BatchLimits()
        self.isolate = False
        """One event per batch, to find an event whose processing keeps failing."""
        self.skip: set[int] = set()
        """Event ids set aside (left pending) because processing them kept failing."""
        self.attempted: list[int] = []
        """Event ids of the batch being attempted (to set a failing one aside)."""
        self._chunk_turn = False
        self._sizer = ChunkSizer(self.limits.chunk_contacts)
        """Contacts per fan-out chunk, adjusted to keep each transaction short."""
        self._batch_sizer = ChunkSizer(self.limits.max_events)
        self._batch_sizer.size = self.limits.max_events
        """Events per batch, adjusted to keep each transaction short (SPEC 8.3):
        only a batch that was full, or that took longer than the target, says
        how many fit (a batch of a few events is mostly fixed costs)."""

    async def step(self, today: date) -> StepReport | None:
        """Do one unit of work in one transaction; ``None`` when there is nothing to do."""
        if not await self._has_work():
            # No write lock taken just to find the inbox empty: upstream
            # writers never wait for a transaction that does nothing.
            return None
        started = time.perf_counter()
        async with self.store.transaction():
            fan = await self._fanout()
            # Alternate chunks with ordinary batches so that changes made
            # while a large fan-out runs are not held up behind it.
            self._chunk_turn = fan is not None and not self._chunk_turn
            if fan is not None and self._chunk_turn:
                return await self._fanout_chunk(fan, today, started)
            limit = 1 if self.isolate else self._batch_sizer.size
            events = await self.store.fetch_events(
                limit + len(self.skip), after_id=0 if fan is None else fan.upto
            )
            events = [e for e in events if e.id not in self.skip][:limit]
            batch = await self._collect(events, can_start_fanout=fan is None)
            self.attempted = [e.id for e in batch.events]
            if batch.fanout is not None:
                await self.store.set_state(FANOUT_KEY, batch.fanout.dumps())
                log.info("fanout_started", upto=batch.fanout.upto, everyone=batch.fanout.everyone)
                self._chunk_turn = True
                return await self._fanout_chunk(batch.fanout, today, started)
            if batch.events:
                report = await self._batch(batch, today, started)
                if len(events) >= limit or report.ms >= self._batch_sizer.target_s * 1000.0:
                    self._batch_sizer.record(len(batch.events), report.ms / 1000.0)
                return report
            if fan is not None:
                return await self._fanout_chunk(fan, today, started)
            return None

    async def _has_work(self) -> bool:
        """A fan-out in progress or an event not set aside (read, no lock)."""
        if await self.store.get_state(FANOUT_KEY):
            return True
        events = await self.store.fetch_events(len(self.skip) + 1)
        return any(e.id not in self.skip for e in events)

    async def pending(self) -> int:
        """Events waiting in the inbox."""
        return await self.store.pending_event_count()

    # -- batches ------------------------------------------------------------

    async def _collect(self, events: Sequence[Event], *, can_start_fanout: bool) -> _Batch:
        """Take events while the affected contacts stay within the limit."""
        batch = _Batch()
        for event in events:
            try:
                targets = await affected_by(event, self.store)
            except MalformedEvent as exc:
                log.warning("event_malformed", event_id=event.id, kind=event.kind, reason=str(exc))
                batch.events.append(event)
                batch.rejected += 1
                continue
            if targets is EVERYONE:
                if not batch.events and can_start_fanout:
                    # Everything pending now is covered by a pass over every
                    # contact that starts after it was committed.
                    upto = await self.store.max_event_id()
                    batch.fanout = FanOut(upto=upto, everyone=True)
                break
            merged = batch.contacts | targets
            if len(merged) > self.limits.max_contacts:
                if not batch.events and can_start_fanout:
                    batch.fanout = FanOut(upto=event.id, everyone=False)
                break
            batch.events.append(event)
            batch.contacts = merged
        return batch

    async def _batch(self, batch: _Batch, today: date, started: float) -> StepReport:
        store = self.store
        # A few contacts: their statements take microseconds, a thread
        # switch per statement far longer on a busy machine.
        with store.statements_inline(len(batch.contacts) <= INLINE_CONTACTS):
            run_id = await store.start_run("events", today)
            stats = await engine.recompute_contacts(
                store, self.ctx, batch.contacts, today, run_id, report_malformed=True
            )
            stats.events_consumed = await store.delete_events(e.id for e in batch.events)
        ms = _ms(started)
        await store.finish_run(run_id, stats, duration_ms=ms)
        return StepReport(
            "batch", run_id, len(batch.events), batch.rejected, len(batch.contacts), stats, ms
        )

    # -- fan-outs -------------------------------------------------------------

    async def _fanout(self) -> FanOut | None:
        raw = await self.store.get_state(FANOUT_KEY)
        if not raw:
            return None
        fan = FanOut.loads(raw)
        if fan is None:
            # Unreadable progress: start over from the first contact; the
            # events are still pending, so nothing is lost.
            log.warning("fanout_state_unreadable", value=raw[:200])
            await self.store.delete_state(FANOUT_KEY)
        return fan

    async def _fanout_chunk(self, fan: FanOut, today: date, started: float) -> StepReport:
        store = self.store
        run_id = await store.start_run("fanout", today)
        if fan.everyone:
            stats, after = await self._everyone_chunk(fan.after, today, run_id)
        else:
            stats, after = await self._targets_chunk(fan, today, run_id)
        finished = after is None
        if finished:
            if fan.everyone:
                stats.events_consumed = await store.delete_events_upto(fan.upto)
                # Balancing keys may have changed with no plan row changing.
                stats.add(await engine.rebalance_if_stale(store, self.ctx, today))
                # Every contact was planned under these settings (SPEC 4).
                await engine.record_full_plan(store, self.ctx, today)
            else:
                stats.events_consumed = await store.delete_events([fan.upto])
            await store.delete_state(FANOUT_KEY)
            log.info("fanout_finished", upto=fan.upto, events=stats.events_consumed)
        else:
            await store.set_state(FANOUT_KEY, FanOut(fan.upto, fan.everyone, after).dumps())
        ms = _ms(started)
        await store.finish_run(run_id, stats, duration_ms=ms)
        self._sizer.record(stats.contacts_recomputed, ms / 1000.0)
        return StepReport(
            "fanout",
            run_id,
            stats.events_consumed,
            0,
            stats.contacts_recomputed,
            stats,
            ms,
            finished=finished,
        )

    async def _everyone_chunk(
        self, after: int | None, today: date, run_id: int
    ) -> tuple[RunStats, int | None]:
        stats, hi = await engine.recompute_range(
            self.store, self.ctx, after, self._sizer.size, today, run_id
        )
        return stats, None if hi == MAX_ID else hi

    async def _targets_chunk(
        self, fan: FanOut, today: date, run_id: int
    ) -> tuple[RunStats, int | None]:
        events = [e for e in await self.store.fetch_events(1, fan.upto - 1) if e.id == fan.upto]
        ids: set[int] = set()
        for event in events:
            try:
                targets = await affected_by(event, self.store)
            except MalformedEvent:
                continue
            if targets is EVERYONE:
                # Cannot happen for an event that once resolved to a set, unless
                # the type changed meanwhile; its own event reaches everyone.
                continue
            ids.update(targets)
        todo = sorted(i for i in ids if fan.after is None or i > fan.after)
        chunk = todo[: self._sizer.size]
        stats = await engine.recompute_contacts(self.store, self.ctx, chunk, today, run_id)
        if len(todo) <= len(chunk):
            return stats, None
        return stats, chunk[-1]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
