"""The store side of load balancing: the ``BalanceStore`` protocol of
:mod:`service.engine.rebalance` over the non-skipped plan rows (SPEC 6).

A global rebalance reads every non-skipped row (a million on a large book,
most of them on the few dates of an all-contacts campaign), so rows are
fetched in batches and turned into compact tuples that share their date and
type objects; the raw database rows never pile up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import anyio

from service.errors import StoreError
from service.planning.balance import BalanceItem
from service.planning.model import RowKey
from service.store.balance_days import BalanceDaysMixin
from service.store.base import utc_now_text
from service.store.journal import JournalMixin
from service.store.types import StoredRow, Update

FETCH_BATCH = 20_000

SEEK_ROWS = 1024
"""A read asking for at most this many rows (an index seek of the
incremental rebalance) is made in one hand-over to the connection, not
fetched in batches: a walk of hundreds of days makes several a day, and
each hand-over is a thread switch each way."""


class _Dates(dict[str | None, date | None]):
    """ISO text -> date, memoised: rows share a few hundred distinct dates."""

    def __missing__(self, key: str | None) -> date | None:
        value = None if key is None else date.fromisoformat(key[:10])
        if len(self) < 50_000:
            self[key] = value
        return value


class _Interned(dict[str, str]):
    """One string object per distinct e-mail type."""

    def __missing__(self, key: str) -> str:
        self[key] = key
        return key


_DATES = _Dates()
_TYPES = _Interned()


def convert_stored(rows: Sequence[tuple[Any, ...]]) -> list[StoredRow]:
    """Rows of ``{balance_columns}`` as :class:`StoredRow`."""
    # Columns as in BALANCE_COLUMNS (service/store/sql.py). tuple.__new__ skips the named
    # tuples' Python-level __new__, which dominates at a million rows.
    new, dates, types = tuple.__new__, _DATES, _TYPES
    return [
        new(StoredRow, (
            new(BalanceItem, ((cid, types[et], dates[ev]), prio, dates[des], dates[af], dates[at])),
            dates[st],
            dates[sc],
        ))
        for cid, et, ev, prio, des, af, at, st, sc in rows
    ]  # fmt: skip


def _span(lo: date, hi: date) -> dict[str, str]:
    return {"lo": lo.isoformat(), "hi": hi.isoformat()}


class BalanceMixin(JournalMixin, BalanceDaysMixin):
    """Implements :class:`service.store.interface.BalanceStore`."""

    async def commit_and_resume(self, seconds: float | None = None) -> None:
        """Inside :meth:`transaction`: commit the work so far, leave the write
        lock to other writers for ``seconds`` (None: the store's writer gap,
        as between two transactions), then take it again and go on in a new
        transaction (the caller's context commits or rolls back that one).
        """
        if not self.in_transaction:
            raise StoreError("commit_and_resume needs an open transaction")
        await self._end("COMMIT")
        self._writer_gaps.ended(anyio.current_time())
        if seconds is None:
            await self._writer_gap()
        else:
            await asyncio.sleep(seconds)
        await self._begin("BEGIN IMMEDIATE")
        self._writer_gaps.began(anyio.current_time(), self._lock_waited)

    @asynccontextmanager
    async def outside_write_lock(self) -> AsyncIterator[None]:
        """Inside :meth:`transaction`: commit the work so far and run the body
        in a read snapshot, so its reads keep no upstream writer waiting; then
        take the write lock again for the rest of the caller's transaction
        (whose context commits or rolls back that part)."""
        if not self.in_write_transaction:
            raise StoreError("outside_write_lock needs an open write transaction")
        await self._end("COMMIT")
        self._writer_gaps.ended(anyio.current_time())
        self._tx = None
        try:
            async with self.snapshot():
                yield
        finally:
            await self._writer_gap()
            await self._begin("BEGIN IMMEDIATE")
            self._writer_gaps.began(anyio.current_time(), self._lock_waited)
            self._tx = "write"

    async def _stored_rows(self, name: str, params: Mapping[str, str | int]) -> list[StoredRow]:
        n = params.get("n")
        if isinstance(n, int) and 0 <= n <= SEEK_ROWS:
            return convert_stored(await self._rows(self.query(name), params))
        out: list[StoredRow] = []
        cursor = await self._db.execute(self.query(name), params)
        try:
            batch = await cursor.fetchmany(FETCH_BATCH)
            while batch:
                # Fetch the next batch on the connection's thread while this
                # one is converted here.
                ahead = asyncio.ensure_future(cursor.fetchmany(FETCH_BATCH))
                try:
                    out.extend(convert_stored(batch))  # type: ignore[arg-type]
                finally:
                    batch = await ahead
        finally:
            await cursor.close()
        return out

    async def last_desired(self) -> date | None:
        row = await self.fetchone("balance_last_desired")
        return None if row is None or row[0] is None else _DATES[row[0]]

    async def rows_by_desired(self, lo: date, hi: date) -> list[StoredRow]:
        return await self._stored_rows("balance_rows_by_desired", _span(lo, hi))

    async def ed_rows_by_desired(self, days: Sequence[date]) -> list[StoredRow]:
        params = {"days": json.dumps(sorted({d.isoformat() for d in days}))}
        return await self._stored_rows("balance_ed_rows_by_desired", params)

    async def ed_counts(
        self, days: Sequence[date] | None, at_most: int | None = None
    ) -> dict[date, int]:
        if days is None:
            rows = await self.fetchall("balance_ed_counts_all")
        elif at_most is not None:
            params = {"days": json.dumps(sorted({d.isoformat() for d in days})), "at_most": at_most}
            rows = await self.fetchall("balance_ed_counts_capped", params)
        else:
            params = {"days": json.dumps(sorted({d.isoformat() for d in days}))}
            rows = await self.fetchall("balance_ed_counts", params)
        return {_DATES[r[0]]: int(r[1]) for r in rows if _DATES[r[0]] is not None}  # type: ignore[misc]

    async def rows_before(self, day: date) -> list[StoredRow]:
        return await self._stored_rows("balance_rows_before", {"day": day.isoformat()})

    async def kept_last(self, day: date, n: int) -> list[StoredRow]:
        rows = await self._stored_rows("balance_kept_last", {"day": day.isoformat(), "n": n})
        rows.reverse()
        return rows

    async def carried_first(self, day: date, n: int) -> list[StoredRow]:
        return await self._stored_rows("balance_carried_first", {"day": day.isoformat(), "n": n})

    async def carried_arrivals(self, day: date, n: int) -> list[StoredRow]:
        return await self._stored_rows("balance_carried_arrivals", {"day": day.isoformat(), "n": n})

    async def day_rows(self, day: date) -> list[StoredRow]:
        return await self._stored_rows("balance_day_rows", {"day": day.isoformat()})

    async def take_gaps(self) -> tuple[list[StoredRow], list[StoredRow]]:
        rows = await self.fetchall("balance_gaps")
        if not rows:
            return [], []
        out = _gap_rows(rows)
        await self.execute("delete_balance_gaps_upto", {"id": rows[-1][0]})
        return out

    async def read_gaps(self, upto: int) -> tuple[list[StoredRow], list[StoredRow]]:
        return _gap_rows(await self.fetchall("balance_gaps_upto", {"id": upto}))

    async def forget_gaps_upto(self, upto: int) -> None:
        await self.execute("delete_balance_gaps_upto", {"id": upto})

    async def retarget_gaps(self, since: int, pending: Mapping[RowKey, tuple[date, date]]) -> bool:
        rows = await self.fetchall("balance_gaps_keys_since", {"id": since})
        came_back = False
        retarget: list[tuple[str, str, int]] = []
        for gap_id, cid, etype, ev, back in rows:
            if back:
                came_back = True
                continue
            try:
                key = (int(cid), str(etype), date.fromisoformat(ev))
            except (TypeError, ValueError):
                continue
            dates = pending.get(key)
            if dates is not None:
                retarget.append((dates[0].isoformat(), dates[1].isoformat(), int(gap_id)))
        if retarget:
            await self.executemany("balance_gap_retarget", retarget)
        return came_back

    async def save(self, updates: Sequence[Update]) -> None:
        now = utc_now_text()
        # The plan journal (SPEC 7): the moves, before the rows are updated.
        await self.journal_moves(
            (day.isoformat(), cid, etype, ev.year, ev.month, ev.day)
            for (cid, etype, ev), _, day in updates
        )
        rows = [
            (s1.isoformat(), day.isoformat(), now, cid, etype, ev.year, ev.month, ev.day)
            for (cid, etype, ev), s1, day in updates
        ]
        await self.executemany("balance_save", rows)
        await self.bump_plan_version()


def _gap_rows(rows: Sequence[Any]) -> tuple[list[StoredRow], list[StoredRow]]:
    """Rows of the ``balance_gaps`` queries: (gone, back)."""
    gone: list[StoredRow] = []
    back: list[StoredRow] = []
    dates = _DATES
    for _, cid, etype, ev, prio, des, af, at, st, sc, is_back in rows:
        step1, scheduled = dates[st], dates[sc]
        if step1 is None or scheduled is None or cid is None or etype is None:
            continue
        try:
            event = date.fromisoformat(ev)
        except (TypeError, ValueError):
            continue
        item = BalanceItem((int(cid), str(etype), event), int(prio), dates[des] or scheduled,
                           dates[af], dates[at])  # fmt: skip
        (back if is_back else gone).append(StoredRow(item, step1, scheduled))
    return gone, back
