"""Helper processes for ``bench_outbox.py``, run with the Python of the patched environment.

    python _outbox_worker.py serve --index P [--log-file FILE]
    python _outbox_worker.py database create|drop --admin-url URL --name NAME

``serve`` is a failing-task stand-in: it imports Airflow with the configuration of its environment
(``AIRFLOW_HOME``, ``AIRFLOW__*``), checks that ``[dingbot] ding_bot_backend`` is the outbox backend,
opens the outbox (``airflow_ext.dingbot.outbox_store``, the metadata database) and then answers
JSON commands, one per line on stdin, on a private copy of stdout (Airflow's logs go to
``--log-file``):

* ``{"op": "storm", "start_at": EPOCH, "plan": [[n, offset_s], ...]}``: at ``start_at + offset_s``
  record alert ``n`` through the real backend (``outbox_sender``), one after another; answers with
  when each call started and how long it took;
* ``{"op": "one", "n": N}``: record alert ``n`` now;
* ``{"op": "counts"}``: the outbox rows per status, from ``OutboxStore.status()``.

Alert ``n`` is the same in every process: task ``load_partition_NNNN`` of one of 40 DAGs (a domain
per ``n % 5``, a region per producer), with Airflow 2.11's log URL, a realistic exception and a
traceback. ``database`` creates or drops a PostgreSQL database (the driver has no database driver).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from urllib.parse import quote

DOMAINS = ("orders_etl", "billing_sync", "clickstream_ingest", "inventory_snapshot", "ml_features")
REGIONS = (
    "cn_hangzhou",
    "cn_shanghai",
    "cn_beijing",
    "cn_shenzhen",
    "ap_singapore",
    "eu_frankfurt",
    "us_virginia",
    "cn_chengdu",
)
RUN_ID = "scheduled__2026-11-21T02:00:00+00:00"
LOGICAL_DATE = "2026-11-21T02:00:00+00:00"
BASE_URL = "https://airflow.data-platform.example.com"
TASK_PREFIX = "load_partition_"
OUTBOX_BACKEND = "airflow_ext.dingbot.outbox_sender"

TRACEBACK = """\
Traceback (most recent call last):
  File "/opt/airflow/dags/{domain}/tasks.py", line 118, in load_partition
    rows = extract(conn, partition={n})
  File "/opt/airflow/dags/{domain}/extract.py", line 57, in extract
    with warehouse.connect(timeout=30) as conn:
  File "/opt/airflow/dags/common/warehouse.py", line 41, in connect
    return psycopg2.connect(dsn, connect_timeout=timeout)
  File "/home/airflow/.local/lib/python3.11/site-packages/psycopg2/__init__.py", line 122, in connect
    conn = _connect(dsn, connection_factory=connection_factory, **kwasync)
psycopg2.OperationalError: connection to server at "warehouse-db.internal" (10.0.3.17), port 5432 \
failed: FATAL:  remaining connection slots are reserved for non-replication superuser connections"""


def make_alert(n: int, producer: int):
    from airflow_ext.alert import Alert, AlertKind

    domain = DOMAINS[n % len(DOMAINS)]
    dag_id = f"{domain}_{REGIONS[producer % len(REGIONS)]}"
    task_id = f"{TASK_PREFIX}{n:04d}"
    try_number = 1 + n % 3
    base_date = quote("2026-11-21T02:00:00.000000+0000")
    return Alert(
        kind=AlertKind.FAILURE if try_number == 3 else AlertKind.RETRY,
        dag_id=dag_id,
        task_id=task_id,
        run_id=RUN_ID,
        try_number=try_number,
        max_tries=2,
        logical_date=LOGICAL_DATE,
        hostname=f"airflow-worker-{producer}.airflow-worker.airflow.svc.cluster.local",
        # As Airflow 2.11's TaskInstance.log_url builds it.
        log_url=(
            f"{BASE_URL}/dags/{dag_id}/grid?dag_run_id={quote(RUN_ID)}&task_id={task_id}"
            f"&base_date={base_date}&tab=logs"
        ),
        exception_type="OperationalError",
        exception_message=(
            'connection to server at "warehouse-db.internal" (10.0.3.17), port 5432 failed: FATAL:  '
            "remaining connection slots are reserved for non-replication superuser connections"
        ),
        traceback=TRACEBACK.format(domain=domain, n=n),
    )


def private_stdout(log_file: str | None):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _handle_failure_worker import private_stdout as redirect

    return redirect(log_file)


def serve(index: int, log_file: str) -> int:
    proto = private_stdout(log_file)

    def reply(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        from airflow_ext import config
        from airflow_ext.dingbot import outbox_sender, outbox_store

        backend = config.backend_path()
        if backend != OUTBOX_BACKEND:
            raise RuntimeError(f"[dingbot] ding_bot_backend is {backend!r}, not the outbox backend")
        store = outbox_store()
        store.pending_count()  # a first query: the connection pool is warm before the storm
    except Exception as err:  # reported to the driver, which shows the log
        reply({"ok": False, "error": f"setup failed: {type(err).__name__}: {err}"})
        return 1
    reply({"ok": True, "pid": os.getpid(), "dialect": store.dialect})

    def record(n: int) -> dict:
        alert = make_alert(n, index)
        started = time.time()
        t0 = time.perf_counter()
        answer = outbox_sender(alert)
        return {"n": n, "at": started, "ms": (time.perf_counter() - t0) * 1000, "queued": answer["queued"]}

    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "quit":
            break
        try:
            if op == "storm":
                start_at = float(cmd["start_at"])
                done = []
                for n, offset in cmd["plan"]:
                    wait = start_at + offset - time.time()
                    if wait > 0:
                        time.sleep(wait)
                    done.append(record(int(n)))
                reply({"ok": True, "records": done})
            elif op == "one":
                reply({"ok": True, **record(int(cmd["n"]))})
            elif op == "counts":
                totals = {"pending": 0, "claimed": 0, "sent": 0, "dead": 0}
                for robot in store.status():
                    for key in totals:
                        totals[key] += getattr(robot, key)
                reply({"ok": True, **totals})
            else:
                reply({"ok": False, "error": f"unknown op {op!r}"})
        except Exception as err:
            reply({"ok": False, "error": f"{op} failed: {type(err).__name__}: {err}"})
    return 0


def database(action: str, admin_url: str, name: str) -> int:
    from sqlalchemy import create_engine, text

    if not name.replace("_", "").isalnum():
        raise SystemExit(f"not a plain database name: {name!r}")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if action == "create":
                conn.execute(text(f"CREATE DATABASE {name}"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        admin.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("serve", help="record alerts in the outbox on command (used by bench_outbox.py)")
    srv.add_argument("--index", type=int, required=True, help="producer number: picks the DAGs' region")
    srv.add_argument("--log-file", default=os.devnull)
    db = sub.add_parser("database", help="create or drop a PostgreSQL database")
    db.add_argument("action", choices=["create", "drop"])
    db.add_argument("--admin-url", required=True)
    db.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args.index, args.log_file)
    return database(args.action, args.admin_url, args.name)


if __name__ == "__main__":
    raise SystemExit(main())
