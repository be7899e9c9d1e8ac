"""Routing in production shape: the scheduler with LocalExecutor on PostgreSQL runs the teams' DAG,
with the direct backend and with the outbox and `airflow-ext deliver`. Every failure reaches each
group routing chose for it exactly once; a task fanned out to two robots reaches both.

On Airflow 3 the api-server and the dag-processor run too. With the direct backend the task
process reads its robots through the Task SDK (the Connection kept in the metadata database comes
through the supervisor and the Execution API); with the outbox the api-server's outbox route
chooses the robots when it records the alert.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import AIRFLOW_LINE, BIN, assert_no_secret, local_executor_env
from tests.e2e.scheduled import (
    airflow3_services_env,
    metadata_engine,
    prepare_and_trigger,
    run_states,
    start,
    start_services,
    stop_all,
    wait_for_end,
)
from tests.e2e.teams import EXPECTED, SECRETS, add_database_connection, connection_env, tasks_seen

pytestmark = [pytest.mark.e2e, pytest.mark.services]

DAG_ID = "teamops"
RUN_ID = "e2e_routing"
SERVICES = {"2": ("scheduler",), "3": ("api-server", "scheduler", "dag-processor")}
OPS_TASKS = {"opssweep", "opsvacuum", "opsrotate", "opsfanout"}


BACKENDS = ["airflow_ext.dingbot.dingbot_msg_sender", "airflow_ext.dingbot.outbox_sender"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_scheduler_sends_each_team_its_alerts_once(airflow_base_env, groups, tmp_path, backend):
    with metadata_engine() as (url, engine):
        overrides = {"AIRFLOW__DINGBOT__DING_BOT_BACKEND": backend}
        if AIRFLOW_LINE == "3":
            env = airflow3_services_env(airflow_base_env, tmp_path / "home", url, **overrides)
        else:
            env = local_executor_env(airflow_base_env, tmp_path / "home", url, **overrides)
        env.update(connection_env(groups))
        env["AIRFLOW__DINGBOT__DING_BOT_BACKEND"] = backend
        prepare_and_trigger(env, DAG_ID, RUN_ID)
        add_database_connection(env, groups)

        processes, logs = start_services(env, tmp_path, SERVICES[AIRFLOW_LINE])
        try:
            if backend.endswith("outbox_sender"):
                processes.append(start([str(BIN / "airflow-ext"), "deliver"], env, tmp_path / "deliver.log"))
                logs["deliver"] = tmp_path / "deliver.log"

            def ended():
                run_state, tis = run_states(engine, DAG_ID, RUN_ID)
                seen = {name: sorted(tasks_seen(robot)) for name, robot in groups.items()}
                want = {name: sorted(tasks & OPS_TASKS) for name, tasks in EXPECTED.items()}
                return run_state == "failed" and seen == want, f"run {run_state}, {tis}, groups saw {seen}"

            wait_for_end(ended, processes, logs, timeout_s=180, poll_s=0.5)
            _, tis = run_states(engine, DAG_ID, RUN_ID)
        finally:
            stop_all(processes)

    assert {task for task, _ in tis} == OPS_TASKS
    assert all(state == "failed" for state, _ in tis.values()), tis
    # Once each, still, after everything had time to settle.
    assert {name: sorted(tasks_seen(robot)) for name, robot in groups.items()} == {
        name: sorted(tasks & OPS_TASKS) for name, tasks in EXPECTED.items()
    }
    outputs = [*logs.values(), *Path(env["AIRFLOW_HOME"], "logs").rglob("*")]
    for path in outputs:
        if path.is_file():
            content = path.read_text(errors="replace")
            for secret in SECRETS:
                assert secret not in content, path
            assert_no_secret(content)
