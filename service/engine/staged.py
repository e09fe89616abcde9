"""The daemon's large work in three stages: read, plan, write (SPEC 8.3, 12).

:func:`~service.engine.core.recompute_contacts` reads, plans and writes a
batch inside one write transaction: right for a change or two, slow for a
burst of thousands, where upstream writers would wait for every read and
every plan. Here a chunk of contacts (the contacts of some events, or an id
range of a fan-out) is

1. read in a read snapshot, without the write lock (:func:`read_ids`,
   :func:`read_range`), with the campaigns of the same snapshot;
2. planned in this process or in a pool of planning processes
   (:class:`StagedPlanner`), while the previous chunk is written;
3. written in a short write transaction (:func:`write_staged`) that first
   compares the event sequence with the one the rows were read at. Every
   upstream change to a table a plan reads appends an event in the same
   transaction (SPEC 8.1) and event ids are never reused, so an unchanged
   sequence means the rows read are still the database's rows; if it moved,
   the chunk is read and planned again inside the transaction. What is
   written is always the plan of the rows as of the write transaction.

The campaigns travel with each chunk (they change through events), so a
pool made for the settings plans any chunk correctly.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterable
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date

import structlog

from service.engine.chunks import Task, input_key, plan_chunk
from service.engine.core import PlanContext, rebalance_delta
from service.errors import MailplanError
from service.planning.contacts import resolve_contact
from service.planning.memo import Memo
from service.planning.model import Campaigns
from service.store import RunStats, Scope, Store, WriteOptions
from service.store.loaders import ChunkRows, contact_from_row
from service.store.writer import PendingWrite, Prepared

log = structlog.get_logger(__name__)

Problems = list[tuple[int, tuple[str, ...]]]


class PlanningFailed(MailplanError):
    """A planning process ended while it planned a chunk (killed, out of
    memory): nothing was written; the work is read and planned again."""


@dataclass(slots=True)
class Planned:
    """A chunk's prepared plans and, when asked for, the data problems of the
    contacts planned (SPEC 13: logged by the daemon, one line per contact)."""

    prepared: Prepared
    problems: Problems = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StagedTask:
    """What a planning process needs for one chunk besides the settings."""

    campaigns: Campaigns
    task: Task
    report: bool = False


def plan_staged(ctx: PlanContext, job: StagedTask) -> Planned:
    """Plan one chunk (pure): its prepared plans and its contacts' problems."""
    prepared = plan_chunk(ctx, job.campaigns, job.task)
    problems: Problems = []
    if job.report:
        today, memo, skipped = job.task.today, ctx.memo, prepared.skipped
        for r in job.task.rows.contact_rows:
            if r[0] not in skipped:
                found = resolve_contact(contact_from_row(r), today, memo).problems
                if found:
                    problems.append((r[0], tuple(found)))
    return Planned(prepared, problems)


def log_problems(problems: Problems) -> None:
    for cid, found in problems:
        log.warning("malformed_contact_data", contact_id=cid, problems=list(found))


def _options(ctx: PlanContext, today: date, run_id: int | str = "") -> WriteOptions:
    return WriteOptions(run_id=str(run_id), today=today, send_time=ctx.send_time)


def staged_task(
    ctx: PlanContext,
    campaigns: Campaigns,
    rows: ChunkRows,
    today: date,
    *,
    report: bool,
    trust: bool = True,
) -> StagedTask:
    """The planning task of a chunk read on ``today``. Without ``trust`` every
    contact is planned (no input digest is trusted)."""
    key = input_key(ctx, campaigns) if trust else None
    return StagedTask(campaigns, Task(rows, today, key, _options(ctx, today)), report)


# -- reading (a read snapshot, no write lock) ------------------------------------


async def read_ids(
    store: Store, ctx: PlanContext, ids: Iterable[int], today: date
) -> tuple[ChunkRows, Campaigns]:
    """The rows and campaigns the plans of contacts ``ids`` are made from, in
    one read snapshot (or the caller's transaction)."""
    scope = Scope.of_ids(sorted(set(ids)))
    async with store.snapshot():
        campaigns = ctx.campaigns or await store.load_campaigns()
        rows = await store.read_chunk(
            None, 0, since=ctx.history_since(today),
            engagement_since=ctx.engagement_since(today), scope=scope,
        )  # fmt: skip
    return rows, campaigns


async def read_range(
    store: Store, ctx: PlanContext, after: int | None, limit: int, today: date
) -> tuple[ChunkRows, Campaigns]:
    """The rows and campaigns of the next ``limit`` contacts with id > ``after``
    (the chunk's scope reaches ``MAX_ID`` when it is the last), in one snapshot."""
    async with store.snapshot():
        campaigns = ctx.campaigns or await store.load_campaigns()
        rows = await store.read_chunk(
            after, limit, since=ctx.history_since(today),
            engagement_since=ctx.engagement_since(today),
        )  # fmt: skip
    return rows, campaigns


# -- writing (inside the caller's write transaction) -----------------------------


async def write_staged(
    store: Store,
    ctx: PlanContext,
    rows: ChunkRows,
    planned: Planned,
    today: date,
    run_id: int | str,
    *,
    report: bool = False,
    trust: bool = True,
    ahead: PendingWrite | None = None,
) -> tuple[RunStats, ChunkRows, Planned]:
    """Write a chunk planned outside the lock and rebalance where it moves the
    sweep, inside the caller's transaction; the stats, and the rows and plans
    actually written (read and planned again here when an upstream change came
    after the read). Without ``trust`` every stored plan row of the chunk is
    compared with its plan (rows edited behind mailplan's back are repaired),
    as :func:`~service.engine.core.recompute_contacts` does. ``ahead`` is the
    chunk compared with the stored rows before the lock (:func:`compare_ahead`):
    written as found unless anyone else changed anything since."""
    if not store.in_write_transaction:
        raise RuntimeError("write_staged must run inside store.transaction()")
    replanned = await store.event_seq() != rows.seq
    if replanned:
        # An upstream change since the read (its event may even be consumed
        # already): the rows read may be stale. Read and plan again here.
        fresh, campaigns = await (
            read_ids(store, ctx, rows.scope.ids, today)
            if rows.scope.ids is not None
            else _read_scope(store, ctx, rows.scope, today)
        )
        task = staged_task(ctx, campaigns, fresh, today, report=report, trust=trust)
        planned = plan_staged(ctx, task)
        rows = fresh
    options = _options(ctx, today, run_id)
    if ahead is not None and not replanned and ahead.prepared is planned.prepared:
        result = await store.write_pending(ahead.for_run(options.run_id), options)
    else:
        result = await store.write_prepared(planned.prepared, options, trust=trust)
    stats = RunStats(contacts_recomputed=len(rows.contact_rows))
    stats.add_writes(result.stats)
    # Also with no change of its own: rows others took (balance gaps).
    stats.add(await rebalance_delta(store, ctx, today, result.delta))
    if replanned:
        log.debug("staged_chunk_replanned", contacts=len(rows.contact_rows))
    return stats, rows, planned


async def compare_ahead(
    store: Store, ctx: PlanContext, planned: Planned, today: date
) -> PendingWrite:
    """A planned chunk compared with the stored rows in a read snapshot,
    before the write lock (what :func:`write_staged` then writes). Its
    statements run on this thread: they are short, and run in the writer
    gap before the transaction."""
    async with store.snapshot():
        with store.statements_inline(True):
            return await store.diff_ahead(planned.prepared, _options(ctx, today))


async def _read_scope(
    store: Store, ctx: PlanContext, scope: Scope, today: date
) -> tuple[ChunkRows, Campaigns]:
    campaigns = ctx.campaigns or await store.load_campaigns()
    rows = await store.read_chunk(
        None, 0, since=ctx.history_since(today),
        engagement_since=ctx.engagement_since(today), scope=scope,
    )  # fmt: skip
    return rows, campaigns


def needs_write(rows: ChunkRows, planned: Planned) -> bool:
    """Whether writing the chunk can change anything (see :meth:`ChunkRows.needs_write`)."""
    return rows.needs_write(planned.prepared.states)


# -- planning processes ---------------------------------------------------------------

_CTX: PlanContext | None = None
"""The settings' context of this planning process (set by its initializer)."""


def _init_worker(ctx: PlanContext) -> None:
    global _CTX
    _CTX = ctx


def _warm_up() -> None:
    """The first task of a new pool: done when a process is up."""


def _plan_in_worker(job: StagedTask) -> Planned:
    if _CTX is None:
        raise RuntimeError("planning worker not initialised")
    return plan_staged(_CTX, job)


class StagedPlanner:
    """Plans chunks in this process or in a pool of ``workers`` processes.

    The pool is started on first use by a large piece of work
    (:meth:`start`) and closed when the daemon is idle (:meth:`close`): the
    planning processes hold memory only while there is work for them.
    """

    def __init__(self, ctx: PlanContext, workers: int) -> None:
        self.ctx = ctx
        self.workers = max(0, workers)
        self._pool: Executor | None = None
        self._warm: asyncio.Future[None] | None = None
        """Done once the pool's processes are up: until then chunks are
        planned here (starting a process takes a second or more)."""

    @property
    def running(self) -> bool:
        return self._pool is not None

    @property
    def warm(self) -> bool:
        """The pool's processes are up (chunks are planned there)."""
        return self._warm is not None and self._warm.done()

    @property
    def depth(self) -> int:
        """Chunks to keep in flight: one more than the processes planning them."""
        return self.workers + 1 if self._pool is not None else 1

    @property
    def ahead(self) -> int:
        """Chunks that may be read ahead while the daemon leaves upstream
        writers their gap (reads take no write lock)."""
        return self.depth + 3

    def start(self) -> None:
        if self._pool is None and self.workers > 0:
            # A fresh memo: the daemon's own may have grown large.
            ctx = replace(self.ctx, memo=Memo())
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(ctx,),
            )
            loop = asyncio.get_running_loop()
            self._warm = loop.run_in_executor(self._pool, _warm_up)
            log.info("planning_pool_started", workers=self.workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = self._warm = None
            log.info("planning_pool_closed")

    def submit(self, job: StagedTask) -> asyncio.Future[Planned]:
        """Start planning a chunk; its plans when done (await :func:`planned`)."""
        loop = asyncio.get_running_loop()
        if self._pool is None or not self.warm:
            # Here, at once: between two write transactions, not inside one.
            done: asyncio.Future[Planned] = loop.create_future()
            try:
                done.set_result(plan_staged(self.ctx, job))
            except Exception as exc:  # raised where the plans are awaited
                done.set_exception(exc)
            return done
        try:
            return loop.run_in_executor(self._pool, _plan_in_worker, job)
        except BrokenExecutor as exc:
            broken: asyncio.Future[Planned] = loop.create_future()
            broken.set_exception(exc)
            return broken

    async def planned(self, future: asyncio.Future[Planned]) -> Planned:
        """The plans of a submitted chunk; :class:`PlanningFailed` (and a
        fresh pool next time) if its planning process died."""
        try:
            return await future
        except BrokenExecutor as exc:
            self.close()
            raise PlanningFailed(
                f"a planning process ended unexpectedly ({exc}); the chunk is read again"
            ) from exc
