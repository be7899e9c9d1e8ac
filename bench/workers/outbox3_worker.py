"""The outbox benchmarks' processes on Airflow 3, run with the Python of a 3.3.2 environment.

There a task process has no database: the supervisor posts its try's alert to the api-server's
outbox route with the try's Execution API token.

    python outbox3_worker.py task-instances --run-id R [--run-id R2 ...]
    python outbox3_worker.py serve [--log-file FILE]       (posts alerts: see serve)
    python outbox3_worker.py finalize [--log-file FILE]    (finalize with the ORM blocked)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import failure_path_worker
from outbox_worker import OUTBOX_BACKEND, outbox_counts, paced, settle_pending
from storm_alerts import TASK_PREFIX, execution_token, make_alert3
from timed_failure_lines import FinalizeBench
from worker_protocol import private_stdout, serve_protocol


def task_instances(run_ids: list[str]) -> int:
    """Trigger every DAG of the DAG folder (already serialized) once per run id, fail every task
    instance's first try by SQL, and print ``{run_id: {n: {...}}}``: what each alert is for."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dagrun import DagRun
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import bindparam, select, text

    proto = private_stdout(None)
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


def serve(log_file: str) -> int:
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

    return serve_protocol(log_file, setup, handle)


def finalize_serve(log_file: str) -> int:
    """``failure_path_worker.py serve`` on Airflow 3 as a task process runs it: the ORM blocked by
    the SDK's ``block_orm_access()`` first, so the outbox backend takes the path a task process takes
    (its alert handed to the supervisor in a file). After each timed call the file is taken away
    (untimed) and counted; ``time`` answers say how many there were (``relayed``)."""
    import airflow.settings  # noqa: F401 - block_orm_access() only blocks a loaded settings module
    from airflow.sdk.execution_time.supervisor import block_orm_access

    block_orm_access()

    class RelayFinalizeBench(FinalizeBench):
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

    return failure_path_worker.serve(log_file, make=RelayFinalizeBench)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("serve", help="post alerts to the api-server's outbox route on command")
    srv.add_argument("--log-file", default=os.devnull)
    fin = sub.add_parser("finalize", help="the finalize worker with the ORM blocked")
    fin.add_argument("--log-file", default=os.devnull)
    tis = sub.add_parser("task-instances", help="create failed tries to post alerts for")
    tis.add_argument("--run-id", action="append", required=True)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args.log_file)
    if args.mode == "finalize":
        return finalize_serve(args.log_file)
    return task_instances(args.run_id)


if __name__ == "__main__":
    raise SystemExit(main())
