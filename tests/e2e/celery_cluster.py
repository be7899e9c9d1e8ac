"""A real CeleryExecutor deployment on one machine, as the scale-out tests and the Celery benchmark
start it (not a test module): Redis as the broker, PostgreSQL as the metadata database and the
result backend, the scheduler (with the api-server and the dag-processor on Airflow 3), and Celery
workers that each stand for a node of their own (their own hostname, as a pod or VM has).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from tests.conftest import AIRFLOW_LINE, BIN, local_executor_env
from tests.e2e.scheduled import airflow3_services_env, start, stop_all, tail

#: The Redis server of the tests; each test module takes a database number of its own on it.
REDIS_URL = os.environ.get("DINGBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: Helpers the services import (``[core] hostname_callable``): put on their PYTHONPATH.
SERVICE_HELPERS = Path(__file__).resolve().parent / "executors"
#: The Airflow services of a Celery deployment besides its workers, on each line.
SERVICES = {"2": ("scheduler",), "3": ("api-server", "scheduler", "dag-processor")}
#: From a worker's start until Celery says it is ready (it imports Airflow and connects first).
WORKER_READY_TIMEOUT_S = 120


@contextlib.contextmanager
def redis_broker(db: int) -> Iterator[str]:
    """The URL of Redis database ``db``, emptied before and after. Outside CI an unreachable server
    skips the test with the reason; in CI it fails it (the Celery tests must run there)."""
    import redis

    url = f"{REDIS_URL.rstrip('/')}/{db}"
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        reason = f"Redis is not reachable at {urlsplit(REDIS_URL).netloc} ({type(exc).__name__})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: the Celery tests must run in CI")
        pytest.skip(reason)
    try:
        yield url
    finally:
        with contextlib.suppress(redis.RedisError):
            client.flushdb()
        client.close()


def celery_env(base_env, home: Path, database_url: str, broker_url: str, **overrides: str) -> dict[str, str]:
    """CeleryExecutor on ``database_url`` (also the result backend) and ``broker_url``; on
    Airflow 3 with its own api-server, which the workers' supervisors call."""
    environment = airflow3_services_env if AIRFLOW_LINE == "3" else local_executor_env
    return environment(
        base_env,
        home,
        database_url,
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL=broker_url,
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+{database_url}",
        # One process to read the task states back (default: one per core, each a DB connection).
        AIRFLOW__CELERY__SYNC_PARALLELISM="1",
        AIRFLOW__CORE__HOSTNAME_CALLABLE="node_hostname.hostname",
        PYTHONPATH=os.pathsep.join(filter(None, [str(SERVICE_HELPERS), base_env.get("PYTHONPATH")])),
        **overrides,
    )


class Worker:
    """One ``airflow celery worker``, standing for node ``node``: its tasks report that hostname."""

    def __init__(self, env: dict[str, str], tmp: Path, node: str, queues: tuple[str, ...], concurrency: int):
        self.node = node
        self.log = tmp / f"worker-{node}.log"
        worker_env = dict(env, DINGBOT_E2E_NODE_HOSTNAME=node)
        cmd = [
            str(BIN / "airflow"),
            "celery",
            "worker",
            "--celery-hostname",
            f"{node}@%h",
            "--queues",
            ",".join(queues),
            "--concurrency",
            str(concurrency),
            # Every worker would serve its logs on the same port of this one machine.
            "--skip-serve-logs",
        ]
        self.process = start(cmd, worker_env, self.log)

    def wait_ready(self, timeout_s: float = WORKER_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"worker {self.node} exited early:\n{tail(self.log)}"
            if f"{self.node}@" in (text := self.log.read_text(errors="replace")) and " ready." in text:
                return
            time.sleep(0.5)
        raise AssertionError(f"worker {self.node} was not ready in {timeout_s} s:\n{tail(self.log)}")

    def lose_node(self) -> list[int]:
        """SIGKILL the worker and every process under it at once, as when its node disappears: the
        Celery pool, the supervisors and the task processes (some in sessions of their own)."""
        try:
            victims = [psutil.Process(self.process.pid)]
            victims += victims[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        return [victim.pid for victim in victims]


def descendants(processes: list[subprocess.Popen]) -> list[psutil.Process]:
    found = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            found += psutil.Process(process.pid).children(recursive=True)
    return found


def stop_cluster(processes: list[subprocess.Popen]) -> None:
    """Stop the services and workers (SIGTERM, then SIGKILL), then whatever they left running in
    sessions of their own (task processes of a worker that was stopped mid-task)."""
    left = descendants(processes)
    stop_all(processes)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
