"""What the command line prints: plan rows (table, csv, json), runs and recompute summaries.

Pure formatting: callers hand in rows and facts, these functions write text.
The csv form is a contract (SPEC 10): ``export --format csv`` and
``recompute --all --dry-run --format csv`` both go through :func:`write_rows`,
which is what makes them byte-identical.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TextIO

from service.planning.model import RowKey
from service.store.types import ExportRow, RunRecord, RunStats

CSV_COLUMNS = (
    "contact_id",
    "email_type",
    "event_date",
    "desired_date",
    "scheduled_date",
    "status",
    "skip_reason",
)
FORMATS = ("table", "csv", "json")


def cells(row: ExportRow) -> tuple[str, ...]:
    """The csv cells of a row: ISO dates, '' for an empty skip reason."""
    return (
        str(row.contact_id),
        row.email_type,
        row.event_date.isoformat(),
        row.desired_date.isoformat(),
        row.scheduled_date.isoformat(),
        row.status,
        row.skip_reason or "",
    )


def sort_key(row: ExportRow) -> RowKey:
    """The order of every listing: (contact_id, email_type, event_date)."""
    return (row.contact_id, row.email_type, row.event_date)


class RowWriter:
    """Streams plan rows as ``table``, ``csv`` or ``json`` (rows arrive sorted).

    csv uses the ``csv`` module's defaults (excel dialect, ``\\r\\n`` line
    ends, minimal quoting) as SPEC 10 requires; json is one array with an
    object per line. Rows may come in several :meth:`write` calls, so a
    million-row export never sits in memory as text.
    """

    def __init__(self, fmt: str, out: TextIO) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.fmt = fmt
        self.out = out
        self.count = 0
        self._csv = csv.writer(out) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(CSV_COLUMNS)
        elif fmt == "json":
            out.write("[")
        else:
            out.write(_table_line(CSV_COLUMNS))
            out.write(_table_line((*("-" * w for w in _TABLE_WIDTHS), "-" * 11)))

    def write(self, rows: Iterable[ExportRow]) -> None:
        out = self.out
        for row in rows:
            if self._csv is not None:
                self._csv.writerow(cells(row))
            elif self.fmt == "json":
                out.write(",\n" if self.count else "\n")
                out.write(json.dumps(dict(zip(CSV_COLUMNS, _json_cells(row), strict=True))))
            else:
                out.write(_table_line(cells(row)))
            self.count += 1

    def finish(self) -> int:
        if self.fmt == "json":
            self.out.write("\n]\n" if self.count else "]\n")
        elif self.fmt == "table":
            self.out.write(f"({self.count} rows)\n")
        return self.count


def write_rows(rows: Iterable[ExportRow], fmt: str, out: TextIO) -> int:
    """Write every row in one go; the number written."""
    writer = RowWriter(fmt, out)
    writer.write(rows)
    return writer.finish()


def _json_cells(row: ExportRow) -> tuple[object, ...]:
    out: list[object] = list(cells(row))
    out[0] = row.contact_id
    out[6] = row.skip_reason or None
    return tuple(out)


_TABLE_WIDTHS = (10, 30, 10, 10, 10, 13)


def _table_line(values: Sequence[str]) -> str:
    # Fixed widths so a long listing streams instead of being measured first.
    head = "  ".join(c.ljust(w) for c, w in zip(values, _TABLE_WIDTHS, strict=False))
    return f"{head}  {values[-1]}".rstrip() + "\n"


# --- runs (status) ---------------------------------------------------------------------------


def run_line(run: Mapping[str, object]) -> str:
    keys = (
        "id",
        "trigger",
        "started_at",
        "contacts_recomputed",
        "rows_inserted",
        "rows_updated",
        "rows_deleted",
        "rows_unchanged",
        "windows_rebalanced",
        "duration_ms",
        "error",
    )
    parts = [f"{k}={run[k]}" for k in keys if run.get(k) not in (None, "")]
    return " ".join(parts)


def _num(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_dict(run: RunRecord) -> dict[str, object]:
    """One ``scheduler_runs`` row as plain values (status --json, status text)."""
    st = run.stats
    return {
        "id": run.id,
        "trigger": run.trigger,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "today": run.today,
        "events_consumed": st.events_consumed,
        "contacts_recomputed": st.contacts_recomputed,
        "rows_inserted": st.inserted,
        "rows_updated": st.updated,
        "rows_deleted": st.deleted,
        "rows_unchanged": st.unchanged,
        "windows_rebalanced": st.windows_rebalanced,
        "rows_moved": st.rows_moved,
        "duration_ms": None if run.duration_ms is None else round(run.duration_ms, 1),
        "error": run.error,
    }


# --- recompute summaries ----------------------------------------------------------------------

STATS_FIELDS = (
    "contacts_recomputed",
    "inserted",
    "updated",
    "deleted",
    "unchanged",
    "windows_rebalanced",
    "rows_moved",
    "events_consumed",
)


def stats_text(stats: RunStats, fmt: str) -> str:
    """What a writing ``recompute`` did, as a sentence, one csv row or a JSON object."""
    values = {name: getattr(stats, name) for name in STATS_FIELDS}
    if fmt == "json":
        return json.dumps(values, sort_keys=True) + "\n"
    if fmt == "csv":
        return ",".join(STATS_FIELDS) + "\r\n" + ",".join(str(v) for v in values.values()) + "\r\n"
    return (
        f"recomputed {stats.contacts_recomputed} contacts: {stats.inserted} rows inserted, "
        f"{stats.updated} updated, {stats.deleted} deleted, {stats.unchanged} unchanged; "
        f"{stats.windows_rebalanced} windows rebalanced, {stats.rows_moved} rows moved\n"
    )


class DriftLike(Protocol):
    missing: int
    extra: int
    changed: int
    samples: list[str]
    repaired: bool
    count_days: int

    @property
    def drift(self) -> int: ...


def drift_text(report: DriftLike, fmt: str) -> str:
    """The result of ``recompute --verify``."""
    if fmt == "json":
        return (
            json.dumps(
                {
                    "drift": report.drift,
                    "missing": report.missing,
                    "extra": report.extra,
                    "changed": report.changed,
                    "repaired": report.repaired,
                    "samples": report.samples,
                    "balance_count_days": report.count_days,
                },
                sort_keys=True,
            )
            + "\n"
        )
    if not report.drift and not report.count_days:
        return "verify: the stored plan equals a full recompute (no drift)\n"
    lines = []
    if report.count_days:
        lines.append(
            f"verify: the balancing counts (balance_days) differ from the plan rows on "
            f"{report.count_days} days; "
            + ("rewritten by the full recompute" if report.repaired else "not repaired (dry run)")
        )
    if not report.drift:
        return "\n".join(lines) + "\n"
    lines += [
        f"verify: DRIFT of {report.drift} rows ({report.missing} missing, {report.extra} "
        f"extra, {report.changed} changed); "
        + (
            "repaired by a full recompute"
            if report.repaired
            else "not repaired (dry run): run `mailplan recompute --all --verify` to repair"
        )
    ]
    lines += [f"  {sample}" for sample in report.samples]
    return "\n".join(lines) + "\n"
