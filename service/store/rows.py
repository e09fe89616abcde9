"""Rows as SQLite gives them, turned into the planning model (SPEC 3, 5).

Pure functions: the loaders (:mod:`service.store.loaders`) read the rows,
and a planning process (:mod:`service.engine.chunks`) can turn a chunk's
rows into planner input without a database. Rows are plain tuples, which
pickle cheaply.
"""

from __future__ import annotations

import hashlib
import json
import marshal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from service.planning.dates import parse_date, parse_instant
from service.planning.flags import TRUE_WORDS, parse_flag
from service.planning.model import (
    PLAN_STATUSES,
    CampaignInstance,
    Click,
    Contact,
    ContactCampaign,
    ContactData,
    ContactEvent,
    HistoryEmail,
)
from service.store.base import fingerprints_trusted, ids_param
from service.store.sql import SCHEDULE_COLUMNS
from service.store.sql import column as _column
from service.store.types import Scope

MAX_ID = 2**63 - 1
MIN_ID = -(2**63)

Key5 = tuple[int, str, int | None, int | None, int | None]

_INSTANCE_DATES = ("active_start_date", "active_end_date", "spread_start_date", "spread_end_date")


def text(value: object) -> str | None:
    """A text column as upstream filled it: numbers become their text, bytes
    are decoded leniently (SPEC 13: bad input never crashes a load)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _date_of(value: object) -> date | None:
    return parse_date(text(value))


def event_date_of(year: object, month: object, day: object) -> date | None:
    if isinstance(year, int) and isinstance(month, int) and isinstance(day, int):
        try:
            return date(year, month, day)
        except ValueError:
            return None
    return None


_TRUE = json.dumps(sorted(TRUE_WORDS))
"""The yes words, bound as a JSON array where a query reads a flag written as text."""


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return parse_flag(value) is True
    return bool(value)


def contact_from_row(r: tuple[Any, ...]) -> Contact:
    # The contacts queries cast every column to text and the flag to 0/1.
    return Contact(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] == 1)


def send_instant_of(actual: object, sent_at: object) -> datetime | None:
    """The send instant of a history email, from the column that gives its
    send date (SPEC 5.7), when that column has a time part."""
    if _date_of(actual) is not None:
        return parse_instant(text(actual))
    if _date_of(sent_at) is not None:
        return parse_instant(text(sent_at))
    return None


def send_date_of(actual: object, sent_at: object, scheduled: object) -> date | None:
    """The send date of a history email (SPEC 5.7): actual send time, else
    ``sent_at``, else the scheduled date (a claimed row not yet sent)."""
    return _date_of(actual) or _date_of(sent_at) or _date_of(scheduled)


@dataclass(frozen=True, slots=True)
class StoredPlanRow:
    """A plan row as stored, reduced to what the writer compares.

    ``content`` is compared with the content of the newly planned row; the
    balancer's own columns (scheduled date, step-1 date) are not part of it.
    """

    id: int
    key: tuple[int, str, int | None, int | None, int | None]
    content: tuple[object, ...]
    status: str
    desired: str | None
    scheduled: str | None
    balanced: bool
    step1: str | None = None
    """The ``balance_date`` column (the step-1 date of the last balance)."""


_STORED = SCHEDULE_COLUMNS.index("send_timezone") + 1
"""The leading columns of :data:`SCHEDULE_COLUMNS` a stored plan row keeps."""
_CONTACT, _TYPE, _STATUS = (_column(c) for c in ("contact_id", "email_type", "status"))
_EVENT = tuple(_column(c) for c in ("event_year", "event_month", "event_day"))
_SCHEDULED, _INSTANCE = _column("scheduled_send_date"), _column("campaign_instance_id")
_ACTUAL, _SENT_AT = _column("actual_send_datetime"), _column("sent_at")


def stored_plan_row(row: tuple[Any, ...]) -> StoredPlanRow:
    # The leading columns of SCHEDULE_COLUMNS, in their order.
    (rid, cid, etype, status, ey, em, ed, sched, stime, reason, prio, tmpl, inst,
     note, desired, bal, a_from, a_to, tz) = row[:_STORED]  # fmt: skip
    content = (stime, status, reason, prio, tmpl, inst, note, desired, a_from, a_to, tz)
    return StoredPlanRow(
        id=rid,
        key=(cid, etype, ey, em, ed),
        content=content,
        status=status,
        desired=desired if desired is not None else text(sched),
        scheduled=text(sched),
        balanced=bal is not None,
        step1=text(bal),
    )


@dataclass(slots=True)
class ChunkRows:
    """A chunk's rows as read (:meth:`LoaderMixin.read_chunk`); plain tuples."""

    scope: Scope
    contact_rows: list[Row]
    related: RelatedRows
    prints: dict[int, str | None]
    """contact -> its stored ``contact_plan_state.fingerprint``."""
    seq: int
    """The event sequence the rows were read at."""
    untidy: bool = True
    """The range holds plan rows of contacts that no longer exist: a write
    is due even if no contact's plan changed."""
    moved_through: str | None = None
    """The latest day rows were caught up to, as read with the fingerprints
    (:data:`~service.store.base.CATCHUP_THROUGH`)."""

    def fingerprints_trusted(self, today: date | None) -> bool:
        """Whether the stored fingerprints read may be trusted for a plan of
        ``today`` (:func:`~service.store.base.fingerprints_trusted`)."""
        return fingerprints_trusted(self.moved_through, today)

    def needs_write(self, planned: Iterable[int]) -> bool:
        """Whether writing the chunk can change anything, given the contacts
        whose plans were made (the others' inputs are unchanged)."""
        if self.untidy or any(True for _ in planned):
            return True
        present = {r[0] for r in self.contact_rows}
        return any(cid not in present for cid in self.prints)


def scope_params(scope: Scope) -> dict[str, object]:
    if scope.ids is not None:
        return {"ids": ids_param(scope.ids)}
    return {"lo": scope.lo, "hi": scope.hi}


Row = tuple[Any, ...]


@dataclass(slots=True)
class RelatedRows:
    """The rows of a scope's related tables, as read (plain tuples: they pickle cheaply)."""

    schedules: list[Row] = field(default_factory=list)
    targeting: list[Row] = field(default_factory=list)
    clicks: list[Row] = field(default_factory=list)
    events: list[Row] = field(default_factory=list)


@dataclass(slots=True)
class Grouped:
    """:class:`RelatedRows` grouped by contact; plan rows apart."""

    history: dict[int, list[Row]] = field(default_factory=dict)
    plan: list[Row] = field(default_factory=list)
    targeting: dict[int, list[Row]] = field(default_factory=dict)
    clicks: dict[int, list[Row]] = field(default_factory=dict)
    events: dict[int, list[Row]] = field(default_factory=dict)


def _by_contact(rows: Iterable[Row]) -> dict[int, list[Row]]:
    out: dict[int, list[Row]] = {}
    for r in rows:
        got = out.get(r[0])
        if got is None:
            out[r[0]] = [r]
        else:
            got.append(r)
    return out


def group_related(raw: RelatedRows) -> Grouped:
    """Group the rows by contact (pure); the scope's plan rows kept apart."""
    history: dict[int, list[Row]] = {}
    plan: list[Row] = []
    status_at, contact_at, plan_statuses = _STATUS, _CONTACT, PLAN_STATUSES
    for r in raw.schedules:
        if r[status_at] in plan_statuses:
            plan.append(r)
            continue
        cid = r[contact_at]
        got = history.get(cid)
        if got is None:
            history[cid] = [r]
        else:
            got.append(r)
    return Grouped(
        history, plan, _by_contact(raw.targeting), _by_contact(raw.clicks), _by_contact(raw.events)
    )


def build_contacts(
    contacts: Iterable[Contact], grouped: Grouped, *, plan_rows: bool = True
) -> tuple[list[ContactData], list[StoredPlanRow], set[Key5]]:
    """The planner's input for ``contacts`` from their grouped rows (pure),
    the stored plan rows and the identities held by history rows."""
    stored = [stored_plan_row(r) for r in grouped.plan] if plan_rows else []
    history_keys: set[Key5] = set()
    ev0, ev1, ev2 = _EVENT
    data = []
    history, targeting, clicks, events = (
        grouped.history, grouped.targeting, grouped.clicks, grouped.events,
    )  # fmt: skip
    for c in contacts:
        cid = c.id
        h, t, k, e = history.get(cid), targeting.get(cid), clicks.get(cid), events.get(cid)
        if h is None and t is None and k is None and e is None:
            data.append(ContactData(c))
            continue
        if h:
            history_keys.update((cid, r[_TYPE], r[ev0], r[ev1], r[ev2]) for r in h)
        data.append(
            ContactData(
                c,
                tuple(_history_from_row(r) for r in h) if h else (),
                tuple(_targeting(t)) if t else (),
                tuple(_clicks(k)) if k else (),
                tuple(_events(e)) if e else (),
            )
        )
    return data, stored, history_keys


def _targeting(rows: list[Row]) -> Iterator[ContactCampaign]:
    for r in rows:
        if isinstance(r[1], int):
            yield ContactCampaign(r[0], r[1], _date_of(r[2]), text(r[3]) or "")


def _clicks(rows: list[Row]) -> Iterator[Click]:
    for r in rows:
        clicked = _date_of(r[1])
        if clicked is not None:
            yield Click(r[0], clicked, parse_instant(text(r[1])))


def _events(rows: list[Row]) -> Iterator[ContactEvent]:
    for r in rows:
        created = _date_of(r[3])
        if created is not None:
            yield ContactEvent(
                r[0], text(r[1]) or "", text(r[2]), created, parse_instant(text(r[3]))
            )


def input_digest(contact_row: Row, grouped: Grouped, key: bytes) -> str:
    """A digest of everything read for one contact (its row and its related
    rows, as SQLite gave them), keyed by ``key`` (what else the plan depends
    on: settings, campaigns, the code). Equal digests mean equal planner input.

    marshal format 2 writes ints, strings, floats, bytes, None and tuples by
    value only, so equal rows give equal bytes in every process.
    """
    cid = contact_row[0]
    data = marshal.dumps(
        (
            contact_row,
            grouped.history.get(cid),
            grouped.targeting.get(cid),
            grouped.clicks.get(cid),
            grouped.events.get(cid),
        ),
        2,
    )
    return hashlib.blake2b(data, digest_size=12, key=key).hexdigest()


def _int_or(value: object, default: int) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return default
    return default


def _instance_from_row(r: tuple[Any, ...]) -> CampaignInstance:
    errors: list[str] = []
    dates: dict[str, date | None] = {}
    for column, raw in zip(_INSTANCE_DATES, r[5:9], strict=True):
        value = text(raw)
        parsed = parse_date(value)
        if parsed is None and value is not None and value.strip():
            errors.append(
                f"campaign instance {r[0]}: {column} {value!r} is not a date (YYYY-MM-DD)"
            )
        dates[column] = parsed
    return CampaignInstance(
        id=r[0],
        campaign_type=text(r[1]) or "",
        instance_name=text(r[2]) or "",
        email_template=text(r[3]),
        sms_template=text(r[4]),
        active_start_date=dates["active_start_date"],
        active_end_date=dates["active_end_date"],
        spread_start_date=dates["spread_start_date"],
        spread_end_date=dates["spread_end_date"],
        target_states=text(r[9]),
        target_carriers=text(r[10]),
        errors=tuple(errors),
    )


def _history_from_row(r: tuple[Any, ...]) -> HistoryEmail:
    inst = r[_INSTANCE]
    actual, sent_at = r[_ACTUAL], r[_SENT_AT]
    year, month, day = _EVENT
    return HistoryEmail(
        contact_id=r[_CONTACT],
        email_type=text(r[_TYPE]) or "",
        status=text(r[_STATUS]) or "",
        send_date=send_date_of(actual, sent_at, r[_SCHEDULED]),
        event_date=event_date_of(r[year], r[month], r[day]),
        campaign_instance_id=inst if isinstance(inst, int) else None,
        send_at=send_instant_of(actual, sent_at),
    )
