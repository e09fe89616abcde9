"""WAL checkpoints kept out of the daemon's commits.

SQLite's default makes the commit that takes the write-ahead log past 1,000
pages copy the log back into the database file before it returns
(``wal_autocheckpoint``). At a million contacts that copy touches pages all
over an 800 MB file and takes 0.1-1.5 s on a busy disk, during which the
daemon plans nothing: the next upstream change waits for it.

The daemon therefore turns automatic checkpoints off on its own connection
and runs passive checkpoints on a second connection of its own, in a worker
thread, every :data:`CHECKPOINT_EVERY_S` while the log has grown. A passive
checkpoint takes no lock that writers wait for: the daemon's batches and
upstream writers go on while it copies (SQLite serialises only checkpoints
with each other). Upstream connections keep their own automatic checkpoints;
with the log kept short they rarely reach them.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import structlog

from service.errors import StoreError
from service.store import Store
from service.store.checkpoint import Checkpointer

log = structlog.get_logger(__name__)

CHECKPOINT_EVERY_S = 1.0
"""How often the log is looked at (a passive checkpoint of an empty log costs
microseconds)."""


async def keep_wal_short(
    store: Store, path: Path, stop: anyio.Event, every: float = CHECKPOINT_EVERY_S
) -> None:
    """Until ``stop``, a connection of this task checkpoints every ``every``
    seconds; the caller has switched the automatic checkpoint of the
    daemon's connection off (``store.set_wal_autocheckpoint(0)``) before its
    worker started."""
    ckpt = Checkpointer(path)
    try:
        while not stop.is_set():
            # Also at once after a large commit (a staged chunk's,
            # store.checkpoint_soon): else the upstream writer that waited
            # for the lock copies its pages back in its own COMMIT.
            await _first_of(stop, store.checkpoint_wake(), every)
            if stop.is_set():
                break
            try:
                # Abandoned on cancellation: a stop does not wait for a
                # checkpoint (close() interrupts it).
                await anyio.to_thread.run_sync(ckpt.checkpoint, abandon_on_cancel=True)
            except StoreError as exc:
                # Busy with another checkpoint, or the file is gone: the
                # daemon's own checks handle a lost database; try again later.
                log.debug("wal_checkpoint_skipped", error=str(exc))
    finally:
        ckpt.close()


async def _first_of(a: anyio.Event, b: anyio.Event, seconds: float) -> None:
    """Until either event is set, at most ``seconds``."""
    with anyio.move_on_after(seconds):
        async with anyio.create_task_group() as tg:

            async def wait(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(wait, a)
            tg.start_soon(wait, b)
