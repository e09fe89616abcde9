"""Measure mailplan against the targets of SPEC section 12.

    python -m bench                      # 100,000 and 1,000,000 contacts
    python -m bench --sizes 100000       # quicker
    python -m bench --skip-daemon        # batch measures only

Every measure runs the real ``mailplan`` command line in a child process, so
times include start-up and peak RSS is the child's own (``os.wait4``). The
daemon measures start ``mailplan run`` on the generated database and act as an
upstream system would: they commit changes to ``contacts`` with the standard
``sqlite3`` module and watch the events inbox drain (an event is deleted in the
same transaction that commits the plan it caused).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

MB = 1024 * 1024


@dataclass
class Result:
    measure: str
    size: int
    value: float | None
    unit: str
    target: str
    ok: bool | None
    note: str = ""


@dataclass
class Bench:
    work: Path
    today: date
    mailplan: list[str]
    results: list[Result] = field(default_factory=list)

    def add(self, measure: str, size: int, value: float | None, unit: str, target: str,
            limit: float | None, note: str = "") -> None:  # fmt: skip
        ok = None if value is None or limit is None else value <= limit
        self.results.append(Result(measure, size, value, unit, target, ok, note))
        shown = "n/a" if value is None else f"{value:.3f} {unit}"
        print(f"  {measure:<48} {shown:>16}   target {target}  {note}", flush=True)


# --- child processes ----------------------------------------------------------------------


def measured(cmd: Sequence[str], log: Path) -> tuple[float, float, int]:
    """Run ``cmd``; (wall seconds, peak RSS in MB of the child, exit code)."""
    with log.open("ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in kilobytes on Linux.
    return elapsed, usage.ru_maxrss / 1024, proc.returncode


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of stat (11 and 12 after the name).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the database as an upstream system sees it ---------------------------------------


def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def pending(conn: sqlite3.Connection, upto: int | None = None) -> int:
    """Events not consumed yet (only those with id <= ``upto`` when given)."""
    row = conn.execute(
        "SELECT count(*) FROM scheduler_events WHERE ? IS NULL OR id <= ?", (upto, upto)
    ).fetchone()
    return int(row[0])


def last_tick(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM scheduler_state WHERE key = 'last_tick'").fetchone()
    return None if row is None else str(row[0])


def wait_until(check: Callable[[], object], timeout: float, step: float = 0.0005) -> float | None:
    """Poll ``check()`` until true; seconds waited, None on timeout."""
    started = time.perf_counter()
    while True:
        if check():
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            return None
        time.sleep(step)


def touch_contact(conn: sqlite3.Connection, contact_id: int, stamp: str) -> int:
    """An upstream edit of one contact; the id of the event it raised."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE contacts SET updated_at = ? WHERE id = ?", (stamp, contact_id))
    event = int(conn.execute("SELECT coalesce(max(id), 0) FROM scheduler_events").fetchone()[0])
    conn.execute("COMMIT")
    return event


class Writer(threading.Thread):
    """An upstream writer committing a small change every 20 ms; records its waits."""

    def __init__(self, db: Path, contacts: int) -> None:
        super().__init__(daemon=True)
        self.db, self.contacts = db, contacts
        self.waits: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = connect(self.db)
        rng = random.Random(5)
        while not self.stop.is_set():
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE contacts SET last_emailed = ? WHERE id = ?",
                         (None, rng.randint(1, self.contacts)))  # fmt: skip
            conn.execute("COMMIT")
            self.waits.append(time.perf_counter() - started)
            time.sleep(0.02)
        conn.close()


# --- the measures -------------------------------------------------------------------------


def batch_measures(b: Bench, n: int, db: Path, log: Path) -> bool:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    today = b.today.isoformat()
    secs, rss, rc = measured(
        [*b.mailplan, "generate", "--db", str(db), "--contacts", str(n), "--seed", "1",
         "--today", today], log)  # fmt: skip
    if rc:
        b.add("generate", n, None, "s", "<= 30 s (1M)", None, f"failed (exit {rc}), see {log}")
        return False
    b.add("generate", n, secs, "s", "<= 30 s (1M)", 30.0, f"peak RSS {rss:.0f} MB")
    full = [*b.mailplan, "recompute", "--db", str(db), "--all", "--today", today]
    secs, rss, rc = measured(full, log)
    if rc:
        b.add("full recompute", n, None, "s", "<= 30 s (1M)", None, f"failed (exit {rc})")
        return False
    b.add("full recompute (first: every row inserted)", n, secs, "s", "<= 30 s (1M)", 30.0)
    b.add("full recompute peak RSS", n, rss, "MB", "<= 1024 MB", 1024.0)
    secs, rss, rc = measured(full, log)
    b.add("full recompute (again: nothing changes)", n, secs if rc == 0 else None, "s",
          "<= 30 s (1M)", 30.0, f"peak RSS {rss:.0f} MB")  # fmt: skip
    out = b.work / f"export-{n}.csv"
    with out.open("wb") as fh:
        started = time.perf_counter()
        rc = subprocess.call([*b.mailplan, "export", "--db", str(db)], stdout=fh,
                             stderr=subprocess.DEVNULL)  # fmt: skip
        secs = time.perf_counter() - started
    rows = max(0, sum(1 for _ in out.open("rb")) - 1)
    b.add("export csv", n, secs if rc == 0 else None, "s", "(no target)", None, f"{rows} rows")
    return True


def daemon_measures(b: Bench, n: int, db: Path, log: Path, samples: int) -> None:
    today = b.today.isoformat()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*b.mailplan, "run", "--db", str(db), "--today", today], stdout=out, stderr=out
        )
    conn = connect(db)
    try:

        def started() -> bool:
            return proc.poll() is not None or (last_tick(conn) == today and pending(conn) == 0)

        ready = wait_until(started, 900, 0.05)
        if ready is None or proc.poll() is not None:
            b.add("daemon start", n, None, "s", "", None, f"daemon not ready, see {log}")
            return
        b.add("daemon start-up (tick + drain)", n, ready, "s", "(no target)", None)
        _latency(b, n, conn, proc, samples)
        _idle(b, n, proc)
        b.add("daemon RSS, steady state", n, rss_mb(proc.pid), "MB", "<= 150 MB", 150.0)
        _burst(b, n, db, conn, proc)
    finally:
        conn.close()
        _stop(b, n, proc)


def _latency(b: Bench, n: int, conn: sqlite3.Connection, proc: subprocess.Popen[bytes],
             samples: int) -> None:  # fmt: skip
    rng = random.Random(3)
    times: list[float] = []
    for k in range(samples):
        event = touch_contact(conn, rng.randint(1, n), f"bench {k}")
        started = time.perf_counter()
        done = wait_until(functools.partial(_consumed, conn, event), 30)
        if done is None or proc.poll() is not None:
            b.add("one contact changed -> plan committed", n, None, "ms", "p50 <= 15 ms", None,
                  "timed out")  # fmt: skip
            return
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    times.sort()
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    b.add("one contact changed -> plan committed, p50", n, p50, "ms", "<= 15 ms", 15.0,
          f"{samples} samples")  # fmt: skip
    b.add("one contact changed -> plan committed, p99", n, p99, "ms", "<= 50 ms", 50.0)


def _consumed(conn: sqlite3.Connection, event: int) -> bool:
    return conn.execute("SELECT 1 FROM scheduler_events WHERE id = ?", (event,)).fetchone() is None


def _idle(b: Bench, n: int, proc: subprocess.Popen[bytes]) -> None:
    before = cpu_seconds(proc.pid)
    time.sleep(10)
    after = cpu_seconds(proc.pid)
    value = None if before is None or after is None else (after - before) / 10 * 100
    b.add("idle CPU over 10 s", n, value, "%", "<= 1 %", 1.0)


def _burst(b: Bench, n: int, db: Path, conn: sqlite3.Connection,
           proc: subprocess.Popen[bytes]) -> None:  # fmt: skip
    count = min(100_000, n)
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE contacts SET updated_at = 'bench burst' WHERE id <= ?", (count,))
    last = int(conn.execute("SELECT max(id) FROM scheduler_events").fetchone()[0])
    conn.execute("COMMIT")
    committed = time.perf_counter() - started
    # The writer starts after the burst's own commit: what counts is how long
    # upstream waits while mailplan works the burst off.
    writer = Writer(db, n)
    writer.start()
    done = wait_until(lambda: pending(conn, last) == 0 or proc.poll() is not None, 600, 0.01)
    writer.stop.set()
    writer.join()
    worst = max(writer.waits) * 1000 if writer.waits else None
    b.add(f"{count} contact updates -> all plans committed", n, done, "s", "<= 15 s", 15.0,
          f"upstream commit itself {committed:.2f} s")  # fmt: skip
    b.add("longest upstream write wait during the burst", n, worst, "ms", "<= 250 ms", 250.0,
          f"{len(writer.waits)} writes")  # fmt: skip


def _stop(b: Bench, n: int, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
        b.add("SIGTERM -> exit", n, time.perf_counter() - started, "s", "<= 5 s", 5.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        b.add("SIGTERM -> exit", n, None, "s", "<= 5 s", 5.0, "killed after 30 s")


def tick_measure(b: Bench, n: int, db: Path, log: Path) -> None:
    tomorrow = (b.today + timedelta(days=1)).isoformat()
    secs, _rss, rc = measured(
        [*b.mailplan, "run", "--db", str(db), "--today", tomorrow, "--once"], log
    )
    conn = connect(db)
    try:
        row = conn.execute(
            "SELECT trigger, duration_ms FROM scheduler_runs WHERE trigger LIKE '%tick%' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    note = f"process {secs:.1f} s incl. start-up" if row else "no tick run recorded"
    value = row[1] / 1000 if row and row[1] is not None and rc == 0 else None
    b.add("daily tick (run --once on the next day)", n, value, "s", "<= 10 s", 10.0, note)


# --- driver -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--sizes", default="100000,1000000",
                   help="comma-separated contact counts (default 100000,1000000)")  # fmt: skip
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mailplan-bench",
                   help="folder for databases and logs (default: in the temp dir)")  # fmt: skip
    p.add_argument("--today", type=date.fromisoformat, default=date.today(),
                   help="the date everything is planned for (default: today)")  # fmt: skip
    p.add_argument("--skip-daemon", action="store_true", help="batch measures only")
    p.add_argument("--samples", type=int, default=200, help="single-change latency samples")
    p.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    p.add_argument("--json", type=Path, help="also write the results to this file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("mailplan", path=str(Path(sys.executable).parent))
    mailplan = [exe] if exe else [sys.executable, "-m", "service"]
    b = Bench(args.work, args.today, mailplan)
    print(f"mailplan benchmarks, today = {args.today}, {os.cpu_count()} CPUs, work {args.work}")
    for n in (int(s) for s in args.sizes.split(",") if s.strip()):
        print(f"\n{n:,} contacts", flush=True)
        db = args.work / f"bench-{n}.sqlite3"
        log = args.work / f"bench-{n}.log"
        log.unlink(missing_ok=True)
        if batch_measures(b, n, db, log) and not args.skip_daemon:
            daemon_measures(b, n, db, log, args.samples)
            tick_measure(b, n, db, log)
        if not args.keep:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
    print_table(b.results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in b.results], indent=2))
    return 1 if any(r.ok is False for r in b.results) else 0


def print_table(results: list[Result]) -> None:
    print("\n| measure | contacts | measured | SPEC 12 target | met |")
    print("|---|---:|---:|---|---|")
    for r in results:
        shown = "n/a" if r.value is None else f"{r.value:,.3f} {r.unit}"
        met = {True: "yes", False: "NO", None: "-"}[r.ok]
        note = f" ({r.note})" if r.note else ""
        print(f"| {r.measure}{note} | {r.size:,} | {shown} | {r.target} | {met} |")
