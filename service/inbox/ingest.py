"""Spool-folder ingestion of contact files (SPEC 8.2).

Upstream writes a file under a temporary name (a dotfile, ``*.tmp``,
``*.part``) and renames it into the inbox folder. Each finished ``*.ndjson`` or
``*.csv`` file is validated (``service.inbox.records``), its valid records are
applied to ``contacts`` in one transaction (the capture triggers turn them into
events like any upstream write), its invalid records are listed in
``rejected/<file>.ndjson`` with line number and reason, and the file moves to
``done/``.

A file is identified by what it holds, never by its name alone:

1. it is first *claimed*: renamed into ``.processing/`` (a rename never
   follows a symbolic link and never mixes two files of one name: a second
   ``contacts.ndjson`` dropped meanwhile waits in the inbox for its own turn);
2. it is read from there once; its SHA-256 is the identity of what is applied;
3. the rejection list is written to a temporary file and synced;
4. in the transaction that writes the contacts, the claimed name and the
   digest are recorded in ``scheduler_state`` (a durable commit);
5. the rejection list is renamed into place, the claimed file (if it still
   has that digest) moves to ``done/``, and the record is dropped.

After a crash, a claimed file whose digest is recorded is not applied again
(only step 5 is finished); one without a record is applied from
``.processing/``. Entries that cannot be applied at all (a symbolic link, a
directory, a file that cannot be read or parsed) are moved whole to
``rejected/`` with a reason, so they never hold up the files behind them.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import structlog

from service.errors import ConfigError
from service.inbox.records import (
    ContactColumns,
    Delete,
    InboxLimits,
    Operation,
    Parsed,
    Rejection,
    parse_bytes,
    pending_files,
    too_large,
)
from service.store import SqliteStore
from service.store.contacts_in import ContactWrite, upsert_sql

log = structlog.get_logger(__name__)

APPLIED_KEY = "inbox_applied"
"""scheduler_state key: JSON object, claimed file name -> SHA-256, of files
applied but not yet moved to ``done/``."""

PROCESSING = ".processing"
"""Subfolder holding claimed files (hidden: never a candidate itself)."""


@dataclass(frozen=True, slots=True)
class FileOutcome:
    """What happened to one inbox file."""

    name: str
    applied: int
    deleted: int
    rejected: int
    already_applied: bool = False
    quarantined: bool = False


def _unique(path: Path) -> Path:
    """``path``, or ``stem.N.suffix`` for the first N that is free."""
    if not path.exists() and not path.is_symlink():
        return path
    n = 1
    while True:
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
        n += 1


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_rejections(path: Path, name: str, rejected: Sequence[Rejection]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for rejection in rejected:
            fh.write(rejection.as_json(name) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _digest_of(path: Path, limit: int) -> tuple[str, bytes | None]:
    """(SHA-256, content or ``None`` above ``limit`` bytes) of a regular file,
    read without following a symbolic link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(f"{path.name} is not a regular file")
        if info.st_size > limit:
            digest = hashlib.sha256()
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
            return digest.hexdigest(), None
        data = fh.read()
    return hashlib.sha256(data).hexdigest(), data


def check_inbox_path(directory: Path) -> None:
    """Raise :class:`ConfigError` unless ``directory`` can serve as the inbox:
    an existing folder (or one that can be created) the daemon may write."""
    try:
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"--inbox {directory}: not a folder; give the path of a folder")
        directory.mkdir(parents=True, exist_ok=True)
        for sub in ("done", "rejected", PROCESSING):
            (directory / sub).mkdir(exist_ok=True)
        probe = directory / PROCESSING / f".probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"--inbox {directory}: cannot use the folder ({exc.strerror or exc}); "
            "the daemon must be able to create and move files in it"
        ) from exc


class Inbox:
    """One inbox folder feeding one store.

    The caller serialises calls with its other database work: the store has a
    single connection and one transaction at a time.
    """

    def __init__(
        self, directory: Path, store: SqliteStore, limits: InboxLimits | None = None
    ) -> None:
        self.directory = directory
        self.done = directory / "done"
        self.rejected = directory / "rejected"
        self.processing = directory / PROCESSING
        self.store = store
        self.limits = limits or InboxLimits()

    def prepare(self) -> None:
        """Create the folder and its ``done/``, ``rejected/`` and ``.processing/``."""
        for folder in (self.directory, self.done, self.rejected, self.processing):
            folder.mkdir(parents=True, exist_ok=True)

    async def _columns(self) -> ContactColumns:
        return ContactColumns.from_table_info(await self.store.contact_columns())

    async def _applied(self) -> dict[str, str]:
        raw = await self.store.get_state(APPLIED_KEY)
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("inbox_state_unreadable", key=APPLIED_KEY)
            return {}
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    async def _set_applied(self, applied: dict[str, str]) -> None:
        if applied:
            await self.store.set_state(APPLIED_KEY, json.dumps(applied, sort_keys=True))
        else:
            await self.store.delete_state(APPLIED_KEY)

    def _pending_rejections(self, name: str) -> Path:
        return self.rejected / f".{name}.ndjson.tmp"

    def _claimed(self) -> list[Path]:
        try:
            return sorted(p for p in self.processing.iterdir() if not p.name.startswith("."))
        except FileNotFoundError:
            return []

    async def recover(self) -> None:
        """Finish or apply files a crash left claimed; forget stale records."""
        await self._work_off_claimed()
        applied = await self._applied()
        for name in sorted(applied):
            if not (self.processing / name).exists():
                await self._forget(name)

    async def process_pending(self) -> list[FileOutcome]:
        """Ingest every claimed file, then every finished entry, in name order.

        A file that cannot be applied is rejected whole; only a database that
        is not usable right now (a :class:`StoreError`) ends the pass, leaving
        the file claimed for the next one.
        """
        outcomes = await self._work_off_claimed()
        for path in await anyio.to_thread.run_sync(pending_files, self.directory):
            outcome = await self.ingest(path)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def _work_off_claimed(self) -> list[FileOutcome]:
        outcomes = []
        for work in await anyio.to_thread.run_sync(self._claimed):
            outcome = await self._ingest_claimed(work)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def ingest(self, path: Path) -> FileOutcome | None:
        """Claim and apply one inbox entry; ``None`` if it vanished first."""
        claimed = await anyio.to_thread.run_sync(self._claim, path)
        if isinstance(claimed, FileOutcome) or claimed is None:
            return claimed
        return await self._ingest_claimed(claimed)

    def _claim(self, path: Path) -> Path | FileOutcome | None:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return self._quarantine(
                path, "a symbolic link: the inbox takes regular files only, the link was not "
                "followed; drop the file itself (written under a temporary name, renamed in)",
            )  # fmt: skip
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            return self._quarantine(path, f"{kind}: the inbox takes regular files only")
        work = _unique(self.processing / path.name)
        try:
            os.rename(path, work)
        except FileNotFoundError:
            return None
        _fsync_dir(self.processing)
        return work

    def _quarantine(self, path: Path, reason: str) -> FileOutcome | None:
        """Move an entry that cannot be applied whole to ``rejected/``, with its reason."""
        name = path.name
        target = _unique(self.rejected / name)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return None
        _write_rejections(_unique(self.rejected / f"{name}.ndjson"), name, [Rejection(0, reason)])
        _fsync_dir(self.rejected)
        log.error("inbox_file_rejected", file=name, reason=reason, moved_to=str(target))
        return FileOutcome(name, 0, 0, 1, quarantined=True)

    async def _ingest_claimed(self, work: Path) -> FileOutcome | None:
        name = work.name
        try:
            digest, data = await anyio.to_thread.run_sync(
                _digest_of, work, self.limits.max_file_bytes
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            reason = f"cannot read the file: {exc.strerror or exc}"
            return await anyio.to_thread.run_sync(self._quarantine, work, reason)
        if (await self._applied()).get(name) == digest:
            await self._finish(name, digest)
            return FileOutcome(name, 0, 0, 0, already_applied=True)
        columns = await self._columns()
        try:
            parsed = (
                too_large(os.stat(work).st_size, self.limits)
                if data is None
                else await anyio.to_thread.run_sync(parse_bytes, name, data, columns, self.limits)
            )
        except Exception as exc:  # a file no rule foresaw: rejected, never blocking
            log.exception("inbox_file_unreadable", file=name, error=str(exc))
            reason = f"the file could not be read as {work.suffix[1:]}: {type(exc).__name__}"
            return await anyio.to_thread.run_sync(self._quarantine, work, reason)
        outcome = await self._apply_file(name, digest, parsed, columns)
        await self._finish(name, digest)
        log.info(
            "inbox_file_applied",
            file=name,
            upserted=outcome.applied,
            deleted=outcome.deleted,
            rejected=outcome.rejected,
        )
        return outcome

    async def _apply_file(
        self, name: str, digest: str, parsed: Parsed, columns: ContactColumns
    ) -> FileOutcome:
        tmp = self._pending_rejections(name)
        async with self.store.durable_transaction():
            if (await self._applied()).get(name) == digest:
                return FileOutcome(name, 0, 0, 0, already_applied=True)
            upserted, deleted, refused = await self._apply(parsed.operations, columns)
            rejected = sorted([*parsed.rejected, *refused], key=lambda r: r.line)
            for rejection in rejected:
                log.warning("inbox_record_rejected", file=name, line=rejection.line,
                            reason=rejection.reason)  # fmt: skip
            if rejected:
                await anyio.to_thread.run_sync(_write_rejections, tmp, name, rejected)
            else:
                tmp.unlink(missing_ok=True)
            applied = await self._applied()
            applied[name] = digest
            await self._set_applied(applied)
        return FileOutcome(name, upserted, deleted, len(rejected))

    async def _apply(
        self, operations: Sequence[Operation], columns: ContactColumns
    ) -> tuple[int, int, list[Rejection]]:
        """Write the operations; (upserts, deletes, records the database refused)."""
        pk = next((c.name for c in columns.columns if c.pk), "id")
        writes = [
            ContactWrite(op.line, op.contact_id, None if isinstance(op, Delete) else op.values)
            for op in operations
        ]
        upserted, deleted, refused = await self.store.write_contacts(writes, pk)
        return upserted, deleted, [Rejection(line, reason) for line, reason in refused]

    async def _finish(self, name: str, digest: str) -> None:
        """Step 5: rejection list into place, the applied file to ``done/``,
        the record dropped. A file of that name with other content is not the
        one applied: it stays claimed and is applied on its own."""

        def move() -> None:
            tmp = self._pending_rejections(name)
            if tmp.exists():
                os.replace(tmp, _unique(self.rejected / f"{name}.ndjson"))
                _fsync_dir(self.rejected)
            source = self.processing / name
            try:
                same = _digest_of(source, self.limits.max_file_bytes)[0] == digest
            except OSError:
                same = False
            if same:
                os.replace(source, _unique(self.done / name))
                _fsync_dir(self.done)
                _fsync_dir(self.processing)
            elif source.exists():
                log.warning("inbox_file_changed_after_apply", file=name)

        await anyio.to_thread.run_sync(move)
        await self._forget(name)

    async def _forget(self, name: str) -> None:
        async with self.store.transaction():
            applied = await self._applied()
            if applied.pop(name, None) is not None:
                await self._set_applied(applied)


def is_inbox_change(directory: Path, path: str) -> bool:
    """watchfiles filter: a change directly inside the inbox (not done/, rejected/)."""
    return Path(path).parent == directory


__all__ = [
    "APPLIED_KEY",
    "FileOutcome",
    "Inbox",
    "InboxLimits",
    "check_inbox_path",
    "is_inbox_change",
    "upsert_sql",
]
