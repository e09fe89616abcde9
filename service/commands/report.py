"""What the command line prints: plan rows (table, csv, json), ``explain`` and ``status``.

Pure formatting: callers hand in rows and facts, these functions write text.
The csv form is a contract (SPEC 10): ``export --format csv`` and
``recompute --all --dry-run --format csv`` both go through :func:`write_rows`,
which is what makes them byte-identical.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Protocol, TextIO

from service.planning.contacts import ResolvedContact
from service.planning.model import Contact, ContactPlan, PlanRow, RowKey
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


# --- explain --------------------------------------------------------------------------------


def explain_text(
    contact: Contact | None,
    contact_id: int,
    resolved: ResolvedContact | None,
    plan: ContactPlan | None,
    stored: Mapping[RowKey, ExportRow],
    today: date,
    history_keys: Collection[tuple[int, str, int | None, int | None, int | None]] = (),
) -> str:
    """Every planning decision for one contact, in words (``mailplan explain``).

    ``history_keys`` are the identities of the contact's history rows: a
    planned email whose identity is among them was sent (or claimed) already
    and is not written again (SPEC 5.10).
    """
    lines = [f"Contact {contact_id}, planned as of {today.isoformat()}"]
    if contact is None or plan is None:
        lines.append(
            "  No such contact. Stored plan rows for this id: "
            f"{len(stored)} (they are removed at the next recompute)."
        )
        return "\n".join(lines) + "\n"
    lines += _explain_contact(contact, resolved, set(plan.notes))
    if plan.invalid:
        lines.append(f"No email is planned: {plan.invalid}.")
    if plan.notes:
        lines.append("Decisions:")
        lines += [f"  - {note}" for note in plan.notes]
    lines.append(f"Plan rows ({len(plan.rows)}):" if plan.rows else "Plan rows: none.")
    sent = {
        row.key
        for row in plan.rows
        if (
            row.contact_id,
            row.email_type,
            row.event_date.year,
            row.event_date.month,
            row.event_date.day,
        )
        in history_keys
    }
    for row in plan.rows:
        if row.key in sent:
            lines.append(
                f"  * {row.email_type} for the event of {row.event_date.isoformat()}: "
                "already in the sender's history (sent or claimed), not planned again"
            )
        else:
            lines += _explain_row(row, stored.get(row.key))
    lines += _explain_drift(plan, stored, sent)
    if plan.review_date is None:
        lines.append("Review: nothing in this plan changes with time alone.")
    else:
        lines.append(
            f"Review: the plan can next change by time alone on "
            f"{plan.review_date.isoformat()}; the daily tick recomputes it then."
        )
    return "\n".join(lines) + "\n"


def _explain_contact(contact: Contact, rc: ResolvedContact | None, notes: set[str]) -> list[str]:
    lines = [
        f"  email {contact.email!r}, birth date {contact.birth_date!r}, "
        f"effective date {contact.effective_date!r}",
        f"  state {contact.state!r}, ZIP {contact.zip_code!r}, carrier {contact.carrier!r}, "
        f"failed underwriting: {'yes' if contact.failed_underwriting else 'no'}",
    ]
    if rc is None:
        return lines
    if rc.state is None:
        where = "unknown (no valid state and no known ZIP): no state rule applies"
    elif rc.state_source == "zip":
        where = f"{rc.state}, derived from the ZIP code"
    else:
        where = f"{rc.state}, from the state column"
    lines.append(f"  resolved state: {where}")
    # Problems the planner noted are listed with its decisions below.
    lines += [f"  problem: {p}" for p in rc.problems if p not in notes]
    return lines


def _explain_row(row: PlanRow, stored: ExportRow | None) -> list[str]:
    head = (
        f"  * {row.email_type} for the event of {row.event_date.isoformat()} "
        f"(priority {row.priority}): desired {row.desired_date.isoformat()}"
    )
    lines = [head]
    if row.status == "skipped":
        lines.append(f"      skipped: {row.skip_reason}")
    else:
        span = f"{_day(row.allowed_from, 'today')} .. {_day(row.allowed_to, 'open end')}"
        lines.append(f"      pre-scheduled; load balancing may send it on {span}")
        if stored is None:
            lines.append("      not in the stored plan yet (recompute to write it)")
        elif stored.scheduled_date != row.desired_date:
            lines.append(
                f"      stored scheduled date {stored.scheduled_date.isoformat()} "
                "(moved by load balancing)"
            )
        else:
            lines.append(f"      stored scheduled date {stored.scheduled_date.isoformat()}")
    if row.catchup_note:
        lines.append(f"      catch-up: {row.catchup_note}")
    if row.template:
        lines.append(f"      template {row.template}")
    return lines


def _explain_drift(
    plan: ContactPlan, stored: Mapping[RowKey, ExportRow], sent: set[RowKey]
) -> list[str]:
    planned = {row.key for row in plan.rows if row.key not in sent}
    extra = sorted(k for k in stored if k not in planned)
    changed = [
        row.key
        for row in plan.rows
        if row.key in stored
        and row.key in planned
        and (
            stored[row.key].status != row.status
            or stored[row.key].desired_date != row.desired_date
            or (stored[row.key].skip_reason or None) != row.skip_reason
        )
    ]
    if not extra and not changed:
        return []
    lines = ["Stored plan differs from this plan (a recompute will fix it):"]
    lines += [f"  - stored row {k[1]} {k[2].isoformat()} is no longer planned" for k in extra]
    lines += [f"  - stored row {k[1]} {k[2].isoformat()} has other content" for k in changed]
    return lines


def _day(d: date | None, none: str) -> str:
    return none if d is None else d.isoformat()


# --- status ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DayLoad:
    """Planned emails on one day against the cap."""

    day: date
    planned: int
    cap: int | None


@dataclass(slots=True)
class StatusReport:
    """Facts ``mailplan status`` shows; filled by the command line from the store."""

    db: str
    today: date
    pending_events: int = 0
    oldest_event_at: str | None = None
    oldest_event_age_seconds: float | None = None
    last_tick: str | None = None
    cap: int | None = None
    contacts: int | None = None
    runs: list[dict[str, object]] = field(default_factory=list)
    load: list[DayLoad] = field(default_factory=list)
    config_errors: list[str] = field(default_factory=list)
    settings_fingerprint: str | None = None


def status_json(report: StatusReport) -> str:
    data = asdict(report)
    data["today"] = report.today.isoformat()
    data["load"] = [
        {"day": d.day.isoformat(), "planned": d.planned, "cap": d.cap} for d in report.load
    ]
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def status_text(report: StatusReport) -> str:
    out = [f"mailplan status of {report.db} (today {report.today.isoformat()})"]
    out.append(f"  contacts with an email: {_num(report.contacts)}; daily cap: {_num(report.cap)}")
    if report.pending_events:
        age = _age(report.oldest_event_age_seconds)
        out.append(
            f"  pending events: {report.pending_events}; oldest from "
            f"{report.oldest_event_at} ({age} ago)"
        )
    else:
        out.append("  pending events: none")
    out.append(f"  last daily tick: {report.last_tick or 'never'}")
    out.append("  last runs:" if report.runs else "  last runs: none")
    for run in report.runs:
        out.append("    " + _run_line(run))
    if report.load:
        out.append("  daily load (planned / cap):")
        for d in report.load:
            flag = "  OVER CAP" if d.cap is not None and d.planned > d.cap else ""
            out.append(f"    {d.day.isoformat()}  {d.planned:>8} / {_num(d.cap)}{flag}")
    if report.config_errors:
        out.append("  configuration errors (these campaign instances plan nothing):")
        out += [f"    - {e}" for e in report.config_errors]
    else:
        out.append("  configuration errors: none")
    return "\n".join(out) + "\n"


def _run_line(run: Mapping[str, object]) -> str:
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


def _age(seconds: float | None) -> str:
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
                },
                sort_keys=True,
            )
            + "\n"
        )
    if not report.drift:
        return "verify: the stored plan equals a full recompute (no drift)\n"
    lines = [
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
