"""The command line (SPEC 10): flags, environment and config file -> Settings -> commands.

This is the edge of the program. Logging is configured here and nowhere else;
*today* is read here (``--today`` or :func:`current_date`) and passed down.
Expected errors (:class:`MailplanError`) become one line on stderr and exit
code 1 (runtime) or 2 (usage, configuration); an argparse error exits 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import anyio
import structlog

from service import commands
from service.config import Settings, load_settings, parse_assignment
from service.errors import ConfigError, MailplanError, UsageError

log = structlog.get_logger(__name__)

PROG = "mailplan"
NEEDS_EXISTING_DB = frozenset({"recompute", "run", "export", "status", "explain", "plot"})


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
    g.add_argument("--config", type=Path, metavar="FILE",
                   help="TOML configuration file (default /etc/mailplan/mailplan.toml if present)")
    g.add_argument("--db", type=Path, metavar="PATH",
                   help="the organisation's SQLite database (or MAILPLAN_DB)")
    g.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override one configuration key, e.g. --set horizon_days=90 (repeatable)")
    g.add_argument("--log-format", choices=("json", "console"), default=None,
                   help="log lines as JSON (default) or for people")
    g.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = [_common()]
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="mailplan keeps email_schedules equal to a full recompute, incrementally.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("init-db", parents=common, help="create or upgrade the schema and triggers")

    p = sub.add_parser("generate", parents=common, help="synthetic contacts for demos/benchmarks")
    p.add_argument("--contacts", type=_positive_int, required=True, metavar="N")
    p.add_argument("--seed", type=int, default=1, metavar="S")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD",
                   help="reference date the data is built around (default: today)")

    p = sub.add_parser("recompute", parents=common, help="recompute and write, or a dry run")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--all", action="store_true", help="every contact")
    who.add_argument("--contact", type=int, nargs="+", metavar="ID", help="these contacts")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--verify", action="store_true",
                   help="compare the stored plan with a recompute and report (and repair) drift")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")

    p = sub.add_parser("run", parents=common, help="the daemon")
    p.add_argument("--inbox", type=Path, metavar="DIR", help="watch this folder for files")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD", help="pin today")
    p.add_argument("--once", action="store_true",
                   help="drain pending events, run a due tick, exit")

    p = sub.add_parser("export", parents=common, help="print the stored plan rows")
    p.add_argument("--format", choices=("csv", "json", "table"), default="csv")

    p = sub.add_parser("status", parents=common, help="queue, runs, load, configuration errors")
    p.add_argument("--json", action="store_true")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD")
    p.add_argument("--days", type=_positive_int, default=14, help="days of load to show")

    p = sub.add_parser("explain", parents=common, help="every planning decision for a contact")
    p.add_argument("--contact", type=int, required=True, metavar="ID")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD")

    p = sub.add_parser("plot", parents=common, help="daily volume by type against the cap")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="an .html file")
    p.add_argument("--today", type=_iso_date, metavar="YYYY-MM-DD")
    p.add_argument("--days", type=_positive_int, default=120, help="days to draw")
    return parser


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
            structlog.processors.dict_tracebacks if fmt == "json"
            else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def current_date(settings: Settings) -> date:
    """*today* in the organisation's zone: the command line's only clock read."""
    from service.clock import Clock

    return Clock(settings.tz).today()


def settings_from(args: argparse.Namespace, environ: os._Environ[str] | dict[str, str]) -> Settings:
    overrides: dict[str, object] = {}
    for text in args.assignments:
        key, value = parse_assignment(text)
        overrides[key] = value
    if args.db is not None:
        overrides["db"] = args.db
    if getattr(args, "inbox", None) is not None:
        overrides["inbox"] = args.inbox
    return load_settings(args.config, environ, overrides)


def _database(args: argparse.Namespace, settings: Settings) -> Path:
    if settings.db is None:
        raise UsageError(
            f"`mailplan {args.command}` needs a database: pass --db PATH, "
            "set MAILPLAN_DB or put db = \"PATH\" in the configuration file"
        )
    if args.command in NEEDS_EXISTING_DB and not settings.db.exists():
        raise UsageError(
            f"database {settings.db} does not exist; create it with "
            f"`mailplan init-db --db {settings.db}` (or check the path)"
        )
    return settings.db


Handler = Callable[[argparse.Namespace, Settings, Path], Coroutine[Any, Any, int]]
HANDLERS: dict[str, Handler] = {
    "init-db": commands.init_db,
    "generate": commands.generate,
    "recompute": commands.recompute,
    "run": commands.run,
    "export": commands.export,
    "status": commands.status,
    "explain": commands.explain,
    "plot": commands.plot,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mailplan`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    log_format = args.log_format or os.environ.get("MAILPLAN_LOG_FORMAT") or "json"
    if log_format not in ("json", "console"):
        parser.error(f"MAILPLAN_LOG_FORMAT={log_format!r}: use json or console")
    # The daemon's log is its output (journald); commands keep stdout for results.
    configure_logging(log_format, args.log_level,
                      sys.stdout if args.command == "run" else sys.stderr)
    try:
        settings = settings_from(args, os.environ)
        db = _database(args, settings)
        if getattr(args, "today", None) is None and args.command != "run":
            args.today = current_date(settings)
        return anyio.run(HANDLERS[args.command], args, settings, db)
    except ConfigError as exc:
        return _fail(exc, "fix the configuration and run the command again")
    except MailplanError as exc:
        return _fail(exc, None)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        # A reader such as `head` went away: not an error of ours.
        sys.stderr.close()
        return 0


def _fail(exc: MailplanError, hint: str | None) -> int:
    message = str(exc)
    if hint and "fix" not in message and "use " not in message:
        message = f"{message} ({hint})"
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return exc.exit_code
