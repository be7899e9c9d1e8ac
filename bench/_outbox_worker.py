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
* ``{"op": "counts"}``: the outbox rows per status, from ``OutboxStore.status()``;
* ``{"op": "settle"}``: every row still waiting becomes a dead letter (``settle_pending``).

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


def _protocol():
    """The worker protocol of ``_failure_path_worker.py`` (same folder)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _failure_path_worker

    return _failure_path_worker


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

    return _protocol().serve_protocol(log_file, setup, handle)


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
# outbox route with the try's Execution API token. These modes run in the 3.3.2 environments.

#: The Execution API's audience (what its validator requires of a task token).
TOKEN_AUDIENCE = "urn:airflow.apache.org:task"


def execution_token(ti_id: str, secret: str) -> str:
    """A running try's token as the Execution API issues it, for ``[api_auth] jwt_secret``."""
    import uuid

    import jwt

    now = int(time.time())
    claims = {"sub": ti_id, "scope": "execution", "aud": TOKEN_AUDIENCE, "iat": now, "nbf": now}
    return jwt.encode({**claims, "exp": now + 600, "jti": uuid.uuid4().hex}, secret, algorithm="HS512")


def make_alert3(n: int, ti: dict):
    """Alert ``n`` for the genuine failed try ``ti`` (``{"dag_id", "task_id", "run_id", "id"}``)."""
    from dataclasses import replace

    from airflow_ext.alert import AlertKind

    alert = make_alert(n, 0)
    dag_id, task_id, run_id = ti["dag_id"], ti["task_id"], ti["run_id"]
    return replace(
        alert,
        kind=AlertKind.FAILURE,
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        try_number=1,
        max_tries=0,
        map_index=-1,
        # As Airflow 3.3's task log URL looks.
        log_url=f"{BASE_URL}/dags/{dag_id}/runs/{quote(run_id)}/tasks/{task_id}?try_number=1",
    )


def task_instances(run_ids: list[str]) -> int:
    """Trigger every DAG of the DAG folder (already serialized) once per run id, fail every task
    instance's first try by SQL, and print ``{run_id: {n: {...}}}``: what each alert is for."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import bindparam, select, text

    proto = _protocol().private_stdout(None)
    with create_session() as session:
        dag_ids = sorted(session.scalars(select(SerializedDagModel.dag_id).distinct()))
    if not dag_ids:
        raise SystemExit("no serialized DAGs: run `airflow dags reserialize` first")
    for run_id in run_ids:
        for dag_id in dag_ids:
            with create_session() as session:
                trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.CLI, run_id=run_id, session=session)
            with create_session() as session:
                dag_run = session.scalars(
                    select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
                ).one()
                dag_run.dag = None
                if not dag_run.get_task_instances(session=session):
                    # Airflow 3.3.2 creates them when the run is created; should a version not, the
                    # scheduler's own call does it.
                    from airflow.models.dagbag import DBDagBag

                    dag_run.dag = DBDagBag().get_dag_for_run(dag_run, session=session)
                    dag_run.verify_integrity(session=session)
    out: dict[str, dict[str, dict]] = {}
    with create_session() as session:
        session.execute(
            text(
                "UPDATE task_instance SET state = 'failed', try_number = 1, "
                "start_date = now(), end_date = now() WHERE run_id IN :runs"
            ).bindparams(bindparam("runs", expanding=True)),
            {"runs": run_ids},
        )
        session.commit()
        rows = session.execute(
            text(
                "SELECT id, dag_id, task_id, run_id, state, try_number FROM task_instance "
                "WHERE run_id IN :runs"
            ).bindparams(bindparam("runs", expanding=True)),
            {"runs": run_ids},
        ).all()
    for row in rows:
        if not row.task_id.startswith(TASK_PREFIX) or row.state != "failed" or row.try_number != 1:
            continue
        n = int(row.task_id[len(TASK_PREFIX) :])
        out.setdefault(row.run_id, {})[str(n)] = {
            "id": str(row.id),
            "dag_id": row.dag_id,
            "task_id": row.task_id,
            "run_id": row.run_id,
        }
    proto.write(json.dumps({"ok": True, "dags": len(dag_ids), "tries": out}) + "\n")
    proto.flush()
    return 0


def serve3(log_file: str) -> int:
    """The Airflow 3 producer: posts alerts to the api-server's outbox route on command.

    * ``{"op": "storm", "url", "start_at", "plan": [[n, offset_s, ti], ...]}``: at ``start_at +
      offset_s`` post alert ``n`` for try ``ti`` with its own token (``post_alert``, the client the
      supervisor uses); answers when each POST started, how long it took and what it answered;
    * ``{"op": "one", "url", "n", "ti"}``: post alert ``n`` now;
    * ``{"op": "supervisor", "base_url", "tries": [[n, ti], ...], "warmup"}``: per try, leave the
      alert as ``finalize`` does in a task process (untimed), then time the supervisor's
      ``task_process_ended`` relaying it (``client.auth.token``, ``client.base_url``);
    * ``{"op": "counts"}``: the outbox rows per status; ``{"op": "settle"}``: see ``settle_pending``.
    """
    secret = os.environ["DINGBOT_BENCH_JWT_SECRET"]
    policy = None

    def setup() -> dict:
        nonlocal policy
        import airflow

        from airflow_ext import config

        backend = config.backend_path()
        if backend != OUTBOX_BACKEND:
            raise RuntimeError(f"[dingbot] ding_bot_backend is {backend!r}, not the outbox backend")
        policy = config.load_retry_policy()
        return {"pid": os.getpid(), "airflow_version": airflow.__version__}

    def post(n: int, ti: dict, url: str) -> dict:
        from airflow_ext.errors import DeliveryError
        from airflow_ext.outbox.api_client import post_alert

        alert = make_alert3(n, ti)
        token = execution_token(ti["id"], secret)
        started = time.time()
        t0 = time.perf_counter()
        try:
            queued, error = post_alert(alert, url, token, policy), None
        except DeliveryError as err:
            queued, error = False, str(err)[:300]
        ms = (time.perf_counter() - t0) * 1000
        return {"n": n, "at": started, "ms": ms, "queued": queued, "error": error}

    def supervisor(base_url: str, tries: list, warmup: int) -> dict:
        from types import SimpleNamespace

        from airflow.sdk._shared.secrets_masker import reset_secrets_masker

        from airflow_ext import handoff
        from airflow_ext.adapters.airflow3 import task_process_ended

        samples = []
        for k, (n, ti) in enumerate(tries):
            reset_secrets_masker()  # untimed, as supervise() does before each workload
            alert = make_alert3(int(n), ti)
            handoff.leave_alert(ti["id"], 1, alert.to_dict())
            client = SimpleNamespace(auth=SimpleNamespace(token=execution_token(ti["id"], secret)))
            client.base_url = base_url
            task_ti = SimpleNamespace(
                id=ti["id"], try_number=1, dag_id=ti["dag_id"], task_id=ti["task_id"], map_index=-1
            )
            t0 = time.perf_counter()
            task_process_ended(task_ti, 1, "failed", client)
            ms = (time.perf_counter() - t0) * 1000
            if k >= warmup:
                samples.append(ms)
        return {"samples_ms": samples, "calls": len(tries)}

    store = None

    def handle(op: str, cmd: dict) -> dict | None:
        nonlocal store
        if op == "storm":
            return {
                "records": paced(float(cmd["start_at"]), cmd["plan"], lambda n, ti: post(n, ti, cmd["url"]))
            }
        if op == "one":
            return post(int(cmd["n"]), cmd["ti"], cmd["url"])
        if op == "supervisor":
            return supervisor(cmd["base_url"], cmd["tries"], int(cmd.get("warmup", 0)))
        if op in ("counts", "settle"):
            from airflow_ext.dingbot import outbox_store

            store = store or outbox_store()
            return outbox_counts(store) if op == "counts" else settle_pending(store)
        return None

    return _protocol().serve_protocol(log_file, setup, handle)


def finalize_serve(log_file: str) -> int:
    """``_failure_path_worker.py serve`` on Airflow 3 as a task process runs it: the ORM blocked by
    the SDK's ``block_orm_access()`` first, so the outbox backend takes the path a task process takes
    (its alert handed to the supervisor in a file). After each timed call the file is taken away
    (untimed) and counted; ``time`` answers say how many there were (``relayed``)."""
    fpw = _protocol()
    import airflow.settings  # noqa: F401 - block_orm_access() only blocks a loaded settings module
    from airflow.sdk.execution_time.supervisor import block_orm_access

    block_orm_access()

    class RelayFinalizeBench(fpw.FinalizeBench):
        relayed = 0

        def reset(self) -> None:
            self._take()
            super().reset()

        def _take(self) -> None:
            try:
                from airflow_ext import handoff
            except ImportError:
                return
            if self.ti.try_number and handoff.take_alert(self.ti.id, self.ti.try_number) is not None:
                self.relayed += 1

        def run(self, n: int, warmup: int) -> dict:
            before = self.relayed
            out = super().run(n, warmup)
            self._take()
            return {**out, "relayed": self.relayed - before}

        def info(self) -> dict:
            from airflow import settings

            return {**super().info(), "orm_blocked": getattr(settings, "engine", None) is None}

    fpw.make_bench = RelayFinalizeBench
    return fpw.serve(log_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("serve", help="record alerts in the outbox on command (used by bench_outbox.py)")
    srv.add_argument("--index", type=int, required=True, help="producer number: picks the DAGs' region")
    srv.add_argument("--log-file", default=os.devnull)
    srv3 = sub.add_parser("serve3", help="Airflow 3: post alerts to the api-server's outbox route")
    srv3.add_argument("--log-file", default=os.devnull)
    fin = sub.add_parser("finalize", help="Airflow 3: the finalize worker with the ORM blocked")
    fin.add_argument("--log-file", default=os.devnull)
    tis = sub.add_parser("task-instances", help="Airflow 3: create failed tries to post alerts for")
    tis.add_argument("--run-id", action="append", required=True)
    db = sub.add_parser("database", help="create or drop a PostgreSQL database")
    db.add_argument("action", choices=["create", "drop"])
    db.add_argument("--admin-url", required=True)
    db.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args.index, args.log_file)
    if args.mode == "serve3":
        return serve3(args.log_file)
    if args.mode == "finalize":
        return finalize_serve(args.log_file)
    if args.mode == "task-instances":
        return task_instances(args.run_id)
    return database(args.action, args.admin_url, args.name)


if __name__ == "__main__":
    raise SystemExit(main())
