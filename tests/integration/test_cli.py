"""The command line as a subprocess (SPEC 10): exit codes, messages, csv contract."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from service.commands import plot, report
from service.store import ExportRow

ROOT = Path(__file__).resolve().parents[2]
TODAY = "2026-11-29"
CSV_HEADER = "contact_id,email_type,event_date,desired_date,scheduled_date,status,skip_reason"


def mailplan(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m service`` with a clean MAILPLAN_* environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAILPLAN_")}
    # No machine-wide /etc/mailplan/mailplan.toml may leak in: point at an empty file.
    base["MAILPLAN_CONFIG"] = os.devnull
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "service", *map(str, args)],
        capture_output=True, text=True, env=base, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip


def ok(*args: str | Path) -> str:
    result = mailplan(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def cli_planned_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated and fully recomputed database (do not modify: copy it)."""
    db = tmp_path_factory.mktemp("cli") / "planned.sqlite3"
    ok("generate", "--db", db, "--contacts", "800", "--seed", "4", "--today", TODAY)
    ok("recompute", "--db", db, "--all", "--today", TODAY)
    return db


@pytest.fixture
def cli_db_copy(cli_planned_db: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.sqlite3"
    src = sqlite3.connect(cli_planned_db)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    return copy


# --- exit codes and messages ------------------------------------------------------------


def test_help_and_missing_command() -> None:
    assert mailplan("--help").returncode == 0
    result = mailplan()
    assert result.returncode == 2
    assert "COMMAND" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        # (command line, what the message must say)
        (
            ("status", "--db", "{db}", "--set", "timezone=Mars/Base"),
            "timezone='Mars/Base' (from the command line): not a known IANA time zone",
        ),
        (
            ("status", "--db", "{db}", "--set", "horizon_days=-3"),
            "horizon_days='-3' (from the command line): must not be negative",
        ),
        (
            ("status", "--db", "{db}", "--set", "no_such_key=1"),
            "unknown configuration key 'no_such_key'",
        ),
        (("status", "--db", "{db}", "--set", "horizon_days"), "expected KEY=VALUE"),
        (("export", "--db", "{missing}"), "does not exist; create it with `mailplan init-db"),
        (("init-db", "--db", "{missing}/x.sqlite3"), "does not exist; create it first"),
        (("status",), "needs a database: pass --db PATH"),
        (("recompute", "--db", "{db}", "--all", "--today", "2026-02-30"), "is not a date"),
        (("recompute", "--db", "{db}"), "one of the arguments --all --contact is required"),
        (("recompute", "--db", "{db}", "--all", "--contact", "3"), "not allowed with"),
        (("generate", "--db", "{db}", "--contacts", "0"), "must be at least 1"),
        (("status", "--db", "{db}", "--config", "{missing}"), "not found"),
    ],
)
def test_usage_and_configuration_errors_exit_2(
    cli_planned_db: Path, tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    filled = [a.format(db=cli_planned_db, missing=tmp_path / "missing") for a in args]
    result = mailplan(*filled)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_error_names_the_variable(cli_planned_db: Path) -> None:
    result = mailplan("status", "--db", cli_planned_db, env={"MAILPLAN_PERIOD_DAYS": "0"})
    assert result.returncode == 2
    assert "period_days='0' (from environment variable MAILPLAN_PERIOD_DAYS)" in result.stderr


def test_database_from_environment(cli_planned_db: Path) -> None:
    result = mailplan("status", "--today", TODAY, env={"MAILPLAN_DB": str(cli_planned_db)})
    assert result.returncode == 0, result.stderr


def test_not_a_database_is_a_runtime_failure(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not an SQLite file" * 100)
    result = mailplan("export", "--db", junk)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("mailplan: ")
    assert "Traceback" not in result.stderr


def test_generate_refuses_a_database_with_contacts(cli_planned_db: Path) -> None:
    result = mailplan("generate", "--db", cli_planned_db, "--contacts", "5")
    assert result.returncode == 1
    assert "already holds 800 contacts" in result.stderr


# --- init-db ------------------------------------------------------------------------------


def schema_of(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return [(str(n), str(s)) for n, s in rows] + [("user_version", str(version))]


def test_init_db_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "new.sqlite3"
    ok("init-db", "--db", db)
    first = schema_of(db)
    ok("init-db", "--db", db)
    assert schema_of(db) == first
    assert any(name == "scheduler_events" for name, _ in first)


# --- the csv contract ---------------------------------------------------------------------


def raw_stdout(*args: str | Path) -> bytes:
    """stdout as bytes: text mode would turn the csv module's \\r\\n into \\n."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPLAN_")}
    env["MAILPLAN_CONFIG"] = os.devnull
    result = subprocess.run(
        [sys.executable, "-m", "service", *map(str, args)],
        capture_output=True, env=env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_export_equals_dry_run_byte_for_byte(cli_planned_db: Path) -> None:
    exported = raw_stdout("export", "--db", cli_planned_db, "--format", "csv")
    dry = raw_stdout(
        "recompute", "--db", cli_planned_db, "--all", "--dry-run", "--format", "csv",
        "--today", TODAY,
    )  # fmt: skip
    assert exported == dry
    assert exported.startswith(CSV_HEADER.encode() + b"\r\n")  # csv module default line end
    text = exported.decode()
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert len(rows) > 500
    keys = [(int(r[0]), r[1], r[2]) for r in rows]
    assert keys == sorted(keys)
    iso = re.compile(r"^\d{4}-\d{2}-\d{2}$")
    for r in rows:
        assert all(iso.match(v) for v in r[2:5])
        assert r[5] in ("pre-scheduled", "skipped")
        assert (r[6] == "") == (r[5] == "pre-scheduled")


def test_export_json_matches_csv(cli_planned_db: Path) -> None:
    as_csv = list(csv.DictReader(io.StringIO(ok("export", "--db", cli_planned_db))))
    as_json = json.loads(ok("export", "--db", cli_planned_db, "--format", "json"))
    assert len(as_json) == len(as_csv)
    first = as_json[0]
    assert list(first) == CSV_HEADER.split(",")
    assert str(first["contact_id"]) == as_csv[0]["contact_id"]
    assert (first["skip_reason"] or "") == as_csv[0]["skip_reason"]


def test_fixed_skip_reasons_appear(cli_planned_db: Path) -> None:
    exported = ok("export", "--db", cli_planned_db)
    reasons = {r["skip_reason"] for r in csv.DictReader(io.StringIO(exported))}
    # Showcase contacts 1..18 live in every rule state with a birthday 30 days out:
    # CA's window (30 before + 60 buffer) covers it, New York is year-round.
    assert "Birthday exclusion window for CA" in reasons
    assert "Year-round exclusion for NY" in reasons


def last_run(db: Path) -> tuple[int, int, int, int, int]:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT id, rows_inserted, rows_updated, rows_deleted, rows_unchanged "
            "FROM scheduler_runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    return tuple(row)


def plan_fingerprint(db: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT id, scheduled_send_date, updated_at, scheduler_run_id, created_at "
            "FROM email_schedules WHERE status IN ('pre-scheduled', 'skipped') ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def test_second_recompute_writes_nothing(cli_db_copy: Path) -> None:
    before = plan_fingerprint(cli_db_copy)
    first_run = last_run(cli_db_copy)
    assert first_run[1] > 0  # the first recompute inserted the plan
    out = ok("recompute", "--db", cli_db_copy, "--all", "--today", TODAY, "--format", "json")
    stats = json.loads(out)
    run = last_run(cli_db_copy)
    assert run[0] > first_run[0]
    assert run[1:4] == (0, 0, 0)  # nothing inserted, updated or deleted
    assert run[4] == len(before)  # every row unchanged
    assert (stats["inserted"], stats["updated"], stats["deleted"]) == (0, 0, 0)
    assert plan_fingerprint(cli_db_copy) == before


def test_recompute_some_contacts(cli_db_copy: Path) -> None:
    out = ok("recompute", "--db", cli_db_copy, "--contact", "1", "2", "3", "--today", TODAY)
    assert out.startswith("recomputed 3 contacts: 0 rows inserted, 0 updated, 0 deleted")
    dry = ok("recompute", "--db", cli_db_copy, "--contact", "2", "--dry-run", "--format",
             "csv", "--today", TODAY)  # fmt: skip
    assert {line.split(",")[0] for line in dry.splitlines()[1:]} <= {"2"}


def test_dry_run_of_one_contact_is_the_full_dry_run_of_it_and_writes_nothing(
    cli_db_copy: Path,
) -> None:
    # Upstream moves contact 2's birth date by 40 days (no daemon runs): its
    # stored plan is stale. `--contact 2 --dry-run` recomputes it in a
    # transaction it rolls back; its rows must be exactly the contact's rows
    # of a dry run of the whole book (I1, I2), and nothing may be written.
    conn = sqlite3.connect(cli_db_copy)
    conn.execute("UPDATE contacts SET birth_date = date(birth_date, '+40 days') WHERE id = 2")
    conn.commit()
    conn.close()
    before = plan_fingerprint(cli_db_copy)
    one = raw_stdout("recompute", "--db", cli_db_copy, "--contact", "2", "--dry-run",
                     "--format", "csv", "--today", TODAY).decode().splitlines()  # fmt: skip
    full = raw_stdout("recompute", "--db", cli_db_copy, "--all", "--dry-run",
                      "--format", "csv", "--today", TODAY).decode().splitlines()  # fmt: skip
    assert one[0] == CSV_HEADER
    assert len(one) > 1
    assert one[1:] == [line for line in full[1:] if line.startswith("2,")]
    assert plan_fingerprint(cli_db_copy) == before
    stale = [line for line in raw_stdout("export", "--db", cli_db_copy).decode().splitlines()
             if line.startswith("2,")]  # fmt: skip
    assert stale != one[1:]  # the change did move the contact's plan


def test_verify_reports_and_repairs_drift(cli_db_copy: Path) -> None:
    assert "no drift" in ok("recompute", "--db", cli_db_copy, "--all", "--verify",
                            "--dry-run", "--today", TODAY)  # fmt: skip
    conn = sqlite3.connect(cli_db_copy)
    conn.execute(
        "UPDATE email_schedules SET scheduled_send_date = '2030-01-01' WHERE id = "
        "(SELECT min(id) FROM email_schedules WHERE status = 'pre-scheduled')"
    )
    conn.commit()
    conn.close()
    report = mailplan("recompute", "--db", cli_db_copy, "--all", "--verify", "--dry-run",
                      "--today", TODAY)  # fmt: skip
    assert report.returncode == 1
    assert "DRIFT of 1 rows (0 missing, 0 extra, 1 changed)" in report.stdout
    # A repair alerts: exit 1 and a warning line (the nightly timer's unit fails).
    repaired = mailplan("recompute", "--db", cli_db_copy, "--all", "--verify", "--today", TODAY)
    assert repaired.returncode == 1
    assert "repaired by a full recompute" in repaired.stdout
    assert '"event": "plan_drift_repaired"' in repaired.stderr
    assert '"level": "warning"' in repaired.stderr
    # Samples are words, not Python reprs.
    assert "changed: contact " in report.stdout and "ExportRow(" not in report.stdout
    info = json.loads(ok("status", "--db", cli_db_copy, "--today", TODAY, "--json"))
    assert info["last_verification"]["drift"] == 1
    assert info["last_verification"]["repaired"] is True
    assert "no drift" in ok("recompute", "--db", cli_db_copy, "--all", "--verify",
                            "--dry-run", "--today", TODAY)  # fmt: skip


# --- explain, status, plot ----------------------------------------------------------------


def test_explain(cli_planned_db: Path) -> None:
    text = ok("explain", "--db", cli_planned_db, "--contact", "1", "--today", TODAY)
    assert text.startswith("Contact 1, planned as of 2026-11-29")
    assert "resolved state: CA, from the state column" in text
    assert "skipped: Birthday exclusion window for CA" in text
    missing = mailplan("explain", "--db", cli_planned_db, "--contact", "999999", "--today", TODAY)
    assert missing.returncode == 1
    assert "No such contact" in missing.stdout


def test_status(cli_planned_db: Path) -> None:
    text = ok("status", "--db", cli_planned_db, "--today", TODAY)
    assert "pending events: none" in text
    assert "last runs:" in text
    info = json.loads(ok("status", "--db", cli_planned_db, "--today", TODAY, "--json"))
    assert info["pending_events"] == 0
    # 7 % of the contacts with a non-empty email, floored (SPEC 6).
    assert info["cap"] == int(info["contacts"] * 0.07)
    assert len(info["load"]) == 14
    assert info["load"][0]["day"] == TODAY
    assert info["runs"][0]["trigger"]


def test_plot(cli_planned_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "load.html"
    ok("plot", "--db", cli_planned_db, "--out", out, "--today", TODAY)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page and "stroke-dasharray" in page
    # Axis titles, the threshold beside the cap, today and the horizon (today + 60
    # days = 2027-01-28), a week of history before today, a chart that scales.
    for text in ("scheduled send date", "emails per day", ">threshold ", ">cap ",
                 ">today 2026-11-29<", ">horizon 2027-01-28<", "from 2026-11-22 to ",
                 'viewBox="0 0 ', "svg { width: 100%", "skipped (never sent)"):  # fmt: skip
        assert text in page, text


def test_export_into_a_closed_pipe(cli_planned_db: Path) -> None:
    shell = shutil.which("sh")
    assert shell is not None
    cmd = f'"{sys.executable}" -m service export --db "{cli_planned_db}" | head -n 2'
    result = subprocess.run([shell, "-c", cmd], capture_output=True, text=True, cwd=ROOT,
                            timeout=60, check=False)  # fmt: skip
    assert result.stdout.splitlines()[0] == CSV_HEADER
    assert "Error" not in result.stderr


# --- README and CI agree ------------------------------------------------------------------


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r'^TEST_COMMAND="(.*)"$', ci, re.M)
    assert command is not None
    assert blocks[1] == command.group(1)
    assert "mailplan generate" in blocks[0] and "recompute --all" in blocks[0]
    assert readme.index("```sh") < readme.index("## ")


def test_today_defaults_to_the_configured_zone(cli_planned_db: Path) -> None:
    info = json.loads(ok("status", "--db", cli_planned_db, "--json"))
    # Whatever the wall clock says, today in America/Chicago is within a day of UTC's.
    assert abs((date.fromisoformat(info["today"]) - date.today()).days) <= 1


# --- output formats, in-process ------------------------------------------------------------


def export_rows() -> list[ExportRow]:
    d = date(2026, 12, 1)
    return [
        ExportRow(7, "birthday", d, d, date(2026, 12, 2), "pre-scheduled", ""),
        ExportRow(7, "campaign_aep_1", d, d, d, "skipped", 'Odd, "quoted" reason'),
    ]


def test_csv_quoting_follows_the_csv_module() -> None:
    out = io.StringIO()
    assert report.write_rows(export_rows(), "csv", out) == 2
    # Hand-written: minimal quoting, doubled quotes, \r\n line ends.
    assert out.getvalue() == (
        CSV_HEADER + "\r\n"
        "7,birthday,2026-12-01,2026-12-01,2026-12-02,pre-scheduled,\r\n"
        '7,campaign_aep_1,2026-12-01,2026-12-01,2026-12-01,skipped,"Odd, ""quoted"" reason"\r\n'
    )


def test_json_and_table_formats() -> None:
    out = io.StringIO()
    report.write_rows(export_rows(), "json", out)
    data = json.loads(out.getvalue())
    assert data[0] == {
        "contact_id": 7, "email_type": "birthday", "event_date": "2026-12-01",
        "desired_date": "2026-12-01", "scheduled_date": "2026-12-02",
        "status": "pre-scheduled", "skip_reason": None,
    }  # fmt: skip
    empty = io.StringIO()
    report.write_rows([], "json", empty)
    assert json.loads(empty.getvalue()) == []
    table = io.StringIO()
    report.write_rows(export_rows(), "table", table)
    lines = table.getvalue().splitlines()
    assert lines[0].split() == CSV_HEADER.split(",")
    assert lines[-1] == "(2 rows)"


@pytest.mark.parametrize(
    ("email_type", "group"),
    [("birthday", "birthday"), ("effective_date", "effective_date"),
     ("post_window", "post_window"), ("campaign_aep_3", "campaign"),
     ("followup_hq_with_yes", "followup")],
)  # fmt: skip
def test_plot_groups(email_type: str, group: str) -> None:
    assert plot.group_of(email_type) == group


def test_plot_renders_cap_and_bars() -> None:
    d = date(2026, 12, 1)
    page = plot.render_html([(d, "birthday", 5), (d, "campaign_aep_1", 3)], 4, "t", d)
    # From a week before today (2026-11-24) to the last planned day.
    assert "8 planned emails from 2026-11-24 to 2026-12-01" in page
    assert page.count("<rect") == 2
    assert plot.render_html([], None, "t", d).count("No planned emails") == 1


def test_run_once_logs_json_to_stdout(cli_db_copy: Path) -> None:
    conn = sqlite3.connect(cli_db_copy)
    # Contact 19 is a showcase contact (valid address, in CA): every contact with an
    # address gets the running AEP campaign, so it has at least that row.
    conn.execute("UPDATE contacts SET state = 'NY' WHERE id = 19")
    conn.commit()
    conn.close()
    result = mailplan("run", "--db", cli_db_copy, "--once", "--today", TODAY)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines and all("event" in line and "level" in line for line in lines)
    conn = sqlite3.connect(cli_db_copy)
    pending = conn.execute("SELECT count(*) FROM scheduler_events").fetchone()[0]
    conn.close()
    assert pending == 0
    # The event was consumed by a plan that now knows the contact lives in New York.
    exported = ok("export", "--db", cli_db_copy)
    rows = [r for r in csv.DictReader(io.StringIO(exported)) if r["contact_id"] == "19"]
    assert rows
    assert {(r["status"], r["skip_reason"]) for r in rows} == {
        ("skipped", "Year-round exclusion for NY")
    }
    # Invariant I1 at the command line: after the drain, export equals a dry run.
    assert raw_stdout("export", "--db", cli_db_copy) == raw_stdout(
        "recompute", "--db", cli_db_copy, "--all", "--dry-run", "--format", "csv", "--today", TODAY
    )
