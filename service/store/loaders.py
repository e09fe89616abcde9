"""Reading upstream tables into the planning model (SPEC 3, 5).

Contacts are read in id order, a chunk at a time; everything else a chunk's
contacts need (their email_schedules rows, targeting, clicks, engagement
events) is read with one range query per table on ``contact_id``, never with
one query per contact.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from service.planning.dates import parse_date, parse_instant
from service.planning.flags import TRUE_WORDS, parse_flag
from service.planning.model import (
    PLAN_STATUSES,
    CampaignInstance,
    Campaigns,
    CampaignType,
    Click,
    Contact,
    ContactCampaign,
    ContactData,
    ContactEvent,
    HistoryEmail,
)
from service.store.base import StoreBase, ids_param
from service.store.sql import SCHEDULE_COLUMNS
from service.store.sql import column as _column
from service.store.types import ContactChunk, Scope

MAX_ID = 2**63 - 1
MIN_ID = -(2**63)

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
class Loaded:
    """Everything read for one scope: planner input and the stored plan."""

    scope: Scope
    contacts: list[ContactData]
    stored: list[StoredPlanRow] | None = field(default_factory=list)
    """The scope's plan rows; ``None`` when not read (compare by fingerprint)."""
    history_keys: set[tuple[int, str, int | None, int | None, int | None]] = field(
        default_factory=set
    )
    states: dict[int, tuple[str | None, str | None, str | None]] = field(default_factory=dict)
    """contact -> (review date, invalid reason, fingerprint) as stored."""


class LoaderMixin(StoreBase):
    """Loaders building :mod:`service.planning.model` objects."""

    async def load_campaigns(self) -> Campaigns:
        """Campaign types and instances (SPEC 5.6).

        A date column of an instance that holds something other than a date is
        read as ``None`` and listed in the instance's ``errors``.
        """
        types: dict[str, CampaignType] = {}
        for r in await self.fetchall("campaign_types"):
            name = text(r[0]) or ""
            types[name] = CampaignType(
                name=name,
                respect_exclusion_windows=_flag(r[1]),
                enable_followups=_flag(r[2]),
                days_before_event=_int_or(r[3], 0),
                target_all_contacts=_flag(r[4]),
                priority=_int_or(r[5], 10),
                active=_flag(r[6]),
                spread_evenly=_flag(r[7]),
                skip_failed_underwriting=_flag(r[8]),
            )
        instances = [_instance_from_row(r) for r in await self.fetchall("campaign_instances")]
        return Campaigns(types=types, instances=tuple(instances))

    async def contact_count_with_email(self) -> int:
        """N of SPEC 6: contacts whose e-mail is not empty."""
        row = await self.fetchone("count_contacts_with_email")
        return int(row[0]) if row else 0

    async def load_contacts(
        self, ids: Iterable[int], *, since: date | None = None
    ) -> list[ContactData]:
        """The given contacts (those that exist) with their related rows, in id order."""
        loaded = await self.load_scope(Scope.of_ids(list(ids)), since=since)
        return loaded.contacts

    async def iter_contact_chunks(
        self, chunk_size: int, *, since: date | None = None
    ) -> AsyncIterator[ContactChunk]:
        """Every contact in id order, ``chunk_size`` at a time (SPEC 12: streaming)."""
        async for loaded in self.iter_loaded_chunks(chunk_size, since=since):
            yield ContactChunk(loaded.scope, loaded.contacts)

    async def iter_loaded_chunks(
        self, chunk_size: int, *, since: date | None = None
    ) -> AsyncIterator[Loaded]:
        """Chunks with their stored plan rows; the scopes cover every id.

        Each chunk's range starts after the previous chunk's last contact and
        the last one reaches the largest id, so plan rows of contacts that no
        longer exist are inside some chunk's scope.
        """
        after: int | None = None
        while True:
            loaded = await self.load_chunk(after, chunk_size, since=since)
            yield loaded
            if loaded.scope.hi == MAX_ID:
                return
            after = loaded.scope.hi

    async def load_chunk(
        self,
        after: int | None,
        chunk_size: int,
        *,
        since: date | None = None,
        engagement_since: date | None = None,
        plan_rows: bool = True,
    ) -> Loaded:
        """The next ``chunk_size`` contacts with id > ``after`` (None: from the
        start), with everything related. The chunk's scope runs from
        ``after + 1`` to its last contact, or to the largest possible id when
        it is the last chunk (``scope.hi == MAX_ID``). Without ``plan_rows``
        the stored plan is left unread (``Loaded.stored`` is None) and the
        writer compares fingerprints first."""
        start = MIN_ID if after is None else after
        rows = await self.fetchall(
            "contacts_after", {"after": start, "limit": chunk_size, "true_words": _TRUE}
        )
        hi = MAX_ID if len(rows) < chunk_size else int(rows[-1][0])
        scope = Scope.of_range(MIN_ID if after is None else after + 1, hi)
        contacts = [contact_from_row(r) for r in rows]
        return await self._load_related(
            scope, contacts, since, engagement_since or since, plan_rows=plan_rows
        )

    async def load_scope(
        self, scope: Scope, *, since: date | None = None, engagement_since: date | None = None
    ) -> Loaded:
        """Contacts of ``scope`` with related rows and their stored plan.

        ``since`` leaves out history rows sent before it, ``engagement_since``
        (default: ``since``) clicks and engagement events before it.
        """
        if scope.ids is not None:
            rows = await self.fetchall(
                "contacts_by_ids", {"ids": ids_param(scope.ids), "true_words": _TRUE}
            )
        else:
            raise ValueError("load_scope takes an id scope; use iter_loaded_chunks for ranges")
        contacts = [contact_from_row(r) for r in rows]
        return await self._load_related(scope, contacts, since, engagement_since or since)

    async def _load_related(
        self,
        scope: Scope,
        contacts: list[Contact],
        since: date | None,
        engagement_since: date | None,
        *,
        plan_rows: bool = True,
    ) -> Loaded:
        params: dict[str, object]
        if scope.ids is not None:
            variant, params = "ids", {"ids": ids_param(scope.ids)}
        else:
            variant, params = "range", {"lo": scope.lo, "hi": scope.hi}
        cut = {**params, "since": since.isoformat() if since else ""}
        recent = {**params, "since": engagement_since.isoformat() if engagement_since else ""}
        schedules = await self.fetchall(f"{'schedules' if plan_rows else 'history'}@{variant}", cut)
        targeting = await self.fetchall(f"targeting@{variant}", params)
        clicks = await self.fetchall(f"clicks@{variant}", recent)
        events = await self.fetchall(f"contact_events@{variant}", recent)
        states = await self.fetchall(f"plan_state@{variant}", params)

        history: dict[int, list[HistoryEmail]] = defaultdict(list)
        history_keys: set[tuple[int, str, int | None, int | None, int | None]] = set()
        stored: list[StoredPlanRow] = []
        for r in schedules:
            if r[_STATUS] in PLAN_STATUSES:
                stored.append(stored_plan_row(r))
            else:
                cid = r[_CONTACT]
                history[cid].append(_history_from_row(r))
                history_keys.add((cid, r[_TYPE], r[_EVENT[0]], r[_EVENT[1]], r[_EVENT[2]]))
        by_targeting: dict[int, list[ContactCampaign]] = defaultdict(list)
        for r in targeting:
            if isinstance(r[1], int):
                by_targeting[r[0]].append(
                    ContactCampaign(r[0], r[1], _date_of(r[2]), text(r[3]) or "")
                )
        by_clicks: dict[int, list[Click]] = defaultdict(list)
        for r in clicks:
            clicked = _date_of(r[1])
            if clicked is not None:
                by_clicks[r[0]].append(Click(r[0], clicked, parse_instant(text(r[1]))))
        by_events: dict[int, list[ContactEvent]] = defaultdict(list)
        for r in events:
            created = _date_of(r[3])
            if created is not None:
                by_events[r[0]].append(
                    ContactEvent(
                        r[0], text(r[1]) or "", text(r[2]), created, parse_instant(text(r[3]))
                    )
                )
        data = []
        for c in contacts:
            cid = c.id
            if cid in history or cid in by_targeting or cid in by_clicks or cid in by_events:
                data.append(
                    ContactData(
                        c,
                        tuple(history.get(cid, ())),
                        tuple(by_targeting.get(cid, ())),
                        tuple(by_clicks.get(cid, ())),
                        tuple(by_events.get(cid, ())),
                    )
                )
            else:
                data.append(ContactData(c))
        return Loaded(
            scope=scope,
            contacts=data,
            stored=stored if plan_rows else None,
            history_keys=history_keys,
            states={r[0]: (r[1], r[2], r[3]) for r in states},
        )


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
