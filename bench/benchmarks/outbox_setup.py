"""What the outbox benchmarks share: their profile, homes and databases, the producer and
deliverer processes, and reading which failures a robot's messages name.

With ``[dingbot] ding_bot_backend = airflow_ext.dingbot.outbox_sender`` failure handling only
records the alert in the metadata database; ``airflow-ext deliver`` sends it.
"""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.environments import PATCHED, airflow_env, venv_python
from harness.errors import BenchError
from harness.lines import WORKERS
from harness.processes import WorkerProcess
from harness.redaction import progress, tail
from harness.robots import dingding_env

OUTBOX_WORKER = WORKERS / "outbox_worker.py"
OUTBOX3_WORKER = WORKERS / "outbox3_worker.py"
OUTBOX_BACKEND = "airflow_ext.dingbot.outbox_sender"
DEFAULT_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
#: The alerts are for tasks load_partition_0000 ... 0999 (bench/workers/storm_alerts.py).
TASK_NAME = re.compile(r"\bload_partition_(\d{4})\b")
#: What `airflow-ext deliver` logs once it polls the outbox (each robot's own thread starts later,
#: when the service first finds alerts for it).
READY_LINE = re.compile(r"Outbox delivery service \S+ started")
#: The failures the storm's producers record; on Airflow 3, the failed tries of each DAG run.
STORM_ALERTS = 1000
SILENT_DEADLINE_S = 2.0
# Target (informational) of the failure path with the outbox backend, both lines.
FAILURE_PATH_P99_MAX_MS = 20.0


@dataclass(frozen=True)
class Profile:
    name: str
    storm_dbs: tuple[str, ...]
    storm_observe_s: float  # watch the robot this long after the storm's start (or until all named)
    fp_rounds: int  # A B / B A rounds per robot and database
    fp_per_round: int
    fp_warmup: int
    fp_dbs: tuple[str, ...]
    latency_samples: int


FULL = Profile("full", ("postgresql", "sqlite"), 90.0, 4, 60, 5, ("sqlite", "postgresql"), 20)
QUICK = Profile("quick", ("postgresql",), 90.0, 2, 25, 3, ("sqlite",), 10)


def make_home(home: Path, db_url: str) -> Path:
    """An AIRFLOW_HOME whose airflow.cfg names the metadata database (written before any process
    imports Airflow, so that concurrent processes never race to write a default one)."""
    (home / "dags").mkdir(parents=True)
    (home / "airflow.cfg").write_text(
        f"[core]\nload_examples = False\n\n[database]\nsql_alchemy_conn = {db_url}\n", encoding="utf-8"
    )
    return home


def database_url(kind: str, home: Path, postgres_url: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{home / 'airflow.db'}"
    assert postgres_url is not None
    return postgres_url


class PostgresDatabase:
    """A fresh ``dingbot_bench_<random>`` database, created and dropped through the patched
    environment's Python (the driver has no database driver)."""

    def __init__(self, envs: dict[str, Path], admin_url: str) -> None:
        self.envs, self.admin_url = envs, admin_url
        self.name = f"dingbot_bench_{secrets.token_hex(6)}"
        self.url = admin_url.rsplit("/", 1)[0] + f"/{self.name}"

    def _run(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                str(venv_python(self.envs[PATCHED])),
                str(OUTBOX_WORKER),
                "database",
                action,
                "--admin-url",
                self.admin_url,
                "--name",
                self.name,
            ],
            env=airflow_env(self.envs[PATCHED], home=None),
            capture_output=True,
            text=True,
        )

    @classmethod
    def create(cls, envs: dict[str, Path], admin_url: str) -> PostgresDatabase | None:
        """The new database, or None (with a note) when the server is not usable."""
        database = cls(envs, admin_url)
        result = database._run("create")
        if result.returncode != 0:
            progress(f"PostgreSQL is not usable, its figures are left out:\n{tail(result.stderr, 3)}")
            return None
        progress(f"created the PostgreSQL database {database.name}")
        return database

    def drop(self) -> None:
        result = self._run("drop")
        if result.returncode != 0:
            progress(f"could not drop the PostgreSQL database {self.name}:\n{tail(result.stderr, 3)}")
        else:
            progress(f"dropped the PostgreSQL database {self.name}")


def robot_env(robot, secret: str, **extra: str) -> dict[str, str]:
    """Alerts to ``robot`` through the outbox backend."""
    return {**dingding_env(robot, secret), "AIRFLOW__DINGBOT__DING_BOT_BACKEND": OUTBOX_BACKEND, **extra}


def producer(index: int, venv: Path, env: dict[str, str], log_file: Path) -> WorkerProcess:
    """An Airflow 2 failing-task stand-in recording alerts through ``outbox_sender`` (not yet ready)."""
    return WorkerProcess.start(
        f"producer {index}", venv, OUTBOX_WORKER, ["serve", "--index", str(index)], env, log_file
    )


def poster(index: int, venv: Path, env: dict[str, str], log_file: Path) -> WorkerProcess:
    """An Airflow 3 supervisor stand-in posting alerts to the outbox route (not yet ready)."""
    return WorkerProcess.start(f"poster {index}", venv, OUTBOX3_WORKER, ["serve"], env, log_file)


class Deliverer:
    """One ``airflow-ext deliver`` process of the patched environment, its output in a log file."""

    def __init__(self, name: str, venv: Path, env: dict[str, str], log_file: Path) -> None:
        self.name, self.log_file = name, log_file
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [str(venv / "bin" / "airflow-ext"), "deliver"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not READY_LINE.search(self.log()):
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited (code {self.proc.returncode}):\n{tail(self.log())}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not start within {timeout:.0f} s:\n{tail(self.log())}")
            time.sleep(0.1)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def named_in(message: dict) -> set[int]:
    """The failures (their numbers) a robot's accepted message names."""
    return {int(n) for n in TASK_NAME.findall(message["body"]["markdown"]["text"])}


def note_named(robot, first_named: dict[int, float], seen: int) -> int:
    """Record when each failure was first named in the robot's messages after the ``seen`` first
    ones; returns how many messages have been read."""
    messages = robot.messages
    for message in messages[seen:]:
        for n in named_in(message):
            first_named.setdefault(n, message["received_at"])
    return len(messages)


def outbox_status(venv: Path, env: dict[str, str]) -> str:
    """What `airflow-ext outbox status` prints for this environment's outbox."""
    return subprocess.run(
        [str(venv / "bin" / "airflow-ext"), "outbox", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()
