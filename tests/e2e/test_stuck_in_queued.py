"""A task the scheduler fails for staying queued too long gets exactly one failure alert, on both lines.

Airflow fails such a task (``[scheduler] task_queued_timeout``, more than
``num_stuck_in_queued_retries`` times) with a bare state change: no failure handling, no email.
The real scheduler runs dags/dingbot_stuck.py on PostgreSQL with an executor whose tasks never
start (executors/blackhole.py: a queue no worker listens on), requeues each task once, then fails
it. The robot keeps repeated msgUuids, so a second alert would be counted.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, assert_no_secret, counting_robot, local_executor_env, robot_env
from tests.e2e.scheduled import (
    metadata_engine,
    prepare_and_trigger,
    run_states,
    start,
    stop_all,
    wait_for_end,
)
from tests.e2e.test_storm_localexecutor import named_in

pytestmark = [pytest.mark.e2e, pytest.mark.services]

DAG_ID = "dingbot_stuck"
RUN_ID = "stuck_e2e"
EXECUTORS = Path(__file__).resolve().parent / "executors"
RUN_TIMEOUT_S = 180
QUIET_S = 5


@pytest.fixture(scope="module")
def stuck(airflow_base_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stuck")
    with metadata_engine() as (database_url, engine), counting_robot() as robot:
        env = local_executor_env(
            airflow_base_env,
            tmp / "home",
            database_url,
            **robot_env(robot),
            AIRFLOW__CORE__EXECUTOR="blackhole.BlackHoleExecutor",
            AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT="3",
            AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL="1",
            AIRFLOW__SCHEDULER__NUM_STUCK_IN_QUEUED_RETRIES="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(EXECUTORS), airflow_base_env.get("PYTHONPATH")])),
        )
        prepare_and_trigger(env, DAG_ID, RUN_ID)

        def ended() -> tuple[bool, str]:
            run_state, states = run_states(engine, DAG_ID, RUN_ID)
            done = len(states) == 2 and {state for state, _ in states.values()} == {"failed"}
            return done, f"{run_state} {states}"

        log = tmp / "scheduler.log"
        processes = [start([str(BIN / "airflow"), "scheduler"], env, log)]
        try:
            wait_for_end(ended, processes, {"scheduler": log}, RUN_TIMEOUT_S, poll_s=1)
            time.sleep(QUIET_S)  # not an assertion: room for a duplicate to arrive before we look
            messages, requests = robot.messages, robot.requests
            _, states = run_states(engine, DAG_ID, RUN_ID)
        finally:
            stop_all(processes)
        yield {"messages": messages, "requests": requests, "states": states, "log": log}


def test_only_the_flagged_task_alerts_once_as_a_final_failure(stuck):
    named = [n for m in stuck["messages"] for n in named_in(m["body"]["markdown"]["text"])]
    state, try_number = stuck["states"][("stuck_flagged", -1)]
    assert state == "failed"
    got = collections.Counter((n.dag, n.run, n.task, n.try_number, n.outcome) for n in named)
    assert got == collections.Counter([(DAG_ID, RUN_ID, "stuck_flagged", try_number, "failed")]), got
    assert len(stuck["requests"]) == 1 and stuck["requests"][0]["errcode"] == 0


def test_the_alert_says_why_and_airflow_did_requeue_first(stuck):
    (message,) = stuck["messages"]
    assert "requeued more than 1 times and will be failed" in message["body"]["markdown"]["text"]
    assert stuck["states"][("stuck_unflagged", -1)][0] == "failed"
    log = stuck["log"].read_text(errors="replace")
    assert "stuck in queued; will try to requeue" in log.lower(), "Airflow requeued before failing"
    assert_no_secret(log)
