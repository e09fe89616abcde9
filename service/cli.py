"""The command line (SPEC 10): flags, environment and config file -> Settings -> commands.

This is the edge of the program. Logging is configured here and nowhere else;
*today* is read here (``--today`` or :func:`current_date`) and passed down.
Expected errors (:class:`MailplanError`) become one line on stderr and exit
code 1 (runtime) or 2 (usage, configuration); an argparse error exits 2.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog
import structlog.tracebacks

from service import engine
from service.commands import audit, explain, logs, plot, progress, report, status
from service.commands.fingerprint import refuse_if_differs, warn_if_differs
from service.config import (
    ENV_LOG_FORMAT,
    ENV_LOG_LEVEL,
    Settings,
    environment_with_files,
    load_settings,
    parse_assignment,
)
from service.errors import MailplanError, UsageError
from service.store import ExportRow, RunStats, Store, init_db, open_store
from service.tools import generate

log = structlog.get_logger(__name__)

PROG = "mailplan"
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
# `run` is not here: the daemon reports a missing database and retries (SPEC 13).
NEEDS_EXISTING_DB = frozenset({"recompute", "export", "status", "explain", "plot", "audit"})


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; use YYYY-MM-DD, e.g. 2026-11-29"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _common() -> argparse.ArgumentParser:
    """Options every command takes (so they may follow the command name)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration file (default /etc/mailplan/mailplan.toml if present)",
    )
    g.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="the organisation's SQLite database (or MAILPLAN_DB)",
    )
    g.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one configuration key, e.g. --set horizon_days=90 (repeatable)",
    )
    g.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="log lines as JSON (default) or for people (or MAILPLAN_LOG_FORMAT)",
    )
    g.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=None,
        help="least severe level logged, default info (or MAILPLAN_LOG_LEVEL)",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    common = [_common()]
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="mailplan keeps email_schedules equal to a full recompute, incrementally.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("init-db", parents=common, help="create or upgrade the schema and triggers")

    p = sub.add_parser("generate", parents=common, help="synthetic contacts for demos/benchmarks")
    p.add_argument("--contacts", type=_positive_int, required=True, metavar="N")
    p.add_argument("--seed", type=int, default=1, metavar="S")
    p.add_argument(
        "--today",
        type=_iso_date,
        metavar="YYYY-MM-DD",
        help="reference date the data is built around (default: today)",
    )

    p = sub.add_parser("recompute", parents=common, help="recompute and write, or a dry run")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--all", action="store_true", help="every contact")
    who.add_argument("--contact", type=int, nargs="+", metavar="ID", help="these contacts")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument(
        "--verify",
        action="store_true",
        help="compare the stored plan with a recompute and report (and repair) drift",
    )
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")

    p = sub.add_parser("run", parents=common, help="the daemon")
    p.add_argument("--inbox", type=Path, metavar="DIR", help="watch this folder for files")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD", help="pin today")
    p.add_argument("--once", action="store_true", help="drain pending events, run a due tick, exit")

    p = sub.add_parser("export", parents=common, help="print the stored plan rows")
    p.add_argument("--format", choices=("csv", "json", "table"), default="csv")

    p = sub.add_parser("status", parents=common, help="queue, runs, load, configuration errors")
    p.add_argument("--json", action="store_true")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD")
    p.add_argument("--days", type=_positive_int, default=14, help="days of load to show")

    p = sub.add_parser("explain", parents=common, help="every planning decision for a contact")
    p.add_argument("--contact", type=int, required=True, metavar="ID")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD")
    p.add_argument("--history", action="store_true", help="also the plan journal and sends")
    p.add_argument("--json", action="store_true", help="for machines")

    p = sub.add_parser("plot", parents=common, help="daily volume by type against the cap")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="an .html file")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD")
    p.add_argument("--days", type=_positive_int, default=120, help="days to draw")

    p = sub.add_parser("audit", parents=common, help="check what was sent against the rules")
    p.add_argument("--from", dest="from_", type=_iso_date, metavar="YYYY-MM-DD",
                   help="first send date checked (default: the day before --to)")  # fmt: skip
    p.add_argument("--to", type=_iso_date, metavar="YYYY-MM-DD", help="last (default: today)")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    return parser


def version() -> str:
    """The installed package's version (``mailplan --version``)."""
    try:
        return importlib.metadata.version("mailplan")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def configure_logging(fmt: str, level: str, stream: Any) -> None:
    """structlog for the whole process: JSON lines (default) or console lines."""
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            _exceptions(fmt),
            logs.with_priority(renderer, stream),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def _exceptions(fmt: str) -> Any:
    if fmt != "json":
        return structlog.dev.set_exc_info
    # No local variables in tracebacks: they would copy contact data into the journal.
    transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    return structlog.processors.ExceptionRenderer(transformer)


def wall_clock() -> datetime:
    """The current instant: the command line's only clock read (the daemon has its own)."""
    return datetime.now(UTC)


def current_date(settings: Settings) -> date:
    """*today*: the current date in the organisation's time zone (SPEC 2)."""
    return wall_clock().astimezone(settings.tz).date()


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    overrides: dict[str, object] = {}
    for text in args.assignments:
        key, value = parse_assignment(text)
        overrides[key] = value
    if args.db is not None:
        overrides["db"] = args.db
    if getattr(args, "inbox", None) is not None:
        overrides["inbox"] = args.inbox
    # The units' environment files too, so a command runs with the daemon's
    # settings by default (SPEC 4).
    merged, origin = environment_with_files(environ)
    return load_settings(args.config, merged, overrides, origin)


def _database(args: argparse.Namespace, settings: Settings) -> Path:
    if settings.db is None:
        raise UsageError(
            f"`mailplan {args.command}` needs a database: pass --db PATH, "
            'set MAILPLAN_DB or put db = "PATH" in the configuration file'
        )
    if settings.db.is_dir():
        raise UsageError(
            f"database {settings.db} is a directory; pass the database file inside it, "
            "e.g. --db /var/lib/mailplan/mailplan.sqlite3"
        )
    folder = settings.db.parent
    if args.command in ("init-db", "generate") and not folder.is_dir():
        raise UsageError(
            f"folder {folder} of database {settings.db} does not exist; create it first "
            "(mailplan creates the database file, not its folder)"
        )
    if args.command in NEEDS_EXISTING_DB and not settings.db.exists():
        raise UsageError(
            f"database {settings.db} does not exist; create it with "
            f"`mailplan init-db --db {settings.db}` (or check the path)"
        )
    return settings.db


def _thread_exception(hook: threading.ExceptHookArgs) -> None:
    """A background thread's uncaught exception: one log line, no traceback.

    aiosqlite's connection thread can fail after its event loop closed
    (when opening the database failed); the command has already reported why.
    """
    if isinstance(hook.exc_value, RuntimeError) and "Event loop is closed" in str(hook.exc_value):
        return
    log.error("thread_failed", thread=getattr(hook.thread, "name", None),
              error=repr(hook.exc_value))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mailplan`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    log_format = args.log_format or os.environ.get(ENV_LOG_FORMAT) or "json"
    log_level = (args.log_level or os.environ.get(ENV_LOG_LEVEL) or "info").lower()
    if log_format not in LOG_FORMATS:
        parser.error(f"{ENV_LOG_FORMAT}={log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    if log_level not in LOG_LEVELS:
        parser.error(f"{ENV_LOG_LEVEL}={log_level!r}: use one of {', '.join(LOG_LEVELS)}")
    # A driver thread that outlives a failed open must not print a traceback.
    threading.excepthook = _thread_exception
    # The daemon's log is its output (journald); commands keep stdout for results.
    configure_logging(log_format, log_level, sys.stdout if args.command == "run" else sys.stderr)
    try:
        settings = settings_from(args, os.environ)
        db = _database(args, settings)
        if getattr(args, "today", None) is None and args.command != "run":
            args.today = current_date(settings)
        _tune_gc()
        return anyio.run(COMMANDS[args.command], args, settings, db)
    except MailplanError as exc:
        # Every MailplanError message already says what was wrong and what to do.
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        # A reader such as `head` went away: not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        log.error("unexpected_error", error=repr(exc), exc_info=True)
        sys.stderr.write(
            f"{PROG}: unexpected error: {exc!r}; this is a bug in mailplan, please report it "
            "with the log lines above\n"
        )
        return 1


def _tune_gc() -> None:
    """The process's garbage-collector policy, set once at the edge.

    A full recompute allocates millions of short-lived objects and plans hold
    no reference cycles: the objects alive after start-up are frozen out of
    the collector's scans, and collections run less often.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], 50_000), threshold[1], max(threshold[2], 50))


# --- commands ---------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace, Settings, Path], Coroutine[Any, Any, int]]


def _out(text: str) -> None:
    sys.stdout.write(text)


async def cmd_init_db(args: argparse.Namespace, settings: Settings, db: Path) -> int:
    added: list[str] = []
    version = await init_db(db, added)
    if added:
        _out(f"{db}: added the columns mailplan reads: {', '.join(added)}\n")
    _out(f"{db}: schema version {version}, triggers installed\n")
    return 0


async def cmd_generate(args: argparse.Namespace, settings: Settings, db: Path) -> int:
    await init_db(db)
    bar = progress.Progress("generate", args.contacts)
    summary = await anyio.to_thread.run_sync(
        generate.generate, db, args.contacts, args.seed, args.today, bar.update
    )
    bar.close()
    _out(
        f"{db}: {summary.contacts} contacts (seed {args.seed}, around {args.today}), "
        f"{summary.history} history emails, {summary.clicks} clicks, "
        f"{summary.contact_events} eligibility answers, {summary.campaign_instances} campaign "
        f"instances, {summary.contact_campaigns} campaign targets in {summary.seconds:.1f} s\n"
    )
    return 0


async def cmd_recompute(args: argparse.Namespace, settings: Settings, db: Path) -> int:
    ctx = engine.PlanContext.from_settings(settings)
    today: date = args.today
    if args.dry_run and args.contact and not args.verify and os.access(db, os.W_OK):
        # O(contact): the recompute runs in a transaction that is rolled back.
        async with open_store(db, clock=wall_clock) as store:
            await warn_if_differs(store, settings, "recompute (read side)", sys.stderr)
            rows = await engine.dry_run_contacts(store, ctx, args.contact, today)
        report.write_rows(rows, args.format, sys.stdout)
        return 0
    async with open_store(db, readonly=args.dry_run, clock=wall_clock) as store:
        if args.dry_run or args.verify:
            await warn_if_differs(store, settings, "recompute (read side)", sys.stderr)
        elif args.contact:
            await refuse_if_differs(store, settings, "mailplan recompute --contact")
        if args.verify:
            drift = await engine.verify(store, ctx, today, repair=not args.dry_run)
            if not args.dry_run:
                await status.record_verification(store, drift, today, wall_clock())
            if drift.repaired:
                log.warning("plan_drift_repaired", drift=drift.drift, missing=drift.missing,
                            extra=drift.extra, changed=drift.changed)  # fmt: skip
            _out(report.drift_text(drift, args.format))
            # Drift, even repaired, means something wrote the plan behind
            # mailplan's back or a bug: exit 1 so the nightly timer alerts.
            return 1 if drift.any else 0
        if args.dry_run:
            rows = await engine.dry_run_plan(store, ctx, today)
            if args.contact:
                wanted = set(args.contact)
                rows = [r for r in rows if r.contact_id in wanted]
            report.write_rows(rows, args.format, sys.stdout)
            return 0
        if args.all:
            bar = progress.Progress("recompute", await store.max_contact_id())
            await store.set_cache_mib(engine.BULK_CACHE_MIB)
            stats = await engine.full_recompute(store, ctx, today, trigger="cli",
                                                progress=bar.update)  # fmt: skip
            bar.close()
        else:
            stats = await _recompute_some(store, ctx, args.contact, today)
    _out(report.stats_text(stats, args.format))
    return 0


async def _recompute_some(
    store: Store, ctx: engine.PlanContext, ids: list[int], today: date
) -> RunStats:
    started = time.perf_counter()
    async with store.transaction():
        run_id = await store.start_run("cli-contacts", today)
        stats = await engine.recompute_contacts(store, ctx, ids, today, run_id)
        await store.finish_run(run_id, stats, duration_ms=(time.perf_counter() - started) * 1e3)
    return stats


async def cmd_run(args: argparse.Namespace, settings: Settings, db: Path) -> int:
    from service.daemon.run import run_daemon

    def reload_settings() -> Settings:
        # SIGHUP: the same sources as at start, read again (the environment is
        # the process's own and does not change).
        return settings_from(args, os.environ)

    return await run_daemon(
        settings,
        db,
        inbox=settings.inbox,
        today=args.today,
        once=args.once,
        reload_settings=reload_settings,
    )


async def cmd_export(args: argparse.Namespace, settings: Settings, db: Path) -> int:
    writer = report.RowWriter(args.format, sys.stdout)
    async with open_store(db, readonly=True) as store, store.snapshot():
        batch: list[ExportRow] = []
        async for row in store.iter_export_rows():
            batch.append(row)
            if len(batch) >= 10_000:
                writer.write(batch)
                batch = []
        writer.write(batch)
    writer.finish()
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings, db: Path) -> int:
    return await status.command(args, settings, db, wall_clock())


async def cmd_explain(args: argparse.Namespace, settings: Settings, db: Path) -> int:
    return await explain.command(args, settings, db)


async def cmd_plot(args: argparse.Namespace, settings: Settings, db: Path) -> int:
    return await plot.command(args, settings, db)


COMMANDS: dict[str, Handler] = {
    "init-db": cmd_init_db,
    "generate": cmd_generate,
    "recompute": cmd_recompute,
    "run": cmd_run,
    "export": cmd_export,
    "status": cmd_status,
    "explain": cmd_explain,
    "plot": cmd_plot,
    "audit": audit.command,
}
