"""Airflow 3.3.2's outbox: alerts reach it through the api-server, for genuine failed tries.

A task process has no database: ``finalize`` hands its alert to the supervisor in a file, and the
supervisor posts it with its try's Execution API token to the route the package's plugin adds to
the api-server (``POST /dingbot/outbox/alerts``), which checks the token against the task instance
and queues it. So the benchmarks set up, in one PostgreSQL database: ``airflow db migrate``; the 40
DAGs x 25 tasks of ``bench/outbox_dags/outbox_dags3.py`` (``airflow dags reserialize``); three runs
of every DAG, one per part, with every task instance set to ``failed``, try 1, by SQL. Each alert
is then posted with a token signed with the api-server's ``[api_auth] jwt_secret`` for its task
instance, as the Execution API issues them. An api-server is started per part with that part's
robot (the api-server decides the robots of what it queues); no scheduler runs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from harness.environments import PATCHED, airflow_env, run, venv_python
from harness.errors import BenchError
from harness.lines import BENCH
from harness.processes import WorkerProcess, free_port
from harness.redaction import keep_secret, progress, tail

from benchmarks.outbox_setup import OUTBOX3_WORKER, STORM_ALERTS, database_url, make_home, robot_env

DAGS3_FILE = BENCH / "outbox_dags" / "outbox_dags3.py"
#: The DAG runs whose failed tries the three parts post alerts for (each try once: the outbox keeps
#: one row per try and robot, so a second post would only measure the duplicate answer).
RUN_STORM, RUN_LATENCY, RUN_SUPERVISOR = "bench_storm", "bench_latency", "bench_supervisor"


@dataclass
class Airflow3:
    """One metadata database (PostgreSQL) with 40 DAGs x 25 tasks serialized and, per run id, a
    failed first try of each; the api-server is started per part with that part's robot."""

    envs: dict
    home: Path
    db_url: str
    jwt_secret: str
    tries: dict[str, dict[str, dict]]
    tmp: Path

    def env(self, robot, secret: str, **extra: str) -> dict[str, str]:
        return airflow_env(
            self.envs[PATCHED],
            self.home,
            AIRFLOW__API_AUTH__JWT_SECRET=self.jwt_secret,
            DINGBOT_BENCH_JWT_SECRET=self.jwt_secret,
            **robot_env(robot, secret, **extra),
        )

    def try_of(self, run_id: str, n: int) -> dict:
        return self.tries[run_id][str(n)]


def setup_airflow3(envs, tmp: Path, postgres_url: str) -> Airflow3:
    home = make_home(tmp / "airflow3-home", database_url("postgresql", tmp, postgres_url))
    shutil.copy(DAGS3_FILE, home / "dags" / DAGS3_FILE.name)
    jwt_secret = secrets.token_urlsafe(48)
    keep_secret(jwt_secret)
    env = airflow_env(envs[PATCHED], home)
    airflow = str(envs[PATCHED] / "bin" / "airflow")
    progress("Airflow 3: airflow db migrate, dags reserialize (PostgreSQL)")
    run([airflow, "db", "migrate"], "airflow db migrate (PostgreSQL)", env=env)
    run([airflow, "dags", "reserialize"], "airflow dags reserialize", env=env)
    progress("Airflow 3: triggering every DAG per part, failing every first try")
    run_ids = (RUN_STORM, RUN_LATENCY, RUN_SUPERVISOR)
    result = run(
        [
            str(venv_python(envs[PATCHED])),
            str(OUTBOX3_WORKER),
            "task-instances",
            *[a for run_id in run_ids for a in ("--run-id", run_id)],
        ],
        "creating the failed tries",
        env=env,
    )
    tries = json.loads(result.stdout.strip().splitlines()[-1])["tries"]
    for run_id in run_ids:
        if len(tries.get(run_id, {})) != STORM_ALERTS:
            raise BenchError(
                f"expected {STORM_ALERTS} failed tries in run {run_id}, got {len(tries.get(run_id, {}))}"
            )
    return Airflow3(envs, home, database_url("postgresql", tmp, postgres_url), jwt_secret, tries, tmp)


class ApiServer:
    """``airflow api-server -w 1`` of the patched environment, in its own process group."""

    def __init__(self, af: Airflow3, env: dict[str, str], log_file: Path) -> None:
        self.port = free_port()
        self.log_file = log_file
        env = {**env, "AIRFLOW__API__PORT": str(self.port), "AIRFLOW__API__BASE_URL": self.base}
        airflow = str(af.envs[PATCHED] / "bin" / "airflow")
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [airflow, "api-server", "-H", "127.0.0.1", "-p", str(self.port), "-w", "1"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"the api-server exited (code {self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/version", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"the api-server did not answer within 120 s:\n{self.log()}") from None
                time.sleep(0.5)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def outbox_url(self) -> str:
        return f"{self.base}/dingbot/outbox/alerts"

    @property
    def execution_url(self) -> str:
        return f"{self.base}/execution/"

    def log(self) -> str:
        try:
            return tail(self.log_file.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def finalize_worker(name: str, venv: Path, home: Path, log_file: Path) -> WorkerProcess:
    """The 3.x failure-path worker with the ORM blocked, as in a task process (ready)."""
    env = airflow_env(venv, home)
    return WorkerProcess.start(name, venv, OUTBOX3_WORKER, ["finalize"], env, log_file).ready()


def warm_up(poster: WorkerProcess, api: ApiServer, requests: int = 3) -> None:
    """Untimed requests that store nothing: a valid token for a task instance that does not exist
    (the api-server answers 404 after checking the token and looking the try up)."""
    for _ in range(requests):
        ghost = {
            "id": str(uuid.uuid4()),
            "dag_id": "warm_up",
            "task_id": "load_partition_0000",
            "run_id": "warm_up",
        }
        answer = poster.call(120, op="one", url=api.outbox_url, n=0, ti=ghost)
        if answer["queued"] or "HTTP 404" not in (answer["error"] or ""):
            raise BenchError(f"the warm-up request was not refused as unknown: {answer}\n{api.log()}")
