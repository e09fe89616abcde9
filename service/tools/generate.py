"""Synthetic, realistic data for demos and benchmarks (``mailplan generate``).

The generator plays the part of an upstream CRM: it writes ``contacts``, campaign
configuration, targeting rows, sender history and engagement straight into the
database, as any upstream system would. The data is a pure function of the seed
and the reference date, so a benchmark or a test can rebuild the same database.

Contacts 1..len(SHOWCASE) are fixed "showcase" cases (every state with a rule,
Feb 29 dates, missing and wrong locations, bad addresses and dates) so that
even a tiny database covers every rule; the rest are random with realistic
proportions. Speed matters (1,000,000 contacts in well under 30 s): columns are
drawn with one ``random.Random`` in tight loops and written with ``executemany``
in large batches inside a single transaction. Above one batch the drawing runs
in a second process, which draws the next batch while this one inserts the
last (a thread would not do: SQLite takes the GIL back for every row it steps).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import multiprocessing
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import structlog

from service.errors import InputError, MailplanError
from service.planning.dates import anniversary
from service.store.bulk import BulkLoader, bulk_load
from service.tools.showcase import apply_showcase, leap_years, showcase

log = structlog.get_logger(__name__)

BATCH = 50_000

# fmt: off
# Approximate population (hundreds of thousands) so the mix of states looks real.
STATE_WEIGHTS: dict[str, int] = {
    "CA": 390, "TX": 290, "FL": 220, "NY": 200, "PA": 130, "IL": 126, "OH": 118,
    "GA": 107, "NC": 105, "MI": 100, "NJ": 93, "VA": 86, "WA": 77, "AZ": 73,
    "MA": 70, "TN": 69, "IN": 68, "MO": 62, "MD": 62, "WI": 59, "CO": 58, "MN": 57,
    "SC": 51, "AL": 50, "LA": 46, "KY": 45, "OR": 42, "OK": 40, "CT": 36, "UT": 33,
    "IA": 32, "NV": 31, "AR": 30, "MS": 29, "KS": 29, "NM": 21, "NE": 20, "ID": 19,
    "WV": 18, "HI": 14, "NH": 14, "ME": 14, "MT": 11, "RI": 11, "DE": 10, "SD": 9,
    "ND": 8, "AK": 7, "DC": 7, "VT": 6, "WY": 6, "PR": 32,
}
FIRST_NAMES = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda",
    "William", "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
    "Thomas", "Sarah", "Charles", "Karen", "Christopher", "Lisa", "Daniel", "Nancy",
    "Matthew", "Betty", "Anthony", "Helen", "Mark", "Sandra", "Dolores", "Harold",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
    "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson",
    "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "O'Brien",
)
CARRIERS = (
    "UnitedHealthcare", "Mutual of Omaha", "Aetna", "Cigna", "Humana", "Anthem",
    "Blue Cross Blue Shield", "Wellabe", "Manhattan Life", "Accendo",
)
PLAN_TYPES = ("Plan G", "Plan N", "Plan F", "High Deductible G")
PROVIDERS = ("gmail.com", "yahoo.com", "hotmail.com", "aol.com", "outlook.com", "comcast.net")
BAD_DATES = ("1950-02-30", "19XX-01-01", "1960/05/05", "1961-13-01", "unknown", "")
BAD_EMAIL_FORMS = ("{n}.{i}", "{n}.{i}@", "{n} {i}@example.com", "{n}.{i}@@example.com")

# fmt: on


@dataclass(frozen=True, slots=True)
class GenerateSummary:
    """What ``generate`` wrote."""

    contacts: int
    history: int
    clicks: int
    contact_events: int
    contact_campaigns: int
    campaign_instances: int
    seconds: float


@cache
def zips_by_state() -> dict[str, tuple[str, ...]]:
    """Real, active, standard five-digit ZIP codes of each state (``zipcodes`` package)."""
    import zipcodes  # loaded lazily: building its list takes ~0.5 s

    list_all: Any = zipcodes.list_all
    out: dict[str, list[str]] = {}
    for z in list_all():
        if z["active"] and z["zip_code_type"] == "STANDARD":
            out.setdefault(z["state"], []).append(z["zip_code"])
    return {state: tuple(sorted(codes)) for state, codes in out.items()}


class _Columns:
    """Random contact columns, drawn a batch at a time from one seeded generator.

    Work is done column by column in list comprehensions over precomputed
    tables (ISO date strings, ZIPs per state, phone numbers): per-row Python
    branching would be several times slower at a million rows.
    """

    def __init__(self, rng: random.Random, today: date) -> None:
        self.rng = rng
        self.zips = zips_by_state()
        self.states = tuple(STATE_WEIGHTS)
        self.cum = list(itertools.accumulate(STATE_WEIGHTS[st] for st in self.states))
        t = today.toordinal()
        # Ages 55..95 on the reference date; 2 % are 40..55 (age ranges of IL/IN matter).
        self.births = [date.fromordinal(t - 95 * 365 + k).isoformat() for k in range(55 * 365)]
        self.old_span = 40 * 365
        # Policies from 35 years ago to one year ahead, skewed towards recent ones.
        eff = [date.fromordinal(t + 365 - k) for k in range(35 * 365)]
        self.effs = [d.isoformat() for d in eff]
        self.effs_first = [d.replace(day=1).isoformat() for d in eff]
        self.leaps = leap_years(today.year - 95, today.year - 40)
        self.eff_leaps = [
            y
            for y in leap_years(1992, today.year + 1)
            if date(y, 2, 29) <= today + timedelta(days=365)
        ]
        self.phones = [
            f"({rng.randrange(200, 1000)}) {rng.randrange(200, 1000)}-{rng.randrange(10000):04d}"
            for _ in range(65536)
        ]
        self.first_lower = [n.lower() for n in FIRST_NAMES]
        self.last_lower = [n.lower().replace("'", "") for n in LAST_NAMES]

    def uniforms(self, n: int) -> list[float]:
        r = self.rng.random
        return [r() for _ in range(n)]

    def rare(self, n: int, p: float) -> list[int]:
        """Positions (0-based) picked with probability ``p`` each."""
        return [k for k, u in enumerate(self.uniforms(n)) if u < p]

    def birth_dates(self, n: int) -> list[str]:
        span, tbl = self.old_span, self.births
        young = len(tbl) - span
        out = [
            tbl[int(u * span)] if u < 0.98 else tbl[span + int((u - 0.98) * 50 * young)]
            for u in self.uniforms(n)
        ]
        pick = self.rng.random
        for k in self.rare(n, 0.003):
            out[k] = f"{self.leaps[int(pick() * len(self.leaps))]}-02-29"
        for k in self.rare(n, 0.002):
            out[k] = BAD_DATES[int(pick() * len(BAD_DATES))]
        return out

    def effective_dates(self, n: int) -> list[str]:
        span = len(self.effs)
        tables = (self.effs_first, self.effs)
        out = [
            tables[f >= 0.8][int(span * u * u)]
            for u, f in zip(self.uniforms(n), self.uniforms(n), strict=True)
        ]
        pick = self.rng.random
        for k in self.rare(n, 0.001):
            out[k] = f"{self.eff_leaps[int(pick() * len(self.eff_leaps))]}-02-29"
        for k in self.rare(n, 0.002):
            out[k] = BAD_DATES[int(pick() * len(BAD_DATES))]
        for k in self.rare(n, 0.005):
            out[k] += " 00:00:00"
        return out

    def locations(self, n: int) -> tuple[list[str], list[str]]:
        states = self.rng.choices(self.states, cum_weights=self.cum, k=n)
        zips = self.zips
        codes = [
            zips[s][int(u * len(zips[s]))] for s, u in zip(states, self.uniforms(n), strict=True)
        ]
        pick = self.rng.random
        for k in self.rare(n, 0.07):
            r = pick()
            if r < 0.43:
                states[k] = ""  # state derived from the ZIP
            elif r < 0.57:
                states[k], codes[k] = "", ""  # no location at all
            elif r < 0.64:
                states[k] = "XX"  # not a USPS code: the ZIP decides
            elif r < 0.71:
                codes[k] = "ABCDE"  # bad ZIP, good state
            elif r < 0.86:
                states[k] = states[k].lower()
            else:
                codes[k] = f"{codes[k]}-{int(pick() * 10000):04d}"
        return states, codes

    def names_and_emails(self, start: int, n: int) -> tuple[list[str], list[str], list[str]]:
        nf, nl, npr = len(FIRST_NAMES), len(LAST_NAMES), len(PROVIDERS)
        fi = [int(u * nf) for u in self.uniforms(n)]
        li = [int(u * nl) for u in self.uniforms(n)]
        fl, ll = self.first_lower, self.last_lower
        emails = [
            f"{fl[a]}.{ll[b]}.{i}@{PROVIDERS[int(u * npr)]}"
            for a, b, i, u in zip(fi, li, range(start, start + n), self.uniforms(n), strict=True)
        ]
        pick = self.rng.random
        for k in self.rare(n, 0.01):
            form = BAD_EMAIL_FORMS[int(pick() * len(BAD_EMAIL_FORMS))]
            emails[k] = form.format(n=f"{fl[fi[k]]}.{ll[li[k]]}", i=start + k)
        return [FIRST_NAMES[a] for a in fi], [LAST_NAMES[b] for b in li], emails

    def batch(self, start: int, stop: int, stamp: str) -> list[tuple[object, ...]]:
        n = stop - start
        r = self.rng.random
        firsts, lasts, emails = self.names_and_emails(start, n)
        carriers = self.rng.choices(CARRIERS, k=n)
        plans = self.rng.choices(PLAN_TYPES, k=n)
        effective = self.effective_dates(n)
        births = self.birth_dates(n)
        tobacco = [int(r() < 0.15) for _ in range(n)]
        gender = ["F" if r() < 0.55 else "M" for _ in range(n)]
        states, codes = self.locations(n)
        agents = [1 + int(r() * 50) for _ in range(n)]
        phones = [self.phones[int(r() * 65536)] for _ in range(n)]
        failed = [int(r() < 0.05) for _ in range(n)]
        rep = itertools.repeat
        return list(zip(
            range(start, stop), firsts, lasts, emails, carriers, plans, effective, births,
            tobacco, gender, states, codes, agents, phones, failed, rep(stamp),
            rep(stamp), strict=False,
        ))  # fmt: skip


def _month_days(today: date, before: int) -> frozenset[str]:
    """'MM-DD' of dates whose email ``before`` days ahead of their anniversary went out
    in the last 34 days (a cheap pre-filter before parsing any date)."""
    out = set()
    for k in range(366):
        d = date(2000, 1, 1) + timedelta(days=k)
        for year in (today.year - 1, today.year, today.year + 1):
            sent = anniversary(d, year) - timedelta(days=before)
            if today - timedelta(days=34) <= sent < today:
                out.add(d.isoformat()[5:])
    return frozenset(out)


def _sent_row(
    row_id: int,
    contact_id: object,
    kind: str,
    sent: date,
    event: date,
    status: str,
    prio: int,
    template: str,
) -> tuple[object, ...]:
    stamp = f"{sent.isoformat()} 13:30:00"
    return (
        row_id, contact_id, kind, sent.isoformat(), "08:30:00", status, event.year, event.month,
        event.day, stamp, stamp, prio, template, "generated-history", stamp, stamp,
    )  # fmt: skip


def _last_send(text: str, before: int, today: date) -> tuple[date, date] | None:
    """(send date, anniversary) of an email ``before`` days ahead of an anniversary of
    ``text`` that went out in the last 34 days, if any."""
    try:
        base = date.fromisoformat(text)
    except ValueError:
        return None
    for year in (today.year - 1, today.year, today.year + 1):
        event = anniversary(base, year)
        sent = event - timedelta(days=before)
        if today - timedelta(days=34) <= sent < today and event > base:
            return sent, event
    return None


def _history_rows(
    rng: random.Random, today: date, rows: Sequence[tuple[object, ...]], next_id: int
) -> list[tuple[object, ...]]:
    """Sender history for contacts whose anniversary email went out in the last weeks,
    and for a tenth of them the follow-up already sent.

    Rows start with their explicit ``email_schedules`` id, so clicks can point at them.
    """
    out: list[tuple[object, ...]] = []
    bdays, edays = _month_days(today, 14), _month_days(today, 30)
    for row in rows:
        birth, eff = str(row[7])[:10], str(row[6])[:10]
        if birth[5:] not in bdays and eff[5:] not in edays:
            continue
        followed = False
        for kind, text, before, prio in (("birthday", birth, 14, 10),
                                         ("effective_date", eff, 30, 20)):  # fmt: skip
            found = _last_send(text, before, today) if rng.random() <= 0.6 else None
            if found is None:
                continue
            sent, event = found
            status = "delivered" if rng.random() < 0.7 else "sent"
            out.append(_sent_row(next_id, row[0], kind, sent, event, status, prio,
                                 f"{kind}_template"))  # fmt: skip
            next_id += 1
            follow = sent + timedelta(days=2)
            # One follow-up per contact: two sends on one day would otherwise give
            # two follow-ups with the same identity.
            if rng.random() < 0.1 and follow < today and not followed:
                followed = True
                # A follow-up's event date is the send date of the email it follows.
                out.append(_sent_row(next_id, row[0], "followup_cold", follow, sent, "sent",
                                     50, "cold_template"))  # fmt: skip
                next_id += 1
    return out


def _engagement(
    rng: random.Random, history: Sequence[tuple[object, ...]]
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """Clicks and eligibility answers for some of the sent anniversary emails."""
    clicks: list[tuple[object, ...]] = []
    events: list[tuple[object, ...]] = []
    for row in history:
        if row[2] not in ("birthday", "effective_date"):
            continue
        sent = date.fromisoformat(str(row[3]))
        r = rng.random()
        when = f"{(sent + timedelta(days=1)).isoformat()} 10:15:00"
        if r < 0.3:
            clicks.append((row[1], row[0], when))
        if r < 0.1:
            answer = {"has_medical_conditions": rng.random() < 0.4}
            events.append((row[1], "eligibility_answered", json.dumps(answer), when))
    return clicks, events


def next_aep_season(today: date) -> tuple[date, date]:
    """The next Annual Enrollment Period (Oct 15 - Dec 7) whose campaign (starting 30
    days ahead of it) has not begun yet.

    A season already under way would need the sender's history of the emails it
    sent on its first day; without it every contact would carry an overdue,
    daily caught-up campaign row, which no real book has.
    """
    year = today.year if today < date(today.year, 9, 15) else today.year + 1
    return date(year, 10, 15), date(year, 12, 7)


CAMPAIGN_TYPES = (
    # name, respect windows, follow-ups, days before, all contacts, priority, active,
    # spread evenly, skip failed underwriting
    ("aep", 1, 1, 30, 1, 30, 1, 0, 0),
    ("plan_review", 1, 1, 14, 0, 25, 1, 0, 1),
    ("medicare_newsletter", 1, 0, 0, 1, 35, 1, 1, 0),
)


def _campaigns(
    load: BulkLoader, rng: random.Random, today: date, contacts: int, stamp: str
) -> tuple[int, int]:
    """An AEP instance, a spread newsletter for three states, a targeted review campaign."""
    load.campaign_types([(*t, stamp, stamp) for t in CAMPAIGN_TYPES])
    aep_start, aep_end = next_aep_season(today)
    day = today.toordinal()
    instances = (
        ("aep", f"aep_{aep_start.year}", "aep_template", "aep_sms_template",
         aep_start - timedelta(days=30), aep_end, None, None, "ALL", "ALL"),
        ("medicare_newsletter", f"newsletter_{today.isoformat()}", "newsletter_template", None,
         date.fromordinal(day + 20), date.fromordinal(day + 60),
         date.fromordinal(day + 20), date.fromordinal(day + 50), "TX,FL,GA", "ALL"),
        ("plan_review", f"plan_review_{today.year}", "plan_review_template", None,
         date.fromordinal(day - 30), date.fromordinal(day + 180), None, None, "ALL", "ALL"),
    )  # fmt: skip
    ids: list[int] = []
    for inst in instances:
        values = tuple(v.isoformat() if isinstance(v, date) else v for v in inst)
        ids.append(load.campaign_instance((*values, stamp, stamp)))
    review_id = ids[-1]
    targets = []
    for cid in range(1, contacts + 1):
        if rng.random() < 0.02:
            trigger = today + timedelta(days=int(rng.random() * 130) - 10)
            status = "pending" if rng.random() < 0.9 else "completed"
            targets.append((cid, review_id, trigger.isoformat(), status, "{}", stamp, stamp))
    load.contact_campaigns(targets)
    return len(instances), len(targets)


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    start = 1
    while start <= n:
        stop = min(n + 1, start + size)
        yield start, stop
        start = stop


def _produce(
    contacts: int, seed: int, today: date, next_schedule: int, batch: int
) -> Iterator[tuple[list[tuple[object, ...]], list[tuple[object, ...]]]]:
    """Each batch of contact rows with its sender history, drawn in one fixed order."""
    stamp = f"{today.isoformat()} 00:00:00"
    rng = random.Random(seed)
    columns = _Columns(rng, today)
    history_rng = random.Random(rng.getrandbits(64))
    cases = showcase(today)
    made = 0
    for start, stop in _batches(contacts, batch):
        rows = columns.batch(start, stop, stamp)
        if start == 1:
            apply_showcase(rows, cases, columns.zips)
        history = _history_rows(history_rng, today, rows, next_schedule + made)
        made += len(history)
        yield rows, history


def _producer(out: Connection, args: tuple[int, int, date, int, int]) -> None:
    """The drawing process: sends each batch, then None (or the error's text)."""
    try:
        for item in _produce(*args):
            out.send(item)
        out.send(None)
    except Exception as exc:  # reported to the loading process, which raises it
        out.send(f"{type(exc).__name__}: {exc}")
    finally:
        out.close()


def _drawn_apart(
    args: tuple[int, int, date, int, int],
) -> Iterator[tuple[list[tuple[object, ...]], list[tuple[object, ...]]]]:
    """The batches of :func:`_produce`, drawn in a second process.

    Drawing a batch costs about as much as inserting it; with the drawing in
    its own process the next batch is drawn while this one is inserted. The
    pipe holds at most the batch being sent, so memory stays bounded.
    """
    ctx = multiprocessing.get_context("spawn")
    inbox, out = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_producer, args=(out, args), daemon=True, name="generate-draw")
    proc.start()
    out.close()
    try:
        while True:
            try:
                item = inbox.recv()
            except EOFError:
                raise MailplanError(
                    f"the generating process stopped (exit code {proc.exitcode}); "
                    "nothing was written, run generate again"
                ) from None
            if item is None:
                return
            if isinstance(item, str):
                raise MailplanError(f"generating the data failed: {item}; nothing was written")
            yield item
    finally:
        inbox.close()
        if proc.is_alive():
            proc.terminate()
        proc.join()


def _load(
    load: BulkLoader,
    contacts: int,
    seed: int,
    today: date,
    progress: Callable[[int, int], None] | None = None,
    *,
    batch: int = BATCH,
    apart: bool | None = None,
) -> GenerateSummary:
    # The drawing runs in a second process when there is more than one batch
    # (``apart``), else on this thread: the data are the same either way.
    stamp = f"{today.isoformat()} 00:00:00"
    args = (contacts, seed, today, load.next_schedule_id(), batch)
    if apart is None:
        apart = contacts > batch
    batches = _drawn_apart(args) if apart else _produce(*args)
    history: list[tuple[object, ...]] = []
    done = 0
    for rows, part in batches:
        load.contacts(rows)
        history.extend(part)
        done += len(rows)
        if progress is not None:
            progress(done, contacts)
    load.history(history)
    # Engagement and campaigns draw from their own generator, seeded from the seed.
    rng = random.Random(seed * 1_000_003 + 7)
    clicks, answers = _engagement(rng, history)
    load.clicks(clicks)
    load.contact_events(answers)
    n_instances, n_targets = _campaigns(load, rng, today, contacts, stamp)
    return GenerateSummary(
        contacts=contacts,
        history=len(history),
        clicks=len(clicks),
        contact_events=len(answers),
        contact_campaigns=n_targets,
        campaign_instances=n_instances,
        seconds=0.0,
    )


def generate(
    db_path: Path,
    contacts: int,
    seed: int,
    today: date,
    progress: Callable[[int, int], None] | None = None,
) -> GenerateSummary:
    """Fill an empty, migrated database with ``contacts`` synthetic contacts (ids 1..N).

    The data is a function of ``seed`` and ``today`` only. Everything is written
    in one transaction. Instead of the millions of single-contact events the
    capture triggers would raise, one ``recompute_all`` event is queued: a
    daemon started on the new database plans it in chunks.
    """
    if contacts < 1:
        raise InputError(f"--contacts {contacts}: must be at least 1")
    started = time.perf_counter()
    with bulk_load(db_path) as load:
        summary = _load(load, contacts, seed, today, progress)
    summary = dataclasses.replace(summary, seconds=time.perf_counter() - started)
    log.info(
        "generated",
        db=str(db_path),
        seed=seed,
        today=today.isoformat(),
        contacts=contacts,
        history=summary.history,
        seconds=round(summary.seconds, 2),
    )
    return summary
