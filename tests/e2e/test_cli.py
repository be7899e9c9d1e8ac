"""`airflow-ext send-test` and a custom backend, through the real CLI of the patched Airflow."""

from __future__ import annotations

import json

import pytest

from tests.conftest import AIRFLOW_LINE, BIN, assert_no_secret, marked, robot_env, run

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
    "backend, logged, times",
    [
        # a backend's own failure is logged with each alert it fails (its traceback helps its author)
        ("custom_backend.explode", "not sent: the backend custom_backend.explode raised", 2),
        # a configuration problem is the same for every alert: logged once per process
        ("no.such.backend", "not sent: [dingbot] ding_bot_backend: cannot import 'no.such.backend'", 1),
    ],
)
def test_broken_backend_changes_no_state_and_no_callback(airflow, tmp_path, backend, logged, times):
    callbacks = tmp_path / "callbacks.txt"
    result = airflow(
        ["dags", "test", "dingbot_callbacks"],
        {"AIRFLOW__DINGBOT__DING_BOT_BACKEND": backend, "DINGBOT_TEST_CALLBACKS": str(callbacks)},
    )
    output = result.stdout + result.stderr

    # The same transitions and callbacks as unpatched Airflow: retry, then failure.
    assert marked(output, "up_for_retry") and marked(output, "failed")
    assert callbacks.read_text().splitlines() == ["fails try 1 up_for_retry", "fails try 2 failed"]
    assert output.count(logged) == times, output[-3000:]


def airflow_ext(airflow_base_env, extra, *args):
    env = dict(airflow_base_env)
    env.update(extra)
    return run([str(BIN / "airflow-ext"), *args], env, timeout=120)


def test_check_passes_a_good_configuration_and_sends_with_send(airflow_base_env, robot):
    result = airflow_ext(airflow_base_env, robot_env(robot), "check", "--send")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("configuration OK: backend airflow_ext.dingbot.dingbot_msg_sender")
    assert "signed" in result.stdout and "keyword 'Airflow'" in result.stdout
    assert len(robot.messages) == 1
    assert_no_secret(result.stdout, result.stderr)


def test_check_lists_every_problem_and_sends_nothing(airflow_base_env, robot):
    bad = robot_env(
        robot,
        AIRFLOW__DINGBOT__DING_BOT_BACKEND="airflow_ext.dingbot.dingbot_msg_sendr",
        AIRFLOW__DINGBOT__RATE_LIMIT="0",
        AIRFLOW__DINGDING__SECRET="not-a-signing-secret",
        AIRFLOW__DINGDING__AT_MOBILES="13800000000,boss",
        AIRFLOW__DINGDING__MESSAGE_TEMPLATE="{{ header }",
        AIRFLOW__DINGDING__KEYWRD="Airflow",
    )

    result = airflow_ext(airflow_base_env, bad, "check", "--send")

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "airflow-ext check: 6 configuration problems"
    assert sorted(line.split(" ")[1].rstrip(":") for line in lines[:-1]) == [
        "at_mobiles",
        "ding_bot_backend",
        "keywrd",
        "message_template",
        "rate_limit",
        "secret",
    ]
    assert "did you mean keyword?" in result.stderr
    assert robot.requests == [], "--send sends nothing while the configuration has problems"
    assert_no_secret(result.stdout, result.stderr)


def test_check_explains_a_jinja_percent_in_airflow_cfg(airflow_base_env, robot, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "airflow.cfg").write_text(
        "[dingding]\nmessage_template = {% if alert.kind == 'retry' %}again{% endif %} {{ header }}\n"
    )
    env = {**robot_env(robot), "AIRFLOW_HOME": str(home)}

    result = airflow_ext(airflow_base_env, env, "check")

    assert result.returncode == 1
    assert "[dingding] message_template cannot be read (InterpolationSyntaxError)" in result.stderr
    assert "{%% ... %%}" in result.stderr

    (home / "airflow.cfg").write_text(
        "[dingding]\nmessage_template = {%% if alert.kind == 'retry' %%}again{%% endif %%} {{ header }}\n"
    )
    assert airflow_ext(airflow_base_env, env, "check").returncode == 0


def test_airflow_config_list_hides_the_webhook_and_the_secret(airflow, robot):
    result = airflow(["config", "list", "--section", "dingding"], robot_env(robot))
    assert result.returncode == 0, result.stderr
    assert_no_secret(result.stdout, result.stderr)
    if AIRFLOW_LINE == "3":  # Airflow 3 hides every value unless asked; then sensitive ones still
        assert "bot_url" in result.stdout
        result = airflow(
            ["config", "list", "--section", "dingding", "--show-values", "--hide-sensitive"], robot_env(robot)
        )
        assert result.returncode == 0, result.stderr

    assert "bot_url = < hidden >" in result.stdout and "secret = < hidden >" in result.stdout
    assert "keyword = Airflow" in result.stdout  # only sensitive options are hidden
    assert_no_secret(result.stdout, result.stderr)
