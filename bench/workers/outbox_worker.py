"""Failing-task stand-ins for the outbox benchmarks on Airflow 2.11, run with the Python of the
patched environment.

    python outbox_worker.py serve --index P [--log-file FILE]
    python outbox_worker.py database create|drop --admin-url URL --name NAME

``serve`` imports Airflow with the configuration of its environment (``AIRFLOW_HOME``,
``AIRFLOW__*``), checks that ``[dingbot] ding_bot_backend`` is the outbox backend, opens the outbox
(``airflow_ext.dingbot.outbox_store``, the metadata database) and then answers JSON commands
(``worker_protocol.py``):

* ``{"op": "storm", "start_at": EPOCH, "plan": [[n, offset_s], ...]}``: at ``start_at + offset_s``
  record alert ``n`` (``storm_alerts.py``) through the real backend (``outbox_sender``), one after
  another; answers with when each call started and how long it took;
* ``{"op": "one", "n": N}``: record alert ``n`` now;
* ``{"op": "counts"}``: the outbox rows per status, from ``OutboxStore.status()``;
* ``{"op": "settle"}``: every row still waiting becomes a dead letter (``settle_pending``).

``database`` creates or drops a PostgreSQL database (the driver has no database driver).
"""

from __future__ import annotations

import argparse
import os
import time

from storm_alerts import make_alert
from worker_protocol import serve_protocol

OUTBOX_BACKEND = "airflow_ext.dingbot.outbox_sender"


def outbox_counts(store) -> dict:
    """The outbox rows per status, over every robot."""
    totals = {"pending": 0, "claimed": 0, "sent": 0, "dead": 0}
    for robot in store.status():
        for key in totals:
            totals[key] += getattr(robot, key)
    return totals


def settle_pending(store) -> dict:
    """Every row still waiting becomes a dead letter, so that what one part of the benchmark left in
    a shared database never reaches the next part's robot (``airflow-ext deliver`` delivers every
    robot name it finds waiting, to whatever that name is configured as now)."""
    reason = "left by an earlier part of the benchmark"
    return {"settled": sum(store.mark_dead_pending(key, ref, reason) for key, ref in store.pending_robots())}


def paced(start_at: float, plan: list, call) -> list:
    """``call(*item)`` for each ``[n, offset_s, ...]`` of ``plan`` at ``start_at + offset_s``."""
    done = []
    for n, offset, *rest in plan:
        wait = start_at + offset - time.time()
        if wait > 0:
            time.sleep(wait)
        done.append(call(int(n), *rest))
    return done


def serve(index: int, log_file: str) -> int:
    store = outbox_sender = None

    def setup() -> dict:
        nonlocal store, outbox_sender
        from airflow_ext import config, lines
        from airflow_ext.dingbot import outbox_sender, outbox_store

        lines.choose()  # as the CLI does: the core's Airflow port for this line

        backend = config.backend_path()
        if backend != OUTBOX_BACKEND:
            raise RuntimeError(f"[dingbot] ding_bot_backend is {backend!r}, not the outbox backend")
        store = outbox_store()
        store.pending_count()  # a first query: the connection pool is warm before the storm
        return {"pid": os.getpid(), "dialect": store.dialect}

    def record(n: int) -> dict:
        alert = make_alert(n, index)
        started = time.time()
        t0 = time.perf_counter()
        answer = outbox_sender(alert)
        return {"n": n, "at": started, "ms": (time.perf_counter() - t0) * 1000, "queued": answer["queued"]}

    def handle(op: str, cmd: dict) -> dict | None:
        if op == "storm":
            return {"records": paced(float(cmd["start_at"]), cmd["plan"], record)}
        if op == "one":
            return record(int(cmd["n"]))
        if op == "counts":
            return outbox_counts(store)
        if op == "settle":
            return settle_pending(store)
        return None

    return serve_protocol(log_file, setup, handle)


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


# -- Airflow 3 ------------------------------------------------------------------------------------
# There a task process has no database: the supervisor posts its try's alert to the api-server's
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("serve", help="record alerts in the outbox on command")
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
