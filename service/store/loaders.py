"""Reading upstream tables into the planning model (SPEC 3, 5).

Contacts are read in id order, a chunk at a time; everything else a chunk's
contacts need (their email_schedules rows, targeting, clicks, engagement
events) is read with one range query per table on ``contact_id``, never with
one query per contact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from service.planning.model import (
    Campaigns,
    CampaignType,
    Contact,
    ContactData,
)
from service.store.base import CATCHUP_THROUGH, StoreBase, _is_decode_error, ids_param, translate
from service.store.handover import Params, _all_rows_of
from service.store.rows import (
    _TRUE,
    MAX_ID,
    MIN_ID,
    ChunkRows,
    Grouped,
    RelatedRows,
    Row,
    StoredPlanRow,
    _flag,
    _instance_from_row,
    _int_or,
    build_contacts,
    contact_from_row,
    event_date_of,
    group_related,
    input_digest,
    scope_params,
    send_date_of,
    send_instant_of,
    stored_plan_row,
    text,
)
from service.store.types import ContactChunk, Scope

if TYPE_CHECKING:
    from service.store.rangeread import ChunkSource

_scope_params = scope_params

__all__ = [
    "MAX_ID",
    "MIN_ID",
    "ChunkRows",
    "Loaded",
    "LoaderMixin",
    "StoredPlanRow",
    "build_contacts",
    "contact_from_row",
    "event_date_of",
    "group_related",
    "input_digest",
    "send_date_of",
    "send_instant_of",
    "stored_plan_row",
    "text",
]


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
    grouped: Grouped | None = None
    """The related rows as read, by contact (for the input digests)."""
    contact_rows: list[tuple[Any, ...]] = field(default_factory=list)
    """The contacts' rows as read, in the order of ``contacts``."""
    campaigns: Campaigns | None = None
    """The campaigns, when read with the scope (``with_campaigns``)."""


_CAMPAIGN_QUERIES: tuple[tuple[str, tuple[()]], ...] = (
    ("campaign_types", ()),
    ("campaign_instances", ()),
)


def campaigns_from(types_rows: list[Row], instance_rows: list[Row]) -> Campaigns:
    """Campaigns from the rows of ``campaign_types`` and ``campaign_instances``."""
    types: dict[str, CampaignType] = {}
    for r in types_rows:
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
    instances = [_instance_from_row(r) for r in instance_rows]
    return Campaigns(types=types, instances=tuple(instances))


class LoaderMixin(StoreBase):
    """Loaders building :mod:`service.planning.model` objects."""

    async def fetch_each(
        self, queries: Sequence[tuple[str, Params]]
    ) -> list[list[tuple[Any, ...]]]:
        """The rows of several named queries, run in order in one hand-over
        to the connection's thread (:meth:`in_connection`); as
        :meth:`fetchall` gives them, one list per query."""
        statements = [(self._q[name], params) for name, params in queries]
        try:
            return await self.in_connection(_all_rows_of, statements)
        except sqlite3.Error as exc:
            if not _is_decode_error(exc):
                raise translate(exc, self.path, f"queries {[n for n, _ in queries]}") from exc
        # Text that is not UTF-8 somewhere: each query on its own, leniently.
        return [await self.fetchall(name, params) for name, params in queries]

    async def load_campaigns(self) -> Campaigns:
        """Campaign types and instances (SPEC 5.6).

        A date column of an instance that holds something other than a date is
        read as ``None`` and listed in the instance's ``errors``.
        """
        types, instances = await self.fetch_each(_CAMPAIGN_QUERIES)
        return campaigns_from(types, instances)

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
        loaded = await self._load_related(
            scope, contacts, since, engagement_since or since, plan_rows=plan_rows
        )
        loaded.contact_rows = rows
        return loaded

    async def read_chunk(
        self,
        after: int | None,
        limit: int,
        *,
        since: date | None,
        engagement_since: date | None,
        scope: Scope | None = None,
    ) -> ChunkRows:
        """The rows a chunk's plans are made from, without building anything:
        the next ``limit`` contacts after ``after`` (or those of the id range or id set
        ``scope``), their related rows (history, not plan rows), their stored
        fingerprint columns and the event sequence (:meth:`event_seq`). Run
        it in a :meth:`snapshot` so that all of it is one state."""
        if scope is None:
            start = MIN_ID if after is None else after
            rows = await self.fetchall(
                "contacts_after", {"after": start, "limit": limit, "true_words": _TRUE}
            )
            hi = MAX_ID if len(rows) < limit else int(rows[-1][0])
            scope = Scope.of_range(MIN_ID if after is None else after + 1, hi)
        elif scope.ids is not None:
            return await self._read_ids_chunk(scope, since, engagement_since)
        else:
            rows = await self.fetchall(
                "contacts_between", {"lo": scope.lo, "hi": scope.hi, "true_words": _TRUE}
            )
        seq = await self.event_seq()
        related = await self.read_related(scope, since, engagement_since or since, plan_rows=False)
        span = {"lo": scope.lo, "hi": scope.hi}
        prints = await self.fetchall("plan_prints", span)
        untidy = bool(await self.fetchall("orphan_plan_contacts", span))
        return ChunkRows(scope, rows, related, {r[0]: r[1] for r in prints}, seq, untidy,
                         await self._moved_through())  # fmt: skip

    async def _read_ids_chunk(
        self, scope: Scope, since: date | None, engagement_since: date | None
    ) -> ChunkRows:
        """:meth:`read_chunk` of an id scope (the contacts of a batch of events):
        an id without a contact row is a deleted contact, whose plan rows the
        write removes (so the chunk is untidy)."""
        params = {"ids": ids_param(scope.ids or ()), "true_words": _TRUE}
        rows = await self.fetchall("contacts_by_ids", params)
        seq = await self.event_seq()
        related = await self.read_related(scope, since, engagement_since or since, plan_rows=False)
        prints = await self.fetchall("plan_state@ids", {"ids": params["ids"]})
        untidy = len(rows) < len(scope.ids or ())
        return ChunkRows(scope, rows, related, {r[0]: r[3] for r in prints}, seq, untidy,
                         await self._moved_through())  # fmt: skip

    async def _moved_through(self) -> str | None:
        """The stored :data:`~service.store.base.CATCHUP_THROUGH`."""
        known, value = self.cached_state(CATCHUP_THROUGH)
        if known:
            return value
        row = await self.fetchone("get_state", (CATCHUP_THROUGH,))
        return None if row is None else str(row[0])

    def chunk_source(self) -> ChunkSource | None:
        """Where another process can read this store's chunks
        (:class:`~service.store.rangeread.RangeReader`)."""
        from service.store.rangeread import ChunkSource  # it reads with this module's queries

        return ChunkSource(str(self.path.resolve()), self.carrier_column)

    async def chunk_bound(self, after: int | None, size: int) -> int:
        """The id of the ``size``-th contact after ``after`` (None: from the
        start), or ``MAX_ID`` when fewer follow: the end of the id range of
        a chunk of ``size`` contacts that starts after ``after``."""
        start = MIN_ID if after is None else after
        row = await self.fetchone("read_chunk_bound", {"after": start, "skip": max(0, size - 1)})
        return MAX_ID if row is None else int(row[0])

    async def event_seq(self) -> int:
        """The last event id ever handed out; it moves with every upstream change."""
        row = await self.fetchone("event_seq")
        return int(row[0]) if row else 0

    async def load_scope(
        self,
        scope: Scope,
        *,
        since: date | None = None,
        engagement_since: date | None = None,
        with_campaigns: bool = False,
    ) -> Loaded:
        """Contacts of ``scope`` with related rows and their stored plan.

        ``since`` leaves out history rows sent before it, ``engagement_since``
        (default: ``since``) clicks and engagement events before it;
        ``with_campaigns`` also reads the campaigns (``Loaded.campaigns``).
        Every query goes to the connection's thread in one hand-over: this
        is the daemon's read of each small batch.
        """
        if scope.ids is None:
            raise ValueError("load_scope takes an id scope; use iter_loaded_chunks for ranges")
        queries: list[tuple[str, Params]] = [
            ("contacts_by_ids", {"ids": ids_param(scope.ids), "true_words": _TRUE}),
            *_related_queries(scope, since, engagement_since or since, plan_rows=True),
            ("plan_state@ids", _scope_params(scope)),
        ]
        if with_campaigns:
            queries.extend(_CAMPAIGN_QUERIES)
        results = await self.fetch_each(queries)
        rows, schedules, targeting, clicks, events, states = results[:6]
        contacts = [contact_from_row(r) for r in rows]
        raw = RelatedRows(schedules=schedules, targeting=targeting, clicks=clicks, events=events)
        loaded = _loaded(scope, contacts, raw, states, plan_rows=True)
        loaded.contact_rows = rows
        if with_campaigns:
            loaded.campaigns = campaigns_from(results[6], results[7])
        return loaded

    async def _load_related(
        self,
        scope: Scope,
        contacts: list[Contact],
        since: date | None,
        engagement_since: date | None,
        *,
        plan_rows: bool = True,
    ) -> Loaded:
        raw = await self.read_related(scope, since, engagement_since, plan_rows=plan_rows)
        params = _scope_params(scope)
        variant = "ids" if scope.ids is not None else "range"
        states = await self.fetchall(f"plan_state@{variant}", params)
        return _loaded(scope, contacts, raw, states, plan_rows=plan_rows)

    async def read_related(
        self,
        scope: Scope,
        since: date | None,
        engagement_since: date | None,
        *,
        plan_rows: bool = True,
    ) -> RelatedRows:
        """The rows of every table a plan reads for ``scope``, as SQLite gives them."""
        queries = _related_queries(scope, since, engagement_since, plan_rows=plan_rows)
        schedules, targeting, clicks, events = await self.fetch_each(queries)
        return RelatedRows(schedules=schedules, targeting=targeting, clicks=clicks, events=events)


def _related_queries(
    scope: Scope, since: date | None, engagement_since: date | None, *, plan_rows: bool
) -> list[tuple[str, Params]]:
    """The named queries of :meth:`LoaderMixin.read_related`, in its order."""
    params = _scope_params(scope)
    variant = "ids" if scope.ids is not None else "range"
    cut = {**params, "since": since.isoformat() if since else ""}
    recent = {**params, "since": engagement_since.isoformat() if engagement_since else ""}
    return [
        (f"{'schedules' if plan_rows else 'history'}@{variant}", cut),
        (f"targeting@{variant}", params),
        (f"clicks@{variant}", recent),
        (f"contact_events@{variant}", recent),
    ]


def _loaded(
    scope: Scope, contacts: list[Contact], raw: RelatedRows, states: list[Row], *, plan_rows: bool
) -> Loaded:
    grouped = group_related(raw)
    data, stored, history_keys = build_contacts(contacts, grouped, plan_rows=plan_rows)
    return Loaded(
        scope=scope,
        contacts=data,
        stored=stored if plan_rows else None,
        history_keys=history_keys,
        states={r[0]: (r[1], r[2], r[3]) for r in states},
        grouped=grouped,
    )
