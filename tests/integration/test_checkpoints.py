"""WAL checkpoints outside the daemon's commits (service.daemon.checkpoints)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from service.daemon.checkpoints import keep_wal_short
from service.store import SqliteStore
from service.store.checkpoint import Checkpointer


def _wal_frames(db_path: Path) -> tuple[int, int]:
    """(frames in the log, frames copied back) by a passive checkpoint from
    a connection of the test's own."""
    con = sqlite3.connect(db_path, isolation_level=None)
    try:
        _busy, log, done = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(log), int(done)
    finally:
        con.close()


async def _write_rows(store: SqliteStore, n: int, fill: str = "x") -> None:
    # A different value each round: SQLite writes no page for a row
    # rewritten with what it already holds.
    for k in range(n):
        async with store.transaction():
            await store.set_state(f"test_key_{k}", fill * 3000)


@pytest.mark.parametrize("pages", [0, 2])
async def test_daemon_commits_do_not_checkpoint(
    store: SqliteStore, db_path: Path, pages: int
) -> None:
    # 30 commits of about a page each (3 kB of state). With automatic
    # checkpoints every 2 pages, commits copy the log back and it starts over:
    # fewer than 30 frames are in it at the end. Switched off (the daemon),
    # every commit's frames stay until someone else checkpoints.
    await store.set_wal_autocheckpoint(pages)
    await _write_rows(store, 30)
    rows = await store.fetch_each([("get_state", ("test_key_29",)), ("get_state", ("none",))])
    assert rows == [[("x" * 3000,)], []]
    log, done = _wal_frames(db_path)
    if pages == 0:
        assert log >= 30
    else:
        assert log < 30
    assert done == log


@pytest.mark.parametrize("checkpointer", [True, False])
async def test_keep_wal_short_checkpoints_on_its_own_connection(
    store: SqliteStore, db_path: Path, checkpointer: bool
) -> None:
    # Once the log has been copied back completely, the next commit starts it
    # over from its first frame: the -wal file stops growing. Without anyone
    # checkpointing (the daemon's connection does not), it grows with every
    # commit. Nothing here checkpoints but the task under test.
    wal = db_path.with_name(db_path.name + "-wal")
    await store.set_wal_autocheckpoint(0)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        if checkpointer:
            tg.start_soon(keep_wal_short, store, db_path, stop, 0.05)
        await _write_rows(store, 20)
        first = wal.stat().st_size
        await anyio.sleep(0.5)
        await _write_rows(store, 20, "y")
        second = wal.stat().st_size
        stop.set()
    if checkpointer:
        assert second <= first
    else:
        assert second > first


def test_checkpointer_counts_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA wal_autocheckpoint = 0")
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    ckpt = Checkpointer(path)
    assert ckpt.checkpoint() > 0
    assert ckpt.checkpoints == 1
    # Nothing new in the log: nothing copied, no checkpoint counted.
    assert ckpt.checkpoint() == 0
    assert ckpt.checkpoints == 1
    ckpt.close()
    # Closed for good: a late call from the thread does nothing.
    assert ckpt.checkpoint() == 0
    con.close()


@pytest.mark.parametrize("pages", [0, 1000])
async def test_set_wal_autocheckpoint(store: SqliteStore, pages: int) -> None:
    await store.set_wal_autocheckpoint(pages)
    rows = await store.in_connection(
        lambda con: con.execute("PRAGMA wal_autocheckpoint").fetchall()
    )
    assert rows == [(pages,)]


async def test_set_cache_mib_sizes_this_connection_only(store: SqliteStore, db_path: Path) -> None:
    # SQLite's cache_size in KiB is given negated: 256 MiB = -(256 * 1024).
    await store.set_cache_mib(256)
    rows = await store.in_connection(lambda con: con.execute("PRAGMA cache_size").fetchall())
    assert rows == [(-262144,)]
    # Another connection keeps mailplan's default (PRAGMAS: -32768, 32 MiB).
    async with SqliteStore.open(db_path) as other:
        rows = await other.in_connection(lambda con: con.execute("PRAGMA cache_size").fetchall())
    assert rows == [(-32768,)]


def _upstream_writes(db_path: Path, n: int) -> None:
    """``n`` commits of about a page each on a connection of the test's own
    (an upstream writer: not the store's commits)."""
    con = sqlite3.connect(db_path, isolation_level=None)
    try:
        con.execute("PRAGMA wal_autocheckpoint = 0")
        con.execute("CREATE TABLE IF NOT EXISTS upstream_test (k INTEGER PRIMARY KEY, v TEXT)")
        for k in range(n):
            con.execute("INSERT INTO upstream_test (v) VALUES (?)", (str(k) * 3000,))
    finally:
        con.close()


@pytest.mark.parametrize("context", ["outside_lock", "beside"])
@pytest.mark.parametrize(
    "writes", ["store commits", "upstream commits and checkpoint_soon", "upstream commits only"]
)
async def test_each_commit_is_copied_back_before_the_next_tick(
    store: SqliteStore,
    db_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    context: str,
    writes: str,
) -> None:
    # The thread's tick made 10 s long: within the test only a kick can make
    # it checkpoint. Each of the store's own commits kicks it, and so does
    # checkpoint_soon; another connection's commits do not. 5 commits of ~1
    # page leave >= 5 frames in the log (no connection checkpoints by
    # itself: the store's automatic checkpoint is off, the test's too).
    monkeypatch.setattr("service.store.checkpoint.CHECKPOINT_EVERY_S", 10.0)
    await store.set_wal_autocheckpoint(0)
    if context == "outside_lock":
        inside = store.checkpoints_outside_lock()
    else:
        inside = store.checkpoints_beside()
    async with inside:
        if writes == "store commits":
            await _write_rows(store, 5)
        else:
            await anyio.to_thread.run_sync(_upstream_writes, db_path, 5)
            if writes == "upstream commits and checkpoint_soon":
                store.checkpoint_soon()
        thread = store._checkpoints
        assert thread is not None
        copied = 0
        with anyio.move_on_after(2.0 if writes != "upstream commits only" else 0.5):
            while copied == 0:
                await anyio.sleep(0.02)
                copied = thread.checkpointer.checkpoints
        if writes == "upstream commits only":
            assert thread.runs == 0
            assert copied == 0
        else:
            assert thread.runs >= 1
            assert copied >= 1
    assert store._checkpoints is None
    # Outside, there is no thread to wake: a commit and a kick are no-ops.
    async with store.transaction():
        await store.set_state("test_after", "y" * 3000)
    store.checkpoint_soon()
    log, done = _wal_frames(db_path)
    assert log >= 1
    assert done == log  # the test's own checkpoint copies whatever is left


@pytest.mark.parametrize("kicked", [True, False])
async def test_keep_wal_short_checkpoints_at_once_when_woken(
    store: SqliteStore, db_path: Path, kicked: bool
) -> None:
    # Its tick is 10 s: within the test only checkpoint_soon makes the
    # daemon's checkpoint task copy the first 5 commits back. A log copied
    # back completely starts over with the next commit, so 5 more commits
    # of the same size leave the -wal file as it was; without the wake-up
    # they are appended to it.
    wal = db_path.with_name(db_path.name + "-wal")
    await store.set_wal_autocheckpoint(0)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_wal_short, store, db_path, stop, 10.0)
        await anyio.sleep(0.05)
        await _write_rows(store, 5)
        first = wal.stat().st_size
        if kicked:
            store.checkpoint_soon()
        await anyio.sleep(0.5)
        await _write_rows(store, 5, fill="y")
        second = wal.stat().st_size
        stop.set()
    assert first > 0
    assert (second == first) == kicked


async def test_a_nested_checkpoint_thread_gives_the_outer_one_back(store: SqliteStore) -> None:
    async with store.checkpoints_beside():
        outer = store._checkpoints
        assert outer is not None
        async with store.checkpoints_beside():
            inner = store._checkpoints
            assert inner is not None and inner is not outer
        # The store's commits wake the outer thread again.
        assert store._checkpoints is outer
        assert store._after_commit == outer.kick
    assert store._checkpoints is None
    assert store._after_commit is None
