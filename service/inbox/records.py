"""Reading and validating inbox files (SPEC 8.2); ``service.inbox.ingest`` applies them.

``*.ndjson`` files hold one operation per line (``{"op":"upsert","contact":
{...}}`` or ``{"op":"delete","id":N}``); ``*.csv`` files have a header of
contact columns and one upsert per row. Every record is checked against the
contacts table's own columns (``PRAGMA table_info``), which are the only
names that ever reach SQL text. Parsing never raises for bad content: each bad
record becomes a :class:`Rejection` with its line number and reason, and
reading stays bounded (line and file size limits) whatever the file holds.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import structlog

log = structlog.get_logger(__name__)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SUFFIXES = (".ndjson", ".csv")
TEMPORARY_SUFFIXES = (".tmp", ".part", ".partial", ".swp")
SNIPPET = 300
"""Characters of a rejected record copied into the rejection list."""


@dataclass(frozen=True, slots=True)
class InboxLimits:
    """Sizes beyond which input is refused rather than read."""

    max_file_bytes: int = 16 * 1024 * 1024
    """A file is applied in one transaction: larger ones hold writers back too long."""
    max_line_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class Column:
    """One column of ``contacts`` as the database describes it."""

    name: str
    notnull: bool
    has_default: bool
    pk: bool

    @property
    def required(self) -> bool:
        """A new row cannot be inserted without a value for it."""
        return self.notnull and not self.has_default and not self.pk


@dataclass(frozen=True, slots=True)
class ContactColumns:
    """The allow-list of column names: the contacts table's own columns."""

    columns: tuple[Column, ...]

    @classmethod
    def from_table_info(cls, rows: Sequence[Sequence[object]]) -> ContactColumns:
        """Build from ``PRAGMA table_info(contacts)`` rows (cid, name, type, notnull, dflt, pk)."""
        return cls(tuple(Column(str(r[1]), bool(r[3]), r[4] is not None, bool(r[5])) for r in rows))

    def lookup(self, name: str) -> Column | None:
        # SQLite column names are case-insensitive.
        folded = name.strip().casefold()
        for column in self.columns:
            if column.name.casefold() == folded:
                return column
        return None

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)


@dataclass(frozen=True, slots=True)
class Upsert:
    line: int
    contact_id: int
    values: dict[str, object]
    """Column name (as the table spells it) -> value; includes ``id``."""


@dataclass(frozen=True, slots=True)
class Delete:
    line: int
    contact_id: int


Operation = Upsert | Delete


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int
    reason: str
    record: str | None = None

    def as_json(self, file_name: str) -> str:
        return json.dumps(
            {"file": file_name, "line": self.line, "reason": self.reason, "record": self.record},
            ensure_ascii=False,
        )


@dataclass(slots=True)
class Parsed:
    operations: list[Operation] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


class _Invalid(Exception):
    """One record is invalid; the message is its rejection reason."""


# --- file selection -------------------------------------------------------------------------


def is_candidate(path: Path) -> bool:
    """A finished inbox file: not hidden, not temporary, of a supported kind."""
    name = path.name
    if name.startswith(".") or name.startswith("~") or name.endswith("~"):
        return False
    lower = name.lower()
    if lower.endswith(TEMPORARY_SUFFIXES):
        return False
    return lower.endswith(SUFFIXES)


def pending_files(directory: Path) -> list[Path]:
    """Finished entries waiting in the inbox, in name order.

    Entries of a supported name that are not regular files (directories,
    symbolic links, dangling ones too) are listed as well: the inbox rejects
    them with a reason instead of leaving them there silently.
    """
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    return sorted(p for p in entries if is_candidate(p))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- values ---------------------------------------------------------------------------------


def _snippet(text: str) -> str:
    return text if len(text) <= SNIPPET else text[:SNIPPET] + "…"


def _contact_id(value: object) -> int:
    if isinstance(value, bool):
        raise _Invalid(f"id {value!r} is not a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,19}\s*", value):
        number = int(value)
    else:
        raise _Invalid(f"id {_snippet(repr(value))} is not a whole number")
    if not INT64_MIN <= number <= INT64_MAX:
        raise _Invalid(f"id {number} is outside the 64-bit range")
    return number


def _json_value(column: Column, value: object) -> object:
    if value is None:
        if column.notnull:
            raise _Invalid(f"column {column.name!r} must not be null")
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise _Invalid(f"column {column.name!r}: {value} is outside the 64-bit range")
        return value
    if isinstance(value, str):
        if not _is_unicode(value):
            raise _Invalid(f"column {column.name!r}: text with a lone surrogate ({value!a})")
        return value
    if isinstance(value, float):
        return value
    raise _Invalid(f"column {column.name!r}: nested values are not allowed")


def _is_unicode(text: str) -> bool:
    """Text SQLite can store: no lone surrogate (JSON allows ``"\udcff"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _contact_record(
    raw: Mapping[str, object], columns: ContactColumns, line: int, *, csv_cells: bool
) -> Upsert:
    """Validate one contact record against the allow-list of columns."""
    values: dict[str, object] = {}
    unknown: list[str] = []
    for key, value in raw.items():
        if not _is_unicode(key):
            raise _Invalid(f"column name {key!a} holds a lone surrogate")
        column = columns.lookup(key)
        if column is None:
            unknown.append(key)
            continue
        if column.name in values:
            raise _Invalid(f"column {column.name!r} given twice")
        if csv_cells:
            # A CSV cell cannot say NULL: empty means NULL where NULL is allowed.
            values[column.name] = None if value == "" and not column.notnull else value
        else:
            values[column.name] = _json_value(column, value)
    if unknown:
        names = ", ".join(repr(u) for u in sorted(unknown)[:10])
        raise _Invalid(f"unknown column(s) {names}; contacts has no such column")
    pk = next((c.name for c in columns.columns if c.pk), "id")
    if pk not in values or values[pk] is None or values[pk] == "":
        raise _Invalid("missing id")
    contact_id = _contact_id(values[pk])
    values[pk] = contact_id
    missing = [name for name in columns.required if name not in values]
    if missing:
        raise _Invalid(f"missing required column(s): {', '.join(missing)}")
    return Upsert(line, contact_id, values)


def _ndjson_record(text: str, columns: ContactColumns, line: int) -> Operation:
    try:
        record = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise _Invalid(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise _Invalid("JSON nested too deeply (a contact record is one flat object)") from None
    if not isinstance(record, dict):
        raise _Invalid("a line must be a JSON object")
    op = record.get("op")
    if op == "delete":
        if "id" not in record:
            raise _Invalid("delete without id")
        return Delete(line, _contact_id(record["id"]))
    if op == "upsert":
        contact = record.get("contact")
        if not isinstance(contact, dict):
            raise _Invalid('upsert needs a "contact" object')
        return _contact_record(contact, columns, line, csv_cells=False)
    raise _Invalid(f'unknown op {_snippet(repr(op))} (expected "upsert" or "delete")')


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


# --- NDJSON ---------------------------------------------------------------------------------


def _lines(stream: BinaryIO, limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line; ``None`` for a line longer than ``limit``."""
    number = 0
    while True:
        chunk = stream.readline(limit + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) > limit and not chunk.endswith(b"\n"):
            # Skip the rest of the oversized line without holding it in memory.
            while chunk and not chunk.endswith(b"\n"):
                chunk = stream.readline(limit + 1)
            yield number, None
            continue
        yield number, chunk


def parse_ndjson(stream: BinaryIO, columns: ContactColumns, limits: InboxLimits) -> Parsed:
    """Parse an NDJSON inbox file into operations and rejections."""
    out = Parsed()
    for number, chunk in _lines(stream, limits.max_line_bytes):
        if chunk is None:
            out.rejected.append(
                Rejection(number, f"line longer than {limits.max_line_bytes} bytes")
            )
            continue
        if number == 1 and chunk.startswith(b"\xef\xbb\xbf"):
            chunk = chunk[3:]
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            shown = chunk.decode("utf-8", "backslashreplace").rstrip("\r\n")
            out.rejected.append(Rejection(number, f"invalid UTF-8: {exc.reason}", _snippet(shown)))
            continue
        if not text.strip():
            continue
        try:
            out.operations.append(_ndjson_record(text, columns, number))
        except _Invalid as exc:
            out.rejected.append(Rejection(number, str(exc), _snippet(text.rstrip("\r\n"))))
    return out


# --- CSV ------------------------------------------------------------------------------------


def _has_bad_bytes(cells: Sequence[str]) -> bool:
    # surrogateescape decoding maps undecodable bytes to U+DC80..U+DCFF.
    return any(re.search("[\udc80-\udcff]", cell) for cell in cells)


def _header(cells: Sequence[str], columns: ContactColumns) -> list[str]:
    if _has_bad_bytes(cells):
        raise _Invalid("invalid UTF-8 in the header")
    names = [c.strip() for c in cells]
    unknown = [n for n in names if columns.lookup(n) is None]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10])
        raise _Invalid(f"unknown column(s) {shown} in the header; no row of this file was applied")
    folded = [n.casefold() for n in names]
    if len(set(folded)) != len(folded):
        raise _Invalid("a column appears twice in the header; no row of this file was applied")
    pk = next((c.name for c in columns.columns if c.pk), "id")
    missing = [r for r in (pk, *columns.required) if r.casefold() not in folded]
    if missing:
        raise _Invalid(
            f"missing required column(s) {', '.join(missing)} in the header; "
            "no row of this file was applied"
        )
    return names


def parse_csv(stream: BinaryIO, columns: ContactColumns, limits: InboxLimits) -> Parsed:
    """Parse a CSV inbox file (header of contact columns, one upsert per row)."""
    out = Parsed()
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    header: list[str] | None = None
    previous_end = 0
    while True:
        start = previous_end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            previous_end = reader.line_num
            out.rejected.append(Rejection(start, f"malformed CSV: {exc}"))
            continue
        previous_end = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        shown = _snippet(
            ",".join(cells).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        )
        if header is None:
            try:
                header = _header(cells, columns)
            except _Invalid as exc:
                out.rejected.append(Rejection(start, str(exc), shown))
                return out
            continue
        try:
            out.operations.append(_csv_row(cells, header, columns, start, limits))
        except _Invalid as exc:
            out.rejected.append(Rejection(start, str(exc), shown))
    return out


def _csv_row(
    cells: Sequence[str],
    header: Sequence[str],
    columns: ContactColumns,
    line: int,
    limits: InboxLimits,
) -> Upsert:
    if sum(len(c) for c in cells) > limits.max_line_bytes:
        raise _Invalid(f"record longer than {limits.max_line_bytes} bytes")
    if _has_bad_bytes(cells):
        raise _Invalid("invalid UTF-8")
    if len(cells) != len(header):
        raise _Invalid(f"expected {len(header)} fields, got {len(cells)}")
    return _contact_record(dict(zip(header, cells, strict=True)), columns, line, csv_cells=True)


# --- whole files ----------------------------------------------------------------------------


def reject_duplicates(parsed: Parsed) -> Parsed:
    """Refuse every record of an id that appears more than once in one file.

    Which of two records for one contact the writer meant cannot be known, so
    neither is applied; both are reported.
    """
    lines: dict[int, list[int]] = {}
    for op in parsed.operations:
        lines.setdefault(op.contact_id, []).append(op.line)
    dupes = {cid: ls for cid, ls in lines.items() if len(ls) > 1}
    if not dupes:
        return parsed
    out = Parsed(rejected=list(parsed.rejected))
    for op in parsed.operations:
        if op.contact_id in dupes:
            where = ", ".join(str(n) for n in dupes[op.contact_id])
            out.rejected.append(
                Rejection(op.line, f"duplicate id {op.contact_id} in this file (lines {where})")
            )
        else:
            out.operations.append(op)
    out.rejected.sort(key=lambda r: r.line)
    return out


def parse_bytes(name: str, data: bytes, columns: ContactColumns, limits: InboxLimits) -> Parsed:
    """Validate the content of one inbox file (never raises for bad content)."""
    stream = io.BytesIO(data)
    if name.lower().endswith(".csv"):
        parsed = parse_csv(stream, columns, limits)
    else:
        parsed = parse_ndjson(stream, columns, limits)
    return reject_duplicates(parsed)


def too_large(size: int, limits: InboxLimits) -> Parsed:
    return Parsed(
        rejected=[
            Rejection(
                0,
                f"file is {size} bytes, larger than the limit of "
                f"{limits.max_file_bytes}; split it into smaller files",
            )
        ]
    )
