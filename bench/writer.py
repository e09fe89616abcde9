"""An upstream writer in its own process, recording how long it waits for the lock.

    python -m bench.writer DB OUT [--every 0.02] [--busy-ms 5000]

Commits one small row into its own table ``bench_writer`` (not captured by
mailplan's triggers, so it adds no work to the daemon) about every 20 ms, with
a randomised gap, through the standard ``sqlite3`` module and an ordinary busy
timeout, as a CRM would. Each commit appends ``<monotonic start> <wait s>
<ok> <lock s> <commit s>`` to OUT: the whole wait, then the part spent getting
the write lock (``BEGIN IMMEDIATE``) and the part spent in ``COMMIT`` (which
writes and syncs the log and may run SQLite's automatic checkpoint).
``time.monotonic`` is the system-wide CLOCK_MONOTONIC, so the driver can
attribute waits to the mode it was running. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import random
import signal
import sqlite3
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("db", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--every", type=float, default=0.02)
    p.add_argument("--busy-ms", type=int, default=5000)
    args = p.parse_args()
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    conn = sqlite3.connect(args.db, isolation_level=None, timeout=args.busy_ms / 1000)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_writer (id INTEGER PRIMARY KEY, at REAL)")
    rng = random.Random()
    with args.out.open("a", buffering=1) as out:
        while not stop:
            started = time.monotonic()
            locked = committing = None
            ok = 1
            try:
                conn.execute("BEGIN IMMEDIATE")
                locked = time.monotonic()
                conn.execute("INSERT INTO bench_writer (at) VALUES (?)", (started,))
                committing = time.monotonic()
                conn.execute("COMMIT")
            except sqlite3.OperationalError:
                ok = 0
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            ended = time.monotonic()
            # A write that timed out waiting for the lock spent it all there.
            lock_s = (locked or ended) - started
            commit_s = ended - committing if ok and committing is not None else 0.0
            out.write(f"{started:.6f} {ended - started:.6f} {ok} {lock_s:.6f} {commit_s:.6f}\n")
            time.sleep(args.every * rng.uniform(0.5, 1.5))
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
