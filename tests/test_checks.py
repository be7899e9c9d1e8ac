"""`airflow-ext check`: one line per problem, naming the option, for each way a setting can be wrong."""

from __future__ import annotations

import logging

import pytest

from airflow_ext import checks, config, problems
from airflow_ext.errors import ConfigError

GOOD = {
    "AIRFLOW__DINGDING__BOT_URL": "https://oapi.dingtalk.com/robot/send?access_token=t0k3n",
    "AIRFLOW__DINGDING__SECRET": "SECs3cr3t",
}


@pytest.fixture
def environment(monkeypatch):
    """Only the given [dingbot]/[dingding] variables are set."""
    import os

    for name in list(os.environ):
        if name.startswith(("AIRFLOW__DINGBOT__", "AIRFLOW__DINGDING__")):
            monkeypatch.delenv(name)

    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)

    return set_env


def test_a_good_configuration_has_no_problem_and_a_summary_without_secrets(environment):
    environment(**GOOD, AIRFLOW__DINGDING__AT_MOBILES="13800000000", AIRFLOW__DINGDING__KEYWORD="Airflow")

    assert checks.find_problems() == []
    summary = checks.summary()
    assert "signed" in summary and "keyword 'Airflow'" in summary and "1 mention," in summary
    assert "t0k3n" not in summary and "SECs3cr3t" not in summary


#: (variable after AIRFLOW__, its value, the start of the one line `check` prints)
PROBLEMS = [
    ("DINGDING__BOT_URL", "", "[dingding] bot_url is not set"),
    ("DINGDING__BOT_URL", "oapi.dingtalk.com/robot/send", "[dingding] bot_url must be an http(s) URL"),
    ("DINGDING__BOT_URL", "https://oapi.dingtalk.com/robot/send", "[dingding] bot_url has no access_token"),
    (
        "DINGDING__SECRET",
        "s3cr3t",
        "[dingding] secret must be the robot's signing secret, which starts with SEC",
    ),
    (
        "DINGDING__AT_MOBILES",
        "13800000000,call-me",
        "[dingding] at_mobiles: 'call-me' is not a mobile number",
    ),
    ("DINGDING__AT_ALL", "sometimes", "[dingding] at_all must be true or false"),
    (
        "DINGBOT__DING_BOT_BACKEND",
        "airflow_ext.dingbot.dingbot_msg_sendr",
        "[dingbot] ding_bot_backend: cannot import 'airflow_ext.dingbot.dingbot_msg_sendr' (module airflow_ext.dingbot has no attribute 'dingbot_msg_sendr')",  # noqa: E501
    ),
    (
        "DINGBOT__DING_BOT_BACKEND",
        "no_such_package.send",
        "[dingbot] ding_bot_backend: cannot import 'no_such_package.send' (no module named 'no_such_package')",  # noqa: E501
    ),
    (
        "DINGBOT__DING_BOT_BACKEND",
        "airflow_ext.config_description.DEFAULT_BACKEND",
        "[dingbot] ding_bot_backend: 'airflow_ext.config_description.DEFAULT_BACKEND' is not callable",
    ),
    (
        "DINGBOT__DING_BOT_BACKEND",
        "airflow_ext.dingbot.sample_alert",
        "[dingbot] ding_bot_backend: 'airflow_ext.dingbot.sample_alert' cannot be called with one argument",  # noqa: E501
    ),
    ("DINGBOT__TIMEOUT", "0", "[dingbot] timeout must be greater than 0, got '0'"),
    ("DINGBOT__CONNECT_TIMEOUT", "-1", "[dingbot] connect_timeout must be greater than 0"),
    ("DINGBOT__READ_TIMEOUT", "fast", "[dingbot] read_timeout must be a number, got 'fast'"),
    ("DINGBOT__MAX_ATTEMPTS", "2.5", "[dingbot] max_attempts must be a whole number, got '2.5'"),
    ("DINGBOT__RATE_LIMIT", "0", "[dingbot] rate_limit must be greater than 0"),
    ("DINGBOT__OUTBOX_LEASE", "-60", "[dingbot] outbox_lease must be greater than 0"),
    (
        "DINGBOT__TIMOUT",
        "5",
        "[dingbot] timout: unknown option (set in AIRFLOW__DINGBOT__TIMOUT); did you mean timeout?",
    ),
    (
        "DINGDING__WEBHOOK",
        "x",
        "[dingding] webhook: unknown option (set in AIRFLOW__DINGDING__WEBHOOK); known options:",
    ),
    (
        "DINGDING__MESSAGE_TEMPLATE",
        "{{ header }",
        "[dingding] message_template does not compile: unexpected '}' (line 1)",
    ),
    ("DINGDING__MESSAGE_TEMPLATE", "{% for x in %}", "[dingding] message_template does not compile:"),
    (
        "DINGDING__MESSAGE_TEMPLATE",
        "{{ alert.dagid }}",
        "[dingding] message_template cannot be rendered: UndefinedError: 'dict object' has no attribute 'dagid'",  # noqa: E501
    ),
    (
        "DINGDING__MESSAGE_TEMPLATE",
        "{{ alert.__class__.__mro__ }}",
        "[dingding] message_template cannot be rendered: SecurityError",
    ),
]


@pytest.mark.parametrize("variable, value, line", PROBLEMS)
def test_each_problem_is_one_line_naming_the_option(environment, variable, value, line):
    environment(**{**GOOD, f"AIRFLOW__{variable}": value})

    (problem,) = checks.find_problems()

    assert problem.startswith(line), problem
    assert "\n" not in problem
    assert "t0k3n" not in problem and "SECs3cr3t" not in problem


def test_every_problem_is_listed_not_just_the_first(environment):
    environment(
        AIRFLOW__DINGDING__BOT_URL="ftp://robot",
        AIRFLOW__DINGDING__SECRET="plain",
        AIRFLOW__DINGBOT__TIMEOUT="0",
        AIRFLOW__DINGBOT__DING_BOT_BACKED="x",
    )

    options = sorted(
        problem.split(":")[0].split(" must")[0].split(" is")[0] for problem in checks.find_problems()
    )

    assert options == [
        "[dingbot] ding_bot_backed",
        "[dingbot] timeout",
        "[dingding] bot_url",
        "[dingding] secret",
    ]


def test_sensitive_variants_are_known_options(environment):
    environment(
        AIRFLOW__DINGDING__BOT_URL_CMD="echo https://oapi.dingtalk.com/robot/send?access_token=t0k3n",
        AIRFLOW__DINGDING__SECRET="SECs3cr3t",
    )

    assert checks.find_problems() == []


def test_a_custom_backend_does_not_need_the_robot(environment):
    environment(AIRFLOW__DINGBOT__DING_BOT_BACKEND="tests.test_checks.custom_backend")

    assert checks.find_problems() == []


def custom_backend(alert):
    return {"ok": True}


def test_a_runtime_problem_is_logged_once_per_process(environment, caplog):
    from airflow_ext.hooks import deliver_alert
    from tests.test_render import make_alert

    environment(**GOOD, AIRFLOW__DINGBOT__DING_BOT_BACKEND="no_such_package.send")
    problems.forget()
    caplog.set_level(logging.DEBUG, logger="airflow_ext")

    for _ in range(3):
        deliver_alert(make_alert())

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "[dingbot] ding_bot_backend: cannot import 'no_such_package.send'" in errors[0]
    assert "airflow-ext check" in errors[0]


def test_an_unreadable_template_costs_the_layout_not_the_alert(environment, caplog):
    environment(**GOOD, AIRFLOW__DINGDING__MESSAGE_TEMPLATE="{{ header }")
    problems.forget()

    from airflow_ext.channels.dingtalk import DingTalkRobot
    from tests.test_render import make_alert

    robot = DingTalkRobot(config.load_dingtalk_settings())
    message = robot.render(make_alert())

    assert "**DAG:** orders_daily" in message.text  # the built-in layout
    assert any("message_template does not compile" in r.getMessage() for r in caplog.records)


def test_a_value_that_cannot_be_read_names_the_option_not_the_value(monkeypatch):
    class Broken:
        def get(self, section, key, fallback=None):
            raise RuntimeError("command `get-token --key t0k3n` failed")

    with pytest.raises(ConfigError) as caught:
        config.read_option(Broken(), "dingding", "bot_url")

    assert str(caught.value) == "[dingding] bot_url cannot be read (RuntimeError)"


@pytest.mark.airflow3
@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://api-server:8080/execution/", None),
        (
            "http://api-server:8080/api/v2/",
            "[core] execution_api_server_url must be the api-server's Execution API",
        ),
    ],
)
def test_the_outbox_on_airflow3_needs_the_execution_api_url(environment, url, problem):
    environment(
        **GOOD,
        AIRFLOW__DINGBOT__DING_BOT_BACKEND="airflow_ext.dingbot.outbox_sender",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=url,
    )
    problems = checks.find_problems()
    assert problems == ([] if problem is None else [problems[0]])
    if problem:
        assert problems[0].startswith(problem)
