#!/usr/bin/env python3
"""What the airflow-dingbot patch series costs: stock Airflow against patched, side by side.

    python bench/bench_failure_path.py [--airflow-line 3] [--quick] [--json FILE] [--postgres URL]
    tox -e bench [-- --quick]            (Airflow 3.3.2; tox -e bench-airflow2 for 2.11.2)

Builds (or reuses) the line's stock and patched environments (``bench/harness/environments.py``);
whatever Python runs this script is only the driver and is never measured. Then, alternating
between the two environments so drift hits both alike, it measures:

1. the failure path of a final failure with a healthy robot, three robots at once and a robot that
   never answers, and where one alert's time goes (``bench/benchmarks/failure_path.py``);
2. importing the module a task process starts from, and parsing a 1000-task DAG file
   (``bench/benchmarks/import_parse.py``).

The metadata databases are SQLite, or with ``--postgres`` fresh PostgreSQL databases. It prints
one side-by-side table with PASS/MISS for each target. The targets are informational: the exit
status is 0 unless the benchmark itself could not run. Nothing here asserts on time.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from benchmarks import failure_path, failure_path_report, import_parse
from harness.cli import parser, run_benchmark
from harness.environments import ENV_NAMES, PATCHED, ensure_envs, migrate, python_version, use_postgres
from harness.lines import LINES, Line
from harness.redaction import keep_secret
from harness.report import paragraph, table


def measure(line: Line, quick: bool, postgres: str | None, tmp: Path) -> tuple[str, dict]:
    started = time.monotonic()
    fp_profile = failure_path.QUICK if quick else failure_path.FULL
    ip_profile = import_parse.QUICK if quick else import_parse.FULL
    secret = f"SEC{secrets.token_hex(32)}"
    keep_secret(secret)

    envs = ensure_envs(line)
    homes = {name: tmp / f"home-{name}" for name in ENV_NAMES}
    if postgres:
        use_postgres(postgres, line, homes)
    migrate(envs, homes)
    results = failure_path.measure(line, envs, homes, tmp, fp_profile, secret)
    shared_home = tmp / "home-shared"
    (shared_home / "dags").mkdir(parents=True)
    results["import"] = import_parse.measure_import(line, envs, shared_home, ip_profile)
    results["parse"] = import_parse.measure_parse(line, envs, shared_home, tmp, ip_profile)
    results["python"] = python_version(envs[PATCHED])
    results["cpus"] = os.cpu_count()
    results["profile"] = "quick" if quick else "full"
    results["database"] = "postgresql" if postgres else "sqlite"

    passed = {**failure_path_report.checks(results), **import_parse.checks(results)}
    results["targets"] = {k: "PASS" if v else "MISS" for k, v in passed.items()}
    main_table = table(
        ["figure", "unpatched", "patched", "added", "ratio", "ratio 95% CI", "target", "result"],
        failure_path_report.main_rows(results, line, passed) + import_parse.main_rows(results, line, passed),
    )
    header = (
        f"airflow-dingbot failure-path benchmark ({results['profile']} profile): apache-airflow "
        f"{results['airflow_version']}, Python {results['python']}, {results['cpus']} CPUs, "
        f"metadata database {results['database']}, {time.monotonic() - started:.0f} s"
    )
    counts = (
        failure_path_report.counts(results, fp_profile) + " " + import_parse.counts(results, line, ip_profile)
    )
    text = "\n".join(
        [
            header,
            "",
            main_table,
            "",
            failure_path_report.fan_out_table(results, line, passed),
            "",
            failure_path_report.breakdown_table(results, line),
            "",
            paragraph(counts),
            paragraph(
                "ratio 95% CI: bootstrap interval of the ratio of medians, i.e. how far run-to-run "
                "noise alone moves it. Targets are informational; timings on a shared machine vary "
                "from run to run."
            ),
        ]
    )
    return text, results


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__.splitlines()[0], quick_help="fewer iterations (about 2 minutes)")
    cli.add_argument(
        "--postgres",
        metavar="URL",
        help="the measured environments' metadata databases on this PostgreSQL server "
        "(postgresql://user@host:port; fresh databases dingbot_bench_*), instead of SQLite",
    )
    args = cli.parse_args(argv)
    line = LINES[args.airflow_line]
    return run_benchmark(
        lambda tmp: measure(line, args.quick, args.postgres, tmp), args.json, prefix="dingbot-bench-"
    )


if __name__ == "__main__":
    raise SystemExit(main())
