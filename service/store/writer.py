"""Writing a set of contacts' new plans (SPEC 7).

The new rows are compared with the stored plan rows by identity
``(contact_id, email_type, event date)``: new identities are inserted,
identities whose content changed are updated (with the current run id),
identical ones are left alone (they keep their ``scheduler_run_id`` and
``created_at``), and stored identities that are no longer planned are
deleted. Only plan rows are ever written: every UPDATE and DELETE carries a
status guard, the rows compared are plan rows only, and an identity held by
a history row is never inserted (I4).

``scheduled_send_date`` and ``balance_date`` belong to the balancer. A new
row starts with both at its desired date; an update resets them only when
the row's balancing starts over (new desired date, to or from ``skipped``).
The writer returns what changed in the set the balancer sweeps
(:class:`~service.store.types.BalanceDelta`, for ``service.engine.rebalance``):
the previous version of every row that left the sweep or whose balancing
inputs changed, and the new version of every row that joined it or changed;
and it keeps the per-day counts of the swept rows (``balance_days``) equal to
the table in the same transaction.

Each contact's state keeps a fingerprint of the rows last written. A chunk
loaded without its plan rows (a full recompute) reads the stored rows only
of contacts whose new fingerprint differs, or that vanished.
"""

from __future__ import annotations

import hashlib
import marshal
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import date

import structlog

from service.planning.balance import BalanceItem
from service.planning.model import PRE_SCHEDULED, SKIPPED, ContactPlan, PlanRow
from service.planning.params import DEFAULT_SEND_TIME, send_time_column
from service.store.balance_days import BalanceDaysMixin
from service.store.base import fingerprints_trusted, ids_param, iso, utc_now_text
from service.store.checkpoint import CheckpointMixin
from service.store.journal import JournalInput, JournalMixin
from service.store.loaders import (
    Loaded,
    LoaderMixin,
    StoredPlanRow,
    _scope_params,
    stored_plan_row,
)
from service.store.types import BalanceDelta, Scope, StoredRow, WriteResult, WriteStats

log = structlog.get_logger(__name__)

Key5 = tuple[int, str, int | None, int | None, int | None]
Content = tuple[object, ...]


def _print_of(states: Mapping[int, tuple[object, object, str | None]], cid: int) -> str | None:
    state = states.get(cid)
    return None if state is None else state[2]


Params = tuple[object, ...]

_ISO_CACHE: dict[date, str] = {}
"""Review dates as text; a book has a few hundred distinct ones."""

# Positions in StoredPlanRow.content and in the new rows' content tuples.
_STATUS, _PRIORITY, _DESIRED, _FROM, _TO = 1, 3, 7, 8, 9


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """How rows are written: the run id, *today*, the local send time and,
    per contact, the time zone of the send instant (only with
    ``send_in_contact_timezone``)."""

    run_id: str
    today: date | None = None
    send_time: str = send_time_column(DEFAULT_SEND_TIME)
    timezones: Mapping[int, str | None] | None = None


@dataclass(slots=True)
class PlanDiff:
    """The statements one write needs, and what they mean for balancing."""

    inserts: list[Params] = field(default_factory=list)
    updates: list[Params] = field(default_factory=list)
    deletes: list[tuple[int]] = field(default_factory=list)
    unchanged: int = 0
    balance: BalanceDelta = field(default_factory=BalanceDelta)


def _balance_inputs(content: Content, today: str) -> Content:
    """What load balancing reads of a row (SPEC 6). A lower bound on or before
    *today* bounds nothing: the balancer never sends before today."""
    bound = content[_FROM]
    lower = bound if isinstance(bound, str) and bound > today else None
    return (content[_STATUS], content[_PRIORITY], content[_DESIRED], lower, content[_TO])


def _same(stored: Content, new: Content, today: str) -> bool:
    if stored == new:
        return True
    # The planner clamps allowed_from to *today*, which moves every day; a
    # stored bound that today has overtaken equals the new "none".
    bound = stored[_FROM]
    return (
        isinstance(bound, str)
        and bound <= today
        and new[_FROM] is None
        and stored[:_FROM] == new[:_FROM]
        and stored[_TO:] == new[_TO:]
    )


def _day(text: object) -> date | None:
    if not isinstance(text, str):
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _stored_version(stored: StoredPlanRow) -> StoredRow | None:
    """The row as the last balance swept it; ``None`` if it was not swept
    (skipped, never balanced, or dates that do not parse)."""
    if stored.status != PRE_SCHEDULED or not stored.balanced:
        return None
    step1, scheduled = _day(stored.step1), _day(stored.scheduled)
    if step1 is None or scheduled is None:
        return None
    return StoredRow(_item(stored.key, stored.content), step1, scheduled)


def _item(key: Key5, content: Content) -> BalanceItem:
    """The balancer's view of a row from its identity and content, as the
    balance queries read it back (``COALESCE(priority, 10)``)."""
    cid, etype, ey, em, ed = key
    event = date(ey, em, ed) if ey and em and ed else date.min
    prio = content[_PRIORITY]
    desired = _day(content[_DESIRED]) or date.min
    return BalanceItem(
        (cid, etype, event),
        10 if prio is None else int(prio),  # type: ignore[call-overload]
        desired,
        _day(content[_FROM]),
        _day(content[_TO]),
    )


class _Differ:
    """Turns planned rows into comparable content, with the per-write constants."""

    __slots__ = ("isos", "now", "run_id", "send_time", "today", "tzs")

    def __init__(self, options: WriteOptions) -> None:
        self.today = options.today.isoformat() if options.today else ""
        self.tzs = options.timezones or {}
        self.send_time, self.run_id, self.now = options.send_time, options.run_id, utc_now_text()
        self.isos: dict[date, str] = {}

    def iso(self, d: date) -> str:
        # Rows share few distinct dates; isoformat() per row adds up.
        text = self.isos.get(d)
        if text is None:
            text = self.isos[d] = d.isoformat()
        return text

    def content(self, row: PlanRow) -> Content:
        """Same fields and order as loaders.stored_plan_row builds from the columns."""
        low, high = row.allowed_from, row.allowed_to
        lower = None if low is None else self.iso(low)
        if lower is not None and lower <= self.today:
            lower = None
        return (
            self.send_time, row.status, row.skip_reason, row.priority, row.template,
            row.campaign_instance_id, row.catchup_note, self.iso(row.desired_date), lower,
            None if high is None else self.iso(high), self.tzs.get(row.contact_id),
        )  # fmt: skip


Entry = tuple[Key5, Content]
State = tuple[str | None, str | None, str | None]
"""A contact's stored plan state: review date, invalid reason, fingerprints."""


def kept_rows(plan: ContactPlan, taken: AbstractSet[Key5]) -> list[tuple[Key5, PlanRow]]:
    """The rows of a plan that are written, with their identity.

    An identity held by a history row is never planned again (SPEC 5.10),
    and the planner's contract is one row per identity; anything else would
    break the unique index or rewrite the sender's row, so it is dropped.
    """
    out: list[tuple[Key5, PlanRow]] = []
    if not plan.rows:
        return out
    seen: set[Key5] = set()
    cid = plan.contact_id
    for row in plan.rows:
        ev = row.event_date
        key: Key5 = (row.contact_id, row.email_type, ev.year, ev.month, ev.day)
        if key in seen or key in taken or row.contact_id != cid:
            log.warning("plan_identity_refused", contact_id=row.contact_id, type=row.email_type)
            continue
        seen.add(key)
        out.append((key, row))
    return out


_NO_ROWS = hashlib.blake2b(marshal.dumps([], 2), digest_size=12).hexdigest()


def fingerprint(entries: list[Entry]) -> str:
    """A stable digest of a contact's planned rows (identity and content).

    marshal format 2 writes strings, ints, None and tuples by value only (no
    back-references, no interning flags), so equal rows give equal bytes in
    every process; a different Python could only cause one needless compare.
    """
    if not entries:
        return _NO_ROWS
    data = marshal.dumps([key + content for key, content in entries], 2)
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def state_print(
    output: str, inputs: str | None, today: str, review: str | None, rows: int = 0
) -> str:
    """The ``fingerprint`` column of a contact's plan state: the digest of the
    rows written, and with an input digest also that digest, the *today* it
    was planned on, the review date of that plan and its number of rows
    (``out:in:day:review:rows``)."""
    if not inputs:
        return output
    return f"{output}:{inputs}:{today}:{review or ''}:{rows}"


def stored_rows(column: str | None) -> int:
    """The number of plan rows recorded in a ``fingerprint`` column (0 if none)."""
    parts = (column or "").split(":")
    return int(parts[4]) if len(parts) == 5 and parts[4].isdigit() else 0


def output_print(column: str | None) -> str | None:
    """The digest of the rows written, from a stored ``fingerprint`` column."""
    if column is None:
        return None
    return column.split(":", 1)[0]


def inputs_unchanged(column: str | None, inputs: str, today: str) -> bool:
    """The stored plan is the plan of these inputs on ``today`` (ISO): same
    input digest, planned on ``today``. A plan made on an earlier day is not
    trusted even before its review date: until then it changes by the daily
    catch-up move (:mod:`service.planning.review`), which the tick applies in
    the database, not a full recompute."""
    if not column or not inputs:
        return False
    parts = column.split(":")
    return len(parts) == 5 and parts[1] == inputs and parts[2] == today


@dataclass(slots=True)
class Prepared:
    """A scope's new plans, turned into what the writer compares and stores.

    Plain tuples and strings: built in a planning process, it pickles cheaply.
    ``skipped`` are contacts of the scope left unplanned because their inputs
    did not change (:func:`inputs_unchanged`): their rows and state stay.
    """

    scope: Scope
    entries: dict[int, list[Entry]] = field(default_factory=dict)
    prints: dict[int, str] = field(default_factory=dict)
    states: dict[int, State] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    skipped_rows: int = 0
    """The plan rows of the skipped contacts (left unchanged)."""


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A write compared ahead of its transaction (:meth:`WriterMixin.diff_ahead`)."""

    prepared: Prepared
    basis: tuple[int, int]
    """What the read saw of others' changes (:meth:`BalanceDaysMixin.others_changes`)."""
    states: dict[int, State]
    stored: list[StoredPlanRow]
    diff: PlanDiff
    trust: bool

    def for_run(self, run_id: str) -> PendingWrite:
        """The same write stamped with ``run_id``: a run started inside the
        transaction (its id is known only there) after the diff was found."""
        at = _RUN_AT
        diff = PlanDiff(
            [(*p[:at], run_id, *p[at + 1 :]) for p in self.diff.inserts],
            [(*p[:at], run_id, *p[at + 1 :]) for p in self.diff.updates],
            self.diff.deletes,
            self.diff.unchanged,
            self.diff.balance,
        )
        return PendingWrite(self.prepared, self.basis, self.states, self.stored, diff, self.trust)


def prepare(
    scope: Scope,
    plans: Iterable[ContactPlan],
    taken: AbstractSet[Key5],
    options: WriteOptions,
    inputs: Mapping[int, str] | None = None,
    skipped: Iterable[int] = (),
    skipped_rows: int = 0,
) -> Prepared:
    """The rows, fingerprints and states of ``plans`` (pure)."""
    differ = _Differ(options)
    content, isos, today = differ.content, _ISO_CACHE, differ.today
    inputs = inputs or {}
    out = Prepared(scope, skipped=set(skipped), skipped_rows=skipped_rows)
    for plan in plans:
        cid = plan.contact_id
        if not scope.contains(cid):
            continue
        rows = [(key, content(row)) for key, row in kept_rows(plan, taken)]
        out.entries[cid] = rows
        fp = out.prints[cid] = fingerprint(rows)
        review = plan.review_date
        text = (
            None
            if review is None
            else isos.get(review) or isos.setdefault(review, review.isoformat())
        )
        out.states[cid] = (
            text,
            plan.invalid,
            state_print(fp, inputs.get(cid), today, text, len(rows)),
        )
    return out


_RUN_AT = 16
"""Where the run id is in the parameters of an insert and an update
(``insert_plan_row``, ``update_plan_row``: ?17): after the identity and the
content, as :func:`diff_plan` builds them."""


def diff_plan(
    stored: Iterable[StoredPlanRow],
    entries: Iterable[Entry],
    differ: _Differ,
) -> PlanDiff:
    """Compare planned rows with stored plan rows by identity (pure)."""
    today, tail = differ.today, (differ.run_id, differ.now)
    old = {s.key: s for s in stored}
    diff = PlanDiff()
    delta = diff.balance
    for key, content in entries:
        before = old.pop(key, None)
        status = content[_STATUS]
        if before is None:
            diff.inserts.append(key + content + tail)
            if status == PRE_SCHEDULED:
                _join(delta, key, content, None)
        elif before.balanced and _same(before.content, content, today):
            diff.unchanged += 1
        else:
            desired = content[_DESIRED]
            restart = not before.balanced or before.desired != desired
            restart = restart or before.status == SKIPPED or status == SKIPPED
            diff.updates.append(key + content + tail + (desired if restart else None, before.id))
            if _balance_inputs(before.content, today) != _balance_inputs(content, today):
                _leave(delta, before)
                if status == PRE_SCHEDULED:
                    _join(delta, key, content, None if restart else before)
            elif restart and status == PRE_SCHEDULED:
                # Same balancing inputs, the balancer's dates reset (a row
                # never balanced): it joins the sweep anew at its desired date.
                _leave(delta, before)
                _join(delta, key, content, None)
    for gone in old.values():
        diff.deletes.append((gone.id,))
        _leave(delta, gone)
    return diff


def _leave(delta: BalanceDelta, stored: StoredPlanRow) -> None:
    """A stored row leaves the sweep (deleted, skipped or changed)."""
    version = _stored_version(stored)
    if version is not None:
        delta.gone.append(version)
        delta.count(version.step1, version.scheduled, -1)


def _join(delta: BalanceDelta, key: Key5, content: Content, kept: StoredPlanRow | None) -> None:
    """A row joins the sweep: at its desired date, or with the balancer's dates
    of ``kept`` when the update keeps them."""
    item = _item(key, content)
    version = _stored_version(kept) if kept is not None else None
    if version is None:
        row = StoredRow(item, item.desired, item.desired)
    else:
        row = StoredRow(item, version.step1, version.scheduled)
    delta.added.append(row)
    delta.count(row.step1, row.scheduled, 1)


class WriterMixin(LoaderMixin, JournalMixin, BalanceDaysMixin, CheckpointMixin):
    """The plan writer and the per-contact plan state."""

    async def write_plans(
        self,
        loaded: Loaded,
        plans: Iterable[ContactPlan],
        options: WriteOptions,
        *,
        inputs: Mapping[int, str] | None = None,
        skipped: Iterable[int] = (),
    ) -> WriteResult:
        """Write the new plans of ``loaded.scope`` (SPEC 7) and their plan state.

        ``loaded`` is what :meth:`load_scope` / :meth:`load_chunk` read inside
        the same transaction. Contacts of the scope without a plan (deleted
        meanwhile, or not in ``plans``) lose their plan rows, except those in
        ``skipped`` (inputs unchanged: left as they are). ``inputs`` are the
        contacts' input digests, stored with their state. A chunk loaded
        without plan rows is compared by fingerprint first.
        """
        prepared = prepare(loaded.scope, plans, loaded.history_keys, options, inputs, skipped)
        return await self.write_prepared(
            prepared, options, stored=loaded.stored, states=loaded.states
        )

    async def write_prepared(
        self,
        prepared: Prepared,
        options: WriteOptions,
        *,
        stored: list[StoredPlanRow] | None = None,
        states: Mapping[int, State] | None = None,
        trust: bool = True,
    ) -> WriteResult:
        """Write prepared plans (:func:`prepare`) of a scope, inside the
        caller's transaction. ``states`` not given are read here, in the
        transaction; ``stored`` None means: compare fingerprints first and
        read only the stored rows of contacts whose rows changed, or without
        ``trust`` read every stored plan row of the scope."""
        if states is None:
            states = await self._plan_states(prepared.scope)
        stored, diff = await self._diffed(prepared, options, stored, states, trust)
        return await self._write_diff(prepared, options, states, stored, diff)

    async def diff_ahead(
        self, prepared: Prepared, options: WriteOptions, *, trust: bool = True
    ) -> PendingWrite:
        """What :meth:`write_prepared` would compare and write, found now (in
        a read snapshot, before the write lock is taken): the scope's plan
        states and the stored rows it reads, and the diff. The caller must
        not write the scope itself before :meth:`write_pending`."""
        basis = await self.others_changes()
        states = await self._plan_states(prepared.scope)
        stored, diff = await self._diffed(prepared, options, None, states, trust)
        return PendingWrite(prepared, basis, states, stored, diff, trust)

    async def write_pending(self, pending: PendingWrite, options: WriteOptions) -> WriteResult:
        """Write a diff found ahead (:meth:`diff_ahead`), inside the caller's
        transaction: as found if nobody else changed anything since and the
        scope's plan states are the ones it read; else compared again here
        (:meth:`write_prepared`). Only the states are read again: another
        mailplan process may store a contact's state without changing its rows
        (a review date), which moves neither the event sequence nor the plan
        version, so the states are written against the stored ones, and a
        comparison found with other states is made again. Plan rows edited
        behind mailplan's back raise no event and are not seen here, as a
        trusted fingerprint does not see them: a repair compares inside the
        lock (``write_prepared`` without trust)."""
        prepared = pending.prepared
        states = await self._plan_states(prepared.scope)
        if states != pending.states or await self.others_changes() != pending.basis:
            return await self.write_prepared(prepared, options, states=states, trust=pending.trust)
        return await self._write_diff(prepared, options, states, pending.stored, pending.diff)

    async def _plan_states(self, scope: Scope) -> dict[int, State]:
        variant = "ids" if scope.ids is not None else "range"
        rows = await self.fetchall(f"plan_state@{variant}", _scope_params(scope))
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    async def _diffed(
        self,
        prepared: Prepared,
        options: WriteOptions,
        stored: list[StoredPlanRow] | None,
        states: Mapping[int, State],
        trust: bool,
    ) -> tuple[list[StoredPlanRow], PlanDiff]:
        """The stored rows to compare (read here when not given) and the diff."""
        scope = prepared.scope
        entries, prints, skipped = prepared.entries, prepared.prints, prepared.skipped
        if trust and not fingerprints_trusted(await self._moved_through(), options.today):
            # Rows were caught up for a later day than this plan's (a clock set
            # back): a stored fingerprint may name rows the move changed.
            trust = False
        unchanged = 0
        if stored is None:
            todo = {
                cid
                for cid, fp in prints.items()
                if not trust or output_print(_print_of(states, cid)) != fp
            }
            todo.update(await self._vanished(scope, states, prints, skipped))
            for cid, rows in entries.items():
                if cid not in todo:
                    unchanged += len(rows)
            stored = await self._plan_rows(todo)
            selected: Iterable[Entry] = (e for cid in sorted(todo) for e in entries.get(cid, ()))
        else:
            if skipped:
                stored = [s for s in stored if s.key[0] not in skipped]
            selected = (e for rows in entries.values() for e in rows)
        diff = diff_plan(stored, selected, _Differ(options))
        diff.unchanged += unchanged + prepared.skipped_rows
        return stored, diff

    async def _write_diff(
        self,
        prepared: Prepared,
        options: WriteOptions,
        states: Mapping[int, State],
        stored: list[StoredPlanRow],
        diff: PlanDiff,
    ) -> WriteResult:
        inserted = await self._apply(diff)
        if diff.inserts or diff.updates or diff.deletes:
            await self.bump_plan_version()
        if inserted != len(diff.inserts):
            diff.balance.exact = False
        # The per-day counts follow the table in the same transaction.
        await self.add_balance_days(diff.balance.days)
        # The plan journal (SPEC 7), in the same transaction.
        # Inserts come last in _apply: the journal takes them from the table.
        journal = JournalInput(stored, diff.inserts, diff.updates, diff.deletes, inserts_last=True)
        await self.journal_write(options.run_id, journal, inserted)
        await self._write_states(states, prepared)
        stats = WriteStats(
            inserted=inserted,
            updated=len(diff.updates),
            deleted=len(diff.deletes),
            unchanged=diff.unchanged,
        )
        return WriteResult(stats=stats, delta=diff.balance)

    async def _apply(self, diff: PlanDiff) -> int:
        """Run the diff's statements, inserts last; the rows inserted."""
        # Deletes first: a deleted identity's slot may be reused by an insert.
        if diff.deletes:
            mark = await self.fetchone("balance_gaps_mark")
            await self.executemany("delete_plan_row", diff.deletes)
            # Deleting rows of a contact already gone fires the gap trigger
            # (mailplan_plan_row_gone); the delta has those rows already. No
            # one else writes while this transaction holds the lock.
            await self.execute("forget_balance_gaps_after", {"id": mark[0] if mark else 0})
        if diff.updates:
            await self.executemany("update_plan_row", diff.updates)
        inserted = 0
        if diff.inserts:
            inserted = await self.executemany("insert_plan_row", diff.inserts)
            if inserted != len(diff.inserts):
                log.warning("plan_identity_taken_by_history", skipped=len(diff.inserts) - inserted)
        return inserted

    async def _vanished(
        self,
        scope: Scope,
        states: Mapping[int, State],
        planned: Mapping[int, str],
        skipped: AbstractSet[int],
    ) -> set[int]:
        """Contacts of the scope with plan rows but no plan now: deleted ones."""
        gone = {cid for cid in states if cid not in planned and cid not in skipped}
        if scope.ids is None:
            rows = await self.fetchall("orphan_plan_contacts", {"lo": scope.lo, "hi": scope.hi})
            gone.update(r[0] for r in rows if r[0] not in skipped)
        else:
            gone.update(cid for cid in scope.ids if cid not in planned and cid not in skipped)
        return gone

    async def _plan_rows(self, ids: AbstractSet[int]) -> list[StoredPlanRow]:
        if not ids:
            return []
        rows = await self.fetchall("plan_rows@ids", {"ids": ids_param(ids)})
        return [stored_plan_row(r) for r in rows]

    async def _write_states(self, states: Mapping[int, State], prepared: Prepared) -> None:
        new, skipped = prepared.states, prepared.skipped
        upserts = [(cid, *state) for cid, state in new.items() if states.get(cid) != state]
        gone = [(cid,) for cid in states if cid not in new and cid not in skipped]
        # Nothing reads the result: written with the next statement.
        if gone:
            await self.write_soon("delete_plan_state", gone, many=True)
        if upserts:
            await self.write_soon("upsert_plan_state", upserts, many=True)

    async def clear_balance_gaps(self) -> None:
        """Forget recorded balance gaps: a global rebalance covers them all."""
        await self.execute("clear_balance_gaps")

    async def set_review_dates(self, items: Iterable[tuple[int, date | None]]) -> None:
        """Store review dates (SPEC 5.11) without touching plan rows."""
        await self.executemany("set_review_date", [(c, iso(d)) for c, d in items])

    async def due_contacts(self, today: date) -> list[int]:
        """Contacts whose review date has come (on or before ``today``), in id order."""
        rows = await self.fetchall("due_contacts", {"today": today.isoformat()})
        return [int(r[0]) for r in rows]
