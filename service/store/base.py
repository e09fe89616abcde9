"""The store's connection: opening, pragmas, transactions, small tables.

One :class:`StoreBase` owns one aiosqlite connection (its own thread). The
connection runs in autocommit mode; :meth:`StoreBase.transaction` opens an
explicit ``BEGIN IMMEDIATE`` so the write lock is taken up front (a deferred
transaction that reads first and writes later can fail with SQLITE_BUSY at the
first write, after work was done).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiosqlite
import anyio
import structlog

from service.errors import RecordRefused, StoreBusy, StoreError, StoreUnavailable
from service.store import sql
from service.store.handover import (
    SMALL_QUERIES,
    HandOver,
    Params,
    _all_rows,
    _last_row_id,
    _row_count,
    _row_count_many,
)

log = structlog.get_logger(__name__)


BUSY_TIMEOUT_MS = 5000
"""How long SQLite itself waits for a lock before reporting SQLITE_BUSY."""

WRITER_GAP_EVERY_S = 0.025
WRITER_GAP_S = 0.02
"""At most 25 ms of back-to-back write transactions (counting the next one,
as long as the last: :func:`gap_before_next`), then at least 20 ms
without the lock (longer after a longer streak: :func:`writer_gap_after`), so
that an upstream writer waiting in SQLite's busy handler gets in within
about 50 ms (see ``StoreBase._writer_gap``)."""

BUSY_HANDLER_DELAYS_MS = (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100)
"""The sleeps of SQLite's default busy handler (``sqlite3_busy_timeout``
with usleep) between a waiting writer's attempts; 100 ms from then on."""
GAP_MARGIN_S = 0.005

LONG_HOLD_S = 0.1
"""A hold of the write lock this long (from ``BEGIN IMMEDIATE`` to the end
of its commit) is logged (``write_lock_held``, with the code that let it
go): every upstream writer that came meanwhile waited as long (SPEC 12:
max 250 ms, p99 50 ms)."""


RECENT_HOLDS = 8
"""How many of the last transactions' holds predict the next one's."""

CONTENDED_S = 0.005
"""A wait for the lock this long at a transaction's start means another
writer held it a while, in the gap this store left (:class:`WriterGaps`):
past the store's retries at 1 and 3 ms, which a one-row commit rarely
outlasts."""


@dataclass(slots=True)
class WriterGaps:
    """When the next write transaction may take the lock (times in seconds,
    on any monotonic clock): the policy of ``StoreBase._writer_gap``.

    A writer that arrived at the start of a run of back-to-back transactions
    (short idles between them included) has retried at 1, 3, 8, 18, 33 ms and
    retries next at 53 ms: the run must end before ~33 ms, or it waits past
    50 ms. So the next transaction starts at once only when the lock has been
    free long enough already (:func:`writer_gap_after` of the run so far), or
    when the run stays under :data:`WRITER_GAP_EVERY_S` with it, counting it
    as long as the longest of the last :data:`RECENT_HOLDS` transactions;
    otherwise after that gap. Deciding on the run so far alone let a 20 ms
    transaction and a 5 ms pause be followed by another 20 ms one; counting
    the next one as long as the last one let a 10 ms transaction after 30 ms
    ones be followed, 4 ms later, by a 21 ms one: in both a writer that came
    at the start waited 53 ms."""

    last_begin: float = float("-inf")
    last_end: float = float("-inf")
    streak_start: float = float("-inf")
    holds: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_HOLDS))
    """The lengths of the last transactions' holds."""
    run_before_gap: float | None = None
    """The start of the run a gap was just left after (see :meth:`began`)."""

    def _next_hold(self) -> float:
        return max(self.holds, default=0.0)

    def left(self, now: float) -> float:
        """Seconds the next transaction would wait from ``now`` for its gap
        (what :meth:`wait_before` would return, without starting a run)."""
        idle = now - self.last_end
        streak = self.last_end - self.streak_start
        gap = writer_gap_after(streak)
        if idle >= gap or streak + self._next_hold() < WRITER_GAP_EVERY_S:
            return 0.0
        return gap - idle

    def wait_before(self, now: float) -> float:
        """Seconds to leave the lock free from ``now`` before the next
        transaction takes it."""
        idle = now - self.last_end
        streak = self.last_end - self.streak_start
        gap = writer_gap_after(streak)
        self.run_before_gap = None
        if idle >= gap:
            self.streak_start = now
            return 0.0
        if streak + self._next_hold() < WRITER_GAP_EVERY_S:
            return 0.0
        self.run_before_gap = self.streak_start
        self.streak_start = now + gap - idle
        return gap - idle

    def began(self, now: float, waited: float = 0.0) -> None:
        """A transaction took the lock at ``now``, after waiting ``waited``
        seconds for another writer.

        A long wait right after a gap means another writer took the gap: a
        writer that has waited since the run before it may still be waiting,
        now in one of the busy handler's longer sleeps (up to 100 ms). For
        it the lock has been busy all along, so the run goes on: the next
        gap is as long as that writer's sleep can be, not the shortest one."""
        self.last_begin = now
        if waited >= CONTENDED_S and self.run_before_gap is not None:
            self.streak_start = min(self.streak_start, self.run_before_gap)
        self.run_before_gap = None

    def ended(self, now: float) -> None:
        """The transaction that held the lock let it go at ``now``."""
        self.last_end = now
        self.holds.append(max(0.0, now - self.last_begin))


def writer_gap_after(streak_s: float) -> float:
    """How long to leave the lock free after holding it ``streak_s`` seconds
    (back to back) so that every writer that waited meanwhile retries inside
    the gap: the longest sleep of the busy handler that such a writer can be
    in, plus a margin; never less than :data:`WRITER_GAP_S`."""
    waited_ms, longest = 0.0, 0
    streak_ms = streak_s * 1000.0
    for delay in BUSY_HANDLER_DELAYS_MS:
        longest = max(longest, delay)
        waited_ms += delay
        if waited_ms >= streak_ms:
            break
    else:
        longest = BUSY_HANDLER_DELAYS_MS[-1]
    return max(WRITER_GAP_S, longest / 1000.0 + GAP_MARGIN_S)


SHORT_BUSY_TIMEOUT = "PRAGMA busy_timeout = 0"
"""The daemon does not wait inside SQLite (see ``use_short_lock_waits``)."""


def lock_retry_delay(attempt: int) -> float:
    """Seconds the daemon sleeps after its ``attempt``-th failed try for a
    lock another writer holds: the sleeps of SQLite's busy handler
    (:data:`BUSY_HANDLER_DELAYS_MS`), so the daemon tries no more eagerly
    than a waiting upstream writer (the gaps of other mailplan writers go to
    upstream as often as to the daemon), yet a lock held for a moment by an
    upstream commit costs it a millisecond or two, not a fixed 50 ms."""
    delays = BUSY_HANDLER_DELAYS_MS
    return delays[min(max(attempt, 1), len(delays)) - 1] / 1000.0


PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    # Off, as on every upstream connection by default: the original schema's
    # ON DELETE CASCADE from contacts to email_schedules would otherwise make a
    # contact deleted through mailplan (an inbox file) delete the sender's
    # history with it (I4). mailplan removes a deleted contact's plan rows itself.
    "PRAGMA foreign_keys = OFF",
    # Safe with WAL: a power loss may drop the last commits, never corrupt.
    "PRAGMA synchronous = NORMAL",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -32768",
)


_UNAVAILABLE = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_FULL",
                "SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_PERM")  # fmt: skip
"""Result codes (and their extended forms) of a database that is not usable
as it is now: waited for by the daemon rather than treated as a bug."""


PLAN_FINGERPRINT = "planning_fingerprint"
PLAN_SETTINGS = "plan_settings"
PLAN_FULL_DAY = "plan_full_day"
"""scheduler_state keys: the planning fingerprint and settings (JSON) the
stored plan follows, and the *today* of the full recompute under them (SPEC 4)."""

CATCHUP_THROUGH = "catchup_through"
"""scheduler_state key: the latest *today* for which the tick's catch-up move
moved plan rows (ISO). A stored fingerprint describes the rows as written,
and a move changes them without rewriting it; for a plan of a day on or
after every move the two can never be mistaken for each other (a moved
row's old desired date is before that day, and no plan of it has one), so
fingerprints are trusted only for such days (:func:`fingerprints_trusted`)."""


def fingerprints_trusted(moved_through: str | None, today: date | None) -> bool:
    """Whether a stored fingerprint (and the input digest stored with it)
    may stand for the stored rows in a plan of ``today``: no catch-up move
    was made for a later day (``moved_through``, :data:`CATCHUP_THROUGH`).
    After a clock set back they are not, until the calendar passes it."""
    if moved_through is None:
        return True
    return today is not None and today.isoformat() >= moved_through


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return True
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def translate(exc: sqlite3.Error, path: Path, what: str) -> StoreError:
    """The driver's error as one of mailplan's own (``service.errors``).

    Only the store sees ``sqlite3`` exceptions; everything above it handles
    :class:`StoreBusy` (retry soon), :class:`StoreUnavailable` (wait for the
    database), :class:`RecordRefused` (reject one record) or :class:`StoreError`.
    """
    name = getattr(exc, "sqlite_errorname", "") or ""
    if _is_busy(exc):
        return StoreBusy(f"database {path} is locked by another writer ({what}); retried later")
    if name.startswith(_UNAVAILABLE) or "readonly" in str(exc).lower():
        return StoreUnavailable(
            f"database {path} is not usable ({what}: {exc}); check that the file exists, "
            "is writable and its disk has room"
        )
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return RecordRefused(f"the database refused the record: {exc}")
    return StoreError(f"database {path}: {what} failed: {exc}")


def _is_decode_error(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "decode" in str(exc).lower()


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


@functools.lru_cache(maxsize=4096)
def _utc_send_instant(day: object, clock: object, zone: object) -> str | None:
    """SQL function ``mailplan_utc(date, time, zone)``: the UTC instant of a
    local send time (SPEC 4 ``send_in_contact_timezone``); NULL without a zone.
    Memoised: a statement moving many rows to one day asks for a few
    (time, zone) pairs again and again."""
    if not isinstance(zone, str) or not isinstance(day, str) or not isinstance(clock, str):
        return None
    try:
        local = datetime.combine(date.fromisoformat(day[:10]), time.fromisoformat(clock))
        instant = local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    except (ValueError, ZoneInfoNotFoundError):
        return None
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def _database_uri(path: Path, *, create: bool, readonly: bool) -> str:
    if not create and not path.exists():
        raise StoreUnavailable(
            f"database {path} does not exist; create it with `mailplan init-db --db {path}`"
        )
    mode = "ro" if readonly else ("rwc" if create else "rw")
    return f"{path.resolve().as_uri()}?mode={mode}"


_STORE_DIR = str(Path(__file__).parent) + os.sep


def _caller() -> str:
    """The code that let the write lock go: the first frame outside the store
    package and :mod:`contextlib` (e.g. the function whose ``async with
    store.transaction()`` ends, or the rebalance that commits part way)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and (
        frame.f_code.co_filename.startswith(_STORE_DIR)
        or frame.f_code.co_filename == contextlib.__file__
    ):
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{frame.f_globals.get('__name__', '?')}.{frame.f_code.co_qualname}"


def ids_param(ids: Iterable[int]) -> str:
    """A set of ids as the one JSON parameter the ``@ids`` queries take."""
    return json.dumps(sorted({int(i) for i in ids}))


def utc_now_text() -> str:
    """Now in UTC as SQLite's ``datetime('now')`` writes it (``updated_at``)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


class StoreBase(HandOver):
    """Connection, transactions, events, runs and key/value state."""

    BEGIN_ATTEMPTS = 6
    BEGIN_BACKOFF_S = 0.05

    def __init__(self, db: aiosqlite.Connection, path: Path, carrier: str | None) -> None:
        HandOver.__init__(self, db)
        self.path = path
        self.carrier_column = carrier
        self._q = sql.queries(carrier)
        self._tx: str | None = None
        """None, "read" (a :meth:`snapshot`) or "write" (a :meth:`transaction`)."""
        self._short_waits = False
        self._waiting_for_lock = False
        self._writer_gaps = WriterGaps()
        self._locked_at: float | None = None
        """When the write lock held now was taken (``BEGIN IMMEDIATE``)."""
        self.last_commit_s = 0.0
        """How long this store's last COMMIT took (:meth:`held_s` says why it matters)."""
        self._lock_waited = 0.0
        """How long the last ``BEGIN IMMEDIATE`` waited for another writer."""
        self._after_commit: Callable[[], None] | None = None
        """Called after each successful COMMIT (a checkpoint thread's kick,
        :meth:`~service.store.checkpoint.CheckpointMixin.checkpoints_beside`)."""

    # -- connection ------------------------------------------------------

    @staticmethod
    async def connect(path: Path, *, create: bool, readonly: bool) -> aiosqlite.Connection:
        """Open the database file with mailplan's connection settings."""
        uri = _database_uri(path, create=create, readonly=readonly)
        try:
            # check_same_thread off: statements_inline runs statements on
            # the event loop's thread while the connection's own is idle.
            db = await aiosqlite.connect(
                uri, uri=True, isolation_level=None, cached_statements=256, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"cannot open database {path}: {exc}; check the path and its permissions"
            ) from exc
        try:
            for pragma in PRAGMAS:
                await db.execute(pragma)
            if not readonly:
                await db.execute("PRAGMA journal_mode = WAL")
            await db.create_function("mailplan_utc", 3, _utc_send_instant, deterministic=True)
        except sqlite3.Error as exc:
            await db.close()
            raise translate(exc, path, "opening") from exc
        return db

    async def close(self) -> None:
        try:
            await self._db.close()
        except sqlite3.Error as exc:
            log.warning("database_close_failed", path=str(self.path), error=str(exc))

    async def check_writable(self) -> None:
        """Raise :class:`StoreUnavailable` unless a write transaction can start
        (a read-only file or folder is found at start, not at the first batch)."""
        await self._begin("BEGIN IMMEDIATE")
        await self._rollback_quietly()

    # -- query helpers ---------------------------------------------------

    def query(self, name: str) -> str:
        return self._q[name]

    async def _rows(self, sql_text: str, params: Params) -> list[tuple[Any, ...]]:
        return await self.in_connection(_all_rows, sql_text, params)

    async def fetchall(self, name: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run a named query and return its rows as tuples.

        Text that is not valid UTF-8 (upstream wrote bytes) is read with
        replacement characters instead of failing the whole load, and the
        rows holding it are logged as malformed data (SPEC 13).
        """
        sql_text = self._q[name]
        try:
            try:
                with self._small(name in SMALL_QUERIES):
                    return await self._rows(sql_text, params)
            except sqlite3.OperationalError as exc:
                if not _is_decode_error(exc):
                    raise
            self._db.text_factory = _lenient_text
            try:
                rows = await self._rows(sql_text, params)
            finally:
                self._db.text_factory = str
        except sqlite3.Error as exc:
            raise translate(exc, self.path, f"query {name}") from exc
        bad = [r[0] for r in rows if any(isinstance(v, str) and "\ufffd" in v for v in r)]
        log.warning(
            "malformed_data_invalid_utf8", query=name, rows=len(bad), first_keys=bad[:20],
            action="read with replacement characters",
        )  # fmt: skip
        return rows

    async def fetchone(self, name: str, params: Params = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(name, params)
        return rows[0] if rows else None

    def _check_writable(self, what: str) -> None:
        # In a read snapshot a write would "succeed" and then vanish with the
        # snapshot's rollback: fail loudly instead.
        if self._tx == "read":
            raise StoreError(
                f"{what} writes inside a read snapshot; writes need store.transaction()"
            )

    async def run_sql(self, sql_text: str, params: Params = (), *, what: str) -> int:
        """Run one statement text built by the store itself; rows changed."""
        self._check_writable(what)
        if sql_text.lstrip()[:8].upper() == "ROLLBACK":
            # ROLLBACK TO a savepoint may undo writes of the state.
            self._state = None
        try:
            return await self.in_connection(_row_count, sql_text, params)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, what) from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            raise RecordRefused(f"the database cannot store the value: {exc}") from exc

    async def run_many(self, sql_text: str, rows: Iterable[Params], *, what: str) -> int:
        """Run one statement text once per parameter set; total rows changed."""
        self._check_writable(what)
        try:
            return await self.in_connection(_row_count_many, sql_text, rows)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, what) from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            raise RecordRefused(f"the database cannot store the value: {exc}") from exc

    async def execute(self, name: str, params: Params = ()) -> int:
        """Run a named statement; the number of rows it changed."""
        return await self.run_sql(self._q[name], params, what=f"statement {name}")

    async def executemany(self, name: str, rows: Iterable[Params]) -> int:
        """Run a named statement once per parameter set; total rows changed."""
        return await self.run_many(self._q[name], rows, what=f"statement {name}")

    async def execute_insert(self, name: str, params: Params = ()) -> int:
        self._check_writable(f"statement {name}")
        try:
            rowid = await self.in_connection(_last_row_id, self._q[name], params)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, f"statement {name}") from exc
        if rowid is None:
            raise StoreError(f"insert {name} returned no row id")
        return rowid

    # -- transactions ----------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        """Inside a transaction of either kind (reads are consistent)."""
        return self._tx is not None

    @property
    def in_write_transaction(self) -> bool:
        """Inside :meth:`transaction`: writes are allowed and commit together."""
        return self._tx == "write"

    @property
    def in_snapshot(self) -> bool:
        """Inside a read :meth:`snapshot` (and not a write transaction): writes fail."""
        return self._tx == "read"

    async def use_short_lock_waits(self) -> None:
        """Wait for another writer's lock in cancellable steps (the daemon).

        SQLite's busy handler cannot be interrupted: a stop request would
        wait out the whole busy timeout. Here the same total wait is spent in
        cancellable sleeps between attempts that do not wait in SQLite.
        """
        await self.run_sql(SHORT_BUSY_TIMEOUT, what="busy timeout")
        self._short_waits = True

    async def set_wal_autocheckpoint(self, pages: int) -> None:
        """``PRAGMA wal_autocheckpoint``: SQLite's default (1000 pages) makes
        the commit that crosses it copy the WAL into the database before it
        returns, which can take a second at a million contacts. (A PRAGMA
        takes no parameter: its value is formatted as an integer, as
        ``user_version`` is.)"""
        await self.run_sql(f"PRAGMA wal_autocheckpoint = {int(pages):d}", what="wal_autocheckpoint")

    async def set_cache_mib(self, mib: int) -> None:
        """``PRAGMA cache_size`` of this connection, in MiB (formatted as an
        integer, as ``wal_autocheckpoint``)."""
        await self.run_sql(f"PRAGMA cache_size = {-1024 * int(mib):d}", what="cache_size")

    @property
    def waiting_for_lock(self) -> bool:
        """A transaction is waiting for another writer's lock (nothing of ours is open)."""
        return self._waiting_for_lock

    async def _begin(self, statement: str, *, read_state: bool = False) -> None:
        self._waiting_for_lock = True
        asked = anyio.current_time()
        try:
            if self._short_waits:
                rows = await self._begin_in_steps(statement, read_state)
            else:
                rows = await self._begin_in_attempts(statement, read_state)
        finally:
            self._waiting_for_lock = False
        if rows is not None:
            self._state = {str(k): str(v) for k, v in rows if v is not None}
        if statement == "BEGIN IMMEDIATE":
            self._locked_at = anyio.current_time()
            self._lock_waited = self._locked_at - asked

    async def _begin_in_steps(
        self, statement: str, read_state: bool
    ) -> list[tuple[Any, ...]] | None:
        deadline = anyio.current_time() + BUSY_TIMEOUT_MS / 1000
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._begin_once(statement, read_state)
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    raise translate(exc, self.path, "starting a transaction") from exc
                if anyio.current_time() >= deadline:
                    raise StoreBusy(
                        f"database {self.path} stayed locked by another writer for "
                        f"{BUSY_TIMEOUT_MS} ms ({attempt} attempts); it will be retried"
                    ) from exc
            await anyio.sleep(lock_retry_delay(attempt))

    async def _begin_in_attempts(
        self, statement: str, read_state: bool
    ) -> list[tuple[Any, ...]] | None:
        delay = self.BEGIN_BACKOFF_S
        for attempt in range(1, self.BEGIN_ATTEMPTS + 1):
            try:
                return await self._begin_once(statement, read_state)
            except sqlite3.Error as exc:
                if not _is_busy(exc) or attempt == self.BEGIN_ATTEMPTS:
                    if _is_busy(exc):
                        raise StoreBusy(
                            f"database {self.path} stayed locked by another writer "
                            f"({attempt} attempts); it will be retried"
                        ) from exc
                    raise translate(exc, self.path, "starting a transaction") from exc
                log.info("database_busy_retry", attempt=attempt, delay_s=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise StoreBusy(f"database {self.path}: no attempt to start a transaction was made")

    async def _end(self, statement: str) -> None:
        self._state = None
        if statement != "COMMIT":
            self._deferred = []
        inline, self._inline_tx = self._inline_tx, False
        started = anyio.current_time()
        try:
            with anyio.CancelScope(shield=True), self.statements_inline(inline or self._inline):
                await self.in_connection(_row_count, statement, ())
        finally:
            if statement == "COMMIT":
                self.last_commit_s = anyio.current_time() - started
            self._lock_released()
        if statement == "COMMIT" and self._after_commit is not None:
            self._after_commit()

    def held_s(self) -> float:
        """Seconds this store has held the write lock in the open transaction
        (0 without one). Its COMMIT adds to that: writing back rows spread
        over the table (a rebalance's moves) costs a log frame per page
        touched, at 1M contacts twice as long as the statements that touched
        them (:attr:`last_commit_s`)."""
        if self._locked_at is None:
            return 0.0
        return anyio.current_time() - self._locked_at

    def _lock_released(self) -> None:
        """The write lock taken by the last ``BEGIN IMMEDIATE`` (if any) is
        let go: a hold of :data:`LONG_HOLD_S` or more is logged with the
        code that held it."""
        locked_at, self._locked_at = self._locked_at, None
        if locked_at is None:
            return
        held = anyio.current_time() - locked_at
        if held >= LONG_HOLD_S:
            # Every upstream writer that came meanwhile waited as long (SPEC 12).
            log.info("write_lock_held", ms=round(held * 1000), by=_caller())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A write transaction (``BEGIN IMMEDIATE``), committed on success.

        Taking the lock is retried with backoff while another writer holds it.
        Any error inside rolls everything back; SQLite errors are raised as
        :class:`StoreError` (:class:`StoreBusy` for a lock).
        """
        if self._tx is not None:
            raise StoreError(f"a {self._tx} transaction is already open on this store")
        await self._writer_gap()
        await self._begin("BEGIN IMMEDIATE", read_state=True)
        self._writer_gaps.began(anyio.current_time(), self._lock_waited)
        self._tx = "write"
        try:
            yield
        except BaseException as exc:
            await self._rollback_quietly()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc, self.path, "a transaction (rolled back)") from exc
            raise
        else:
            try:
                await self._end("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback_quietly()
                raise translate(exc, self.path, "commit") from exc
        finally:
            self._tx = None
            self._state = None
            self._deferred = []
            self._inline_tx = False
            self._writer_gaps.ended(anyio.current_time())

    async def _writer_gap(self) -> None:
        """Leave upstream writers a gap in a run of back-to-back transactions.

        SQLite's lock is not fair: a writer waiting in its busy handler
        sleeps 1, 2, 5, 10, 15, 20, 25 ... 100 ms between attempts and can
        miss every gap between our transactions until its busy timeout
        refuses it. Once a run of our transactions would last
        ``WRITER_GAP_EVERY_S`` with the next one (:class:`WriterGaps`), the
        next one starts only after a gap as long as the longest sleep such a
        writer can be in (:func:`writer_gap_after`), so its next attempt
        falls inside the gap. Every writer of mailplan
        (the daemon's batches and chunks, ``recompute``, the tick) goes
        through here.
        """
        wait = self._writer_gaps.wait_before(anyio.current_time())
        if wait > 0:
            await anyio.sleep(wait)

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        """A read transaction: every read inside sees one consistent state.

        Inside a write transaction it is that transaction. Writes inside a
        snapshot raise :class:`StoreError` (they would be rolled back).
        """
        if self._tx is not None:
            yield
            return
        await self._begin("BEGIN DEFERRED")
        self._tx = "read"
        try:
            yield
        finally:
            self._tx = None
            await self._rollback_quietly()

    async def _rollback_quietly(self) -> None:
        try:
            await self._end("ROLLBACK")
        except (sqlite3.Error, ValueError) as exc:
            # Nothing to roll back (SQLite already did, e.g. after SQLITE_FULL).
            log.debug("rollback_skipped", reason=str(exc))

    async def data_version(self) -> int:
        """``PRAGMA data_version``: changes when another connection commits."""
        try:
            with self._small(True):
                rows = await self._rows("PRAGMA data_version", ())
        except sqlite3.Error as exc:
            raise translate(exc, self.path, "reading data_version") from exc
        return int(rows[0][0])
