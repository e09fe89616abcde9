"""Large batches and fan-outs, read and planned outside the write lock (SPEC 8.3, 12).

A burst of upstream changes (from ``staged_min_events`` pending events) or a
fan-out is worked off in chunks through the stages of
:mod:`service.engine.staged`: each chunk is read in a read snapshot, planned
in this process or in the pool of planning processes while the chunk before
it is written, and written in its own short write transaction, which first
checks that no upstream change came since the read (else it reads and plans
the chunk again, inside the lock).

What stays as in the direct path (:mod:`service.daemon.processing`):

- a burst chunk takes whole events in id order; the events are deleted in the
  transaction that commits the plans of all their contacts, and a chunk's
  events and contacts are those the events resolved to in a snapshot taken
  after they were committed (an event's contacts do not depend on later
  writes of the daemon; a later upstream change has an event of its own);
- a fan-out keeps its progress in ``scheduler_state`` in each chunk's
  transaction and deletes its events with its last chunk;
- a crash at any point loses only work not yet committed: what was read or
  planned ahead is read again by the next run.

The state here (chunks read ahead) lives between steps; it is dropped when a
step fails, when *today* or the settings change, and when the daemon is idle
(which also closes the pool).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date

import structlog

from handlers import EVERYONE, MalformedEvent, affected_by
from service import engine
from service.daemon.steps import FANOUT_KEY, BatchLimits, FanOut, StepReport
from service.engine import PlanContext, staged
from service.engine.pacing import ChunkSizer
from service.engine.staged import Planned, StagedPlanner, log_problems, staged_task
from service.store import Event, RunStats, Store
from service.store.loaders import MAX_ID, ChunkRows

log = structlog.get_logger(__name__)

DAEMON_WORKERS = 1
"""Planning processes of the daemon's staged work (``planning_workers`` of the
settings' context overrides it): planning costs a small part of what the
writes cost, so one process on the other core keeps up, and each process
holds some 45 MB while it runs (SPEC 12: daemon RSS <= 150 MB)."""

EXPLICIT = "recompute_contact"
"""The event kind of an explicit request to recompute a contact (SPEC 8.1)."""

STAGED_TARGET_S = 0.025
"""Aimed-for duration of a staged chunk's write transaction, its commit
included (the chunk was read and planned outside it). An upstream writer
that finds the lock taken retries after 1, 3, 8, 18, 33 and 53 ms (SQLite's
busy handler): a transaction that runs past 33 ms keeps one that came at
its start past 50 ms (SPEC 12: p99 <= 50 ms). The sizer predicts the next
chunk's time from the last ones, and a chunk may overrun its target by a
few milliseconds (a rebalance that reads more, a loaded machine): aiming at
25 ms leaves that margin below 33 ms. With the writer gap after every
transaction, the burst of 100,000 changes at 1M contacts took 9.7-10.3 s
with 30 ms chunks, 1-3 of ~260 upstream writes waiting over 50 ms, against
8.1-8.2 s and 10-17 of ~200 with 50 ms chunks; on a later machine 7.1-8.9 s
with 30 ms chunks (0-2 of ~200 over 50 ms, the p99 44-55 ms) and 7.3-11.9 s
with 25 ms ones (0-1 of 205-337, the p99 42-44 ms; ``bench/RESULTS.md``,
runs X0-X7). Each
transaction has fixed costs (the commit, the run record, the rebalance's
reads) of a few milliseconds, so much shorter chunks drain a burst more
slowly."""


@dataclass(slots=True)
class _Chunk:
    rows: ChunkRows
    planned: asyncio.Future[Planned]
    events: list[Event] = field(default_factory=list)
    """Events consumed with this chunk (a burst)."""
    rejected: int = 0
    after: int | None = None
    """A fan-out's progress once this chunk is written; None: its last chunk."""
    trust: bool = True
    """Input digests and stored fingerprints are trusted; not for a chunk
    with an explicit ``recompute_contact`` event (an operator asking for the
    contact's plan to be made and compared again, as the direct way does)."""


@dataclass(slots=True)
class _Burst:
    today: date
    queue: deque[tuple[Event, frozenset[int]]] = field(default_factory=deque)
    """Events resolved (malformed ones with no contacts), not yet in a chunk."""
    rejected: set[int] = field(default_factory=set)
    last_id: int = 0
    more: bool = True
    """The inbox may hold more events for this burst."""
    inflight: deque[_Chunk] = field(default_factory=deque)


@dataclass(slots=True)
class _Fan:
    fan: FanOut
    today: date
    committed: int | None
    after: int | None
    todo: list[int] | None = None
    """A fan-out over one event's contacts: those still to read."""
    reading: bool = True
    inflight: deque[_Chunk] = field(default_factory=deque)


class Stager:
    """Staged bursts and fan-out chunks for a :class:`Processor`."""

    def __init__(self, store: Store, ctx: PlanContext, limits: BatchLimits) -> None:
        self.store = store
        self.limits = limits
        self._ctx = ctx
        self.planner = self._planner(ctx)
        self._burst: _Burst | None = None
        self._fan: _Fan | None = None
        self._burst_sizer = ChunkSizer(limits.max_contacts, target_s=STAGED_TARGET_S)
        self._fan_sizer = ChunkSizer(limits.chunk_contacts, target_s=STAGED_TARGET_S)

    @staticmethod
    def _planner(ctx: PlanContext) -> StagedPlanner:
        workers = DAEMON_WORKERS if ctx.planning_workers is None else ctx.planning_workers
        return StagedPlanner(ctx, workers)

    @property
    def ctx(self) -> PlanContext:
        return self._ctx

    @ctx.setter
    def ctx(self, ctx: PlanContext) -> None:
        # Other settings: nothing planned ahead is valid, the pool plans for the old ones.
        self.close()
        self._ctx = ctx
        self.planner = self._planner(ctx)

    @property
    def in_burst(self) -> bool:
        return self._burst is not None

    def drop(self) -> None:
        """Forget the work read and planned ahead (it is read again)."""
        for work in (self._burst, self._fan):
            for chunk in work.inflight if work is not None else ():
                chunk.planned.cancel()
        self._burst = self._fan = None

    def close(self) -> None:
        """Idle: drop what was read ahead and close the planning pool."""
        self.drop()
        self.planner.close()

    # -- bursts -----------------------------------------------------------------

    async def burst_step(
        self, today: date, started: float, skip: set[int], attempted: list[int]
    ) -> StepReport | None:
        """Write the next chunk of a burst; None when the next event is not for
        a staged batch (it reaches everyone or too many contacts)."""
        try:
            burst = self._burst
            if burst is None or burst.today != today:
                self.drop()
                burst = self._burst = _Burst(today)
            await self._fill_burst(burst, skip)
            if not burst.inflight:
                self._burst = None
                return None
            chunk = burst.inflight.popleft()
            attempted[:] = [e.id for e in chunk.events]
            report = await self._write_burst_chunk(chunk, today, started)
            if not burst.inflight and not burst.queue and not burst.more:
                self._burst = None
            return report
        except BaseException:
            self.drop()
            raise

    async def _take_events(self, burst: _Burst, skip: set[int]) -> None:
        """Resolve the next events of the inbox, in a read snapshot."""
        limit = self.limits.staged_events
        store = self.store
        async with store.snapshot():
            events = await store.fetch_events(limit + len(skip), after_id=burst.last_id)
            if len(events) < limit + len(skip):
                burst.more = False
            for event in events:
                if event.id in skip:
                    burst.last_id = event.id
                    continue
                try:
                    targets = await affected_by(event, store)
                except MalformedEvent as exc:
                    log.warning("event_malformed", event_id=event.id, kind=event.kind,
                                reason=str(exc))  # fmt: skip
                    burst.rejected.add(event.id)
                    targets = frozenset()
                if targets is EVERYONE or len(targets) > self.limits.max_contacts:
                    # For the direct path: it starts a fan-out.
                    burst.more = False
                    break
                burst.queue.append((event, frozenset(targets)))
                burst.last_id = event.id
        if len(burst.queue) >= self.limits.pool_min_contacts:
            self.planner.start()

    async def prefetch(self, skip: set[int]) -> None:
        """Read (and start planning) chunks ahead, without the write lock:
        what the daemon does while it leaves upstream writers their gap."""
        try:
            if self._burst is not None:
                await self._fill_burst(self._burst, skip, self.planner.ahead)
            elif self._fan is not None:
                await self._fill_fan(self._fan, self.planner.ahead)
        except BaseException:
            self.drop()
            raise

    async def _fill_burst(self, burst: _Burst, skip: set[int], depth: int = 0) -> None:
        while len(burst.inflight) < (depth or self.planner.depth):
            size = self._burst_sizer.size
            if len(burst.queue) < size and burst.more:
                await self._take_events(burst, skip)
            if not burst.queue:
                return
            events: list[Event] = []
            contacts: set[int] = set()
            while burst.queue:
                event, targets = burst.queue[0]
                if events and len(contacts) + len(targets - contacts) > size:
                    break
                burst.queue.popleft()
                events.append(event)
                contacts |= targets
            rows, campaigns = await staged.read_ids(self.store, self.ctx, contacts, burst.today)
            trust = not any(e.kind == EXPLICIT for e in events)
            task = staged_task(self.ctx, campaigns, rows, burst.today, report=True, trust=trust)
            rejected = sum(1 for e in events if e.id in burst.rejected)
            chunk = _Chunk(rows, self.planner.submit(task), events, rejected, trust=trust)
            burst.inflight.append(chunk)

    async def _write_burst_chunk(self, chunk: _Chunk, today: date, started: float) -> StepReport:
        store = self.store
        planned = await self.planner.planned(chunk.planned)
        # Compared with the stored rows before the lock (in the writer gap);
        # an explicit recompute (no trust) compares inside it.
        ahead = await staged.compare_ahead(store, self.ctx, planned, today) if chunk.trust else None
        async with store.transaction():
            writing = time.perf_counter()
            run_id = await store.start_run("events", today)
            stats, rows, planned = await staged.write_staged(
                store, self.ctx, chunk.rows, planned, today, run_id, report=True,
                trust=chunk.trust, ahead=ahead,
            )  # fmt: skip
            stats.events_consumed = await store.delete_events(e.id for e in chunk.events)
            ms = _ms(started)
            await store.finish_run(run_id, stats, duration_ms=ms)
        # Its pages go back into the database now, not in the COMMIT of the
        # upstream writer that waited.
        store.checkpoint_soon()
        # The commit included: upstream writers wait while it is open.
        self._burst_sizer.record(max(1, len(rows.contact_rows)), time.perf_counter() - writing)
        log_problems(planned.problems)
        return StepReport("batch", run_id, len(chunk.events), chunk.rejected,
                          len(rows.contact_rows), stats, ms, staged=True)  # fmt: skip

    # -- fan-outs -----------------------------------------------------------------

    async def fanout_step(self, fan: FanOut, today: date, started: float) -> StepReport:
        """Write the next chunk of the fan-out ``fan`` (as stored)."""
        try:
            state = self._fan
            if (
                state is None
                or state.fan.upto != fan.upto
                or state.fan.everyone != fan.everyone
                or state.committed != fan.after
                or state.today != today
            ):
                self.drop()
                state = self._fan = await self._start_fan(fan, today)
            await self._fill_fan(state)
            chunk = state.inflight.popleft()
            planned = await self.planner.planned(chunk.planned)
            if (
                chunk.after is not None
                and not staged.needs_write(chunk.rows, planned)
                and await self.store.event_seq() == chunk.rows.seq
            ):
                # Every contact's inputs are unchanged and no upstream change
                # came since the read: the stored plan of the chunk is its
                # plan already, and the write lock is not taken. Its progress
                # is recorded with the next chunk written.
                contacts = len(chunk.rows.contact_rows)
                stats = RunStats(contacts_recomputed=contacts,
                                 unchanged=planned.prepared.skipped_rows)  # fmt: skip
                return StepReport("fanout", 0, 0, 0, contacts, stats, _ms(started),
                                  finished=False, staged=True)  # fmt: skip
            report = await self._write_fan_chunk(fan, chunk, planned, today, started)
            state.committed = chunk.after
            if report.finished:
                self._fan = None
            return report
        except BaseException:
            self.drop()
            raise

    async def _start_fan(self, fan: FanOut, today: date) -> _Fan:
        store = self.store
        state = _Fan(fan, today, committed=fan.after, after=fan.after)
        if fan.everyone:
            contacts = await store.capacity_snapshot(today)
            if contacts is None:
                async with store.snapshot():
                    contacts = await store.contact_count_with_email()
        else:
            state.todo = await self._targets(fan)
            contacts = len(state.todo)
        if contacts >= self.limits.pool_min_contacts:
            self.planner.start()
        return state

    async def _targets(self, fan: FanOut) -> list[int]:
        """The contacts of event ``fan.upto`` still to do (resolved in a snapshot)."""
        store = self.store
        ids: set[int] = set()
        async with store.snapshot():
            events = [e for e in await store.fetch_events(1, fan.upto - 1) if e.id == fan.upto]
            for event in events:
                try:
                    targets = await affected_by(event, store)
                except MalformedEvent:
                    continue
                if targets is not EVERYONE:
                    ids.update(targets)
        return sorted(i for i in ids if fan.after is None or i > fan.after)

    async def _fill_fan(self, state: _Fan, depth: int = 0) -> None:
        today = state.today
        while state.reading and len(state.inflight) < (depth or self.planner.depth):
            size = self._fan_sizer.size
            after: int | None
            if state.todo is None:
                rows, campaigns = await staged.read_range(
                    self.store, self.ctx, state.after, size, today
                )
                state.after = rows.scope.hi
                after = None if rows.scope.hi == MAX_ID else rows.scope.hi
            else:
                ids, state.todo = state.todo[:size], state.todo[size:]
                rows, campaigns = await staged.read_ids(self.store, self.ctx, ids, today)
                after = ids[-1] if state.todo else None
            state.reading = after is not None
            task = staged_task(self.ctx, campaigns, rows, today, report=False)
            state.inflight.append(_Chunk(rows, self.planner.submit(task), after=after))

    async def _write_fan_chunk(
        self, fan: FanOut, chunk: _Chunk, planned: Planned, today: date, started: float
    ) -> StepReport:
        store = self.store
        ahead = await staged.compare_ahead(store, self.ctx, planned, today)
        async with store.transaction():
            writing = time.perf_counter()
            run_id = await store.start_run("fanout", today)
            stats, rows, _ = await staged.write_staged(
                store, self.ctx, chunk.rows, planned, today, run_id, ahead=ahead
            )
            finished = chunk.after is None
            if finished:
                await finish_fanout(store, self.ctx, fan, today, stats)
            else:
                await store.set_state(
                    FANOUT_KEY, FanOut(fan.upto, fan.everyone, chunk.after).dumps()
                )
            ms = _ms(started)
            await store.finish_run(run_id, stats, duration_ms=ms)
        store.checkpoint_soon()
        self._fan_sizer.record(max(1, len(rows.contact_rows)), time.perf_counter() - writing)
        return StepReport("fanout", run_id, stats.events_consumed, 0, stats.contacts_recomputed,
                          stats, ms, finished=finished, staged=True)  # fmt: skip


async def finish_fanout(
    store: Store, ctx: PlanContext, fan: FanOut, today: date, stats: RunStats
) -> None:
    """End a fan-out inside its last chunk's transaction: consume its events,
    bring the balance to the global one, forget its progress."""
    if fan.everyone:
        stats.events_consumed = await store.delete_events_upto(fan.upto)
        # Balancing keys may have changed with no plan row changing.
        stats.add(await engine.rebalance_if_stale(store, ctx, today))
        # Every contact was planned under these settings (SPEC 4).
        await engine.record_full_plan(store, ctx, today)
    else:
        stats.events_consumed = await store.delete_events([fan.upto])
    await store.delete_state(FANOUT_KEY)
    log.info("fanout_finished", upto=fan.upto, events=stats.events_consumed)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
