"""Times ``DagBag(dag_folder=FILE)`` (Airflow 2: ``include_examples=False``) in a fresh process.

Run with the Python of the environment under test::

    python dagbag_worker.py DAG_FILE [--repeats K] [--operator-module airflow.operators.empty]

Airflow, the DagBag module and the operator module the DAG file uses are imported first, outside
the timed region, so the figures are the parse itself: executing the DAG file and building its
tasks (where the patched ``BaseOperator.__init__`` does its extra work), plus the DagBag's own
checks. The first parse in the process is reported on its own (``first_parse_s``: what a fresh
DAG-processor child does); then the same file is parsed K more times (DagBag re-imports it each
time) and their median is ``repeat_parse_s``, a steadier figure of the same work.

Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_file")
    parser.add_argument("--repeats", type=int, default=0)
    parser.add_argument("--operator-module", default="airflow.operators.empty")
    args = parser.parse_args(argv)

    importlib.import_module(args.operator_module)
    from airflow import __version__

    if __version__.startswith("3."):  # the DAG processor's DagBag, which has no examples to skip
        from airflow.dag_processing.dagbag import DagBag

        options = {}
    else:
        from airflow.models.dagbag import DagBag

        options = {"include_examples": False}

    def parse():
        t0 = time.perf_counter()
        bag = DagBag(dag_folder=args.dag_file, **options)
        return time.perf_counter() - t0, bag

    first_s, bag = parse()
    repeats = [parse()[0] for _ in range(args.repeats)]

    tasks = [task for dag in bag.dags.values() for task in dag.tasks]
    out = {
        "first_parse_s": first_s,
        "repeat_parse_s": statistics.median(repeats) if repeats else None,
        "dags": len(bag.dags),
        "tasks": len(tasks),
        "import_errors": len(bag.import_errors),
        "tasks_with_ding_on_failure": sum(1 for t in tasks if getattr(t, "ding_on_failure", False)),
        "tasks_with_ding_on_retry": sum(1 for t in tasks if getattr(t, "ding_on_retry", False)),
    }
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
