"""``mailplan status`` (SPEC 10): is a daemon running, how far is work in
flight, what did the last verification find, what was set aside or
rejected, which settings built the plan, and the load of the next days
against the cap and the threshold.

Read-only: it opens the database read-only and reads the daemon's heartbeat
file (:mod:`service.daemon.heartbeat`) and the inbox's ``rejected/`` folder.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from service.commands import report
from service.commands.fingerprint import settings_difference
from service.daemon import heartbeat
from service.daemon.processing import FANOUT_KEY, FanOut
from service.engine.core import PROGRESS_KEY
from service.planning.balance import capacity
from service.planning.campaigns import campaign_config_errors
from service.store import DriftReport, Store, open_store

VERIFY_KEY = "last_verification"


async def record_verification(store: Store, drift: DriftReport, today: date, now: datetime) -> None:
    """Keep the result of ``recompute --all --verify`` for ``status``."""
    value = {"at": now.isoformat(timespec="seconds"), "today": today.isoformat(),
             "drift": drift.drift, "missing": drift.missing, "extra": drift.extra,
             "changed": drift.changed, "repaired": drift.repaired}  # fmt: skip
    async with store.transaction():
        await store.set_state(VERIFY_KEY, json.dumps(value, sort_keys=True))


@dataclass(frozen=True, slots=True)
class DayLoad:
    day: date
    planned: int
    cap: int
    threshold: int

    @property
    def over(self) -> bool:
        """Over the cap in the balancer's sense: above the threshold (SPEC 6)."""
        return self.planned > self.threshold


@dataclass(slots=True)
class Status:
    db: str
    today: date
    timezone: str
    daemon: dict[str, Any] | None = None
    pending_events: int = 0
    oldest_event_at: str | None = None
    oldest_event_age_seconds: float | None = None
    in_flight: list[str] = field(default_factory=list)
    last_tick: str | None = None
    last_verification: dict[str, Any] | None = None
    set_aside_events: list[int] = field(default_factory=list)
    inbox: str | None = None
    inbox_rejects: int | None = None
    inbox_reject_files: int | None = None
    stored_fingerprint: str | None = None
    settings_fingerprint: str = ""
    settings_differ: list[str] = field(default_factory=list)
    """The keys in which this command's settings differ from the stored plan's."""
    plan_full_recompute_day: str | None = None
    contacts: int = 0
    cap: int = 0
    threshold: int = 0
    journal_entries: int = 0
    journal_oldest: str | None = None
    runs: list[dict[str, object]] = field(default_factory=list)
    load: list[DayLoad] = field(default_factory=list)
    config_errors: list[str] = field(default_factory=list)


def _daemon(db: Path, now: datetime) -> dict[str, Any] | None:
    beat = heartbeat.read(heartbeat.heartbeat_path(db))
    if beat is None:
        return None
    try:
        at = datetime.fromisoformat(str(beat.get("at")))
        age = (now - at).total_seconds()
    except (TypeError, ValueError):
        age = math.inf
    running = bool(beat.get("running")) and age <= heartbeat.STALE_AFTER
    stopped = not beat.get("running")
    return {**beat, "age_seconds": round(age, 1), "running": running, "stopped": stopped}


def _rejects(inbox: Path | None) -> tuple[int | None, int | None]:
    if inbox is None:
        return None, None
    folder = inbox / "rejected"
    files = lines = 0
    try:
        for path in folder.iterdir():
            if path.is_file() and not path.name.startswith("."):
                files += 1
                with path.open("rb") as fh:
                    lines += sum(1 for _ in fh)
    except OSError:
        return None, None
    return files, lines


async def _in_flight(store: Store) -> list[str]:
    out: list[str] = []
    raw = await store.get_state(FANOUT_KEY)
    fan = FanOut.loads(raw) if raw else None
    if fan is not None:
        what = "every contact" if fan.everyone else f"the contacts of event {fan.upto}"
        if fan.after is not None and fan.everyone:
            done, total = await store.contacts_done(fan.after)
            share = 100 * done / max(total, 1)
            out.append(f"fan-out over {what}: {done} of {total} contacts done "
                       f"({share:.0f} %), up to contact id {fan.after}")  # fmt: skip
        else:
            out.append(f"fan-out over {what}: started, up to contact id {fan.after or 'none'}")
    raw = await store.get_state(PROGRESS_KEY)
    if raw:
        try:
            value = json.loads(raw)
            run_id, after = int(value["run_id"]), int(value["after"])
        except (ValueError, KeyError, TypeError):
            return out
        done, total = await store.contacts_done(after)
        out.append(f"full recompute (run {run_id}): {done} of {total} contacts done "
                   f"({100 * done / max(total, 1):.0f} %); if no process is working on it, "
                   "it was interrupted; `recompute --all` finishes it")  # fmt: skip
    return out


def _grouped_runs(runs: list[dict[str, object]], limit: int = 5) -> list[dict[str, object]]:
    """Consecutive fan-out chunks are one piece of work: one line for them."""
    out: list[dict[str, object]] = []
    for run in runs:
        last = out[-1] if out else None
        if last is not None and run.get("trigger") == "fanout" == last.get("trigger"):
            last["chunks"] = int(str(last.get("chunks", 1))) + 1
            for k in ("contacts_recomputed", "rows_inserted", "rows_updated", "rows_deleted"):
                last[k] = int(str(last.get(k) or 0)) + int(str(run.get(k) or 0))
            last["started_at"] = run.get("started_at")
            continue
        if len(out) == limit:
            break
        out.append(dict(run))
    return out


async def gather(args: Any, settings: Any, db: Path, now: datetime) -> Status:
    today: date = args.today
    params = settings.balance_params()
    async with open_store(db, readonly=True) as store:
        summary = await store.events_summary()
        snapshot = await store.capacity_snapshot(today)
        contacts = snapshot if snapshot is not None else await store.contact_count_with_email()
        day_capacity = capacity(params, contacts)
        cap, threshold = day_capacity.cap, day_capacity.threshold
        per_day = dict.fromkeys((today + timedelta(days=k) for k in range(args.days)), 0)
        for day, _type, count in await store.daily_load(today, today + timedelta(args.days - 1)):
            per_day[day] = per_day.get(day, 0) + count
        verification = await store.get_state(VERIFY_KEY)
        entries, oldest, _ = await store.journal_summary()
        daemon = _daemon(db, now)
        files, lines = _rejects(settings.inbox)
        last_tick = await store.last_tick()
        return Status(
            db=str(db), today=today, timezone=settings.timezone, daemon=daemon,
            pending_events=summary.pending,
            oldest_event_at=summary.oldest_created_at.isoformat()
            if summary.oldest_created_at else None,
            oldest_event_age_seconds=(now - summary.oldest_created_at).total_seconds()
            if summary.oldest_created_at else None,
            in_flight=await _in_flight(store),
            last_tick=last_tick.isoformat() if last_tick else None,
            last_verification=json.loads(verification) if verification else None,
            set_aside_events=[int(i) for i in (daemon or {}).get("set_aside", [])],
            inbox=str(settings.inbox) if settings.inbox else None,
            inbox_rejects=lines, inbox_reject_files=files,
            stored_fingerprint=await store.plan_fingerprint(),
            settings_fingerprint=settings.fingerprint(),
            settings_differ=await settings_difference(store, settings) or [],
            plan_full_recompute_day=_iso((await store.plan_basis()).full_recompute_day),
            contacts=contacts, cap=cap, threshold=threshold,
            journal_entries=entries, journal_oldest=oldest,
            runs=_grouped_runs([report.run_dict(r) for r in await store.last_runs(50)]),
            load=[DayLoad(d, n, cap, threshold) for d, n in sorted(per_day.items())],
            config_errors=campaign_config_errors(await store.load_campaigns()),
        )  # fmt: skip


def to_json(s: Status) -> str:
    data = asdict(s)
    data["today"] = s.today.isoformat()
    data["load"] = [{"day": d.day.isoformat(), "planned": d.planned, "cap": d.cap,
                     "threshold": d.threshold, "over": d.over} for d in s.load]  # fmt: skip
    data["fingerprint_matches"] = (
        None if s.stored_fingerprint is None else s.stored_fingerprint == s.settings_fingerprint
    )
    return json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"


def _daemon_line(d: dict[str, Any] | None) -> str:
    if d is None:
        return "daemon: not running (no heartbeat has ever been written next to this database)"
    age = report.age_text(d.get("age_seconds"))
    if d["running"]:
        return f"daemon: running, pid {d.get('pid')}, heartbeat {age} ago; {d.get('status')}"
    why = "it stopped" if d.get("stopped") else "stale: the daemon died or hangs"
    return f"daemon: not running (last heartbeat {age} ago, pid {d.get('pid')}; {why})"


def to_text(s: Status) -> str:
    out = [f"mailplan status of {s.db}", f"  today: {s.today.isoformat()} ({s.timezone})"]
    out.append("  " + _daemon_line(s.daemon))
    if s.pending_events:
        out.append(f"  pending events: {s.pending_events}; oldest from {s.oldest_event_at} "
                   f"({report.age_text(s.oldest_event_age_seconds)} ago)")  # fmt: skip
    else:
        out.append("  pending events: none")
    out += [f"  in flight: {line}" for line in s.in_flight] or ["  in flight: nothing"]
    out.append(f"  last daily tick: {s.last_tick or 'never'}")
    v = s.last_verification
    if v is None:
        out.append("  last verification: never (the nightly `recompute --all --verify`)")
    elif v.get("drift"):
        out.append(f"  last verification: {v['at']} for {v['today']}: DRIFT of {v['drift']} rows "
                   f"({v['missing']} missing, {v['extra']} extra, {v['changed']} changed), "
                   + ("repaired" if v.get("repaired") else "not repaired"))  # fmt: skip
    else:
        out.append(f"  last verification: {v['at']} for {v['today']}: no drift")
    out.append("  events set aside: " + (", ".join(map(str, s.set_aside_events)) or "none"))
    if s.daemon is not None:
        n = s.daemon.get("malformed_events", 0)
        out.append(f"  malformed events consumed since the daemon started: {n}"
                   + (" (each logged as event_malformed)" if n else ""))  # fmt: skip
    if s.inbox is None:
        out.append("  inbox: not configured")
    elif s.inbox_rejects is None:
        out.append(f"  inbox {s.inbox}: rejected/ folder not readable")
    else:
        out.append(f"  inbox {s.inbox}: {s.inbox_rejects} rejected records in "
                   f"{s.inbox_reject_files} files under rejected/")  # fmt: skip
    if s.stored_fingerprint is None:
        out.append(f"  planning fingerprint: this command {s.settings_fingerprint[:12]}; "
                   "the stored plan's is not recorded")  # fmt: skip
    elif s.stored_fingerprint == s.settings_fingerprint:
        out.append(f"  planning fingerprint: {s.settings_fingerprint[:12]} (stored plan and "
                   "this command's settings agree)")  # fmt: skip
    else:
        out.append(f"  planning fingerprint: DIFFERS: stored plan {s.stored_fingerprint[:12]}, "
                   f"this command {s.settings_fingerprint[:12]}")  # fmt: skip
        out += [f"    - {key}" for key in s.settings_differ]
    out.append(f"  contacts with an email: {s.contacts}; daily cap {s.cap}, rebalanced "
               f"above {s.threshold} (cap x overage_threshold)")  # fmt: skip
    out.append(f"  plan journal: {s.journal_entries} entries"
               + (f" since {s.journal_oldest}" if s.journal_oldest else ""))  # fmt: skip
    out.append("  last runs:" if s.runs else "  last runs: none")
    for run in s.runs:
        chunks = f" chunks={run['chunks']}" if "chunks" in run else ""
        out.append("    " + report.run_line(run) + chunks)
    out.append("  daily load (planned / cap / threshold):")
    for d in s.load:
        flag = "  OVER CAP" if d.over else ""
        out.append(f"    {d.day.isoformat()}  {d.planned:>8} / {d.cap} / {d.threshold}{flag}")
    if s.config_errors:
        out.append("  configuration errors (these campaign instances plan nothing):")
        out += [f"    - {e}" for e in s.config_errors]
    else:
        out.append("  configuration errors: none")
    return "\n".join(out) + "\n"


async def command(args: Any, settings: Any, db: Path, now: datetime) -> int:
    s = await gather(args, settings, db, now)
    sys.stdout.write(to_json(s) if args.json else to_text(s))
    return 0


def _iso(d: date | None) -> str | None:
    return None if d is None else d.isoformat()
