"""``mailplan explain`` (SPEC 10): every planning decision for one contact,
in words a compliance officer can read, or as JSON (``--json``).

For each email: the rule that decided it with its dates (an exclusion
window's first and last day, the state rule with its anchor, days, ages and
source note, the contact's age on the anchor); for a frequency skip the
emails that filled the period; for a follow-up the email and engagement it
follows; for a balancing move the day it wanted and why it moved; and for
emails not planned yet, when they will be. ``--history`` adds the contact's
plan journal and sent history.

The explanation is derived from the same pure rules the planner runs
(:mod:`service.planning`), applied to the contact's data as loaded.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from service import engine
from service.commands.fingerprint import warn_if_differs
from service.planning import dates
from service.planning.balance import Capacity
from service.planning.contacts import ResolvedContact, resolve_contact
from service.planning.dates import anniversary
from service.planning.exclusion import check_exclusion
from service.planning.followups import ELIGIBILITY_ANSWERED, followable
from service.planning.limits import FREQUENCY_LIMIT
from service.planning.model import (
    BIRTHDAY,
    CAMPAIGN_PREFIX,
    EFFECTIVE_DATE,
    FOLLOWUP_PREFIX,
    POST_WINDOW,
    PRE_SCHEDULED,
    SENT_STATUSES,
    Campaigns,
    ContactData,
    ContactPlan,
    PlanRow,
    RowKey,
)
from service.planning.params import PlanParams
from service.planning.plan import plan_contact
from service.planning.rules import RuleBook, StateRule
from service.store import Scope, open_store
from service.store.journal import JournalEntry
from service.store.types import ExportRow

WINDOW_REASONS = ("Birthday exclusion window for", "Effective date exclusion window for",
                  "Annual exclusion period for")  # fmt: skip


@dataclass(slots=True)
class Decision:
    """One email (or one email not planned yet) and why."""

    email_type: str
    event_date: str
    status: str
    summary: str
    details: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Facts:
    """Everything ``explain`` needs beyond the plan: loaded by the command."""

    today: date
    rules: RuleBook
    params: PlanParams
    campaigns: Campaigns
    capacity: Capacity
    stored: dict[RowKey, ExportRow]
    history_keys: frozenset[tuple[int, str, int | None, int | None, int | None]]
    wanted: dict[date, tuple[int, int]] = field(default_factory=dict)
    """Per desired date of a moved row: non-skipped rows wanting it, and how
    many of them are effective-date emails."""


def age_on(birth: date | None, anchor: date) -> int | None:
    """The contact's age on an anchor date (SPEC 15), if the birth date is known."""
    return None if birth is None else dates.age_on(birth, anchor)


def _rule_words(rule: StateRule | None) -> str:
    if rule is None:
        return "no rule"
    note = f" (source: {rule.note})" if rule.note else " (no source note in the rules file)"
    return f"{rule.describe()}{note}"


def _window(row: PlanRow, rc: ResolvedContact, f: Facts) -> Decision:
    d = _base(row, "skipped", f"skipped: {row.skip_reason}")
    found = check_exclusion(rc, row.desired_date, f.rules, f.params)
    rule = f.rules.rule_on(rc.state or "", row.desired_date)
    if found is None or found.window_start is None or found.window_end is None:
        d.details.append(f"rule {_rule_words(rule)}")
        return d
    anchor = found.anchor
    what = "birthday" if rule is not None and rule.kind == "birthday" else "policy anniversary"
    if rule is not None and rule.month_anchored:
        what = f"first of the {what} month"
    d.details.append(
        f"its desired date {row.desired_date} is inside the window from {found.window_start} "
        f"to {found.window_end} (first and last day)"
    )
    d.details.append(f"rule {_rule_words(rule)}")
    if anchor is not None:
        age = age_on(rc.birth_date, anchor)
        aged = f"; the contact is {age} on that day" if age is not None else ""
        d.details.append(f"anchored on the {what} {anchor}{aged}")
    buffer = f.params.pre_window_buffer_days
    if buffer and anchor is not None and rule is not None:
        law_first = anchor - timedelta(days=rule.before_days)
        d.details.append(
            f"the first day includes pre_window_buffer_days = {buffer} days before the law's "
            f"window ({law_first} to {found.window_end})"
        )
    if row.email_type in (BIRTHDAY, EFFECTIVE_DATE) and f.params.enable_post_window_emails:
        d.details.append("a post-window email makes up for it after the window")
    d.facts.update(window_first=found.window_start.isoformat(),
                   window_last=found.window_end.isoformat(),
                   anchor=anchor.isoformat() if anchor else None,
                   rule=rule.describe() if rule else None,
                   source=rule.note if rule else None,
                   age_on_anchor=age_on(rc.birth_date, anchor) if anchor else None)  # fmt: skip
    return d


def _year_round(row: PlanRow, rc: ResolvedContact, f: Facts) -> Decision:
    d = _base(row, "skipped", f"skipped: {row.skip_reason}")
    rule = f.rules.rule_on(rc.state or "", row.desired_date)
    d.details.append(f"rule {_rule_words(rule)}: no marketing email on any day of the year")
    d.facts.update(rule=rule.describe() if rule else None, source=rule.note if rule else None)
    return d


def _frequency(row: PlanRow, data: ContactData, plan: ContactPlan, f: Facts) -> Decision:
    d = _base(row, "skipped", f"skipped: {FREQUENCY_LIMIT}")
    limit, period = f.params.max_emails_per_period, f.params.period_days
    emails: list[tuple[date, str]] = [
        (h.send_date, f"{h.email_type} sent {h.send_date}")
        for h in data.history
        if h.send_date is not None
    ]
    emails += [
        (r.desired_date, f"{r.email_type} planned for {r.desired_date}")
        for r in plan.rows
        if r.status == PRE_SCHEDULED
    ]
    day = row.desired_date
    for back in range(period - 1, -1, -1):
        start = day - timedelta(days=back)
        end = start + timedelta(days=period - 1)
        inside = sorted(e for e in emails if start <= e[0] <= end)
        if len(inside) >= limit:
            d.details.append(
                f"the {period} days from {start} to {end} already hold {len(inside)} emails "
                f"(at most {limit} allowed): " + "; ".join(text for _, text in inside)
            )
            d.facts.update(period_first=start.isoformat(), period_last=end.isoformat(),
                           filled_by=[text for _, text in inside])  # fmt: skip
            return d
    d.details.append(f"more than {limit} emails in {period} days")
    return d


def _followup(row: PlanRow, data: ContactData, f: Facts, d: Decision) -> None:
    sent = row.event_date
    followed = [
        h
        for h in data.history
        if h.send_date == sent and h.status in SENT_STATUSES and followable(h, f.campaigns)
    ]
    what = followed[0].email_type if followed else "an email"
    d.details.append(
        f"follows the {what} email sent {sent}, the most recent followable email within "
        f"followup_lookback_days = {f.params.followup_lookback_days}; desired "
        f"{f.params.followup_delay_days} days after it"
    )
    answers = [e for e in data.events if e.event_type == ELIGIBILITY_ANSWERED
               and e.created_on >= sent]  # fmt: skip
    clicks = [c for c in data.clicks if c.clicked_on >= sent]
    kind = row.email_type[len(FOLLOWUP_PREFIX) :]
    if answers:
        e = answers[0]
        d.details.append(f"engagement: an eligibility answer on {e.created_on} -> {kind}")
    elif clicks:
        d.details.append(f"engagement: a click on {clicks[0].clicked_on} -> {kind}")
    else:
        d.details.append(f"engagement: none since the send -> {kind}")
    d.facts.update(follows=what, follows_sent=sent.isoformat(), kind=kind)


def _campaign(row: PlanRow, f: Facts, d: Decision) -> None:
    for inst in f.campaigns.instances:
        if inst.id == row.campaign_instance_id:
            ctype = f.campaigns.types.get(inst.campaign_type)
            start = inst.active_start_date.isoformat() if inst.active_start_date else "open"
            end = inst.active_end_date.isoformat() if inst.active_end_date else "open"
            respects = "respects" if ctype and ctype.respect_exclusion_windows else "ignores"
            d.details.append(
                f"campaign {inst.instance_name or inst.id} (instance {inst.id}, type "
                f"{inst.campaign_type}), active {start} to {end}; it {respects} exclusion windows"
            )
            return


def _balancing(row: PlanRow, stored: ExportRow | None, f: Facts, d: Decision) -> None:
    if stored is None:
        d.details.append("not in the stored plan yet: the next recompute writes it")
        return
    moved = stored.scheduled_date
    d.facts["scheduled_date"] = moved.isoformat()
    if moved == row.desired_date:
        d.details.append(f"scheduled {moved}, the day it wants")
        return
    wanted, eds = f.wanted.get(row.desired_date, (0, 0))
    c = f.capacity
    if row.email_type == EFFECTIVE_DATE and eds > c.ed_limit:
        why = (
            f"effective-date smoothing: {eds} effective-date emails want "
            f"{row.desired_date}, more than the soft limit {c.ed_limit}; they are spread over "
            f"{c.window} days"
        )
    elif moved > row.desired_date:
        why = (
            f"the daily cap: {wanted} emails want {row.desired_date}; a day holding more than "
            f"{c.threshold} (cap {c.cap} x overage_threshold) keeps {c.cap} by priority and "
            "carries the rest to the next day"
        )
    else:
        why = "load balancing moved it earlier within its allowed days"
    d.details.append(f"wanted {row.desired_date}; scheduled {moved}: {why}")
    d.facts.update(wanted_date=row.desired_date.isoformat(), moved_because=why)


def _base(row: PlanRow, status: str, summary: str) -> Decision:
    return Decision(row.email_type, row.event_date.isoformat(), status, summary,
                    facts={"desired_date": row.desired_date.isoformat(),
                           "priority": row.priority, "skip_reason": row.skip_reason})  # fmt: skip


def explain_row(
    row: PlanRow, data: ContactData, plan: ContactPlan, rc: ResolvedContact, f: Facts
) -> Decision:
    """One planned row in words."""
    reason = row.skip_reason or ""
    if row.status != PRE_SCHEDULED:
        if reason.startswith(WINDOW_REASONS):
            d = _window(row, rc, f)
        elif reason.startswith("Year-round exclusion for"):
            d = _year_round(row, rc, f)
        elif reason == FREQUENCY_LIMIT:
            d = _frequency(row, data, plan, f)
        else:
            d = _base(row, "skipped", f"skipped: {reason}")
    else:
        d = _base(row, PRE_SCHEDULED, f"planned for {row.desired_date}")
        rule = f.rules.rule_on(rc.state or "", row.desired_date)
        if row.email_type != POST_WINDOW and rc.state is not None:
            ruled = f"rule {_rule_words(rule)}" if rule else f"{rc.state} has no rule in force"
            d.details.append(f"no exclusion window of {rc.state} covers {row.desired_date} "
                             f"({ruled})")  # fmt: skip
        _balancing(row, f.stored.get(row.key), f, d)
        lower = row.desired_date if row.email_type != EFFECTIVE_DATE else row.allowed_from
        upper = row.allowed_to.isoformat() if row.allowed_to else "no end date"
        d.details.append(
            f"load balancing may send it from {lower or f.today} to {upper} "
            "without entering an exclusion window"
        )
    if row.email_type == POST_WINDOW:
        d.details.insert(0, (
            f"make-up email for the email of {row.event_date} that an exclusion window "
            f"skipped: the first day after that window which no window of the rules then in "
            f"force covers is {row.desired_date}"
        ))  # fmt: skip
    elif row.email_type.startswith(FOLLOWUP_PREFIX):
        _followup(row, data, f, d)
    elif row.email_type.startswith(CAMPAIGN_PREFIX):
        _campaign(row, f, d)
    if row.catchup_note:
        d.details.append(f"catch-up: {row.catchup_note}")
    return d


def _upcoming(plan: ContactPlan, rc: ResolvedContact, f: Facts) -> list[Decision]:
    """Birthday and anniversary emails not planned yet, and when they will be."""
    out: list[Decision] = []
    have = {r.email_type for r in plan.rows if r.event_date >= f.today}
    horizon = f.params.horizon_days
    for etype, base, before in ((BIRTHDAY, rc.birth_date, f.params.birthday_days_before),
                                (EFFECTIVE_DATE, rc.effective_date,
                                 f.params.effective_date_days_before)):  # fmt: skip
        if base is None:
            out.append(Decision(etype, "", "none", f"no {etype.replace('_', ' ')} email: "
                                "the contact has no valid date for it"))  # fmt: skip
            continue
        if etype in have:
            continue
        year = f.today.year
        event = anniversary(base, year)
        while event < f.today or (etype == EFFECTIVE_DATE and event <= base):
            year += 1
            event = anniversary(base, year)
        desired = event - timedelta(days=before)
        enters = desired - timedelta(days=horizon)
        d = Decision(etype, event.isoformat(), "not planned yet",
                     f"not planned yet: the next one is on {event}, wanted {desired}")  # fmt: skip
        if enters > f.today:
            d.details.append(f"it enters the plan on {enters}, when its desired date is within "
                             f"horizon_days = {horizon} of today")  # fmt: skip
        if plan.review_date is not None:
            d.details.append(f"the contact's review date is {plan.review_date}: the daily tick "
                             "recomputes it then")  # fmt: skip
        d.facts.update(event_date=event.isoformat(), desired_date=desired.isoformat(),
                       enters_plan=enters.isoformat())  # fmt: skip
        out.append(d)
    return out


def explain(
    contact_id: int,
    data: ContactData | None,
    plan: ContactPlan | None,
    rc: ResolvedContact | None,
    f: Facts,
) -> dict[str, Any]:
    """The whole explanation as plain data (rendered by :func:`to_text`, or JSON)."""
    out: dict[str, Any] = {"contact_id": contact_id, "today": f.today.isoformat(),
                           "found": data is not None}  # fmt: skip
    if data is None or plan is None or rc is None:
        out["stored_rows"] = len(f.stored)
        return out
    c = data.contact
    out["contact"] = {"email": c.email, "birth_date": c.birth_date,
                      "effective_date": c.effective_date, "state": c.state,
                      "zip_code": c.zip_code, "carrier": c.carrier,
                      "failed_underwriting": bool(c.failed_underwriting)}  # fmt: skip
    out["resolved"] = {"state": rc.state, "state_source": rc.state_source,
                       "email_ok": rc.email_ok, "problems": list(rc.problems)}  # fmt: skip
    out["invalid"] = plan.invalid
    out["notes"] = list(plan.notes)
    rows: list[Decision] = []
    for row in plan.rows:
        ev = row.event_date
        if (row.contact_id, row.email_type, ev.year, ev.month, ev.day) in f.history_keys:
            rows.append(Decision(row.email_type, ev.isoformat(), "history",
                                 "already in the sender's history (sent or claimed): "
                                 "not planned again"))  # fmt: skip
        else:
            rows.append(explain_row(row, data, plan, rc, f))
    out["rows"] = [_as_dict(d) for d in rows]
    out["upcoming"] = [] if plan.invalid else [_as_dict(d) for d in _upcoming(plan, rc, f)]
    out["review_date"] = plan.review_date.isoformat() if plan.review_date else None
    if not rows:
        out["no_rows_because"] = _no_rows(plan, out["upcoming"])
    return out


def _no_rows(plan: ContactPlan, upcoming: list[dict[str, Any]]) -> str:
    if plan.invalid:
        return f"no email can be planned: {plan.invalid}"
    if plan.notes:
        return "; ".join(plan.notes)
    if upcoming:
        return "nothing is due within the horizon yet (see below)"
    return "no email applies to this contact today"


def _as_dict(d: Decision) -> dict[str, Any]:
    return {"email_type": d.email_type, "event_date": d.event_date, "status": d.status,
            "summary": d.summary, "details": d.details, "facts": d.facts}  # fmt: skip


def history_data(journal: list[JournalEntry], sends: list[tuple[Any, ...]]) -> dict[str, Any]:
    """The plan journal and the sent history, as plain data (``--history``)."""
    return {
        "journal": [_journal_words(e) for e in journal],
        "sent": [
            {"history_id": r[0], "email_type": r[2], "status": r[3], "event_date": r[4],
             "sent": r[5] or r[6] or r[7]}
            for r in sends
        ],
    }  # fmt: skip


def _journal_words(e: JournalEntry) -> dict[str, Any]:
    def state(desired: str | None, sched: str | None, status: str | None, why: str | None) -> str:
        reason = f" ({why})" if why else ""
        return f"{status}{reason}, desired {desired}, scheduled {sched}"

    old = state(e.old_desired, e.old_scheduled, e.old_status, e.old_reason)
    new = state(e.new_desired, e.new_scheduled, e.new_status, e.new_reason)
    words = {"insert": f"planned: {new}", "delete": f"removed from the plan (was {old})",
             "update": f"changed from {old} to {new}",
             "move": f"moved by balancing from {e.old_scheduled} to {e.new_scheduled}"}  # fmt: skip
    return {"at": e.at, "run_id": e.run_id, "trigger": e.trigger, "email_type": e.email_type,
            "event_date": e.event_date, "op": e.op, "words": words.get(e.op, e.op)}  # fmt: skip


def to_text(x: dict[str, Any]) -> str:
    lines = [f"Contact {x['contact_id']}, planned as of {x['today']}"]
    if not x["found"]:
        lines.append(f"  No such contact. Stored plan rows for this id: {x['stored_rows']} "
                     "(they are removed at the next recompute).")  # fmt: skip
        return "\n".join(lines) + "\n"
    c, r = x["contact"], x["resolved"]
    lines.append(f"  email {c['email']!r}, birth date {c['birth_date']!r}, effective date "
                 f"{c['effective_date']!r}")  # fmt: skip
    lines.append(f"  state {c['state']!r}, ZIP {c['zip_code']!r}, carrier {c['carrier']!r}, "
                 f"failed underwriting: {'yes' if c['failed_underwriting'] else 'no'}")  # fmt: skip
    if r["state"] is None:
        where = "unknown (no valid state and no known ZIP): no state rule applies"
    elif r["state_source"] == "zip":
        where = f"{r['state']}, derived from the ZIP code"
    else:
        where = f"{r['state']}, from the state column"
    lines.append(f"  resolved state: {where}")
    lines += [f"  problem: {p}" for p in r["problems"] if p not in x["notes"]]
    if x["invalid"]:
        lines.append(f"No email is planned: {x['invalid']}.")
    if x["notes"]:
        lines.append("Decisions:")
        lines += [f"  - {n}" for n in x["notes"]]
    if x["rows"]:
        lines.append(f"Plan rows ({len(x['rows'])}):")
    else:
        lines.append(f"Plan rows: none: {x['no_rows_because']}.")
    for d in x["rows"]:
        lines.append(f"  * {d['email_type']} for the event of {d['event_date']}: {d['summary']}")
        lines += [f"      {s}" for s in d["details"]]
    lines += _upcoming_lines(x["upcoming"])
    if x["review_date"]:
        lines.append(f"Review: the plan can next change by time alone on {x['review_date']}; "
                     "the daily tick recomputes it then.")  # fmt: skip
    else:
        lines.append("Review: nothing in this plan changes with time alone.")
    if "history" in x:
        lines += _history_lines(x["history"])
    return "\n".join(lines) + "\n"


def _upcoming_lines(upcoming: list[dict[str, Any]]) -> list[str]:
    lines = ["Not planned yet:"] if upcoming else []
    for d in upcoming:
        lines.append(f"  * {d['email_type']}: {d['summary']}")
        lines += [f"      {s}" for s in d["details"]]
    return lines


def _history_lines(h: dict[str, Any]) -> list[str]:
    lines = ["Plan journal:" if h["journal"] else "Plan journal: no entries."]
    for e in h["journal"]:
        lines.append(f"  {e['at']} run {e['run_id']} ({e['trigger']}): {e['email_type']} "
                     f"for {e['event_date']}: {e['words']}")  # fmt: skip
    lines.append("Sent history:" if h["sent"] else "Sent history: none.")
    for s in h["sent"]:
        lines.append(f"  {s['email_type']} for {s['event_date']}: {s['status']}, "
                     f"{s['sent']} (history row {s['history_id']})")  # fmt: skip
    return lines


async def command(args: Any, settings: Any, db: Path) -> int:
    """``mailplan explain``; exit 1 (with the explanation) for an unknown contact."""
    ctx = engine.PlanContext.from_settings(settings)
    today: date = args.today
    cid: int = args.contact
    async with open_store(db, readonly=True) as store, store.snapshot():
        await warn_if_differs(store, settings, "explain", sys.stderr)
        loaded = await store.load_scope(Scope.of_ids([cid]), since=ctx.history_since(today))
        campaigns = await store.load_campaigns()
        stored = {(r.contact_id, r.email_type, r.event_date): r
                  for r in await store.export_rows([cid])}  # fmt: skip
        cap = await engine.capacity_for(store, ctx, today, save=False)
        wanted = {}
        for row in stored.values():
            if row.status == PRE_SCHEDULED and row.scheduled_date != row.desired_date:
                wanted[row.desired_date] = await store.wanted_on(row.desired_date)
        journal = await store.journal_of(cid) if args.history else []
        sends = await store.history_rows_of([cid]) if args.history else []
    data = loaded.contacts[0] if loaded.contacts else None
    plan = plan_contact(data, campaigns, ctx.rules, ctx.plan, today) if data else None
    rc = resolve_contact(data.contact, today) if data else None
    facts = Facts(today, ctx.rules, ctx.plan, campaigns, cap, stored,
                  frozenset(loaded.history_keys), wanted)  # fmt: skip
    x = explain(cid, data, plan, rc, facts)
    if args.history:
        x["history"] = history_data(journal, sends)
    sys.stdout.write(json.dumps(x, indent=2, default=str) + "\n" if args.json else to_text(x))
    if data is None:
        sys.stderr.write(f"mailplan: error: no contact {cid} in {db}; check the id\n")
        return 1
    return 0
