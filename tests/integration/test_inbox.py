"""The inbox folder (SPEC 8.2): validation, application, exactly-once across crashes."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from service.inbox.ingest import APPLIED_KEY, Inbox, upsert_sql
from service.inbox.records import (
    Column,
    ContactColumns,
    Delete,
    InboxLimits,
    Parsed,
    Upsert,
    is_candidate,
    parse_bytes,
    parse_csv,
    parse_ndjson,
)
from service.store import SqliteStore

# The contacts table of the original system: NOT NULL columns without defaults
# are required for a new row.
ORIGINAL = ContactColumns(
    (
        Column("id", False, False, True),
        Column("first_name", True, False, False),
        Column("email", True, False, False),
        Column("birth_date", True, False, False),
        Column("state", False, False, False),
        Column("zip_code", False, False, False),
        Column("status", True, True, False),
    )
)
LIMITS = InboxLimits(max_file_bytes=10_000, max_line_bytes=200)
FULL = '"first_name":"Ann","email":"a@x.com","birth_date":"1950-01-02"'


def ndjson(text: str) -> Parsed:
    return parse_ndjson(io.BytesIO(text.encode()), ORIGINAL, LIMITS)


def reasons(parsed: Parsed) -> list[tuple[int, str]]:
    return [(r.line, r.reason) for r in parsed.rejected]


# --- NDJSON records, one line each (line 1) ---------------------------------------------

NDJSON_OK = [
    ("upsert", '{"op":"upsert","contact":{"id":7,' + FULL + "}}",
     Upsert(1, 7, {"id": 7, "first_name": "Ann", "email": "a@x.com", "birth_date": "1950-01-02"})),
    # An id given as digits in a string is still a number.
    ("id as text", '{"op":"upsert","contact":{"id":"8",' + FULL + "}}",
     Upsert(1, 8, {"id": 8, "first_name": "Ann", "email": "a@x.com", "birth_date": "1950-01-02"})),
    # Column names are matched like SQLite does: case-insensitively.
    ("column case",
     '{"op":"upsert","contact":{"ID":9,"First_Name":"A","EMAIL":"e","birth_date":"x"}}',
     Upsert(1, 9, {"id": 9, "first_name": "A", "email": "e", "birth_date": "x"})),
    # SQL-looking text is just text (it only ever travels as a parameter).
    ("sql-looking value",
     '{"op":"upsert","contact":{"id":1,"first_name":"x\');DROP TABLE contacts;--",'
     '"email":"e","birth_date":"b"}}',
     Upsert(1, 1, {"id": 1, "first_name": "x');DROP TABLE contacts;--", "email": "e",
                   "birth_date": "b"})),
    ("delete", '{"op":"delete","id":12}', Delete(1, 12)),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), [c[1:] for c in NDJSON_OK],
                         ids=[c[0] for c in NDJSON_OK])  # fmt: skip
def test_ndjson_valid_records(line: str, expected: Upsert | Delete) -> None:
    parsed = ndjson(line + "\n")
    assert parsed.rejected == []
    assert parsed.operations == [expected]


NDJSON_BAD = [
    ("bad json", '{"op":"upsert",', "invalid JSON"),
    ("not an object", "[1, 2]", "a line must be a JSON object"),
    ("unknown op", '{"op":"merge","id":1}', "unknown op 'merge'"),
    ("unknown column", '{"op":"upsert","contact":{"id":1,' + FULL + ',"shoe_size":9}}',
     "unknown column(s) 'shoe_size'"),
    ("injection as column name", '{"op":"upsert","contact":{"id":1,' + FULL
     + ',"email\\"; DROP TABLE contacts; --":1}}', "unknown column(s)"),
    ("non-numeric id", '{"op":"upsert","contact":{"id":"abc",' + FULL + "}}",
     "id 'abc' is not a whole number"),
    ("fractional id", '{"op":"delete","id":1.5}', "id 1.5 is not a whole number"),
    ("boolean id", '{"op":"delete","id":true}', "id True is not a whole number"),
    ("missing id", '{"op":"upsert","contact":{' + FULL + "}}", "missing id"),
    ("delete without id", '{"op":"delete"}', "delete without id"),
    ("missing required", '{"op":"upsert","contact":{"id":1,"email":"e"}}',
     "missing required column(s): first_name, birth_date"),
    ("null in NOT NULL", '{"op":"upsert","contact":{"id":1,' + FULL + ',"status":null}}',
     "column 'status' must not be null"),
    ("nested value", '{"op":"upsert","contact":{"id":1,' + FULL + ',"state":{"a":1}}}',
     "nested values are not allowed"),
    ("NaN", '{"op":"upsert","contact":{"id":1,' + FULL + ',"zip_code":NaN}}', "invalid JSON"),
    ("huge id", '{"op":"delete","id":99999999999999999999}', "outside the 64-bit range"),
    ("no contact object", '{"op":"upsert","contact":[1]}', 'upsert needs a "contact" object'),
]  # fmt: skip


@pytest.mark.parametrize(("line", "reason"), [c[1:] for c in NDJSON_BAD],
                         ids=[c[0] for c in NDJSON_BAD])  # fmt: skip
def test_ndjson_invalid_records(line: str, reason: str) -> None:
    parsed = ndjson(line + "\n")
    assert parsed.operations == []
    assert len(parsed.rejected) == 1
    assert parsed.rejected[0].line == 1
    assert reason in parsed.rejected[0].reason


def test_ndjson_line_numbers_bytes_and_size_limits() -> None:
    data = (
        b'{"op":"delete","id":1}\n'
        b"\n"  # blank lines are skipped but counted
        b'{"op":"delete","id":2,"x":"\xff\xfe"}\n'  # invalid UTF-8
        + b'{"op":"delete","id":3,"pad":"'
        + b"x" * 300
        + b'"}\n'  # longer than 200 bytes
        + b'{"op":"delete","id":4}'  # last line without a newline
    )
    parsed = parse_ndjson(io.BytesIO(data), ORIGINAL, LIMITS)
    assert parsed.operations == [Delete(1, 1), Delete(5, 4)]
    assert [r.line for r in parsed.rejected] == [3, 4]
    assert parsed.rejected[0].reason.startswith("invalid UTF-8")
    assert parsed.rejected[1].reason == "line longer than 200 bytes"


def test_duplicate_ids_in_one_file_reject_every_occurrence() -> None:
    # Which of two records for contact 5 was meant cannot be known: neither applies.
    parsed = parse_bytes(
        "x.ndjson",
        b'{"op":"delete","id":5}\n{"op":"delete","id":6}\n{"op":"delete","id":"5"}\n',
        ORIGINAL,
        LIMITS,
    )
    assert parsed.operations == [Delete(2, 6)]
    assert reasons(parsed) == [
        (1, "duplicate id 5 in this file (lines 1, 3)"),
        (3, "duplicate id 5 in this file (lines 1, 3)"),
    ]


# --- CSV ------------------------------------------------------------------------------------


def csv_parse(text: bytes) -> Parsed:
    return parse_csv(io.BytesIO(text), ORIGINAL, LIMITS)


def test_csv_rows_are_upserts_and_empty_cells_are_null_where_allowed() -> None:
    parsed = csv_parse(
        b"\xef\xbb\xbfid,first_name,email,birth_date,state,status\r\n"
        b"1,Ann,a@x.com,1950-01-02,,active\r\n"
        b'2,"Bob, Jr.","b@x.com",1951-03-04,TX,\r\n'
    )
    assert parsed.rejected == []
    assert parsed.operations == [
        Upsert(2, 1, {"id": 1, "first_name": "Ann", "email": "a@x.com",
                      "birth_date": "1950-01-02", "state": None, "status": "active"}),
        # status is NOT NULL: an empty cell is the empty string, not NULL.
        Upsert(3, 2, {"id": 2, "first_name": "Bob, Jr.", "email": "b@x.com",
                      "birth_date": "1951-03-04", "state": "TX", "status": ""}),
    ]  # fmt: skip


def test_csv_bad_rows() -> None:
    parsed = csv_parse(
        b"id,first_name,email,birth_date\n"
        b"1,Ann,a@x.com,1950-01-02\n"  # line 2: fine
        b"x1,Bob,b@x.com,1950-01-02\n"  # line 3: id not a number
        b"3,Cy,c@x.com\n"  # line 4: a field missing
        b'4,"Dee\nDee",d@x.com,1950-01-02\n'  # lines 5-6: one row across two lines
        b"5,\xff,e@x.com,1950-01-02\n"  # line 7: invalid UTF-8
    )
    assert [op.line for op in parsed.operations] == [2, 5]
    assert reasons(parsed) == [
        (3, "id 'x1' is not a whole number"),
        (4, "expected 4 fields, got 3"),
        (7, "invalid UTF-8"),
    ]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"id,first_name,email,birth_date,hobby", "unknown column(s) 'hobby' in the header"),
        (b"first_name,email,birth_date", "missing required column(s) id in the header"),
        (b"id,email,birth_date", "missing required column(s) first_name in the header"),
        (b"id,first_name,email,birth_date,EMAIL", "a column appears twice in the header"),
        (b'id,first_name,email,birth_date,"email; DROP TABLE contacts"', "unknown column(s)"),
    ],
)
def test_csv_bad_header_rejects_the_whole_file(header: bytes, reason: str) -> None:
    parsed = csv_parse(header + b"\n1,Ann,a@x.com,1950-01-02\n")
    assert parsed.operations == []
    assert len(parsed.rejected) == 1
    assert parsed.rejected[0].line == 1
    assert reason in parsed.rejected[0].reason


@pytest.mark.parametrize(
    ("name", "candidate"),
    [
        ("contacts.ndjson", True),
        ("contacts.CSV", True),
        (".contacts.ndjson", False),  # hidden: still being written
        ("contacts.ndjson.tmp", False),
        ("contacts.csv.part", False),
        ("contacts.json", False),
        ("contacts.ndjson~", False),
    ],
)
def test_temporary_names_are_ignored(name: str, candidate: bool) -> None:
    assert is_candidate(Path(name)) is candidate


def test_upsert_sql_quotes_identifiers_and_binds_values() -> None:
    assert upsert_sql(["id", 'we"ird'], "id") == (
        'INSERT INTO contacts ("id", "we""ird") VALUES (?, ?) '
        'ON CONFLICT ("id") DO UPDATE SET "we""ird" = excluded."we""ird"'
    )


# --- applying, with a real database -----------------------------------------------------


def sql(db_path: Path, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_path) as con:
        rows = con.execute(statement, params).fetchall()
    con.close()
    return rows


def drop(folder: Path, name: str, content: bytes) -> Path:
    """Write under a temporary name and rename in, as upstream must."""
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(content)
    final = folder / name
    tmp.rename(final)
    return final


def rejected_lines(folder: Path, name: str) -> list[dict[str, object]]:
    text = (folder / "rejected" / name).read_text()
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def inbox_dir(tmp_path: Path) -> Path:
    return tmp_path / "inbox"


async def test_ndjson_file_is_applied_and_moved(
    store: SqliteStore, db_path: Path, inbox_dir: Path
) -> None:
    sql(db_path, "INSERT INTO contacts (id, email, state) VALUES (3, 'old@x.com', 'TX')")
    sql(db_path, "DELETE FROM scheduler_events")
    inbox = Inbox(inbox_dir, store)
    inbox.prepare()
    drop(
        inbox_dir,
        "batch1.ndjson",
        (
            b'{"op":"upsert","contact":{"id":1,"email":"a@x.com","birth_date":"1950-01-02"}}\n'
            b'{"op":"upsert","contact":{"id":2,"email":"b@x.com","nickname":"B"}}\n'
            b'{"op":"delete","id":3}\n'
            b"not json\n"
        ),
    )
    (inbox_dir / ".ignored.ndjson").write_text('{"op":"delete","id":1}\n')
    outcomes = await inbox.process_pending()
    assert [(o.name, o.applied, o.deleted, o.rejected) for o in outcomes] == [
        ("batch1.ndjson", 1, 1, 2)
    ]
    assert sql(db_path, "SELECT id, email, birth_date FROM contacts ORDER BY id") == [
        (1, "a@x.com", "1950-01-02")
    ]
    # The triggers turned the writes into events for the daemon.
    assert sql(db_path, "SELECT kind, contact_id FROM scheduler_events ORDER BY id") == [
        ("contact", 3), ("contact", 1),
    ]  # fmt: skip
    assert [(r["line"], r["file"]) for r in rejected_lines(inbox_dir, "batch1.ndjson.ndjson")] == [
        (2, "batch1.ndjson"), (4, "batch1.ndjson"),
    ]  # fmt: skip
    assert not (inbox_dir / "batch1.ndjson").exists()
    assert (inbox_dir / "done" / "batch1.ndjson").exists()
    assert (inbox_dir / ".ignored.ndjson").exists()
    assert await store.get_state(APPLIED_KEY) is None


async def test_csv_file_upserts_existing_contacts(
    store: SqliteStore, db_path: Path, inbox_dir: Path
) -> None:
    sql(db_path, "INSERT INTO contacts (id, email, state) VALUES (1, 'old@x.com', 'TX')")
    inbox = Inbox(inbox_dir, store)
    inbox.prepare()
    drop(inbox_dir, "crm.csv", b"id,email,zip_code\n1,new@x.com,73301\n2,c@x.com,\n")
    [outcome] = await inbox.process_pending()
    assert (outcome.applied, outcome.rejected) == (2, 0)
    # The upsert updates only the columns the file names; state stays.
    assert sql(db_path, "SELECT id, email, state, zip_code FROM contacts ORDER BY id") == [
        (1, "new@x.com", "TX", "73301"),
        (2, "c@x.com", None, None),
    ]
    assert not (inbox_dir / "rejected" / "crm.csv.ndjson").exists()


async def test_records_the_database_refuses_are_rejected_alone(
    store: SqliteStore, db_path: Path, inbox_dir: Path
) -> None:
    # Like the original schema: e-mail addresses are unique.
    sql(db_path, "CREATE UNIQUE INDEX test_unique_email ON contacts(email)")
    inbox = Inbox(inbox_dir, store)
    inbox.prepare()
    drop(
        inbox_dir,
        "dupe.ndjson",
        (
            b'{"op":"upsert","contact":{"id":1,"email":"same@x.com"}}\n'
            b'{"op":"upsert","contact":{"id":2,"email":"same@x.com"}}\n'
            b'{"op":"upsert","contact":{"id":3,"email":"other@x.com"}}\n'
        ),
    )
    [outcome] = await inbox.process_pending()
    assert (outcome.applied, outcome.rejected) == (2, 1)
    assert sql(db_path, "SELECT id FROM contacts ORDER BY id") == [(1,), (3,)]
    [entry] = rejected_lines(inbox_dir, "dupe.ndjson.ndjson")
    assert entry["line"] == 2
    assert "UNIQUE constraint failed" in str(entry["reason"])


async def test_oversized_file_is_rejected_whole(
    store: SqliteStore, db_path: Path, inbox_dir: Path
) -> None:
    inbox = Inbox(inbox_dir, store, InboxLimits(max_file_bytes=50))
    inbox.prepare()
    drop(inbox_dir, "big.ndjson", b'{"op":"delete","id":1}\n' * 10)
    [outcome] = await inbox.process_pending()
    assert (outcome.applied, outcome.deleted, outcome.rejected) == (0, 0, 1)
    [entry] = rejected_lines(inbox_dir, "big.ndjson.ndjson")
    assert entry["line"] == 0 and "larger than the limit of 50" in str(entry["reason"])
    assert (inbox_dir / "done" / "big.ndjson").exists()


async def test_same_name_dropped_again_is_a_new_delivery(
    store: SqliteStore, db_path: Path, inbox_dir: Path
) -> None:
    inbox = Inbox(inbox_dir, store)
    inbox.prepare()
    content = b'{"op":"upsert","contact":{"id":1,"email":"a@x.com"}}\n'
    drop(inbox_dir, "daily.ndjson", content)
    await inbox.process_pending()
    sql(db_path, "UPDATE contacts SET email = 'changed@x.com' WHERE id = 1")
    drop(inbox_dir, "daily.ndjson", content)
    await inbox.process_pending()
    assert sql(db_path, "SELECT email FROM contacts") == [("a@x.com",)]
    assert sorted(p.name for p in (inbox_dir / "done").iterdir()) == [
        "daily.1.ndjson", "daily.ndjson",
    ]  # fmt: skip


class Crash(Exception):
    """Stands for the process dying at this point."""


async def test_crash_after_commit_does_not_apply_twice(
    store: SqliteStore, db_path: Path, inbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Inbox(inbox_dir, store)
    inbox.prepare()
    drop(
        inbox_dir, "f.ndjson", (b'{"op":"upsert","contact":{"id":1,"email":"a@x.com"}}\ngarbage\n')
    )

    async def die(name: str, digest: str) -> None:
        raise Crash

    monkeypatch.setattr(inbox, "_finish", die)
    with pytest.raises(Crash):
        await inbox.process_pending()
    # Committed: the contact is in, the file is still claimed in the inbox.
    assert sql(db_path, "SELECT email FROM contacts") == [("a@x.com",)]
    assert (inbox_dir / ".processing" / "f.ndjson").exists()
    # Upstream changes the contact before the daemon comes back.
    sql(db_path, "UPDATE contacts SET email = 'upstream@x.com' WHERE id = 1")
    events_before = sql(db_path, "SELECT count(*) FROM scheduler_events")

    restarted = Inbox(inbox_dir, store)
    await restarted.recover()
    assert await restarted.process_pending() == []
    assert sql(db_path, "SELECT email FROM contacts") == [("upstream@x.com",)]
    assert sql(db_path, "SELECT count(*) FROM scheduler_events") == events_before
    assert (inbox_dir / "done" / "f.ndjson").exists()
    assert [e["line"] for e in rejected_lines(inbox_dir, "f.ndjson.ndjson")] == [2]
    assert await store.get_state(APPLIED_KEY) is None


async def test_crash_before_commit_applies_nothing(
    store: SqliteStore, db_path: Path, inbox_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Inbox(inbox_dir, store)
    inbox.prepare()
    drop(inbox_dir, "f.ndjson", b'{"op":"upsert","contact":{"id":1,"email":"a@x.com"}}\nbad\n')

    async def die(applied: dict[str, str]) -> None:
        raise Crash

    sql(db_path, "DELETE FROM scheduler_events")
    monkeypatch.setattr(inbox, "_set_applied", die)
    with pytest.raises(Crash):
        await inbox.process_pending()
    assert sql(db_path, "SELECT count(*) FROM contacts") == [(0,)]
    assert sql(db_path, "SELECT count(*) FROM scheduler_events") == [(0,)]

    # The file stayed claimed; the restart applies it from there.
    assert (inbox_dir / ".processing" / "f.ndjson").exists()
    restarted = Inbox(inbox_dir, store)
    await restarted.recover()
    assert await restarted.process_pending() == []
    assert sql(db_path, "SELECT email FROM contacts") == [("a@x.com",)]
    assert (inbox_dir / "done" / "f.ndjson").exists()
    assert sql(db_path, "SELECT count(*) FROM scheduler_events") == [(1,)]
    assert [e["line"] for e in rejected_lines(inbox_dir, "f.ndjson.ndjson")] == [2]


async def test_stale_record_of_a_moved_file_is_forgotten(
    store: SqliteStore, inbox_dir: Path
) -> None:
    # A crash after the move but before the record was dropped.
    async with store.transaction():
        await store.set_state(APPLIED_KEY, json.dumps({"gone.ndjson": "0" * 64}))
    inbox = Inbox(inbox_dir, store)
    inbox.prepare()
    await inbox.recover()
    assert await store.get_state(APPLIED_KEY) is None
