"""Regressions of the inbox under hostile files (issue findings 3-6, 11; SPEC 8.2, 13, I4)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from service.inbox import ingest
from service.inbox.ingest import APPLIED_KEY, Inbox
from service.store import SqliteStore
from tests.integration.daemon_helpers import query


def sql(db_path: Path, text: str) -> None:
    con = sqlite3.connect(db_path, isolation_level=None)
    con.executescript(text)
    con.close()


def drop(folder: Path, name: str, content: bytes) -> Path:
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(content)
    final = folder / name
    tmp.rename(final)
    return final


def reasons(folder: Path, name: str) -> list[tuple[int, str]]:
    text = (folder / "rejected" / f"{name}.ndjson").read_text()
    return [(e["line"], e["reason"]) for e in map(json.loads, text.splitlines())]


def upsert(cid: int, email: str) -> bytes:
    return json.dumps({"op": "upsert", "contact": {"id": cid, "email": email}}).encode() + b"\n"


@pytest.fixture
async def inbox(store: SqliteStore, tmp_path: Path) -> Inbox:
    box = Inbox(tmp_path / "inbox", store)
    box.prepare()
    return box


async def test_an_inbox_delete_keeps_the_senders_history(inbox: Inbox, db_path: Path) -> None:
    """I4: the original schema cascades contacts -> email_schedules; a contact
    deleted through the inbox must not take its sent e-mails with it."""
    sql(db_path, """
        INSERT INTO contacts (id, email) VALUES (1, 'a@x.com');
        INSERT INTO email_schedules (contact_id, email_type, scheduled_send_date, status)
          VALUES (1, 'birthday', '2026-01-05', 'sent');
    """)  # fmt: skip
    drop(inbox.directory, "del.ndjson", b'{"op":"delete","id":1}\n')
    [outcome] = await inbox.process_pending()
    assert outcome.deleted == 1
    assert query(db_path, "SELECT count(*) FROM contacts") == [(0,)]
    assert query(db_path, "SELECT contact_id, status FROM email_schedules") == [(1, "sent")]


async def test_a_second_file_of_the_same_name_is_applied_not_moved(
    inbox: Inbox, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upstream drops contacts.ndjson again while the first is being applied:
    the second is a delivery of its own, applied after the first."""
    drop(inbox.directory, "contacts.ndjson", upsert(1, "first@x.com"))
    original = inbox._apply

    async def apply_while_upstream_drops_again(*args: Any) -> Any:
        drop(inbox.directory, "contacts.ndjson", upsert(2, "second@x.com"))
        monkeypatch.setattr(inbox, "_apply", original)
        return await original(*args)

    monkeypatch.setattr(inbox, "_apply", apply_while_upstream_drops_again)
    await inbox.process_pending()
    await inbox.process_pending()
    assert query(db_path, "SELECT id, email FROM contacts ORDER BY id") == [
        (1, "first@x.com"), (2, "second@x.com"),
    ]  # fmt: skip
    done = sorted(p.read_bytes() for p in (inbox.directory / "done").iterdir())
    assert done == sorted([upsert(1, "first@x.com"), upsert(2, "second@x.com")])
    assert not (inbox.directory / "contacts.ndjson").exists()


async def test_poison_lines_are_rejected_and_later_files_applied(
    inbox: Inbox, db_path: Path
) -> None:
    deep = b'{"op":"upsert","contact":' + b"[" * 30_000 + b"]" * 30_000 + b"}\n"
    drop(inbox.directory, "a.ndjson", deep + upsert(1, "a@x.com"))
    drop(inbox.directory, "b.ndjson", b'{"op":"upsert","contact":{"id":2,"email":"\\udcff"}}\n')
    drop(inbox.directory, "c.ndjson", upsert(3, "c@x.com"))
    with capture_logs() as logs:
        outcomes = await inbox.process_pending()
    assert [(o.name, o.applied, o.rejected) for o in outcomes] == [
        ("a.ndjson", 1, 1), ("b.ndjson", 0, 1), ("c.ndjson", 1, 0),
    ]  # fmt: skip
    assert reasons(inbox.directory, "a.ndjson") == [
        (1, "JSON nested too deeply (a contact record is one flat object)")
    ]
    assert reasons(inbox.directory, "b.ndjson") == [
        (1, "column 'email': text with a lone surrogate ('\\udcff')")
    ]
    assert query(db_path, "SELECT id FROM contacts ORDER BY id") == [(1,), (3,)]
    assert sorted(p.name for p in (inbox.directory / "done").iterdir()) == [
        "a.ndjson", "b.ndjson", "c.ndjson",
    ]  # fmt: skip
    logged = [(e["event"], e.get("line")) for e in logs if e["event"] == "inbox_record_rejected"]
    assert logged == [("inbox_record_rejected", 1), ("inbox_record_rejected", 1)]


async def test_an_unreadable_file_is_rejected_whole_and_does_not_block(
    inbox: Inbox, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop(inbox.directory, "locked.ndjson", upsert(1, "a@x.com"))
    drop(inbox.directory, "next.ndjson", upsert(2, "b@x.com"))
    real = ingest._digest_of

    def digest(path: Path, limit: int) -> tuple[str, bytes | None]:
        if path.name == "locked.ndjson":
            raise PermissionError(13, "Permission denied")
        return real(path, limit)

    monkeypatch.setattr(ingest, "_digest_of", digest)
    await inbox.process_pending()
    assert reasons(inbox.directory, "locked.ndjson") == [
        (0, "cannot read the file: Permission denied")
    ]
    assert (inbox.directory / "rejected" / "locked.ndjson").exists()
    assert query(db_path, "SELECT id FROM contacts") == [(2,)]
    # A second pass finds nothing left to do.
    assert await inbox.process_pending() == []


async def test_a_symlink_is_rejected_and_never_read(inbox: Inbox, tmp_path: Path) -> None:
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN PRIVATE KEY----- s3cr3t\n")
    (inbox.directory / "keys.ndjson").symlink_to(secret)
    (inbox.directory / "dangling.csv").symlink_to(tmp_path / "nothing-here")
    (inbox.directory / "folder.ndjson").mkdir()
    with capture_logs() as logs:
        outcomes = await inbox.process_pending()
    assert sorted((o.name, o.quarantined) for o in outcomes) == [
        ("dangling.csv", True), ("folder.ndjson", True), ("keys.ndjson", True),
    ]  # fmt: skip
    rejected = inbox.directory / "rejected"
    assert (rejected / "keys.ndjson").is_symlink()
    for entry in rejected.iterdir():
        if not entry.is_symlink() and entry.is_file():
            assert "s3cr3t" not in entry.read_text()
    [(line, reason)] = reasons(inbox.directory, "keys.ndjson")
    assert line == 0 and reason.startswith("a symbolic link: the inbox takes regular files only")
    assert reasons(inbox.directory, "folder.ndjson") == [
        (0, "a folder: the inbox takes regular files only")
    ]
    assert sorted(e["file"] for e in logs if e["event"] == "inbox_file_rejected") == [
        "dangling.csv", "folder.ndjson", "keys.ndjson",
    ]  # fmt: skip
    assert os.listdir(inbox.directory / "done") == []


async def test_a_claimed_file_left_by_a_crash_is_applied_once(
    inbox: Inbox, store: SqliteStore, db_path: Path
) -> None:
    """A crash after the claim and before the commit: applied on restart;
    a crash after the commit: moved on restart, not applied again."""
    (inbox.processing / "x.ndjson").write_bytes(upsert(1, "a@x.com"))
    await Inbox(inbox.directory, store).recover()
    assert query(db_path, "SELECT email FROM contacts") == [("a@x.com",)]
    applied_content = upsert(2, "b@x.com")
    (inbox.processing / "y.ndjson").write_bytes(applied_content)
    digest = hashlib.sha256(applied_content).hexdigest()
    async with store.transaction():
        await store.set_state(APPLIED_KEY, json.dumps({"y.ndjson": digest}))
    await Inbox(inbox.directory, store).recover()
    assert query(db_path, "SELECT id FROM contacts") == [(1,)]
    assert sorted(os.listdir(inbox.directory / "done")) == ["x.ndjson", "y.ndjson"]
    assert await store.get_state(APPLIED_KEY) is None
