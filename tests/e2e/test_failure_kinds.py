"""Every way a try can fail in a task's process alerts exactly once; a skip or a success is silent.

DAGs: dags/dingbot_failure_kinds.py. Sensor timeouts, AirflowFailException, skips and successes
run under `airflow dags test` (which runs them faithfully, reschedules included). An execution
timeout with a retry and the deferral failures need the production shape: the scheduler with
LocalExecutor on PostgreSQL and the triggerer. For each case the test checks the exact alerts the
robot accepted, the task's final state and try, and that no alert was sent twice.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import (
    BIN,
    assert_no_secret,
    counting_robot,
    local_executor_env,
    robot_env,
    run,
)
from tests.e2e.scheduled import (
    metadata_engine,
    prepare_and_trigger,
    run_states,
    start,
    stop_all,
    wait_for_end,
)
from tests.e2e.test_storm_localexecutor import all_named, named_in

pytestmark = [pytest.mark.e2e, pytest.mark.services]

OUTCOME_WORDS = {"failed": "final failure", "will retry": "will retry"}
FINISHED = {"success", "failed", "skipped"}


def alerts(messages, dag_id: str, run_id: str) -> list[tuple[str, str, str]]:
    """(task, "final failure" | "will retry", "N of M") of each accepted message, sorted."""
    named = all_named(messages)
    assert len(named) == len(messages), "one single alert per message (no digest with this backend)"
    assert {(n.dag, n.run) for n in named} <= {(dag_id, run_id)}, named
    return sorted((n.task, OUTCOME_WORDS[n.outcome], f"{n.try_number} of {n.attempts}") for n in named)


def text_of(messages, task_id: str) -> list[str]:
    texts = [m["body"]["markdown"]["text"] for m in messages]
    return [t for t in texts if named_in(t)[0].task == task_id]


def assert_each_alert_sent_once(requests, messages) -> None:
    """DingTalk answers a repeated msgUuid with errcode 0 but drops it: a repeat shows up as a
    request without a message."""
    assert [r["errcode"] for r in requests] == [0] * len(requests), requests
    assert len(requests) == len(messages), f"{len(requests)} requests for {len(messages)} messages"
    uuids = [m["body"].get("msgUuid") for m in messages]
    assert None not in uuids and len(set(uuids)) == len(uuids), uuids


# -- airflow dags test -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metadata(airflow_base_env):
    """The metadata database `airflow dags test` writes to, as the CLI itself resolves it."""
    conn = run(
        [str(BIN / "airflow"), "config", "get-value", "database", "sql_alchemy_conn"], airflow_base_env
    )
    assert conn.returncode == 0, conn.stdout + conn.stderr
    engine = create_engine(conn.stdout.strip(), poolclass=NullPool)
    yield engine
    engine.dispose()


def latest_run(engine, dag_id: str) -> tuple[str, str, dict[str, tuple[str, int]]]:
    """(run id, run state, {task: (state, try number)}) of the last run of ``dag_id``."""
    with engine.connect() as conn:
        run_id, run_state = conn.execute(
            text("SELECT run_id, state FROM dag_run WHERE dag_id = :dag ORDER BY id DESC LIMIT 1"),
            {"dag": dag_id},
        ).one()
        tis = conn.execute(
            text(
                "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = :dag AND run_id = :run"
            ),
            {"dag": dag_id, "run": run_id},
        ).all()
    return run_id, run_state, {task: (state, try_number) for task, state, try_number in tis}


def dags_test(airflow, robot, dag_id: str) -> str:
    result = airflow(["dags", "test", dag_id], robot_env(robot))
    output = result.stdout + result.stderr
    assert_no_secret(output)
    assert "[DAG TEST] starting task_id=" in output, output[-3000:]  # the run got as far as a task
    return output


def test_poke_sensor_timeout_fails_once_despite_retries(airflow, robot, metadata):
    output = dags_test(airflow, robot, "dingbot_kinds_poke_timeout")
    run_id, run_state, states = latest_run(metadata, "dingbot_kinds_poke_timeout")

    assert alerts(robot.messages, "dingbot_kinds_poke_timeout", run_id) == [
        ("poke_sensor", "final failure", "1 of 3")
    ]
    assert "AirflowSensorTimeout" in text_of(robot.messages, "poke_sensor")[0]
    assert states == {"poke_sensor": ("failed", 1)} and run_state == "failed"
    assert "UP_FOR_RESCHEDULE" not in output  # it really poked in one try
    assert_each_alert_sent_once(robot.requests, robot.messages)


def test_reschedule_sensor_timeout_fails_once_despite_retries(airflow, robot, metadata):
    output = dags_test(airflow, robot, "dingbot_kinds_reschedule_timeout")
    run_id, run_state, states = latest_run(metadata, "dingbot_kinds_reschedule_timeout")

    assert alerts(robot.messages, "dingbot_kinds_reschedule_timeout", run_id) == [
        ("reschedule_sensor", "final failure", "1 of 3")
    ]
    assert "AirflowSensorTimeout" in text_of(robot.messages, "reschedule_sensor")[0]
    # Rescheduled pokes keep the try number: the timeout ends try 1, which is not retried.
    assert states == {"reschedule_sensor": ("failed", 1)} and run_state == "failed"
    assert "marking task as UP_FOR_RESCHEDULE" in output  # it really was rescheduled
    assert_each_alert_sent_once(robot.requests, robot.messages)


def test_airflow_fail_exception_is_one_final_failure(airflow, robot, metadata):
    dags_test(airflow, robot, "dingbot_kinds_fail_exception")
    run_id, run_state, states = latest_run(metadata, "dingbot_kinds_fail_exception")

    assert alerts(robot.messages, "dingbot_kinds_fail_exception", run_id) == [
        ("fail_now", "final failure", "1 of 3")
    ]
    assert "AirflowFailException" in text_of(robot.messages, "fail_now")[0]
    assert states == {"fail_now": ("failed", 1)} and run_state == "failed"
    assert_each_alert_sent_once(robot.requests, robot.messages)


def test_skip_success_and_soft_fail_send_nothing(airflow, robot, metadata):
    output = dags_test(airflow, robot, "dingbot_kinds_quiet")
    _, run_state, states = latest_run(metadata, "dingbot_kinds_quiet")

    assert states == {
        "skips": ("skipped", 1),
        "succeeds": ("success", 1),
        "soft_fail_sensor": ("skipped", 1),
    }
    assert run_state == "success"
    assert "Sensor has timed out" in output  # the soft-fail sensor did time out (into a skip)
    assert robot.requests == []


# -- the scheduler, LocalExecutor on PostgreSQL, and the triggerer ---------------------------------

SCHEDULED_DAG = "dingbot_kinds_scheduled"
SCHEDULED_RUN = "e2e_failure_kinds"
#: From the start of the scheduler until every task has ended (a few seconds each, in parallel).
RUN_TIMEOUT_S = 240
#: After the last task ended: time for a second process to report the same failure again.
QUIET_S = 3


@dataclasses.dataclass
class ScheduledRun:
    messages: list[dict]
    requests: list[dict]
    run_state: str
    states: dict[str, tuple[str, int]]
    reschedules: int
    #: {(task id, try number): the task's log of that try}
    task_logs: dict[tuple[str, int], str]
    #: {name: text} of what the scheduler and the triggerer logged (the latter also per task)
    service_logs: dict[str, str]

    def alerts(self) -> list[tuple[str, str, str]]:
        return alerts(self.messages, SCHEDULED_DAG, SCHEDULED_RUN)

    def alerts_for(self, task_id: str) -> list[tuple[str, str, str]]:
        return [alert for alert in self.alerts() if alert[0] == task_id]


def _scheduler_saw_end_of(scheduler_log: Path, states: dict[str, tuple[str, int]]) -> bool:
    """Whether the scheduler processed each task's last executor event (after the final state)."""
    log = scheduler_log.read_text(errors="replace")
    return all(
        re.search(
            rf"TaskInstance Finished: dag_id={SCHEDULED_DAG}, task_id={task}, run_id={SCHEDULED_RUN}, "
            rf".*? state={state}, .*? try_number={try_number},",
            log,
        )
        for task, (state, try_number) in states.items()
    )


@pytest.fixture(scope="module")
def scheduled_run(airflow_base_env, tmp_path_factory) -> ScheduledRun:
    """One run of the scheduled DAG by the real services; every test below reads its outcome."""
    tmp = tmp_path_factory.mktemp("failure-kinds")
    with (
        metadata_engine() as (database_url, engine),
        counting_robot() as robot,
    ):
        yield _run_scheduled(airflow_base_env, database_url, engine, robot, tmp)


def _run_scheduled(base_env, database_url, engine, robot, tmp: Path) -> ScheduledRun:
    env = local_executor_env(
        base_env,
        tmp / "home",
        database_url,
        **robot_env(robot),
        # Deferred tasks past their timeout are failed by this periodic check (default 15 s).
        AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL="1",
    )
    prepare_and_trigger(env, SCHEDULED_DAG, SCHEDULED_RUN)

    def current() -> tuple[str, dict[str, tuple[str, int]], int]:
        run_state, tis = run_states(engine, SCHEDULED_DAG, SCHEDULED_RUN)
        with engine.connect() as conn:
            reschedules = conn.execute(
                text(
                    "SELECT count(*) FROM task_reschedule WHERE dag_id = :dag AND run_id = :run "
                    "AND task_id = 'reschedule_sensor'"
                ),
                {"dag": SCHEDULED_DAG, "run": SCHEDULED_RUN},
            ).scalar()
        return run_state, {task: state for (task, _), state in tis.items()}, reschedules

    def ended() -> tuple[bool, str]:
        nonlocal run_state, states, reschedules
        run_state, states, reschedules = current()
        finished = run_state in FINISHED and {state for state, _ in states.values()} <= FINISHED
        return finished and _scheduler_saw_end_of(scheduler_log, states), f"run {run_state}, tasks {states}"

    airflow = str(BIN / "airflow")
    run_state, states, reschedules = None, {}, 0
    scheduler_log, triggerer_log = tmp / "scheduler.log", tmp / "triggerer.log"
    processes = []
    try:
        processes.append(start([airflow, "scheduler"], env, scheduler_log))
        processes.append(start([airflow, "triggerer"], env, triggerer_log))
        logs = {"scheduler": scheduler_log, "triggerer": triggerer_log}
        wait_for_end(ended, processes, logs, RUN_TIMEOUT_S, poll_s=0.5)
        time.sleep(QUIET_S)  # not an assertion: room for a duplicate to arrive before we look
        messages, requests = robot.messages, robot.requests
    finally:
        stop_all(processes)

    task_logs = {}
    service_logs = {p.name: p.read_text(errors="replace") for p in (scheduler_log, triggerer_log)}
    run_logs = Path(env["AIRFLOW_HOME"], "logs", f"dag_id={SCHEDULED_DAG}", f"run_id={SCHEDULED_RUN}")
    for path in run_logs.rglob("attempt=*"):
        task = path.parent.name.removeprefix("task_id=")
        if attempt := re.fullmatch(r"attempt=(\d+)\.log", path.name):
            task_logs[task, int(attempt[1])] = path.read_text(errors="replace")
        else:  # attempt=N.log.trigger.<triggerer job>.log: what the triggerer logged for the task
            service_logs[f"{task}/{path.name}"] = path.read_text(errors="replace")
    return ScheduledRun(
        messages=messages,
        requests=requests,
        run_state=run_state,
        states=states,
        reschedules=reschedules,
        task_logs=task_logs,
        service_logs=service_logs,
    )


def assert_sent_by_the_task(scheduled: ScheduledRun, task_id: str, kind: str, try_number: int) -> None:
    """The alert went out once, from the try's own process (its log), not from a service."""
    line = (
        f"DingTalk {kind} alert for {SCHEDULED_DAG}.{task_id} run {SCHEDULED_RUN} try {try_number} delivered"
    )
    task_log = scheduled.task_logs.get((task_id, try_number), "")
    assert task_log.count(line) == 1, (sorted(scheduled.task_logs), task_log[-3000:])
    for name, log in scheduled.service_logs.items():
        assert f"alert for {SCHEDULED_DAG}.{task_id} " not in log, name


@pytest.mark.airflow2  # 3.x, with its api-server: test_lifecycle_airflow3.py
def test_execution_timeout_alerts_retry_then_final_failure(scheduled_run):
    assert scheduled_run.alerts_for("too_slow") == [
        ("too_slow", "final failure", "2 of 2"),
        ("too_slow", "will retry", "1 of 2"),
    ]
    assert all("AirflowTaskTimeout" in t for t in text_of(scheduled_run.messages, "too_slow"))
    assert scheduled_run.states["too_slow"] == ("failed", 2)
    assert_sent_by_the_task(scheduled_run, "too_slow", "retry", 1)
    assert_sent_by_the_task(scheduled_run, "too_slow", "failure", 2)


@pytest.mark.airflow2  # 3.x, with its api-server: test_lifecycle_airflow3.py
def test_rescheduled_sensor_timeout_fails_once_under_the_scheduler(scheduled_run):
    assert scheduled_run.alerts_for("reschedule_sensor") == [("reschedule_sensor", "final failure", "1 of 3")]
    assert "AirflowSensorTimeout" in text_of(scheduled_run.messages, "reschedule_sensor")[0]
    assert scheduled_run.states["reschedule_sensor"] == ("failed", 1)
    assert scheduled_run.reschedules >= 1, "the sensor was rescheduled by the scheduler at least once"
    assert_sent_by_the_task(scheduled_run, "reschedule_sensor", "failure", 1)


@pytest.mark.airflow2  # 3.x, with its api-server: test_lifecycle_airflow3.py
@pytest.mark.parametrize(
    ("task_id", "error", "message"),
    [
        # The triggerer hands the trigger's exception back to a worker as "__fail__".
        ("trigger_fails", "TaskDeferralError", "Trigger failure"),
        ("trigger_fires_then_fails", "ValueError", "e2e: the remote job reported an error"),
        # The scheduler's periodic check hands the expired deferral back the same way.
        ("trigger_never_fires", "TaskDeferralError", "Trigger/execution timeout"),
    ],
)
def test_failed_deferral_alerts_once(scheduled_run, task_id, error, message):
    assert scheduled_run.alerts_for(task_id) == [(task_id, "final failure", "1 of 1")]
    (alert_text,) = text_of(scheduled_run.messages, task_id)
    assert error in alert_text and message in alert_text, alert_text
    assert scheduled_run.states[task_id] == ("failed", 1)
    # Only the try's process reports it, not the service that noticed the failure.
    assert_sent_by_the_task(scheduled_run, task_id, "failure", 1)


@pytest.mark.airflow2  # 3.x, with its api-server: test_lifecycle_airflow3.py
def test_scheduled_run_alerts_nothing_else_and_nothing_twice(scheduled_run):
    assert scheduled_run.states == {
        "too_slow": ("failed", 2),
        "reschedule_sensor": ("failed", 1),
        "trigger_fails": ("failed", 1),
        "trigger_fires_then_fails": ("failed", 1),
        "trigger_never_fires": ("failed", 1),
        "trigger_fires": ("success", 1),
        "skips": ("skipped", 1),
    }
    assert scheduled_run.run_state == "failed"
    # The deferral that resumed and the skip are silent; each failed try is named exactly once.
    assert scheduled_run.alerts() == [
        ("reschedule_sensor", "final failure", "1 of 3"),
        ("too_slow", "final failure", "2 of 2"),
        ("too_slow", "will retry", "1 of 2"),
        ("trigger_fails", "final failure", "1 of 1"),
        ("trigger_fires_then_fails", "final failure", "1 of 1"),
        ("trigger_never_fires", "final failure", "1 of 1"),
    ]
    assert_each_alert_sent_once(scheduled_run.requests, scheduled_run.messages)
    assert all(m["signed"] for m in scheduled_run.messages)
    assert_no_secret(*scheduled_run.service_logs.values(), *scheduled_run.task_logs.values())
