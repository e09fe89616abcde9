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
import hashlib
import multiprocessing
import os
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


# -- worker processes -------------------------------------------------------

_WORKER: tuple[PlanContext, Campaigns] | None = None
"""The context and campaigns of this worker process (set once by its
initializer; a worker plans for one pass only)."""


def _init_worker(ctx: PlanContext, campaigns: Campaigns) -> None:
    global _WORKER
    _WORKER = (ctx, campaigns)


def _plan_in_worker(task: Task) -> Prepared:
    if _WORKER is None:
        raise RuntimeError("planning worker not initialised")
    ctx, campaigns = _WORKER
    return plan_chunk(ctx, campaigns, task)


class Planner:
    """Plans chunks in this process, or in ``workers`` processes.

    Use as an async context manager; :meth:`submit` returns an awaitable of
    the chunk's :class:`Prepared`. In this process the work happens when it
    is awaited, so the event loop is not held while a read is due.
    """

    def __init__(self, ctx: PlanContext, campaigns: Campaigns, workers: int) -> None:
        self.ctx, self.campaigns = ctx, campaigns
        self.workers = max(0, workers)
        self._pool: Executor | None = None

    async def __aenter__(self) -> Planner:
        if self.workers > 0:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.ctx, self.campaigns),
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @property
    def depth(self) -> int:
        """How many chunks to keep in flight: one more than the workers."""
        return self.workers + 1 if self._pool is not None else 1

    async def plan_here(self, task: Task) -> Prepared:
        """Plan a chunk in this process (inside a write transaction)."""
        return plan_chunk(self.ctx, self.campaigns, task)

    def submit(self, task: Task) -> Awaitable[Prepared]:
        if self._pool is None:
            return _now(self.ctx, self.campaigns, task)
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._pool, _plan_in_worker, task)


async def _now(ctx: PlanContext, campaigns: Campaigns, task: Task) -> Prepared:
    return plan_chunk(ctx, campaigns, task)
