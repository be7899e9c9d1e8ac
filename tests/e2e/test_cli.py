"""`airflow-ext send-test` and a custom backend, through the real CLI of the patched Airflow."""

from __future__ import annotations

import json

import pytest

from tests.conftest import BIN, assert_no_secret, robot_env, run

pytestmark = pytest.mark.e2e


def send_test(airflow_base_env, extra):
    env = dict(airflow_base_env)
    env.update(extra)
    return run([str(BIN / "airflow-ext"), "send-test"], env, timeout=120)


def test_send_test_prints_the_robots_answer(airflow_base_env, robot):
    result = send_test(airflow_base_env, robot_env(robot))

    assert result.returncode == 0, result.stderr
    assert "'errcode': 0" in result.stdout
    (message,) = robot.messages
    assert "airflow_ext_send_test" in message["body"]["markdown"]["text"]
    assert_no_secret(result.stdout, result.stderr)


@pytest.mark.parametrize(
    "errcode, errmsg", [(310000, "keywords not in content"), (300001, "token is not exist")]
)
def test_send_test_exits_non_zero_with_errcode_and_errmsg(airflow_base_env, robot, errcode, errmsg):
    robot.set_mode("errcode", errcode=errcode, errmsg=errmsg)

    result = send_test(airflow_base_env, robot_env(robot))

    assert result.returncode == 1
    assert f"errcode={errcode}" in result.stderr and errmsg in result.stderr
    assert_no_secret(result.stdout, result.stderr)


def test_send_test_names_a_bad_option(airflow_base_env, robot):
    result = send_test(airflow_base_env, robot_env(robot, AIRFLOW__DINGBOT__DING_BOT_BACKEND="nope.missing"))

    assert result.returncode == 1
    assert "[dingbot] ding_bot_backend: cannot import 'nope.missing'" in result.stderr


def test_custom_backend_end_to_end(airflow, robot, tmp_path):
    sink = tmp_path / "alerts.jsonl"
    result = airflow(
        ["dags", "test", "dingbot_default_args"],
        {
            "AIRFLOW__DINGBOT__DING_BOT_BACKEND": "custom_backend.write_alert",
            "DINGBOT_TEST_SINK": str(sink),
        },
    )

    alerts = [json.loads(line) for line in sink.read_text().splitlines()]
    assert [(a["kind"], a["try_number"]) for a in alerts] == [("retry", 1), ("failure", 2)], result.stdout[
        -2000:
    ]
    assert {a["exception_type"] for a in alerts} == {"ValueError"}
    assert robot.requests == [], "the custom backend replaced the DingTalk sender"


@pytest.mark.parametrize(
    "backend, logged",
    [
        ("custom_backend.explode", "not sent: the backend custom_backend.explode raised"),
        ("no.such.backend", "not sent: [dingbot] ding_bot_backend: cannot import 'no.such.backend'"),
    ],
)
def test_broken_backend_changes_no_state_and_no_callback(airflow, tmp_path, backend, logged):
    callbacks = tmp_path / "callbacks.txt"
    result = airflow(
        ["dags", "test", "dingbot_callbacks"],
        {"AIRFLOW__DINGBOT__DING_BOT_BACKEND": backend, "DINGBOT_TEST_CALLBACKS": str(callbacks)},
    )
    output = result.stdout + result.stderr

    # The same transitions and callbacks as unpatched Airflow: retry, then failure.
    assert "Marking task as UP_FOR_RETRY" in output and "Marking task as FAILED" in output
    assert callbacks.read_text().splitlines() == ["fails try 1 up_for_retry", "fails try 2 failed"]
    assert output.count(logged) == 2, output[-3000:]  # once per alert: the retry, the final failure
