"""Times the failure path of a task's final failure inside one Airflow installation (patched or not).

Run with the Python of the environment under test, with ``AIRFLOW_HOME`` pointing at a migrated
home (``timed_failure_lines.py`` says what is timed on each line). Two ways to run it:

* ``python failure_path_worker.py once --iterations 200 --warmup 10`` prints one JSON object
  with the samples, median and p99 (milliseconds), for a quick look by hand;
* ``python failure_path_worker.py serve`` is what the failure-path benchmarks use: it keeps the
  process (and its DAG, DagRun and session) alive and answers JSON commands (``worker_protocol.py``), so
  that the two environments can be measured alternately in one run.

Standard library plus whatever the environment under test has; never imports the repository.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable

from timed_failure import FailurePathBench
from timed_failure_lines import make_bench
from worker_protocol import private_stdout, serve_protocol, summarize


def serve(log_file: str, make: Callable[[], FailurePathBench] = make_bench) -> int:
    bench: FailurePathBench | None = None

    def setup() -> dict:
        nonlocal bench
        bench = make()
        return bench.info()

    def handle(op: str, cmd: dict) -> dict | None:
        for key, value in (cmd.get("env") or {}).items():
            os.environ[key] = value  # Airflow's conf reads AIRFLOW__* variables on every get()
        if op == "time":
            return bench.run(int(cmd["n"]), int(cmd.get("warmup", 0)))
        if op == "breakdown":
            return {"parts": bench.breakdown(int(cmd["n"]))}
        if op == "in_situ":  # only the flags on/off part of breakdown: no direct robot calls
            return {"parts": bench.in_situ(int(cmd["n"]))}
        return None

    return serve_protocol(log_file, setup, handle, close=lambda: bench.close())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    once = sub.add_parser("once", help="time N calls and print a JSON summary")
    once.add_argument("--iterations", type=int, default=200)
    once.add_argument("--warmup", type=int, default=10)
    srv = sub.add_parser("serve", help="answer JSON commands on stdin (used by the benchmarks)")
    srv.add_argument("--log-file", default=os.devnull)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args.log_file)
    out = private_stdout(None)
    bench = make_bench()
    result = bench.run(args.iterations, args.warmup)
    bench.close()
    out.write(
        json.dumps({**bench.info(), **summarize(result["samples_ms"]), "states": result["states"]}) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
