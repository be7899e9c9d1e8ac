"""Airflow 3 with the outbox: the api-server stops while a task is running, then the task fails.

The worker can then report nothing: not the try's state, not its alert. The try must end as stock
Airflow ends it (the executor reports the workload failed; the scheduler fails the try), the worker
must not hang on the alert, and the failure must still be in the outbox exactly once: the scheduler
has the database and records it itself.
"""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import text

from tests.conftest import counting_robot, robot_env
from tests.e2e.scheduled import (
    airflow3_services_env,
    metadata_engine,
    prepare_and_trigger,
    run_states,
    start_services,
    stop_all,
    tail,
)

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.airflow3]

DAG_ID, RUN_ID, TASK_ID = "dingbot_api_server_stopped", "api_server_stopped", "fails_when_released"
#: Airflow's own retries of the state report (about 31 s, twice) bound how long the worker tries.
END_TIMEOUT_S = 240


def test_a_failure_while_the_api_server_is_down_ends_as_in_airflow_and_is_queued_once(
    airflow_base_env, tmp_path
):
    release = tmp_path / "release"
    with metadata_engine() as (database_url, engine), counting_robot() as robot:
        env = airflow3_services_env(
            airflow_base_env,
            tmp_path / "home",
            database_url,
            **robot_env(robot, AIRFLOW__DINGBOT__DING_BOT_BACKEND="airflow_ext.dingbot.outbox_sender"),
            DINGBOT_E2E_RELEASE=str(release),
        )
        prepare_and_trigger(env, DAG_ID, RUN_ID)
        processes, logs = start_services(env, tmp_path, ("api-server", "scheduler", "dag-processor"))
        try:
            deadline = time.monotonic() + 120
            while run_states(engine, DAG_ID, RUN_ID)[1].get((TASK_ID, -1), (None,))[0] != "running":
                assert time.monotonic() < deadline, tail(logs["scheduler"])
                time.sleep(0.5)
            stop_all(processes[:1])  # the api-server
            release.touch()
            released = time.monotonic()
            while run_states(engine, DAG_ID, RUN_ID)[1][(TASK_ID, -1)][0] == "running":
                assert time.monotonic() - released < END_TIMEOUT_S, tail(logs["scheduler"])
                time.sleep(1)
            ended_s = time.monotonic() - released
            said = logs["scheduler"].read_text(errors="replace")
            states = run_states(engine, DAG_ID, RUN_ID)[1]
            with engine.connect() as conn:
                stored = [json.loads(a) for (a,) in conn.execute(text("SELECT alert FROM dingbot_outbox"))]
        finally:
            stop_all(processes)
    assert states == {(TASK_ID, -1): ("failed", 1)}, states
    assert [(a["task_id"], a["try_number"], a["kind"]) for a in stored] == [(TASK_ID, 1, "failure")]
    # Recorded by the scheduler, from the executor's report, straight into the database.
    recorded = f"DingTalk failure alert for {DAG_ID}.{TASK_ID} run {RUN_ID} try 1 queued in the outbox in "
    assert said.count(recorded) == 1, said[-3000:]
    assert "queued in the outbox through the api-server" not in said
    print(f"the try ended {ended_s:.0f} s after the task failed with the api-server down")
