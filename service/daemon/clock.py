"""The daemon's one clock: *today* in the organisation's time zone (SPEC 2, 8.4).

Nothing else in mailplan reads the wall clock. The planning core receives
*today* as an argument; the daemon asks this clock for it and for the moment the
next local date begins.

Sleeping until local midnight is done in bounded steps against the wall clock,
not with one long monotonic sleep: a machine that suspends stops the monotonic
clock, and an NTP step or a manual clock change moves the wall clock without
telling anyone. Re-reading the wall clock at least every ``max_step`` seconds
means a new local date is noticed within that bound whatever happened, while an
idle daemon still wakes only a handful of times an hour.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

import anyio

DEFAULT_MAX_STEP = 60.0
"""Longest single sleep while waiting for the next local date (seconds)."""


def _wall_now() -> datetime:
    return datetime.now(UTC)


def start_of_next_day(day: date, tz: tzinfo) -> datetime:
    """The first instant (UTC) whose local date in ``tz`` is after ``day``.

    Usually local midnight of the next day. Where a DST change skips midnight
    (some zones jump from 23:59:59 to 01:00) the first instant of the new date
    is the end of the gap; that is found by converting the non-existent local
    time with the pre-transition offset, which lands exactly on the gap's end.
    """
    nxt = day + timedelta(days=1)
    instant = datetime.combine(nxt, time(0), tzinfo=tz).astimezone(UTC)
    # A gap straddling midnight can make the naive conversion land one offset
    # step early, still on ``day``; walk forward to the true start of ``nxt``.
    while instant.astimezone(tz).date() <= day:
        instant += timedelta(minutes=15)
    return instant


class Clock:
    """Wall clock in one time zone, with an injectable time source.

    ``now_fn`` returns an aware datetime (any zone); tests pass their own. The
    ``pinned`` date (``mailplan run --today D``) fixes *today* for good: the
    clock then never reaches a new day.
    """

    def __init__(
        self,
        tz: tzinfo | str,
        *,
        now_fn: Callable[[], datetime] | None = None,
        pinned: date | None = None,
        max_step: float = DEFAULT_MAX_STEP,
    ) -> None:
        self.tz: tzinfo = ZoneInfo(tz) if isinstance(tz, str) else tz
        self._now_fn = now_fn or _wall_now
        self.pinned = pinned
        self.max_step = max_step

    def now(self) -> datetime:
        """The current instant, expressed in the organisation's zone."""
        current = self._now_fn()
        if current.tzinfo is None:
            raise ValueError("the clock's time source returned a naive datetime")
        return current.astimezone(self.tz)

    def today(self) -> date:
        """*today*: the local calendar date (or the pinned date)."""
        if self.pinned is not None:
            return self.pinned
        return self.now().date()

    def seconds_until_next_day(self) -> float | None:
        """Seconds until the local date changes; ``None`` when pinned."""
        if self.pinned is not None:
            return None
        current = self.now()
        boundary = start_of_next_day(current.date(), self.tz)
        return max(0.0, (boundary - current).total_seconds())

    async def sleep(self, seconds: float) -> None:
        """Sleep; overridden by test clocks that advance virtual time."""
        await anyio.sleep(seconds)

    async def sleep_until_next_day(self) -> date:
        """Return once the local date differs from the one at the call.

        Returns the new date. With a pinned date this never returns (until
        cancelled), because *today* never changes.
        """
        start = self.today()
        while True:
            remaining = self.seconds_until_next_day()
            if remaining is None:
                await anyio.sleep_forever()
                continue  # pragma: no cover - sleep_forever only ends by cancellation
            current = self.today()
            if current != start:
                return current
            # A little slack past the boundary so the re-read lands on the new date.
            await self.sleep(min(remaining + 0.001, self.max_step))


class ManualClock(Clock):
    """A clock whose time only moves when told to (tests, what-if runs).

    ``sleep`` waits until virtual time has advanced far enough, so tasks that
    sleep until midnight wake up exactly when a test moves the clock past it.
    """

    def __init__(self, tz: tzinfo | str, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware start time")
        self._current = start.astimezone(UTC)
        self._moved = anyio.Event()
        super().__init__(tz, now_fn=lambda: self._current)

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (forwards or backwards) and wake sleepers."""
        if when.tzinfo is None:
            raise ValueError("ManualClock.set needs an aware datetime")
        self._current = when.astimezone(UTC)
        self._moved.set()
        self._moved = anyio.Event()

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta``."""
        self.set(self._current + delta)

    async def sleep(self, seconds: float) -> None:
        deadline = self._current + timedelta(seconds=seconds)
        while self._current < deadline:
            await self._moved.wait()
