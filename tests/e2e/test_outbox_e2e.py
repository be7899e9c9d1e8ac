"""The outbox end to end: the real patched Airflow records alerts, `airflow-ext deliver` sends them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.airflow_db import copy_sqlite_home
from tests.conftest import BIN, assert_no_secret, marked, robot_env, run

pytestmark = pytest.mark.e2e

OUTBOX = {"AIRFLOW__DINGBOT__DING_BOT_BACKEND": "airflow_ext.dingbot.outbox_sender"}


@pytest.fixture
def outbox_env(airflow_base_env, robot, tmp_path):
    env = dict(airflow_base_env)
    env.update(robot_env(robot, **OUTBOX))
    # An outbox of its own: a copy of the session's migrated database.
    env["AIRFLOW_HOME"] = str(tmp_path / "home")
    database = copy_sqlite_home(airflow_base_env, tmp_path / "home")
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{database}"
    return env


def start_deliverer(env, log_path, **extra):
    out = open(log_path, "ab")
    return subprocess.Popen(
        [str(BIN / "airflow-ext"), "deliver"],
        env={**env, **extra},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process, sig=signal.SIGTERM, timeout=20):
    os.killpg(process.pid, sig)
    return process.wait(timeout=timeout)


def test_failures_are_recorded_then_delivered_by_the_deliverer(outbox_env, robot, tmp_path):
    started = time.monotonic()
    result = run([str(BIN / "airflow"), "dags", "test", "dingbot_default_args"], outbox_env)
    assert marked(result.stdout + result.stderr, "failed")
    assert robot.requests == [], "the failure path does not touch the network"

    status = run([str(BIN / "airflow-ext"), "outbox", "status"], outbox_env)
    assert "pending 2" in status.stdout, status.stdout + status.stderr

    deliverer = start_deliverer(outbox_env, tmp_path / "deliver.log")
    try:
        messages = robot.wait_for_messages(2, timeout=60)
    finally:
        assert stop(deliverer) == 0, "clean shutdown on SIGTERM"

    texts = [m["body"]["markdown"]["text"] for m in messages]
    assert "**Try:** 1 of 2 (will retry)" in texts[0] and "**Try:** 2 of 2 (final failure)" in texts[1]
    status = run([str(BIN / "airflow-ext"), "outbox", "status"], outbox_env)
    assert "pending 0" in status.stdout and "sent 2" in status.stdout
    # Airflow's own migrations leave the outbox alone.
    assert run([str(BIN / "airflow"), "db", "migrate"], outbox_env).returncode == 0
    again = run([str(BIN / "airflow-ext"), "outbox", "status"], outbox_env)
    assert again.stdout == status.stdout
    log = (tmp_path / "deliver.log").read_text()
    assert_no_secret(result.stdout, result.stderr, status.stdout, log)
    assert time.monotonic() - started < 120


def test_a_deliverer_killed_mid_send_loses_nothing(outbox_env, robot, tmp_path):
    run([str(BIN / "airflow"), "tasks", "test", "dingbot_default_args", "fails"], outbox_env)
    robot.set_mode("hang")
    first = start_deliverer(outbox_env, tmp_path / "first.log", AIRFLOW__DINGBOT__OUTBOX_LEASE="3")
    try:
        deadline = time.monotonic() + 60
        while not robot.requests and time.monotonic() < deadline:
            time.sleep(0.1)
        assert robot.requests, "the first deliverer is mid-send"
    finally:
        stop(first, signal.SIGKILL)

    robot.set_mode("ok")
    second = start_deliverer(outbox_env, tmp_path / "second.log", AIRFLOW__DINGBOT__OUTBOX_LEASE="3")
    try:
        (message,) = robot.wait_for_messages(1, timeout=60)
    finally:
        stop(second)
    assert "**Try:** 1 of 2 (will retry)" in message["body"]["markdown"]["text"]


def test_a_failure_reported_twice_is_queued_once(outbox_env):
    first = run([str(BIN / "airflow"), "tasks", "test", "dingbot_default_args", "fails"], outbox_env)
    assert "DingTalk retry alert" in first.stdout and "queued in the outbox" in first.stdout

    # `tasks test` reuses the same temporary run id only within one call, so report the same try
    # twice through the backend itself, as a zombie detected twice would.
    probe = run(
        [
            str(BIN / "python"),
            "-c",
            # As in failure handling, where the line's adapter is the core's port.
            "from airflow_ext import lines; lines.choose();"
            "from airflow_ext.dingbot import outbox_sender; from tests.test_render import make_alert;"
            "a = make_alert(); print(outbox_sender(a), outbox_sender(a))",
        ],
        {**outbox_env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    first, again = (
        "{'queued': True, 'duplicate': False, 'via': 'database'}",
        "{'queued': False, 'duplicate': True, 'via': 'database'}",
    )
    assert f"{first} {again}" in probe.stdout, probe.stderr
