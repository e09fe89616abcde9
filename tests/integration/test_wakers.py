"""The database and inbox watcher (service.daemon.wakers.watch_folder): it
reports changes of the files its filter keeps, and while nothing happens it
waits on the kernel instead of polling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from watchfiles._rust_notify import RustNotify

from service.daemon import wakers


class CountingNotify:
    """watchfiles' watcher, counting the calls of its (polling) ``watch``."""

    calls = 0

    def __init__(self, *args: Any) -> None:
        self._inner = RustNotify(*args)

    def __enter__(self) -> CountingNotify:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.__exit__(*exc)

    def watch(self, *args: Any) -> Any:
        CountingNotify.calls += 1
        return self._inner.watch(*args)


class Seen(list[int]):
    """The changes reported, and an event set at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.first = anyio.Event()

    def report(self) -> None:
        self.append(1)
        self.first.set()


async def _watching(folder: Path, db: Path, seen: Seen, stop: anyio.Event) -> None:
    await wakers.watch_folder(folder, wakers.database_filter(db), seen.report, stop,
                              wakers.DB_STEP_MS, wakers.DB_HOT_STEP_MS)  # fmt: skip


async def _until(seen: Seen) -> None:
    with anyio.fail_after(5):
        await seen.first.wait()


async def test_a_write_to_the_log_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite3"
    seen = Seen()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watching, tmp_path, db, seen, stop)
        await anyio.sleep(0.2)
        (tmp_path / "org.sqlite3-wal").write_bytes(b"frame")
        await _until(seen)
        stop.set()
    assert seen


async def test_other_files_are_not_reported(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite3"
    seen = Seen()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watching, tmp_path, db, seen, stop)
        await anyio.sleep(0.2)
        # The -shm file and the heartbeat change without a commit.
        (tmp_path / "org.sqlite3-shm").write_bytes(b"index")
        (tmp_path / "org.sqlite3.heartbeat").write_text("beat")
        await anyio.sleep(0.3)
        assert seen == []
        db.write_bytes(b"page")
        await _until(seen)
        stop.set()


async def test_a_quiet_watcher_does_not_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Polling watchfiles' buffer every step was most of the idle daemon's CPU.
    # Quiet, the watcher waits on the kernel and calls watchfiles only after a
    # change: none at all in 1.5 s without one (one a second, or a hundred,
    # when it polled), and then it still reports the next change.
    monkeypatch.setattr(wakers, "RustNotify", CountingNotify)
    CountingNotify.calls = 0
    db = tmp_path / "org.sqlite3"
    seen = Seen()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watching, tmp_path, db, seen, stop)
        await anyio.sleep(1.5)
        assert CountingNotify.calls == 0
        (tmp_path / "org.sqlite3-wal").write_bytes(b"frame")
        await _until(seen)
        assert CountingNotify.calls >= 1
        stop.set()


async def test_without_inotify_it_polls_and_still_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable() -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(wakers, "INotify", unavailable)
    monkeypatch.setattr(wakers, "RustNotify", CountingNotify)
    CountingNotify.calls = 0
    db = tmp_path / "org.sqlite3"
    seen = Seen()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watching, tmp_path, db, seen, stop)
        await anyio.sleep(0.3)
        (tmp_path / "org.sqlite3-wal").write_bytes(b"frame")
        await _until(seen)
        stop.set()
    assert CountingNotify.calls >= 1


async def test_stop_ends_a_quiet_wait_at_once(tmp_path: Path) -> None:
    # A daemon told to stop does not wait for the quiet wait's 1 s limit
    # (WATCH_TIMEOUT_MS): the task group exits only once the watcher has.
    db = tmp_path / "org.sqlite3"
    stop = anyio.Event()
    with anyio.fail_after(0.2 + 0.6):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watching, tmp_path, db, Seen(), stop)
            await anyio.sleep(0.2)
            stop.set()
