"""The bad-input corpus (SPEC 13): 50 bad inputs through the database and the inbox.

One daemon process (with an inbox) meets all of them at once: upstream
writes every database case in its own transaction while the daemon is
paused (so events are pending when a contact is deleted), drops every inbox
file, and lets it go. Each case asserts its exact outcome: the log line the
daemon wrote (``malformed_contact_data`` with the contact's problems,
``event_malformed`` with the reason) or the rejected-record entries (line and
reason), and that everything valid beside it was applied; at the end the plan
equals a full recompute and no event is left.

The expected texts are the messages SPEC 13 asks for, worked out from the
input (e.g. an id of ``"abc"`` is "not a whole number"), not read back from
a run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from service.store import init_db
from tests.faults.blackbox import DaemonProcess, mailplan, no_traceback, wait_for
from tests.integration.daemon_helpers import (
    SEED_SQL,
    TODAY,
    assert_plan_is_full_recompute,
    pending_events,
    settings,
    upstream,
)

CFG = settings()
pytestmark = pytest.mark.timeout(300)

Logs = list[dict[str, object]]

# --- through the database ------------------------------------------------------------------


def contact(cid: int, **overrides: object) -> tuple[str, tuple[object, ...]]:
    """An upstream INSERT of a valid Texas contact, with some columns overridden."""
    values: dict[str, object] = {
        "id": cid, "email": f"c{cid}@example.com", "birth_date": "1955-03-20",
        "effective_date": "2019-04-15", "state": "TX", "zip_code": "75001",
    }  # fmt: skip
    values.update(overrides)
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    return f"INSERT INTO contacts ({names}) VALUES ({marks})", tuple(values.values())


def malformed(cid: int, problems: list[str]) -> Callable[[Logs, Path], None]:
    def check(logs: Logs, db: Path) -> None:
        lines = [
            e for e in logs if e["event"] == "malformed_contact_data" and e["contact_id"] == cid
        ]
        assert lines, f"no malformed_contact_data line for contact {cid}"
        assert lines[-1]["problems"] == problems
        assert lines[-1]["level"] == "warning"

    return check


def clean(cid: int, rows_at_least: int = 1) -> Callable[[Logs, Path], None]:
    """No problem reported and the contact planned."""

    def check(logs: Logs, db: Path) -> None:
        assert not [
            e for e in logs if e.get("contact_id") == cid and e["event"] == "malformed_contact_data"
        ]
        assert _rows(db, cid) >= rows_at_least

    return check


def malformed_event(kind: str, reason: str) -> Callable[[Logs, Path], None]:
    def check(logs: Logs, db: Path) -> None:
        lines = [e for e in logs if e["event"] == "event_malformed" and e["kind"] == kind]
        assert [e["reason"] for e in lines] == [reason]

    return check


def no_rows(cid: int) -> Callable[[Logs, Path], None]:
    def check(logs: Logs, db: Path) -> None:
        assert _rows(db, cid) == 0

    return check


def _rows(db: Path, cid: int) -> int:
    con = sqlite3.connect(db)
    try:
        (n,) = con.execute(
            "SELECT count(*) FROM email_schedules WHERE contact_id = ? "
            "AND status IN ('pre-scheduled', 'skipped')", (cid,),
        ).fetchone()  # fmt: skip
        return int(n)
    finally:
        con.close()


def campaign_rows(cid: int) -> Callable[[Logs, Path], None]:
    def check(logs: Logs, db: Path) -> None:
        con = sqlite3.connect(db)
        rows = con.execute(
            "SELECT count(*) FROM email_schedules WHERE contact_id = ? AND email_type LIKE "
            "'campaign%'", (cid,),
        ).fetchone()  # fmt: skip
        con.close()
        assert rows == (0,)

    return check


@dataclass(frozen=True)
class DbCase:
    name: str
    statements: list[tuple[str, tuple[object, ...]]]
    check: Callable[[Logs, Path], None]


T = "1955-03-20"
DB_CASES = [
    DbCase(
        "impossible birth date",
        [contact(101, birth_date="1950-02-30")],
        malformed(101, ["birth date '1950-02-30' is not a real date"]),
    ),
    DbCase(
        "malformed birth date",
        [contact(102, birth_date="20/03/1955")],
        malformed(102, ["birth date '20/03/1955' is not a real date"]),
    ),
    DbCase(
        "birth date after today",
        [contact(103, birth_date="2030-01-01")],
        malformed(103, ["birth date 2030-01-01 is after today (2026-03-01)"]),
    ),
    DbCase(
        "'no end' as a birth date",
        [contact(104, birth_date="9999-12-31")],
        malformed(104, ["birth date 2800-12-31 is after today (2026-03-01)"]),
    ),
    DbCase(
        "garbage effective date",
        [contact(105, effective_date="soon")],
        malformed(105, ["effective date 'soon' is not a real date"]),
    ),
    DbCase(
        "'no end' as an effective date", [contact(106, effective_date="9999-12-31")], clean(106)
    ),
    DbCase(
        "'unknown' as an effective date", [contact(107, effective_date="0001-01-01")], clean(107)
    ),
    DbCase("date with a time", [contact(108, birth_date="1955-03-20 08:00:00")], clean(108)),
    DbCase("date with CRLF", [contact(109, birth_date="1955-03-20\r\n")], clean(109)),
    DbCase(
        "unknown state",
        [contact(110, state="ZZ")],
        malformed(110, ["state 'ZZ' is not a USPS state code"]),
    ),
    DbCase("padded lower-case state", [contact(111, state="  tx ")], clean(111)),
    DbCase(
        "non-five-digit ZIP",
        [contact(112, zip_code="abc")],
        malformed(112, ["ZIP code 'abc' is not a five-digit ZIP code"]),
    ),
    DbCase(
        "ZIP not in the directory",
        [contact(113, zip_code="00000")],
        malformed(113, ["ZIP code 00000 is not in the ZIP database"]),
    ),
    DbCase(
        "no state and a bad ZIP",
        [contact(114, state=None, zip_code="9")],
        malformed(
            114,
            [
                "ZIP code '9' is not a five-digit ZIP code",
                "location unknown: no valid state or ZIP code, so no state rule applies",
            ],
        ),
    ),
    DbCase(
        "bad e-mail",
        [contact(115, email="not-an-address")],
        malformed(115, ["email address 'not-an-address' is not a valid address"]),
    ),
    DbCase("no e-mail", [contact(116, email=None)], malformed(116, ["no email address"])),
    DbCase(
        "SQL-looking name", [contact(117, first_name="x'); DROP TABLE contacts;--")], clean(117)
    ),
    DbCase(
        "SQL-looking e-mail",
        [contact(118, email="a@b.c'; DELETE FROM contacts;--")],
        malformed(118, ['email address "a@b.c\'; DELETE FROM contacts;--" is not a valid address']),
    ),
    DbCase(
        "invalid UTF-8 in the state",
        [
            (
                "INSERT INTO contacts (id, email, birth_date, effective_date, state, zip_code) "
                "VALUES (119, 'c119@example.com', ?, '2019-04-15', CAST(x'54c3' AS TEXT), '75001')",
                (T,),
            )
        ],
        malformed(119, ["state 'T\ufffd' is not a USPS state code"]),
    ),
    DbCase("numeric text in a text column", [contact(120, zip_code=75001)], clean(120)),
    DbCase(
        "non-numeric contact id in an event",
        [
            (
                "INSERT INTO scheduler_events (kind, contact_id) "
                "VALUES ('recompute_contact', 'abc')",
                (),
            )
        ],
        malformed_event("recompute_contact", "contact_id is 'abc', not a row id"),
    ),
    DbCase(
        "unknown event kind",
        [("INSERT INTO scheduler_events (kind, contact_id) VALUES ('bogus', 1)", ())],
        malformed_event("bogus", "unknown event kind 'bogus'"),
    ),
    DbCase(
        "event for a contact that never existed",
        [
            (
                "INSERT INTO scheduler_events (kind, contact_id) VALUES ('recompute_contact', "
                "987654)",
                (),
            )
        ],
        no_rows(987654),
    ),
    DbCase(
        "contact deleted while its events are pending",
        [
            contact(121),
            ("UPDATE contacts SET state = 'CA' WHERE id = 121", ()),
            ("DELETE FROM contacts WHERE id = 121", ()),
        ],
        no_rows(121),
    ),
    DbCase(
        "targeted campaign row without a trigger date",
        [
            contact(122),
            (
                "INSERT INTO contact_campaigns (contact_id, campaign_instance_id, "
                "trigger_date, status) VALUES (122, 10, NULL, 'pending')",
                (),
            ),
        ],
        campaign_rows(122),
    ),
    DbCase(
        "campaign type with an absurd days_before_event",
        [
            contact(123),
            (
                "INSERT INTO campaign_types (name, days_before_event, priority) "
                "VALUES ('absurd', 1000000000000, 5)",
                (),
            ),
            (
                "INSERT INTO campaign_instances (id, campaign_type, instance_name, "
                "active_start_date, active_end_date) VALUES (11, 'absurd', 'x', '2026-01-01', "
                "'9999-12-31')",
                (),
            ),
            (
                "INSERT INTO contact_campaigns (contact_id, campaign_instance_id, trigger_date, "
                "status) VALUES (123, 11, '2026-04-01', 'pending')",
                (),
            ),
        ],
        campaign_rows(123),
    ),
]

# --- through the inbox ---------------------------------------------------------------------


def valid(k: int) -> bytes:
    return json.dumps({"op": "upsert", "contact": {"id": 500 + k, "email": f"v{k}@x.com"}}).encode()


@dataclass(frozen=True)
class FileCase:
    name: str
    content: bytes
    rejected: list[tuple[int, str]]


BIG = 16 * 1024 * 1024 + 1
FILE_CASES = [
    FileCase(
        "not-json.ndjson",
        b"not json\n",
        [(1, "invalid JSON: Expecting value: line 1 column 1 (char 0)")],
    ),
    FileCase("array.ndjson", b"[1, 2]\n", [(1, "a line must be a JSON object")]),
    FileCase(
        "unknown-op.ndjson",
        b'{"op":"merge"}\n',
        [(1, 'unknown op \'merge\' (expected "upsert" or "delete")')],
    ),
    FileCase("delete-no-id.ndjson", b'{"op":"delete"}\n', [(1, "delete without id")]),
    FileCase("no-contact.ndjson", b'{"op":"upsert"}\n', [(1, 'upsert needs a "contact" object')]),
    FileCase(
        "text-id.ndjson",
        b'{"op":"upsert","contact":{"id":"abc"}}\n',
        [(1, "id 'abc' is not a whole number")],
    ),
    FileCase(
        "float-id.ndjson", b'{"op":"delete","id":1.5}\n', [(1, "id 1.5 is not a whole number")]
    ),
    FileCase(
        "bool-id.ndjson", b'{"op":"delete","id":true}\n', [(1, "id True is not a whole number")]
    ),
    FileCase(
        "huge-id.ndjson",
        b'{"op":"delete","id":1180591620717411303424}\n',
        [(1, "id 1180591620717411303424 is outside the 64-bit range")],
    ),
    FileCase(
        "missing-id.ndjson", b'{"op":"upsert","contact":{"email":"a@x.com"}}\n', [(1, "missing id")]
    ),
    FileCase(
        "unknown-column.ndjson",
        b'{"op":"upsert","contact":{"id":1,"nickname":"B"}}\n',
        [(1, "unknown column(s) 'nickname'; contacts has no such column")],
    ),
    FileCase(
        "sql-column.ndjson",
        b'{"op":"upsert","contact":{"id":1,"email; DROP TABLE contacts":"x"}}\n',
        [(1, "unknown column(s) 'email; DROP TABLE contacts'; contacts has no such column")],
    ),
    FileCase(
        "nested.ndjson",
        b'{"op":"upsert","contact":{"id":1,"email":{"a":1}}}\n',
        [(1, "column 'email': nested values are not allowed")],
    ),
    FileCase(
        "twice.ndjson",
        b'{"op":"upsert","contact":{"id":1,"email":"a","EMAIL":"b"}}\n',
        [(1, "column 'email' given twice")],
    ),
    FileCase(
        "nan.ndjson",
        b'{"op":"upsert","contact":{"id":1,"zip_code":NaN}}\n',
        [(1, "invalid JSON: NaN is not a JSON number")],
    ),
    FileCase(
        "deep.ndjson",
        b'{"op":"upsert","contact":' + b"[" * 30000 + b"]" * 30000 + b"}\n",
        [(1, "JSON nested too deeply (a contact record is one flat object)")],
    ),
    FileCase(
        "surrogate.ndjson",
        b'{"op":"upsert","contact":{"id":1,"email":"\\udcff"}}\n',
        [(1, "column 'email': text with a lone surrogate ('\\udcff')")],
    ),
    FileCase(
        "bad-utf8.ndjson",
        b'{"op":"upsert","contact":{"id":1,"email":"\xc3("}}\n',
        [(1, "invalid UTF-8: invalid continuation byte")],
    ),
    FileCase("binary.ndjson", b"\xff\xfe\x00\x01\n", [(1, "invalid UTF-8: invalid start byte")]),
    FileCase(
        "duplicate-id.ndjson",
        b'{"op":"upsert","contact":{"id":7,"email":"a@x.com"}}\n{"op":"delete","id":7}\n',
        [
            (1, "duplicate id 7 in this file (lines 1, 2)"),
            (2, "duplicate id 7 in this file (lines 1, 2)"),
        ],
    ),
    FileCase(
        "long-line.ndjson",
        b'{"op":"delete","id":1,"pad":"' + b"x" * 70000 + b'"}\n',
        [(1, "line longer than 65536 bytes")],
    ),
    FileCase(
        "sql-value.ndjson",
        b'{"op":"upsert","contact":{"id":530,"email":"x\');DROP TABLE contacts;--"}}\n',
        [],
    ),
    FileCase("bom-crlf.ndjson", b'\xef\xbb\xbf{"op":"upsert","contact":{"id":531}}\r\n', []),
    FileCase("empty.ndjson", b"", []),
    FileCase("blank-lines.ndjson", b"\n\n   \n", []),
    FileCase(
        "csv-unknown-header.csv",
        b"id,nick\n1,x\n",
        [(1, "unknown column(s) 'nick' in the header; no row of this file was applied")],
    ),
    FileCase(
        "csv-field-count.csv",
        b"id,email,state\n1,a@x.com\n532,b@x.com,TX\n",
        [(2, "expected 3 fields, got 2")],
    ),
    FileCase("csv-bom-crlf.csv", b"\xef\xbb\xbfid,email\r\n533,c@x.com\r\n", []),
    FileCase(
        "csv-text-id.csv",
        b"id,email\nabc,a@x.com\n534,d@x.com\n",
        [(2, "id 'abc' is not a whole number")],
    ),
]
# Every NDJSON case also carries one valid record (its last line), applied
# whatever the rest of the file holds.
FILE_CASES = [
    FileCase(c.name, c.content + (valid(k) + b"\n" if c.name.endswith(".ndjson") else b""),
             c.rejected)
    for k, c in enumerate(FILE_CASES)
]  # fmt: skip
VALID_IDS = [500 + k for k, c in enumerate(FILE_CASES) if c.name.endswith(".ndjson")]
CSV_IDS = [532, 533, 534]


def _rejections(inbox: Path, name: str) -> list[tuple[int, str]]:
    path = inbox / "rejected" / f"{name}.ndjson"
    if not path.exists():
        return []
    return [(e["line"], e["reason"]) for e in map(json.loads, path.read_text().splitlines())]


def _run_sql(db: Path, statements: list[tuple[str, tuple[object, ...]]]) -> None:
    con = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        for sql, params in statements:
            con.execute(sql, params)
    finally:
        con.close()


def test_the_bad_input_corpus(tmp_path: Path) -> None:
    db = tmp_path / "org.sqlite3"
    anyio.run(init_db, db)
    upstream(db, SEED_SQL)
    inbox = tmp_path / "inbox"
    daemon = DaemonProcess(db, tmp_path, inbox=inbox)
    daemon.start()
    try:
        wait_for(lambda: daemon.notify.readies() > 0 and pending_events(db) == 0, 60, "ready")
        os.kill(daemon.pid, signal.SIGSTOP)
        for case in DB_CASES:
            _run_sql(db, case.statements)
        for file_case in FILE_CASES:
            tmp = inbox / f".{file_case.name}.tmp"
            tmp.write_bytes(file_case.content)
            tmp.rename(inbox / file_case.name)
        (inbox / "big.ndjson").write_bytes(b" " * BIG)
        (inbox / "link.ndjson").symlink_to(db)
        (inbox / "folder.csv").mkdir()
        os.kill(daemon.pid, signal.SIGCONT)

        def finished() -> bool:
            left = [p for p in inbox.iterdir() if not p.name.startswith(".") and p.name not in
                    ("done", "rejected")]  # fmt: skip
            return not left and pending_events(db) == 0

        wait_for(finished, 120, "every input")
        code, _ = daemon.terminate()
        assert code == 0 and no_traceback(daemon.stderr())
    finally:
        daemon.close()
    logs = daemon.logs()
    tried = 0
    for db_case in DB_CASES:
        db_case.check(logs, db)
        tried += 1
    for file_case in FILE_CASES:
        assert _rejections(inbox, file_case.name) == file_case.rejected, file_case.name
        assert (inbox / "done" / file_case.name).exists(), file_case.name
        tried += 1
    # Whole files refused: too large, a link (never followed), a folder.
    assert _rejections(inbox, "big.ndjson") == [
        (0, f"file is {BIG} bytes, larger than the limit of {BIG - 1}; split it into smaller files")
    ]
    [(line, reason)] = _rejections(inbox, "link.ndjson")
    assert line == 0 and reason.startswith("a symbolic link: the inbox takes regular files only")
    assert _rejections(inbox, "folder.csv") == [(0, "a folder: the inbox takes regular files only")]
    tried += 3
    # Everything valid beside the bad records was applied.
    con = sqlite3.connect(db)
    present = {r[0] for r in con.execute("SELECT id FROM contacts")}
    con.close()
    assert set(VALID_IDS + CSV_IDS + [530, 531]) <= present
    anyio.run(assert_plan_is_full_recompute, db, CFG, TODAY)
    print(f"bad-input corpus: {tried} cases, {len(DB_CASES)} through the database, "
          f"{len(FILE_CASES) + 3} through the inbox")  # fmt: skip
    assert tried >= 40


def test_garbage_state_rules_stop_start_up_with_exit_2(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_bytes(b"\x00\xff this is not toml [[[")
    db = tmp_path / "org.sqlite3"
    anyio.run(init_db, db)
    result = mailplan("run", "--db", str(db), "--once", "--today", str(TODAY),
                      env={"MAILPLAN_STATE_RULES": str(rules)})  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert str(rules) in result.stderr
    assert no_traceback(result.stderr + result.stdout)
