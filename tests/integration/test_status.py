"""``mailplan status`` (SPEC 10) on a hand-built database, in-process with a
fixed clock: the threshold beside the cap, work in flight, the heartbeat,
inbox rejects, the last verification and the fingerprints."""

from __future__ import annotations

import argparse
import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import anyio
from structlog.testing import capture_logs

from service.commands import status
from service.config import load_settings
from service.daemon import heartbeat

TODAY = date(2026, 11, 29)
NOW = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)


def _args(days: int = 3) -> argparse.Namespace:
    return argparse.Namespace(today=TODAY, days=days, json=False)


def _fill(db: Path) -> None:
    con = sqlite3.connect(db)
    con.executemany(
        "INSERT INTO contacts (id, email) VALUES (?, ?)",
        [(i, f"c{i}@example.com") for i in (1, 2, 3, 4)],
    )
    # 11 planned emails on the 29th, 13 on the 30th, none on Dec 1st.
    rows = [(1, f"campaign_x_{k}", "2026-11-29") for k in range(11)]
    rows += [(2, f"campaign_x_{k}", "2026-11-30") for k in range(13)]
    con.executemany(
        "INSERT INTO email_schedules (contact_id, email_type, status, scheduled_send_date,"
        " desired_date, event_year, event_month, event_day) VALUES (?, ?, 'pre-scheduled', ?, ?,"
        " 2026, 12, 1)",
        [(c, t, d, d) for c, t, d in rows],
    )
    con.executemany(
        "INSERT INTO scheduler_state (key, value) VALUES (?, ?)",
        [
            ("fanout", json.dumps({"upto": 9, "everyone": True, "after": 2})),
            ("full_recompute_progress", json.dumps({"run_id": 3, "after": 3})),
            ("last_verification", json.dumps({"at": "2026-11-29T03:31:00+00:00",
             "today": "2026-11-29", "drift": 2, "missing": 1, "extra": 0, "changed": 1,
             "repaired": True})),
        ],
    )  # fmt: skip
    con.commit()
    con.close()


async def test_status_in_words(db_path: Path, tmp_path: Path) -> None:
    _fill(db_path)
    inbox = tmp_path / "inbox"
    (inbox / "rejected").mkdir(parents=True)
    (inbox / "rejected" / "a.ndjson").write_text('{"line": 1}\n{"line": 3}\n')
    (inbox / "rejected" / "b.ndjson").write_text('{"line": 7}\n')
    heartbeat.write(heartbeat.heartbeat_path(db_path), {
        "pid": 4242, "at": (NOW - timedelta(seconds=12)).isoformat(), "running": True,
        "status": "0 pending events; no batch yet", "set_aside": [17, 18], "malformed_events": 3,
    })  # fmt: skip
    settings = load_settings(None, {}, {"daily_cap": 10, "inbox": inbox})
    text = status.to_text(await status.gather(_args(), settings, db_path, NOW))
    lines = text.splitlines()
    assert lines[1] == "  today: 2026-11-29 (America/Chicago)"
    assert lines[2] == (
        "  daemon: running, pid 4242, heartbeat 12 s ago; 0 pending events; no batch yet"
    )
    # Contacts with id <= 2 of 4, and <= 3 of 4.
    assert (
        "  in flight: fan-out over every contact: 2 of 4 contacts done (50 %), up to contact id 2"
    ) in lines
    assert (
        "  in flight: full recompute (run 3): 3 of 4 contacts done (75 %); if no process is "
        "working on it, it was interrupted; `recompute --all` finishes it"
    ) in lines
    assert (
        "  last verification: 2026-11-29T03:31:00+00:00 for 2026-11-29: DRIFT of 2 rows "
        "(1 missing, 0 extra, 1 changed), repaired"
    ) in lines
    assert "  events set aside: 17, 18" in lines
    assert (
        "  malformed events consumed since the daemon started: 3 (each logged as event_malformed)"
    ) in lines
    assert f"  inbox {inbox}: 3 rejected records in 2 files under rejected/" in lines
    # Cap 10, threshold floor(10 x 1.2) = 12: 11 is above the cap but within the
    # threshold (the balancer leaves it alone), 13 is over.
    assert (
        "  contacts with an email: 4; daily cap 10, rebalanced above 12 (cap x overage_threshold)"
    ) in lines
    assert "    2026-11-29        11 / 10 / 12" in lines
    assert "    2026-11-30        13 / 10 / 12  OVER CAP" in lines
    assert "    2026-12-01         0 / 10 / 12" in lines


async def test_stale_heartbeat_and_fingerprints(db_path: Path) -> None:
    heartbeat.write(heartbeat.heartbeat_path(db_path), {
        "pid": 4242, "at": (NOW - timedelta(minutes=10)).isoformat(), "running": True,
    })  # fmt: skip
    settings = load_settings(None, {}, {})
    s = await status.gather(_args(1), settings, db_path, NOW)
    text = status.to_text(s)
    assert (
        "  daemon: not running (last heartbeat 10 min ago, pid 4242; stale: the daemon died "
        "or hangs)\n"
    ) in text
    assert "the stored plan's is not recorded" in text
    con = sqlite3.connect(db_path)
    con.execute(
        "INSERT INTO scheduler_state (key, value)"
        " VALUES ('planning_fingerprint', 'abcdef0123456789')"
    )
    con.commit()
    con.close()
    s = await status.gather(_args(1), settings, db_path, NOW)
    assert f"DIFFERS: stored plan abcdef012345, this command {settings.fingerprint()[:12]}" in (
        status.to_text(s)
    )
    assert json.loads(status.to_json(s))["fingerprint_matches"] is False


async def test_a_heartbeat_that_cannot_be_written_is_reported_once(tmp_path: Path) -> None:
    db = tmp_path / "no-such-folder" / "org.sqlite3"
    with capture_logs() as logs, anyio.move_on_after(0.3):
        await heartbeat.beat(db, lambda: NOW, dict, interval=0.01)
    events = [e["event"] for e in logs]
    assert events == ["heartbeat_not_written"], events
    assert logs[0]["log_level"] == "warning"
