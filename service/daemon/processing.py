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

From ``staged_min_events`` pending events, and for every fan-out chunk after
the first, the work is staged (:mod:`service.daemon.staging`): the contacts
are read and planned outside the write lock and each step's transaction only
writes; fewer events go the direct way above.

Everything a step does commits together or not at all. A crash only repeats
work, which is harmless because recomputing a contact is idempotent (I5, I6).
Malformed events are logged and consumed with the batch that meets them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import structlog

from handlers import EVERYONE, MalformedEvent, affected_by
from service import engine
from service.daemon.staging import Stager, finish_fanout
from service.daemon.steps import FANOUT_KEY, BatchLimits, FanOut, StepReport
from service.engine import PlanContext
from service.engine.pacing import ChunkSizer
from service.store import Event, RunStats, Store
from service.store.loaders import MAX_ID

__all__ = ["FANOUT_KEY", "BatchLimits", "FanOut", "Processor", "StepReport"]

log = structlog.get_logger(__name__)

INLINE_CONTACTS = 20
"""A batch of at most this many contacts runs its statements on the event
loop's thread (:meth:`~service.store.interface.Store.statements_inline`)."""


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
        self.limits = limits or BatchLimits()
        self.stager = Stager(store, ctx, self.limits)
        """Bursts and fan-out chunks read and planned outside the write lock."""
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

    @property
    def ctx(self) -> PlanContext:
        return self.stager.ctx

    @ctx.setter
    def ctx(self, ctx: PlanContext) -> None:
        self.stager.ctx = ctx

    async def prefetch(self) -> None:
        """Read staged work ahead (no write lock), e.g. during a writer gap."""
        if not self.isolate:
            await self.stager.prefetch(self.skip)

    def idle(self) -> None:
        """The inbox is empty: close the planning pool (its processes hold
        memory) and forget what was read ahead."""
        self.stager.close()

    async def step(self, today: date) -> StepReport | None:
        """Do one unit of work in one transaction; ``None`` when there is nothing to do."""
        # Read without the lock: upstream writers never wait for a
        # transaction that only finds the inbox empty.
        fan_raw = await self.store.get_state(FANOUT_KEY)
        pending = 0 if fan_raw else await self._pending_head()
        if not fan_raw and not pending:
            return None
        started = time.perf_counter()
        if self.isolate:
            self.stager.drop()
        else:
            report = await self._staged_step(today, started, fan_raw, pending)
            if report is not None:
                return report
        async with self.store.transaction():
            fan = await self._fanout()
            # Alternate chunks with ordinary batches so that changes made
            # while a large fan-out runs are not held up behind it.
            self._chunk_turn = fan is not None and not self._chunk_turn
            if fan is not None and self._chunk_turn:
                return await self._fanout_chunk(fan, today, started)
            return await self._events_step(today, started, fan)

    async def _staged_step(
        self, today: date, started: float, fan_raw: str | None, pending: int
    ) -> StepReport | None:
        """A fan-out chunk or a burst chunk the staged way; None for the direct way."""
        stager = self.stager
        if fan_raw:
            fan = FanOut.loads(fan_raw)
            if fan is None:
                return None  # unreadable: the direct way starts it over
            self._chunk_turn = not self._chunk_turn
            if not self._chunk_turn and await self._events_after(fan.upto):
                async with self.store.transaction():
                    report = await self._events_step(today, started, fan, chunk=False)
                if report is not None:
                    return report
            return await stager.fanout_step(fan, today, started)
        if stager.in_burst or pending >= self.limits.staged_min_events:
            return await stager.burst_step(today, started, self.skip, self.attempted)
        return None

    async def _events_step(
        self, today: date, started: float, fan: FanOut | None, *, chunk: bool = True
    ) -> StepReport | None:
        """A batch of events (after a fan-out's, while one runs), inside the
        caller's transaction; a fan-out chunk when there is none (``chunk``)."""
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
        if fan is not None and chunk:
            return await self._fanout_chunk(fan, today, started)
        return None

    async def _pending_head(self) -> int:
        """Events not set aside, counted up to ``staged_min_events`` (read, no lock)."""
        want = max(1, min(self.limits.staged_min_events, 1000))
        events = await self.store.fetch_events(len(self.skip) + want)
        return sum(1 for e in events if e.id not in self.skip)

    async def _events_after(self, upto: int) -> bool:
        """An event after a fan-out's, not set aside (read, no lock)."""
        events = await self.store.fetch_events(len(self.skip) + 1, after_id=upto)
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
            await finish_fanout(store, self.ctx, fan, today, stats)
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
