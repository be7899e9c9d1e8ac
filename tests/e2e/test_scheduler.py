"""The production path: the real scheduler runs the task (`airflow tasks run` under the executor),
and the failure handling in the task's process sends one alert per failed try."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.airflow_db import copy_sqlite_home
from tests.conftest import BIN, E2E_DAGS, ROBOT_SECRET, ROBOT_TOKEN, robot_env, run

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.airflow2]  # 3.x: test_lifecycle_airflow3.py

DAG_ID = "dingbot_default_args"


@pytest.fixture
def scheduler_env(airflow_base_env, tmp_path, robot):
    env = dict(airflow_base_env)
    env.update(robot_env(robot))
    env.update(
        {
            "AIRFLOW_HOME": str(tmp_path / "home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(E2E_DAGS),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "5",
        }
    )
    database = copy_sqlite_home(airflow_base_env, tmp_path / "home")
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{database}"
    return env


def test_scheduler_run_alerts_once_per_failed_try(scheduler_env, robot, tmp_path):
    airflow = str(BIN / "airflow")
    reserialize = run([airflow, "dags", "reserialize"], scheduler_env)
    assert reserialize.returncode == 0, reserialize.stderr
    trigger = run([airflow, "dags", "trigger", DAG_ID, "--run-id", "e2e_scheduler"], scheduler_env)
    assert trigger.returncode == 0, trigger.stderr

    scheduler_log = tmp_path / "scheduler.log"
    with scheduler_log.open("w") as out:
        scheduler = subprocess.Popen(
            [airflow, "scheduler"],
            env=scheduler_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            messages = robot.wait_for_messages(2, timeout=150)
            time.sleep(3)  # anything extra (a duplicate) would arrive now
        finally:
            os.killpg(scheduler.pid, signal.SIGTERM)
            try:
                scheduler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(scheduler.pid, signal.SIGKILL)

    texts = [m["body"]["markdown"]["text"] for m in messages]
    assert len(robot.messages) == 2, scheduler_log.read_text()[-4000:]
    assert "**Try:** 1 of 2 (will retry)" in texts[0] and "**Run:** e2e_scheduler" in texts[0]
    assert "**Try:** 2 of 2 (final failure)" in texts[1]
    assert all(m["signed"] for m in messages)

    # Every log the run produced: the scheduler's and each try's task log.
    logs = [scheduler_log, *Path(scheduler_env["AIRFLOW_HOME"], "logs").rglob("*.log")]
    task_logs = [p for p in logs if "attempt=" in p.name]
    assert len(task_logs) == 2, logs
    assert any("DingTalk retry alert" in p.read_text() for p in task_logs)
    for path in logs:
        text = path.read_text(errors="replace")
        assert ROBOT_TOKEN not in text and ROBOT_SECRET not in text, path
