"""Planning chunks of contacts from their rows, here or in a process pool (SPEC 12).

A full recompute reads each chunk's rows in a read snapshot, without the
write lock (:meth:`~service.store.loaders.LoaderMixin.read_chunk`), turns
them into prepared plans (:func:`plan_chunk`, pure: rows in, plain tuples
out) and only then takes the write lock for the writes. The planning of a
chunk runs in this process or in a pool of worker processes
(:class:`Planner`), so that one core plans while the other reads and writes.

Skipping unchanged contacts: every contact's state keeps a digest of its
planner input (its row and related rows as read, keyed by the settings'
fingerprint, the campaigns and mailplan's version) with the *today* it was
planned on. A contact whose digest is unchanged and whose plan is still the
plan of *today* (:func:`~service.store.writer.inputs_unchanged`) is not
planned again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import sqlite3
from collections.abc import Awaitable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import date

from service import __version__
from service.engine.core import PlanContext, timezones
from service.engine.core import plan_all as plan_all
from service.planning.model import Campaigns
from service.store.loaders import (
    ChunkRows,
    build_contacts,
    contact_from_row,
    group_related,
    input_digest,
)
from service.store.rangeread import ChunkSource, RangeReader
from service.store.rows import RelatedRows
from service.store.types import Scope
from service.store.writer import (
    Prepared,
    WriteOptions,
    inputs_unchanged,
    prepare,
    stored_rows,
)

POOL_MIN_CONTACTS = 20_000
"""Below this many contacts a pass plans in this process (a pool's start-up
costs about a second)."""

READ_CHUNK = 5000
"""The most contacts a full recompute reads as one chunk. A read holds no
lock, so a chunk is read larger than a write transaction may be (fewer
statements and hand-overs per contact); a chunk that needs writing is
written in slices of the write size (:func:`write_slices`)."""


def default_workers() -> int:
    """Planning processes of a large pass: both cores of a 2-core machine."""
    return min(2, os.cpu_count() or 1)


def input_key(ctx: PlanContext, campaigns: Campaigns) -> bytes | None:
    """The key of the contacts' input digests: what else a plan depends on
    (the settings' planning fingerprint, the campaigns, mailplan's version).
    None for a context not built from settings: nothing is skipped."""
    if not ctx.fingerprint:
        return None
    basis = f"{__version__}\n{ctx.fingerprint}\n{ctx.settings_json}\n{campaigns!r}"
    return hashlib.blake2b(basis.encode(), digest_size=32).digest()


@dataclass(frozen=True, slots=True)
class Task:
    """One chunk to plan: its rows, *today*, the input key, the write options."""

    rows: ChunkRows
    today: date
    key: bytes | None
    options: WriteOptions


def plan_chunk(ctx: PlanContext, campaigns: Campaigns, task: Task) -> Prepared:
    """The prepared plans of a chunk (pure). Contacts whose input digest is
    unchanged are skipped when the task has an input key."""
    rows = task.rows
    grouped = group_related(rows.related)
    today_iso = task.today.isoformat()
    inputs: dict[int, str] = {}
    skipped: list[int] = []
    skipped_rows = 0
    todo = rows.contact_rows
    key = task.key
    if key is not None and not rows.fingerprints_trusted(task.today):
        # Rows were caught up for a later day (a clock set back): plan everyone.
        key = None
    if key is not None:
        prints = rows.prints
        todo = []
        for r in rows.contact_rows:
            cid = r[0]
            digest = inputs[cid] = input_digest(r, grouped, key)
            column = prints.get(cid)
            if inputs_unchanged(column, digest, today_iso):
                skipped.append(cid)
                skipped_rows += stored_rows(column)
            else:
                todo.append(r)
    data, _, taken = build_contacts([contact_from_row(r) for r in todo], grouped, plan_rows=False)
    plans = plan_all(ctx, campaigns, data, task.today)
    options = task.options
    if ctx.send_in_contact_timezone:
        options = replace(options, timezones=timezones(ctx, data))
    return prepare(rows.scope, plans, taken, options, inputs, skipped, skipped_rows)


@dataclass(frozen=True, slots=True)
class RangeTask:
    """One chunk for a planning process to read and plan: the id range, the
    history cut-offs, and what :class:`Task` has besides the rows."""

    scope: Scope
    since: date | None
    engagement_since: date | None
    today: date
    key: bytes | None
    options: WriteOptions


@dataclass(frozen=True, slots=True)
class Clean:
    """A chunk whose writing can change nothing (every contact's inputs are
    unchanged, nothing to delete): its contacts and their plan rows."""

    scope: Scope
    contacts: int
    skipped_rows: int


Outcome = Clean | tuple[ChunkRows, Prepared]
"""A planned chunk: clean, or its rows (without the related rows) and plans to write."""


def settle(rows: ChunkRows, prepared: Prepared) -> Outcome:
    """Whether the chunk needs writing: :class:`Clean`, or what the write needs."""
    if not rows.needs_write(prepared.states):
        return Clean(rows.scope, len(rows.contact_rows), prepared.skipped_rows)
    return replace(rows, related=RelatedRows()), prepared


def write_slices(
    rows: ChunkRows, prepared: Prepared, size: int
) -> list[tuple[ChunkRows, Prepared]]:
    """A chunk to write cut into consecutive id ranges, each with at most
    ``size`` planned contacts (one write transaction each); together they
    cover the chunk's range. Contacts left unplanned cost the writer
    nothing, so they do not count."""
    scope = rows.scope
    planned = sorted(prepared.states)
    if scope.ids is not None or len(planned) <= max(1, size):
        return [(rows, prepared)]
    ends = planned[size - 1 :: size]
    if ends[-1] == planned[-1]:
        ends.pop()
    ends.append(scope.hi)
    out: list[tuple[ChunkRows, Prepared]] = []
    lo = scope.lo
    for hi in ends:
        out.append(_part(rows, prepared, Scope.of_range(lo, hi), first=not out))
        lo = hi + 1
    return out


def split_slice(
    rows: ChunkRows, prepared: Prepared, size: int
) -> tuple[tuple[ChunkRows, Prepared], tuple[ChunkRows, Prepared] | None]:
    """A chunk to write cut in two consecutive id ranges: the first with
    ``size`` planned contacts, the second with the rest (None when there
    is no rest to cut off)."""
    scope = rows.scope
    planned = sorted(prepared.states)
    if scope.ids is not None or len(planned) <= max(1, size):
        return (rows, prepared), None
    cut = planned[max(1, size) - 1]
    head = _part(rows, prepared, Scope.of_range(scope.lo, cut), first=True)
    tail = _part(rows, prepared, Scope.of_range(cut + 1, scope.hi), first=False)
    return head, tail


def _part(
    rows: ChunkRows, prepared: Prepared, part: Scope, *, first: bool
) -> tuple[ChunkRows, Prepared]:
    """The share of a chunk to write in the id range ``part``; the skipped
    rows' count goes with the first share."""
    inside = part.contains
    part_rows = replace(
        rows,
        scope=part,
        contact_rows=[r for r in rows.contact_rows if inside(r[0])],
        related=RelatedRows(),
        prints={c: p for c, p in rows.prints.items() if inside(c)},
    )
    part_prepared = replace(
        prepared,
        scope=part,
        entries={c: e for c, e in prepared.entries.items() if inside(c)},
        prints={c: p for c, p in prepared.prints.items() if inside(c)},
        states={c: s for c, s in prepared.states.items() if inside(c)},
        skipped={c for c in prepared.skipped if inside(c)},
        skipped_rows=prepared.skipped_rows if first else 0,
    )
    return part_rows, part_prepared


# -- worker processes -------------------------------------------------------

_WORKER: tuple[PlanContext, Campaigns, ChunkSource | None] | None = None
"""The context, campaigns and chunk source of this worker process (set once
by its initializer; a worker plans for one pass only)."""

_READER: RangeReader | None = None
"""This worker's connection for reading chunks (opened on first use)."""


WORKER_NICENESS = 10
"""How much lower a planning process's CPU priority is than its parent's.
The parent holds the write lock while it writes what they planned; on two
cores two planning processes and the writing one compete for the CPU, and
a writer preempted while it holds the lock keeps every upstream writer
waiting meanwhile (SPEC 12: p99 50 ms). Planning is throughput work."""


def _init_worker(ctx: PlanContext, campaigns: Campaigns, source: ChunkSource | None) -> None:
    global _WORKER
    _WORKER = (ctx, campaigns, source)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


def _worker() -> tuple[PlanContext, Campaigns, ChunkSource | None]:
    if _WORKER is None:
        raise RuntimeError("planning worker not initialised")
    return _WORKER


def _plan_in_worker(task: Task) -> Prepared:
    ctx, campaigns, _ = _worker()
    return plan_chunk(ctx, campaigns, task)


def _read_and_plan_in_worker(task: RangeTask) -> Outcome | None:
    """Read the chunk on this worker's own connection and plan it; None when
    SQLite would not read it (the pass then reads it the store's way, which
    copes with text that is not UTF-8 and reports errors properly)."""
    global _READER
    ctx, campaigns, source = _worker()
    if source is None:
        return None
    try:
        if _READER is None:
            _READER = RangeReader(source)
        rows = _READER.read_range(task.scope, task.since, task.engagement_since)
    except sqlite3.Error:
        if _READER is not None:
            _READER.close()
            _READER = None
        return None
    return settle(rows, plan_chunk(ctx, campaigns, Task(rows, task.today, task.key, task.options)))


class Planner:
    """Plans chunks in this process, or in ``workers`` processes.

    Use as an async context manager; :meth:`submit` returns an awaitable of
    the chunk's :class:`Prepared`. In this process the work happens when it
    is awaited, so the event loop is not held while a read is due.
    """

    def __init__(
        self,
        ctx: PlanContext,
        campaigns: Campaigns,
        workers: int,
        source: ChunkSource | None = None,
    ) -> None:
        self.ctx, self.campaigns = ctx, campaigns
        self.workers = max(0, workers)
        self.source = source
        self._pool: Executor | None = None

    async def __aenter__(self) -> Planner:
        if self.workers > 0:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.ctx, self.campaigns, self.source),
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @property
    def reads(self) -> bool:
        """Whether the workers read their chunks themselves (:meth:`read_and_plan`)."""
        return self._pool is not None and self.source is not None

    @property
    def depth(self) -> int:
        """How many chunks to keep in flight: two per worker when they read
        (one being read and planned, one waiting), else one more than the
        workers."""
        if self._pool is None:
            return 1
        return 2 * self.workers if self.source is not None else self.workers + 1

    async def plan_here(self, task: Task) -> Prepared:
        """Plan a chunk in this process (inside a write transaction)."""
        return plan_chunk(self.ctx, self.campaigns, task)

    def read_and_plan(self, task: RangeTask) -> Awaitable[Outcome | None]:
        """A worker reads the chunk on its own connection and plans it
        (only when :attr:`reads`): nothing but the outcome travels back."""
        if self._pool is None:
            raise RuntimeError("read_and_plan needs the pool")
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, _read_and_plan_in_worker, task)

    def submit(self, task: Task) -> Awaitable[Prepared]:
        if self._pool is None:
            return _now(self.ctx, self.campaigns, task)
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, _plan_in_worker, task)


async def _now(ctx: PlanContext, campaigns: Campaigns, task: Task) -> Prepared:
    return plan_chunk(ctx, campaigns, task)
