"""The plan journal (SPEC 7): every change of a plan row, appended in the
transaction that made it.

The writer hands over the statements of one write (:class:`JournalInput`);
each insert, update and delete becomes one journal row with the row's
dates, status and reason before and after, the run and its trigger. The
balancer's moves of a row's scheduled date are journalled too (``move``),
so a sender can follow every change from the journal alone. Unchanged rows
write nothing.

The time written is the caller's: the store never reads a clock. The
command line and the daemon give their clock to :meth:`Store.open`; without
one, the database's own clock is used (as for ``created_at`` defaults).
Entries are pruned only by age (``journal_retention_days``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from service.store.base import ids_param
from service.store.loaders import StoredPlanRow
from service.store.state import StateMixin

Clock = Callable[[], datetime]
JournalParams = tuple[object, ...]

# Positions in the writer's insert/update parameter tuples (queries.sql:
# identity 0-4, content 5-15, run id 16, time 17; updates add the restart
# date 18 and the row id 19) and in StoredPlanRow.content.
_P_STATUS, _P_REASON, _P_DESIRED, _P_RESTART, _P_ID = 6, 7, 12, 18, 19
_C_REASON = 2

PRUNE_BATCH = 20_000
"""Journal entries deleted per prune statement (one short transaction each)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One row of ``plan_journal``."""

    id: int
    run_id: int | None
    trigger: str | None
    at: str
    contact_id: int
    email_type: str
    event_date: str | None
    op: str
    old_desired: str | None
    old_scheduled: str | None
    old_status: str | None
    old_reason: str | None
    new_desired: str | None
    new_scheduled: str | None
    new_status: str | None
    new_reason: str | None


@dataclass(frozen=True, slots=True)
class JournalInput:
    """The statements of one plan write, as the writer built them.

    With ``inserts_last`` the write's inserts were its last plan row
    inserts, and when every one of them took effect the rows are journalled
    from the table in one statement (``journal_inserts_last``). Otherwise
    from ``inserts`` (what :func:`journal_rows` returns).
    """

    stored: Sequence[StoredPlanRow]
    inserts: Sequence[Sequence[object]]
    updates: Sequence[Sequence[object]]
    deletes: Sequence[tuple[int]]
    inserts_last: bool = False


def _event(key: Sequence[object]) -> str | None:
    y, m, d = key[2], key[3], key[4]
    if isinstance(y, int) and isinstance(m, int) and isinstance(d, int):
        return f"{y:04d}-{m:02d}-{d:02d}"
    return None


def journal_rows(
    run_id: object, at: str | None, write: JournalInput, *, inserts: bool = True
) -> list[JournalParams]:
    """The journal rows of one write (pure): ``journal_append`` parameters;
    without ``inserts`` those of its updates and deletes only."""
    out: list[JournalParams] = []
    if not (write.inserts or write.updates or write.deletes):
        return out
    by_id = {s.id: s for s in write.stored} if (write.updates or write.deletes) else {}
    for p in write.inserts if inserts else ():
        # A new row starts with its scheduled date at its desired date.
        out.append((run_id, at, p[0], p[1], _event(p), "insert", None, None, None, None,
                    p[_P_DESIRED], p[_P_DESIRED], p[_P_STATUS], p[_P_REASON]))  # fmt: skip
    for p in write.updates:
        row_id = p[_P_ID]
        old = by_id.get(row_id) if isinstance(row_id, int) else None
        before = _before(old)
        scheduled = p[_P_RESTART] if p[_P_RESTART] is not None else before[1]
        out.append((run_id, at, p[0], p[1], _event(p), "update", *before,
                    p[_P_DESIRED], scheduled, p[_P_STATUS], p[_P_REASON]))  # fmt: skip
    for (row_id,) in write.deletes:
        old = by_id.get(row_id)
        if old is None:
            continue
        out.append((run_id, at, old.key[0], old.key[1], _event(old.key), "delete",
                    *_before(old), None, None, None, None))  # fmt: skip
    return out


def _before(old: StoredPlanRow | None) -> tuple[object, object, object, object]:
    if old is None:
        return (None, None, None, None)
    return (old.desired, old.scheduled, old.status, old.content[_C_REASON])


def _entry(r: Sequence[Any]) -> JournalEntry:
    return JournalEntry(*r)


def time_text(instant: datetime) -> str:
    """An instant as the journal stores it: UTC, ``YYYY-MM-DD HH:MM:SS.fff``."""
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


class JournalMixin(StateMixin):
    """Appending to, pruning and reading ``plan_journal``."""

    journal_clock: Clock | None = None
    """The caller's clock (set by :meth:`Store.open`)."""
    journal_run: int | None = None
    _trigger_of: tuple[object, object] | None = None
    """The run of the balancer's moves: the last run started on this store."""

    def _journal_time(self) -> str | None:
        clock = self.journal_clock
        return None if clock is None else time_text(clock())

    async def start_run(self, trigger: str, today: date | None) -> int:
        run_id = await super().start_run(trigger, today)
        self.journal_run = run_id
        return run_id

    async def journal_write(self, run_id: object, write: JournalInput, inserted: int) -> None:
        """Append the journal rows of one plan write (in its transaction):
        inserts first, then updates, then deletes, as :func:`journal_rows`.

        ``inserted`` is how many inserts took effect; when an identity was
        taken by a history row meanwhile, only the inserts that happened are
        journalled.
        """
        at = self._journal_time()
        # All inserted, one after another: they hold the largest ids.
        from_table = write.inserts_last and inserted == len(write.inserts) > 0
        if from_table:
            trigger = await self._run_trigger(run_id)
            await self.execute(
                "journal_inserts_last",
                {"run": run_id, "trigger": trigger, "at": at, "count": inserted},
            )
        rows = journal_rows(run_id, at, write, inserts=not from_table)
        if write.deletes:
            # Plan rows of a contact that no longer exists were journalled by
            # the deletion trigger (mailplan_journal_contact_gone).
            gone = {r[2] for r in rows if r[5] == "delete" and isinstance(r[2], int)}
            existing = await self.fetchall("existing_contacts", {"ids": ids_param(gone)})
            gone -= {e[0] for e in existing}
            rows = [r for r in rows if r[5] != "delete" or r[2] not in gone]
        if inserted != len(write.inserts):
            # An identity taken by a history row meanwhile (rare; such a
            # refused insert still uses up an id): only inserts that happened.
            rows = [r for r in rows if r[5] != "insert" or await self._inserted(r, run_id)]
        if rows:
            trigger = await self._run_trigger(run_id)
            rows_in = [(*r, trigger) for r in rows]
            await self.write_soon("journal_append", rows_in, many=True)

    async def _run_trigger(self, run_id: object) -> object:
        # A run's trigger never changes: one look-up per run, not per write.
        cached = self._trigger_of
        if cached is not None and cached[0] == run_id:
            return cached[1]
        found = await self.fetchone("run_trigger", (run_id,))
        trigger = None if found is None else found[0]
        self._trigger_of = (run_id, trigger)
        return trigger

    async def _inserted(self, row: JournalParams, run_id: object) -> bool:
        event = row[4]
        if not isinstance(event, str):
            return False
        y, m, d = (int(x) for x in event.split("-"))
        found = await self.fetchone("plan_identity_exists", (row[2], row[3], y, m, d, run_id))
        return found is not None

    async def journal_moves(self, moves: Iterable[tuple[str, int, str, int, int, int]]) -> None:
        """Journal balancing moves ``(new scheduled date, contact, type, y, m, d)``
        before they are saved; rows whose date stays write nothing."""
        at, run_id = self._journal_time(), self.journal_run
        await self.executemany("journal_move", [(run_id, at, *m) for m in moves])

    async def prune_journal(self, before: date, limit: int = PRUNE_BATCH) -> int:
        """Delete up to ``limit`` of the oldest entries written before ``before``."""
        return await self.execute("journal_prune", {"before": before.isoformat(), "limit": limit})

    async def journal_of(self, contact_id: int) -> list[JournalEntry]:
        """A contact's journal, oldest first."""
        rows = await self.fetchall("journal_of_contact", {"contact": contact_id})
        return [_entry(r) for r in rows]

    async def journal_of_contacts(self, ids: Iterable[int]) -> list[JournalEntry]:
        """The journal of several contacts, by contact then oldest first."""
        rows = await self.fetchall("journal_of_identities", {"ids": ids_param(ids)})
        return [_entry(r) for r in rows]

    # -- reads of the reports (audit, status) ------------------------------

    async def history_contacts_between(self, start: date, end: date) -> list[int]:
        """Contacts with a history row whose send date may be in ``start..end``."""
        rows = await self.fetchall(
            "history_contacts_between", {"lo": start.isoformat(), "hi": end.isoformat()}
        )
        return [int(r[0]) for r in rows if isinstance(r[0], int)]

    async def history_rows_of(self, ids: Iterable[int]) -> list[tuple[Any, ...]]:
        """History rows of some contacts: id, contact, type, status, event date,
        actual send time, ``sent_at``, scheduled date, campaign instance."""
        return await self.fetchall("history_rows_of", {"ids": ids_param(ids)})

    async def journal_summary(self) -> tuple[int, str | None, str | None]:
        """Number of journal entries, the oldest and the newest time."""
        row = await self.fetchone("journal_summary")
        return (0, None, None) if row is None else (int(row[0]), row[1], row[2])

    async def contacts_done(self, after: int) -> tuple[int, int]:
        """Contacts with an id up to ``after``, and all contacts (progress)."""
        row = await self.fetchone("contacts_upto", {"after": after})
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    async def wanted_on(self, day: date) -> tuple[int, int]:
        """Non-skipped plan rows whose desired date is ``day``, and how many
        of them are effective-date emails."""
        row = await self.fetchone("wanted_on", {"day": day.isoformat()})
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    async def max_contact_id(self) -> int:
        """The highest contact id (the end of a pass over every contact)."""
        row = await self.fetchone("max_contact_id")
        return 0 if row is None else int(row[0])

    async def skipped_load(self, start: date, end: date) -> dict[date, int]:
        """Skipped plan rows per desired day, ``start..end``."""
        rows = await self.fetchall("skipped_load", _span(start, end))
        return {d: int(n) for t, n in rows if (d := _day(t)) is not None}

    async def sent_load(self, start: date, end: date) -> dict[date, int]:
        """History rows per send date, ``start..end``."""
        rows = await self.fetchall("sent_load", _span(start, end))
        return {d: int(n) for t, n in rows if (d := _day(t)) is not None}


def _span(start: date, end: date) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}


def _day(value: object) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None
