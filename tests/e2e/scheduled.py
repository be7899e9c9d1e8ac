"""One DAG run by the real Airflow services, as the scheduler e2e tests drive it (not a test module)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from tests.airflow_db import postgres_airflow_database
from tests.conftest import BIN, assert_no_secret, local_executor_env, run
from tests.ports import free_port


@contextlib.contextmanager
def metadata_engine() -> Iterator[tuple[str, Engine]]:
    """A migrated PostgreSQL metadata database of its own (dropped afterwards) and an engine on it."""
    with postgres_airflow_database() as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            yield url, engine
        finally:
            engine.dispose()


def prepare_and_trigger(env: dict[str, str], dag_id: str, run_id: str, bin_dir: Path = BIN) -> None:
    """Serialize the DAGs into the (migrated) database, so no service has to parse them first, and
    trigger one run, with the ``airflow`` of ``bin_dir`` (the patched one unless told)."""
    airflow = str(bin_dir / "airflow")
    result = run([airflow, "dags", "reserialize"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    trigger = run([airflow, "dags", "trigger", dag_id, "--run-id", run_id], env)
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr
    assert_no_secret(trigger.stdout, trigger.stderr)


def run_states(engine: Engine, dag_id: str, run_id: str):
    """``(run state, {(task_id, map_index): (state, try_number)})`` as the database has them now."""
    where = {"dag": dag_id, "run": run_id}
    with engine.connect() as conn:
        run_state = conn.execute(
            text("SELECT state FROM dag_run WHERE dag_id = :dag AND run_id = :run"), where
        ).scalar()
        rows = conn.execute(
            text(
                "SELECT task_id, map_index, state, try_number FROM task_instance "
                "WHERE dag_id = :dag AND run_id = :run"
            ),
            where,
        ).all()
    return run_state, {(task, index): (state, tries) for task, index, state, tries in rows}


def wait_for_end(
    ended: Callable[[], tuple[bool, str]], processes, logs: dict[str, Path], timeout_s: float, poll_s: float
) -> None:
    """Poll ``ended()`` (done?, what to say if not) until the run is over; fail as soon as a service
    exits, or at ``timeout_s``, with the tail of every service's log."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = ended()
        if done:
            return
        for process, (name, log) in zip(processes, logs.items()):
            assert process.poll() is None, f"{name} exited early:\n{tail(log)}"
        assert time.monotonic() < deadline, f"the run did not end in {timeout_s} s: {status}\n" + "\n".join(
            f"--- {name}:\n{tail(log)}" for name, log in logs.items()
        )
        time.sleep(poll_s)


# -- processes ------------------------------------------------------------------------------------

STOP_TIMEOUT_S = 30


def start(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with log_path.open("wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_all(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each process group, SIGKILL to what is left of it after STOP_TIMEOUT_S."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:  # the leader's children (executor workers, DAG processor, task processes) too
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path.name}: none)"


# -- Airflow 3 services -----------------------------------------------------------------------------


def airflow3_services_env(base_env, home: Path, database_url: str, **overrides: str) -> dict[str, str]:
    """LocalExecutor on ``database_url`` with its own api-server, which the workers call."""
    port = free_port()
    return local_executor_env(
        base_env,
        home,
        database_url,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__API_AUTH__JWT_SECRET="dingbot-e2e-jwt-secret-not-for-production",
        AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="60",
        **overrides,
    )


def start_services(env: dict[str, str], tmp: Path, names: tuple[str, ...], bin_dir: Path = BIN):
    """Start each Airflow service in its own process group; the api-server first, until it answers."""
    airflow = str(bin_dir / "airflow")
    processes, logs = [], {}
    for name in names:
        logs[name] = tmp / f"{name}.log"
        processes.append(start([airflow, name], env, logs[name]))
        if name == "api-server":
            wait_for_port(int(env["AIRFLOW__API__PORT"]), processes[-1], logs[name])
    return processes, logs


def wait_for_port(port: int, process, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the api-server exited early:\n{tail(log)}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"the api-server did not listen on {port} in {timeout_s} s:\n{tail(log)}")
