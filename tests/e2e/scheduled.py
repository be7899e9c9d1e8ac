"""One DAG run by the real Airflow services, as the scheduler e2e tests drive it (not a test module)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from tests.conftest import BIN, assert_no_secret, run
from tests.e2e.test_storm_localexecutor import tail
from tests.outbox.conftest import postgres_metadata_database


@contextlib.contextmanager
def metadata_engine() -> Iterator[tuple[str, Engine]]:
    """An empty PostgreSQL metadata database (dropped afterwards) and an engine on it."""
    with postgres_metadata_database() as url:
        engine = create_engine(url, poolclass=NullPool)
        try:
            yield url, engine
        finally:
            engine.dispose()


def prepare_and_trigger(env: dict[str, str], dag_id: str, run_id: str, bin_dir: Path = BIN) -> None:
    """Migrate, serialize the DAGs (so no service has to parse them first) and trigger one run, with
    the ``airflow`` of ``bin_dir`` (the patched one unless told)."""
    airflow = str(bin_dir / "airflow")
    for args in (["db", "migrate"], ["dags", "reserialize"]):
        result = run([airflow, *args], env)
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
