"""Plain values the store hands out and takes in (no I/O here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple

from service.planning.balance import BalanceItem
from service.planning.model import ContactData, RowKey


@dataclass(frozen=True, slots=True)
class Event:
    """One row of ``scheduler_events``.

    Upstream may insert explicit events with any SQLite value in any column,
    so ``contact_id``, ``ref`` and ``detail`` are passed through as stored.
    """

    id: int
    kind: str
    contact_id: object
    ref: object
    detail: object
    created_at: str


@dataclass(frozen=True, slots=True)
class Scope:
    """Which contacts a load or a write covers.

    Either an explicit set of ids, or the id range ``lo..hi`` (both inclusive)
    of a chunk: a range also covers ids that no longer exist, so the plan rows
    of deleted contacts inside it are found and removed.
    """

    ids: tuple[int, ...] | None = None
    lo: int = 0
    hi: int = 0
    id_set: frozenset[int] = frozenset()
    """``ids`` as a set, for :meth:`contains` (the writer asks once per contact)."""

    @classmethod
    def of_ids(cls, ids: Sequence[int]) -> Scope:
        unique = frozenset(ids)
        return cls(ids=tuple(sorted(unique)), id_set=unique)

    @classmethod
    def of_range(cls, lo: int, hi: int) -> Scope:
        return cls(lo=lo, hi=hi)

    def contains(self, contact_id: int) -> bool:
        if self.ids is not None:
            return contact_id in (self.id_set or frozenset(self.ids))
        return self.lo <= contact_id <= self.hi


@dataclass(frozen=True, slots=True)
class ContactChunk:
    """A run of contacts in id order with everything the planner needs.

    ``scope`` is the id range the chunk is responsible for, which reaches to
    the previous chunk's last id, so together the chunks cover every id.
    """

    scope: Scope
    contacts: list[ContactData]


@dataclass(slots=True)
class WriteStats:
    """What one plan write did (SPEC 7)."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0

    def add(self, other: WriteStats) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.deleted += other.deleted
        self.unchanged += other.unchanged

    @property
    def changed(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass(slots=True)
class WriteResult:
    """The writer's answer: counts, and what changed in the set load
    balancing sweeps, for the rebalance by rows (SPEC 6)."""

    stats: WriteStats = field(default_factory=WriteStats)
    delta: BalanceDelta = field(default_factory=lambda: BalanceDelta())


@dataclass(slots=True)
class RunStats:
    """The counters of one run, as recorded in ``scheduler_runs`` (SPEC 3)."""

    events_consumed: int = 0
    contacts_recomputed: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    windows_rebalanced: int = 0
    rows_moved: int = 0

    def add_writes(self, stats: WriteStats) -> None:
        self.inserted += stats.inserted
        self.updated += stats.updated
        self.deleted += stats.deleted
        self.unchanged += stats.unchanged

    def add(self, other: RunStats) -> None:
        self.events_consumed += other.events_consumed
        self.contacts_recomputed += other.contacts_recomputed
        self.inserted += other.inserted
        self.updated += other.updated
        self.deleted += other.deleted
        self.unchanged += other.unchanged
        self.windows_rebalanced += other.windows_rebalanced
        self.rows_moved += other.rows_moved


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of ``scheduler_runs``."""

    id: int
    started_at: str
    finished_at: str | None
    trigger: str
    today: str | None
    stats: RunStats
    duration_ms: float | None
    error: str | None


class ExportRow(NamedTuple):
    """One plan row as ``export`` and ``recompute --dry-run`` print it (SPEC 10).

    ``skip_reason`` is ``""`` for ``pre-scheduled`` rows.
    """

    contact_id: int
    email_type: str
    event_date: date
    desired_date: date
    scheduled_date: date
    status: str
    skip_reason: str


@dataclass(frozen=True, slots=True)
class EventsSummary:
    """Queue depth of the events inbox, for ``status`` and systemd STATUS."""

    pending: int
    oldest_created_at: datetime | None
    max_id: int


@dataclass(slots=True)
class DriftReport:
    """Differences between the stored plan and a full recompute (``verify``)."""

    missing: int = 0
    extra: int = 0
    changed: int = 0
    samples: list[str] = field(default_factory=list)
    repaired: bool = False
    repair_stats: RunStats | None = None
    count_days: int = 0
    """Days whose per-day balancing counts differ from the plan rows."""

    @property
    def drift(self) -> int:
        return self.missing + self.extra + self.changed

    @property
    def any(self) -> bool:
        """Anything to repair: plan rows, or the balancing counts."""
        return bool(self.drift or self.count_days)

    def note(self, kind: str, row: ExportRow, new: ExportRow | None = None) -> None:
        """Count one difference (``missing``, ``extra`` or ``changed``); keep a few."""
        if kind == "missing":
            self.missing += 1
        elif kind == "extra":
            self.extra += 1
        else:
            self.changed += 1
        if len(self.samples) < 20:
            self.samples.append(
                f"{kind}: {_row_words(row)}"
                + (f"; a full recompute gives {_row_words(new, contact=False)}" if new else "")
            )


class StoredRow(NamedTuple):
    """A non-skipped plan row with the balancer's stored dates.

    ``step1`` is the ``balance_date`` column (``None`` if never balanced),
    ``scheduled`` the ``scheduled_send_date``.
    """

    item: BalanceItem
    step1: date | None
    scheduled: date


Update = tuple[RowKey, date, date]
"""(row key, new step-1 date, new scheduled date)."""

DayCounts = dict[date, tuple[int, int]]
"""Per day: (rows whose step-1 date is that day, rows scheduled on it)."""


@dataclass(slots=True)
class BalanceDelta:
    """What a write changed in the set that load balancing sweeps (SPEC 6).

    ``gone``: the previous versions of rows that left the sweep or whose
    balancing inputs changed, with the step-1 and scheduled dates of the last
    balance. ``added``: the new versions of rows that joined the sweep or
    changed, with the dates stored for them now (a new row starts at its
    desired date). A changed row is in both. ``days``: what the write did to
    the per-day counts (:data:`DayCounts`), as differences.
    ``exact`` is false when the write cannot vouch for the table (an insert
    refused by the database): balancing must then go global.
    """

    gone: list[StoredRow] = field(default_factory=list)
    added: list[StoredRow] = field(default_factory=list)
    days: dict[date, list[int]] = field(default_factory=dict)
    exact: bool = True

    def __bool__(self) -> bool:
        return bool(self.gone or self.added) or not self.exact

    def count(self, step1: date | None, scheduled: date | None, sign: int) -> None:
        """Add ``sign`` to the counts of a row with these dates."""
        if step1 is None or scheduled is None:
            return
        days = self.days
        entry = days.get(step1)
        if entry is None:
            entry = days[step1] = [0, 0]
        entry[0] += sign
        entry = days.get(scheduled)
        if entry is None:
            entry = days[scheduled] = [0, 0]
        entry[1] += sign

    def extend(self, other: BalanceDelta) -> None:
        self.gone.extend(other.gone)
        self.added.extend(other.added)
        for day, (a, b) in other.days.items():
            entry = self.days.setdefault(day, [0, 0])
            entry[0] += a
            entry[1] += b
        self.exact = self.exact and other.exact


def _row_words(row: ExportRow, *, contact: bool = True) -> str:
    """A plan row in words for drift samples (not a Python repr)."""
    who = (
        f"contact {row.contact_id} {row.email_type} for {row.event_date.isoformat()}: "
        if contact
        else ""
    )
    reason = f" ({row.skip_reason})" if row.skip_reason else ""
    return (
        f"{who}{row.status}{reason}, desired {row.desired_date.isoformat()}, "
        f"scheduled {row.scheduled_date.isoformat()}"
    )


@dataclass(frozen=True, slots=True)
class PlanBasis:
    """The settings the stored plan follows (SPEC 4): the planning fingerprint,
    the settings as JSON (to name differences), and the *today* of the full
    recompute under them (None: none has completed under them yet). All None
    on a database whose plan was never built by this version."""

    fingerprint: str | None
    settings_json: str | None
    full_recompute_day: date | None
