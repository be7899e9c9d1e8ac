"""Configuration: every option documented, read through Airflow's conf, bad values named clearly."""

from __future__ import annotations

import configparser

import pytest

from airflow_ext import config
from airflow_ext.config_description import CONFIG_DESCRIPTION
from airflow_ext.errors import ConfigError
from tests.conftest import REPO_ROOT


def all_options():
    return [(section, key) for section, desc in CONFIG_DESCRIPTION.items() for key in desc["options"]]


@pytest.mark.parametrize("section, key", all_options())
def test_template_documents_every_option_with_default_and_env_var(section, key):
    text = (REPO_ROOT / "airflow.cfg.template").read_text()
    template = configparser.ConfigParser(interpolation=None)
    template.read_string(text)
    default = CONFIG_DESCRIPTION[section]["options"][key]["default"]

    assert template.has_option(section, key)
    assert template.get(section, key) == (default or "")
    assert f"AIRFLOW__{section.upper()}__{key.upper()}" in text


def test_template_has_no_option_the_description_lacks():
    template = configparser.ConfigParser(interpolation=None)
    template.read(REPO_ROOT / "airflow.cfg.template")

    assert {(s, k) for s in template.sections() for k in template.options(s)} == set(all_options())


def test_sections_are_core_sections_with_sensitive_secrets():
    from airflow.configuration import conf

    assert conf.get("dingbot", "ding_bot_backend") == "airflow_ext.dingbot.dingbot_msg_sender"
    assert ("dingding", "bot_url") in conf.sensitive_config_values
    assert ("dingding", "secret") in conf.sensitive_config_values


def test_cmd_variant_of_bot_url_works(monkeypatch):
    monkeypatch.delenv("AIRFLOW__DINGDING__BOT_URL", raising=False)
    monkeypatch.setenv(
        "AIRFLOW__DINGDING__BOT_URL_CMD", "echo http://127.0.0.1:1/robot/send?access_token=fromcmd"
    )

    assert config.load_dingtalk_settings().bot_url == "http://127.0.0.1:1/robot/send?access_token=fromcmd"


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "[dingding] bot_url is not set"),
        (
            {"AIRFLOW__DINGDING__BOT_URL": "oapi.dingtalk.com/robot/send"},
            "[dingding] bot_url must be an http(s) URL",
        ),
        ({"AIRFLOW__DINGDING__BOT_URL": "https://oapi.dingtalk.com/robot/send"}, "no access_token"),
        ({"AIRFLOW__DINGDING__SECRET": "not-a-sec"}, "[dingding] secret must be"),
        ({"AIRFLOW__DINGDING__AT_MOBILES": "138000,abc"}, "[dingding] at_mobiles: 'abc'"),
        ({"AIRFLOW__DINGDING__AT_ALL": "perhaps"}, "[dingding] at_all must be true or false"),
    ],
)
def test_bad_robot_settings_name_the_option(monkeypatch, env, message):
    base = {"AIRFLOW__DINGDING__BOT_URL": "https://oapi.dingtalk.com/robot/send?access_token=t0k"}
    base.update(env)
    if not env:
        base = {}
    monkeypatch.delenv("AIRFLOW__DINGDING__BOT_URL", raising=False)
    for key, value in base.items():
        monkeypatch.setenv(key, value)

    with pytest.raises(ConfigError) as caught:
        config.load_dingtalk_settings()

    assert message in str(caught.value)
    assert "t0k" not in str(caught.value)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("TIMEOUT", "0", "[dingbot] timeout must be greater than 0"),
        ("TIMEOUT", "soon", "[dingbot] timeout must be a number"),
        ("MAX_ATTEMPTS", "-1", "[dingbot] max_attempts must be greater than 0"),
        ("READ_TIMEOUT", "-2.5", "[dingbot] read_timeout must be greater than 0"),
    ],
)
def test_bad_delivery_settings_name_the_option(monkeypatch, key, value, message):
    monkeypatch.setenv(f"AIRFLOW__DINGBOT__{key}", value)

    with pytest.raises(ConfigError) as caught:
        config.load_retry_policy()

    assert message in str(caught.value)


def test_good_settings_are_parsed(monkeypatch):
    monkeypatch.setenv("AIRFLOW__DINGDING__BOT_URL", "https://oapi.dingtalk.com/robot/send?access_token=t0k")
    monkeypatch.setenv("AIRFLOW__DINGDING__SECRET", "SECxyz")
    monkeypatch.setenv("AIRFLOW__DINGDING__AT_MOBILES", " 13800000000 , 13900000000,")
    monkeypatch.setenv("AIRFLOW__DINGDING__AT_ALL", "true")
    monkeypatch.setenv("AIRFLOW__DINGBOT__TIMEOUT", "2.5")

    robot, policy = config.load_dingtalk_settings(), config.load_retry_policy()

    assert robot.at_mobiles == ("13800000000", "13900000000") and robot.at_all and robot.secret == "SECxyz"
    assert policy.deadline_s == 2.5 and policy.max_attempts == 3
    assert "t0k" not in repr(robot) and "SECxyz" not in repr(robot)


def test_sensitive_values_are_hidden_where_airflow_hides_secrets(monkeypatch):
    from airflow.configuration import conf

    monkeypatch.setenv("AIRFLOW__DINGDING__BOT_URL", "https://oapi.dingtalk.com/robot/send?access_token=t0k")
    monkeypatch.setenv("AIRFLOW__DINGDING__SECRET", "SECxyz")

    shown = conf.as_dict(display_sensitive=False, display_source=False)["dingding"]

    assert shown["bot_url"] == shown["secret"] == "< hidden >"
    assert shown["at_all"] == "False"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("RATE_LIMIT", "0", "[dingbot] rate_limit must be greater than 0"),
        ("OUTBOX_POLL_INTERVAL", "never", "[dingbot] outbox_poll_interval must be a number"),
        ("OUTBOX_LEASE", "-5", "[dingbot] outbox_lease must be greater than 0"),
    ],
)
def test_bad_outbox_settings_name_the_option(monkeypatch, key, value, message):
    monkeypatch.setenv(f"AIRFLOW__DINGBOT__{key}", value)

    with pytest.raises(ConfigError) as caught:
        config.load_delivery_schedule()

    assert message in str(caught.value)


def test_outbox_schedule_is_read(monkeypatch):
    monkeypatch.setenv("AIRFLOW__DINGBOT__RATE_LIMIT", "15")
    monkeypatch.setenv("AIRFLOW__DINGBOT__OUTBOX_PURGE_AFTER_DAYS", "0.5")

    schedule = config.load_delivery_schedule()

    assert (schedule.rate_limit, schedule.pacing_s, schedule.purge_after_s) == (15, 4.0, 43200.0)


@pytest.mark.parametrize(
    ("mentions", "at_all", "summary"),
    [
        ((), False, "0 mentions"),
        (("13800000000",), False, "1 mention"),
        (("13800000000", "13900000000"), True, "2 mentions and @all"),
        ((), True, "0 mentions and @all"),
    ],
)
def test_mentions_summary_counts_in_words(mentions, at_all, summary):
    settings = config.RobotSettings(channel="dingtalk", url="https://x", mentions=mentions, at_all=at_all)
    assert settings.mentions_summary() == summary
