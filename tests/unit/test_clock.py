"""The daemon's clock: local dates and the start of the next local date (SPEC 2, 8.4)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio
import pytest

from service.daemon.clock import Clock, ManualClock, start_of_next_day

CHI = ZoneInfo("America/Chicago")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# Expected instants worked out from the zone rules:
# - Chicago is UTC-6 in winter (CST) and UTC-5 in summer (CDT); DST 2026 starts
#   Sun 2026-03-08 02:00 CST and ends Sun 2026-11-01 02:00 CDT. Midnight itself
#   is never skipped or repeated there, so the next day starts at 00:00 local.
# - Santiago (UTC-4 -> UTC-3) and Havana (UTC-5 -> UTC-4) jump from 00:00 to
#   01:00: the date begins at 01:00 local, i.e. 04:00 UTC / 05:00 UTC.
# - Beirut (UTC+2 -> UTC+3) jumps at 00:00 on the last Sunday of March: 2026-03-29
#   begins at 01:00+03 = 22:00 UTC on the 28th.
# - Apia skipped 2011-12-30 entirely: after the 29th comes the 31st, at 10:00 UTC.
NEXT_DAY = [
    ("America/Chicago", date(2026, 3, 7), utc(2026, 3, 8, 6), date(2026, 3, 8)),
    ("America/Chicago", date(2026, 3, 8), utc(2026, 3, 9, 5), date(2026, 3, 9)),
    ("America/Chicago", date(2026, 10, 31), utc(2026, 11, 1, 5), date(2026, 11, 1)),
    ("America/Chicago", date(2026, 11, 1), utc(2026, 11, 2, 6), date(2026, 11, 2)),
    ("America/Santiago", date(2026, 9, 5), utc(2026, 9, 6, 4), date(2026, 9, 6)),
    ("America/Havana", date(2026, 3, 7), utc(2026, 3, 8, 5), date(2026, 3, 8)),
    ("Asia/Beirut", date(2026, 3, 28), utc(2026, 3, 28, 22), date(2026, 3, 29)),
    ("Pacific/Apia", date(2011, 12, 29), utc(2011, 12, 30, 10), date(2011, 12, 31)),
    ("UTC", date(2024, 2, 28), utc(2024, 2, 29), date(2024, 2, 29)),
]


@pytest.mark.parametrize(("zone", "day", "expected", "new_date"), NEXT_DAY)
def test_start_of_next_day(zone: str, day: date, expected: datetime, new_date: date) -> None:
    tz = ZoneInfo(zone)
    instant = start_of_next_day(day, tz)
    assert instant == expected
    assert instant.astimezone(tz).date() == new_date
    # One second earlier is still the old date: it really is the first instant.
    assert (instant - timedelta(seconds=1)).astimezone(tz).date() == day


# 2026-03-08 05:30 UTC is 23:30 CST on the 7th; 06:30 UTC is 00:30 CST on the 8th.
TODAY = [
    (utc(2026, 3, 8, 5, 30), date(2026, 3, 7)),
    (utc(2026, 3, 8, 6, 30), date(2026, 3, 8)),
    (utc(2026, 11, 1, 4, 59, 59), date(2026, 10, 31)),
    (utc(2026, 11, 1, 5, 0), date(2026, 11, 1)),
]


@pytest.mark.parametrize(("now", "expected"), TODAY)
def test_today_is_the_local_date(now: datetime, expected: date) -> None:
    assert Clock("America/Chicago", now_fn=lambda: now).today() == expected


def test_seconds_until_next_day_on_a_short_day() -> None:
    # 2026-03-08 is 23 hours long in Chicago: from its 00:00 CST (06:00 UTC) to
    # 2026-03-09 00:00 CDT (05:00 UTC) is 23 h.
    clock = Clock(CHI, now_fn=lambda: utc(2026, 3, 8, 6))
    assert clock.seconds_until_next_day() == 23 * 3600


def test_pinned_clock_never_changes_day() -> None:
    clock = Clock(CHI, now_fn=lambda: utc(2030, 1, 1), pinned=date(2026, 1, 5))
    assert clock.today() == date(2026, 1, 5)
    assert clock.seconds_until_next_day() is None


def test_naive_time_source_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        Clock(CHI, now_fn=lambda: datetime(2026, 1, 1)).today()


async def test_manual_clock_wakes_sleeper_at_the_new_date() -> None:
    clock = ManualClock(CHI, utc(2026, 3, 8, 4))  # 22:00 CST on 2026-03-07
    woke: list[date] = []

    async def sleeper() -> None:
        woke.append(await clock.sleep_until_next_day())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await anyio.wait_all_tasks_blocked()
        clock.advance(timedelta(hours=1))  # 23:00, same date
        await anyio.wait_all_tasks_blocked()
        assert woke == []
        clock.advance(timedelta(hours=1, seconds=1))  # 00:00:01 on the 8th
    assert woke == [date(2026, 3, 8)]


async def test_sleep_until_next_day_survives_a_jump_over_several_days() -> None:
    clock = ManualClock(CHI, utc(2026, 6, 1, 12))
    async with anyio.create_task_group() as tg:
        result: list[date] = []

        async def sleeper() -> None:
            result.append(await clock.sleep_until_next_day())

        tg.start_soon(sleeper)
        await anyio.wait_all_tasks_blocked()
        clock.set(utc(2026, 6, 5, 12))  # a suspended laptop waking four days later
    assert result == [date(2026, 6, 5)]


async def test_wall_clock_is_re_read_in_bounded_steps() -> None:
    # A real-time clock whose wall time is moved under it (NTP step): the
    # sleeper must notice within max_step, not after the originally computed delay.
    now = [utc(2026, 6, 1, 12)]
    clock = Clock(CHI, now_fn=lambda: now[0], max_step=0.01)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            result: list[date] = []

            async def sleeper() -> None:
                result.append(await clock.sleep_until_next_day())

            tg.start_soon(sleeper)
            await anyio.sleep(0.02)
            now[0] = utc(2026, 6, 2, 12)
    assert result == [date(2026, 6, 2)]
