"""``mailplan audit`` (SPEC 10): what the sender actually sent, checked
against the rules in force on each send date.

Every history row sent in the period is checked for four findings:

- ``exclusion_window``: sent on a day inside a window (or a year-round
  rule) of the contact's state, under the rule in force on that day. The
  window is the statutory one: ``pre_window_buffer_days`` is mailplan's
  own margin, not law, so a send in the buffer is no finding. Campaigns of
  types that do not respect exclusion windows are not checked.
- ``frequency_limit``: the send made more than ``max_emails_per_period``
  sends in some ``period_days`` window that ends on its day.
- ``withdrawn``: the plan journal shows that, before the send, the plan's
  last word on that identity was a delete or a skip.
- ``invalid_address``: the contact's address fails the address check.

Pure checks on loaded facts (:func:`audit_contact`); :func:`run_audit`
reads the database in chunks of contacts.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import structlog

from service.errors import UsageError
from service.planning.contacts import is_valid_email, resolve_contact
from service.planning.exclusion import check_exclusion
from service.planning.model import CAMPAIGN_PREFIX, Campaigns, Contact
from service.planning.params import PlanParams
from service.planning.rules import RuleBook
from service.store import Store, open_store
from service.store.journal import JournalEntry
from service.store.loaders import send_date_of, text

log = structlog.get_logger(__name__)

EXCLUSION = "exclusion_window"
FREQUENCY = "frequency_limit"
WITHDRAWN = "withdrawn"
INVALID = "invalid_address"

NOT_SENT = frozenset({"scheduled", "processing", "pending", "failed", "cancelled", "canceled"})
"""History statuses of rows the sender has not (or not successfully) sent."""

_T = TypeVar("_T", "Sent", JournalEntry)
CHUNK = 2000
COLUMNS = ("kind", "contact_id", "history_id", "email_type", "event_date", "send_date", "detail")


@dataclass(frozen=True, slots=True)
class Sent:
    """One history row that was sent."""

    id: int
    contact_id: int
    email_type: str
    status: str
    event_date: str | None
    send_date: date
    instant: datetime
    """When it was sent (UTC); a date without a time counts from its start."""
    campaign_instance_id: int | None


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    contact_id: int
    history_id: int
    email_type: str
    event_date: str | None
    send_date: date
    detail: str


@dataclass(frozen=True, slots=True)
class AuditParams:
    max_emails_per_period: int = 3
    period_days: int = 30


def parse_instant(value: object) -> datetime | None:
    """A stored send time as an aware UTC instant (naive text is UTC)."""
    raw = text(value)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(raw[:10]), datetime.min.time())
        except ValueError:
            return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def sent_from_row(r: Sequence[Any]) -> Sent | None:
    """A ``history_rows_of`` row as a send; None when it was not sent."""
    rid, cid, etype, status, event, actual, sent_at, scheduled, inst = r
    status_text = text(status) or ""
    if status_text.lower() in NOT_SENT:
        return None
    day = send_date_of(actual, sent_at, scheduled)
    instant = parse_instant(actual) or parse_instant(sent_at) or parse_instant(scheduled)
    if day is None or instant is None or not isinstance(rid, int) or not isinstance(cid, int):
        return None
    return Sent(rid, cid, text(etype) or "", status_text, text(event), day, instant,
                inst if isinstance(inst, int) else None)  # fmt: skip


def _respects_windows(sent: Sent, campaigns: Campaigns) -> bool:
    if not sent.email_type.startswith(CAMPAIGN_PREFIX):
        return True
    type_name = None
    for inst in campaigns.instances:
        if inst.id == sent.campaign_instance_id:
            type_name = inst.campaign_type
    if type_name is None:
        # campaign_<type>_<instance id>, the type may contain underscores
        type_name = sent.email_type[len(CAMPAIGN_PREFIX) :].rpartition("_")[0]
    ctype = campaigns.types.get(type_name)
    return True if ctype is None else ctype.respect_exclusion_windows


def _window_finding(
    contact: Contact, sent: Sent, rules: RuleBook, campaigns: Campaigns, params: PlanParams
) -> str | None:
    if not _respects_windows(sent, campaigns):
        return None
    rc = resolve_contact(contact, sent.send_date)
    found = check_exclusion(rc, sent.send_date, rules, params)
    if found is None:
        return None
    rule = rules.rule_on(rc.state or "", sent.send_date)
    described = f"; rule {rule.describe()}" if rule is not None else ""
    if found.year_round or found.window_start is None or found.window_end is None:
        return f"sent {sent.send_date} under {found.reason}{described}"
    anchor = found.anchor.isoformat() if found.anchor else "?"
    return (
        f"sent {sent.send_date} inside {found.reason} ({found.window_start} to "
        f"{found.window_end}, anchor {anchor}){described}"
    )


def _frequency_findings(sends: Sequence[Sent], p: AuditParams) -> dict[int, str]:
    """Sends that made more than the limit in a period ending on their day."""
    ordered = sorted(sends, key=lambda s: (s.send_date, s.id))
    out: dict[int, str] = {}
    for j, s in enumerate(ordered):
        start = s.send_date - timedelta(days=p.period_days - 1)
        inside = [t for t in ordered[: j + 1] if t.send_date >= start]
        if len(inside) > p.max_emails_per_period:
            ids = ", ".join(str(t.id) for t in inside)
            out[s.id] = (
                f"sent {s.send_date} as email {len(inside)} in the {p.period_days} days "
                f"{start} to {s.send_date} (limit {p.max_emails_per_period}; history rows {ids})"
            )
    return out


def _withdrawn(sent: Sent, journal: Sequence[JournalEntry]) -> str | None:
    last: JournalEntry | None = None
    for e in journal:
        if e.email_type != sent.email_type or e.event_date != sent.event_date:
            continue
        at = parse_instant(e.at)
        if at is not None and at < sent.instant:
            last = e
    if last is None:
        return None
    how = f"run {last.run_id}, {last.trigger or 'unknown trigger'}"
    if last.op == "delete":
        return f"sent {sent.send_date}, but the plan had deleted it at {last.at} UTC ({how})"
    if last.new_status == "skipped":
        return (
            f"sent {sent.send_date}, but the plan had skipped it at {last.at} UTC ({how}): "
            f"{last.new_reason}"
        )
    return None


def audit_contact(
    contact: Contact | None,
    sends: Sequence[Sent],
    journal: Sequence[JournalEntry],
    *,
    rules: RuleBook,
    campaigns: Campaigns,
    plan_params: PlanParams,
    params: AuditParams,
    start: date,
    end: date,
) -> list[Finding]:
    """Every finding of one contact's sends in ``start..end`` (pure)."""
    out: list[Finding] = []
    frequency = _frequency_findings(sends, params)
    for s in sorted(sends, key=lambda s: (s.send_date, s.id)):
        if not start <= s.send_date <= end:
            continue
        details: list[tuple[str, str | None]] = [
            (EXCLUSION, _window_finding(contact, s, rules, campaigns, plan_params)
             if contact is not None else None),
            (FREQUENCY, frequency.get(s.id)),
            (WITHDRAWN, _withdrawn(s, journal)),
            (INVALID, f"sent {s.send_date} to an invalid address {contact.email!r}"
             if contact is not None and not is_valid_email(contact.email) else None),
        ]  # fmt: skip
        for kind, detail in details:
            if detail is not None:
                out.append(Finding(kind, s.contact_id, s.id, s.email_type, s.event_date,
                                   s.send_date, detail))  # fmt: skip
    return out


async def run_audit(
    store: Store,
    *,
    rules: RuleBook,
    plan_params: PlanParams,
    params: AuditParams,
    start: date,
    end: date,
) -> tuple[list[Finding], int]:
    """The findings of every send in ``start..end``, and how many sends were checked."""
    findings: list[Finding] = []
    checked = 0
    # Without the buffer: the audit checks the law, not mailplan's margin.
    law = replace(plan_params, pre_window_buffer_days=0)
    async with store.snapshot():
        campaigns = await store.load_campaigns()
        ids = await store.history_contacts_between(start, end)
        for k in range(0, len(ids), CHUNK):
            chunk = ids[k : k + CHUNK]
            contacts = {d.contact.id: d.contact for d in await store.load_contacts(chunk)}
            rows = await store.history_rows_of(chunk)
            sends = _by_contact(s for s in map(sent_from_row, rows) if s is not None)
            journal = _by_contact(await store.journal_of_contacts(chunk))
            for cid in chunk:
                own = sends.get(cid, [])
                checked += sum(1 for s in own if start <= s.send_date <= end)
                findings += audit_contact(
                    contacts.get(cid), own, journal.get(cid, []), rules=rules,
                    campaigns=campaigns, plan_params=law, params=params, start=start, end=end,
                )  # fmt: skip
    return findings, checked


def _by_contact(items: Iterable[_T]) -> dict[int, list[_T]]:
    out: dict[int, list[_T]] = {}
    for item in items:
        out.setdefault(item.contact_id, []).append(item)
    return out


def _cells(f: Finding) -> list[str]:
    return [f.kind, str(f.contact_id), str(f.history_id), f.email_type, f.event_date or "",
            f.send_date.isoformat(), f.detail]  # fmt: skip


def render(findings: Sequence[Finding], checked: int, start: date, end: date, fmt: str) -> str:
    """The findings as ``table`` (for people), ``csv`` or ``json``."""
    if fmt == "json":
        rows = [{**asdict(f), "send_date": f.send_date.isoformat()} for f in findings]
        doc = {"from": start.isoformat(), "to": end.isoformat(), "sends_checked": checked,
               "findings": rows}  # fmt: skip
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        w.writerows(_cells(f) for f in findings)
        return buf.getvalue()
    head = f"Audit of sends from {start} to {end}: {checked} sent emails checked, "
    if not findings:
        return head + "no findings.\n"
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    summary = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items()))
    lines = [head + f"{len(findings)} findings ({summary}).", ""]
    for f in findings:
        what = f"{f.kind.replace('_', ' ')}: {f.detail}"
        lines.append(f"contact {f.contact_id}, {f.email_type} (event {f.event_date or '?'}), "
                     f"history row {f.history_id}: {what}")  # fmt: skip
    return "\n".join(lines) + "\n"


async def command(args: Any, settings: Any, db: Any) -> int:
    """``mailplan audit``: exit 1 when anything is found (a timer alerts on it)."""
    end: date = args.to or args.today
    start: date = args.from_ or end - timedelta(days=1)
    if start > end:
        raise UsageError(f"--from {start} is after --to {end}; give a period that runs forward")
    params = AuditParams(settings.max_emails_per_period, settings.period_days)
    async with open_store(db, readonly=True) as store:
        findings, checked = await run_audit(
            store, rules=settings.rules(), plan_params=settings.plan_params(), params=params,
            start=start, end=end,
        )  # fmt: skip
    sys.stdout.write(render(findings, checked, start, end, args.format))
    if findings:
        kinds = sorted({f.kind for f in findings})
        log.warning("audit_findings", findings=len(findings), kinds=kinds,
                    start=start.isoformat(), end=end.isoformat())  # fmt: skip
    return 1 if findings else 0
