#!/usr/bin/env python3
"""The outbox mode under load: an alert storm at one rate-limited robot, the failure path, one alert.

    python bench/bench_outbox.py [--airflow-line 2|3] [--quick] [--only storm|failure-path|latency]
                                 [--json FILE] [--keep-logs DIR] [--postgres-url URL]
    tox -e bench / tox -e bench-airflow2     (after bench_failure_path.py, on that line)

With ``[dingbot] ding_bot_backend = airflow_ext.dingbot.outbox_sender`` failure handling only
records the alert; ``airflow-ext deliver`` sends it. Using the patched and unpatched environments
of ``bench_failure_path.py`` and the real ``airflow-ext deliver`` command, it runs:

1. the storm (``bench/benchmarks/outbox_storm.py``);
2. the failure path with the outbox backend against stock Airflow (Airflow 2.11.2:
   ``bench/benchmarks/outbox_failure_path.py``; 3.3.2: ``bench/benchmarks/outbox_finalize.py``);
3. one alert at a time (``bench/benchmarks/outbox_latency.py``).

On Airflow 3.3.2 alerts reach the outbox through the api-server (``outbox_airflow3.py``).
PostgreSQL is at ``DINGBOT_BENCH_POSTGRES_URL`` or ``--postgres-url`` (default: user postgres on
127.0.0.1:5432); the script creates a database ``dingbot_bench_<random>`` and drops it at the end.
Without a reachable server the PostgreSQL figures are left out, with a note (Airflow 3.3.2: the
benchmark does not run, it needs the task instances in the database). Everything printed is a
figure with its target; nothing asserts on time, and the exit status is 0 unless the benchmark
itself could not run.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from benchmarks import (
    outbox_failure_path,
    outbox_finalize,
    outbox_latency,
    outbox_storm,
    outbox_storm_report,
)
from benchmarks.outbox_airflow3 import setup_airflow3
from benchmarks.outbox_setup import DEFAULT_POSTGRES_URL, FULL, QUICK, PostgresDatabase, Profile
from harness.cli import parser, run_benchmark
from harness.environments import PATCHED, ensure_envs, python_version
from harness.errors import BenchError
from harness.lines import LINES, Line
from harness.redaction import keep_secret, redact
from harness.report import INFORMATIONAL, paragraph
from harness.stats import load_average

PARTS = ("storm", "failure-path", "latency")


def run_airflow2(envs, tmp: Path, pg_url: str | None, parts, profile: Profile, secret: str, results: dict):
    """Airflow 2.11.2: failure handling inserts into the outbox in-process (SQLite or PostgreSQL)."""
    if pg_url is None:
        results["notes"].append(
            "PostgreSQL was not reachable: the storm and the single-alert latency ran on SQLite, "
            "and the PostgreSQL failure-path figures are missing."
        )

    def usable(kinds: tuple[str, ...]) -> list[str]:
        picked = [k for k in kinds if k != "postgresql" or pg_url]
        return picked or ["sqlite"]

    results["storm"] = [
        outbox_storm.measure(envs, tmp, kind, pg_url, profile, secret)
        for kind in (usable(profile.storm_dbs) if "storm" in parts else [])
    ]
    results["failure_path"] = [
        outbox_failure_path.measure(envs, tmp, kind, pg_url, profile, secret)
        for kind in (profile.fp_dbs if "failure-path" in parts else [])
        if kind != "postgresql" or pg_url
    ]
    if "latency" in parts:
        kind = "postgresql" if pg_url else "sqlite"
        results["latency"] = outbox_latency.measure(envs, tmp, kind, pg_url, profile, secret)


def run_airflow3(envs, tmp: Path, pg_url: str | None, parts, profile: Profile, secret: str, results: dict):
    """Airflow 3.3.2: the api-server queues what supervisors post; it needs the metadata database
    (PostgreSQL here) for the tokens' task instances."""
    if pg_url is None:
        raise BenchError("the Airflow 3 outbox benchmark needs PostgreSQL (--postgres-url)")
    af = setup_airflow3(envs, tmp, pg_url)
    results["storm"] = [outbox_storm.measure3(af, profile, secret)] if "storm" in parts else []
    results["failure_path"] = []
    if "failure-path" in parts:
        results["failure_path3"] = outbox_finalize.measure(af, profile, secret)
    if "latency" in parts:
        results["latency"] = outbox_latency.measure3(af, profile, secret)


def report(line: Line, results: dict, elapsed_s: float) -> str:
    lines = [
        f"airflow-dingbot outbox benchmark ({results['profile']} profile): apache-airflow {line.version}, "
        f"Python {results['python']}, "
        f"{results['cpus']} CPUs, {elapsed_s:.0f} s; load average at start {results['load'][0]}, "
        f"at end {results['load'][1]}",
        "",
    ]
    for storm in results["storm"]:
        lines += [*outbox_storm_report.report(storm), ""]
    if results["failure_path"]:
        lines += [*outbox_failure_path.report(results["failure_path"]), ""]
    if results.get("failure_path3"):
        lines += [*outbox_finalize.report(results["failure_path3"]), ""]
    if results.get("latency"):
        lines += [*outbox_latency.report(results["latency"]), ""]
    lines += [paragraph(note) for note in results["notes"]]
    lines.append(paragraph(INFORMATIONAL))
    return "\n".join(lines).rstrip()


def measure(line: Line, args, tmp: Path) -> tuple[str, dict]:
    parts = set(args.only or PARTS)
    profile = QUICK if args.quick else FULL
    started = time.monotonic()
    secret = f"SEC{secrets.token_hex(32)}"
    keep_secret(secret)
    results: dict = {
        "profile": profile.name,
        "cpus": os.cpu_count(),
        "notes": [],
        "load": [load_average(), None],
    }
    database: PostgresDatabase | None = None
    try:
        envs = ensure_envs(line)
        results["python"] = python_version(envs[PATCHED])
        database = PostgresDatabase.create(envs, args.postgres_url)
        pg_url = database.url if database else None
        run = run_airflow3 if line.is_airflow3 else run_airflow2
        run(envs, tmp, pg_url, parts, profile, secret, results)
        results["load"][1] = load_average()
        return report(line, results, time.monotonic() - started), results
    finally:
        if database is not None:
            database.drop()
        if args.keep_logs:
            keep = Path(args.keep_logs)
            keep.mkdir(parents=True, exist_ok=True)
            for log in tmp.glob("*.log"):
                (keep / log.name).write_text(redact(log.read_text(errors="replace")), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__.splitlines()[0], quick_help="one storm (PostgreSQL), fewer calls")
    cli.add_argument(
        "--postgres-url",
        default=os.environ.get("DINGBOT_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a PostgreSQL database URL whose user may create databases (default: %(default)s)",
    )
    cli.add_argument(
        "--only",
        choices=list(PARTS),
        action="append",
        help="run only this part (repeatable); the default is all three",
    )
    cli.add_argument("--keep-logs", metavar="DIR", help="copy every process's log to DIR")
    args = cli.parse_args(argv)
    line = LINES[args.airflow_line]
    return run_benchmark(lambda tmp: measure(line, args, tmp), args.json, prefix="dingbot-bench-outbox-")


if __name__ == "__main__":
    raise SystemExit(main())
