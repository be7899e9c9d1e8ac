"""The direct backend with several robots: one message on each, at the same time, one robot's
failure named without costing the others their message."""

from __future__ import annotations

import os
import time

import pytest

from airflow_ext import dingbot
from airflow_ext.channels.feishu.fake import FakeFeishuRobot
from airflow_ext.channels.slack.fake import FakeSlackWebhook
from airflow_ext.channels.wecom.fake import FakeWeComRobot
from airflow_ext.errors import ConfigError, DeliveryError
from airflow_ext.fake_robot import FakeRobot
from tests.test_connections import conn_json
from tests.test_render import make_alert


def clear_robot_settings(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith(("AIRFLOW__DINGBOT__", "AIRFLOW__DINGDING__", "AIRFLOW_CONN_")):
            monkeypatch.delenv(name)


@pytest.fixture
def robots(monkeypatch):
    """A DingTalk and a WeCom robot as Connections ``ding`` and ``wecom``, both defaults."""
    clear_robot_settings(monkeypatch)
    ding = FakeRobot(access_token="ding-token", dedup_msg_uuid=False).start()
    wecom = FakeWeComRobot(access_token="wecom-key").start()
    monkeypatch.setenv("AIRFLOW_CONN_DING", conn_json("dingding", password="ding-token", host=ding.base_url))
    monkeypatch.setenv("AIRFLOW_CONN_WECOM", conn_json("wecom", password="wecom-key", host=wecom.base_url))
    monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "ding,wecom")
    monkeypatch.setenv("AIRFLOW__DINGBOT__TIMEOUT", "3")
    monkeypatch.setenv("AIRFLOW__DINGBOT__READ_TIMEOUT", "2")
    yield ding, wecom
    ding.stop()
    wecom.stop()


def test_one_message_on_each_robot(robots):
    ding, wecom = robots

    answers = dingbot.dingbot_msg_sender(make_alert())

    assert set(answers) == {"ding", "wecom"}
    assert len(ding.messages) == 1 and len(wecom.messages) == 1


def test_the_tasks_own_conn_id_wins_over_the_default(robots):
    ding, wecom = robots

    dingbot.dingbot_msg_sender(make_alert(conn_ids=("wecom",)))

    assert (len(ding.messages), len(wecom.messages)) == (0, 1)


def test_a_slow_robot_does_not_hold_up_the_other(robots):
    ding, wecom = robots
    ding.set_mode("slow", delay_s=1.5)
    started = time.time()

    dingbot.dingbot_msg_sender(make_alert())

    (wecom_message,) = wecom.messages
    assert wecom_message["received_at"] - started < 0.5  # sent at once, not after DingTalk's answer
    assert len(ding.messages) == 1


def test_a_failing_robot_is_named_and_the_other_still_gets_its_message(robots):
    ding, wecom = robots
    ding.set_mode("errcode", errcode=300001, errmsg="token is not exist")

    with pytest.raises(DeliveryError) as raised:
        dingbot.dingbot_msg_sender(make_alert())

    message = str(raised.value)
    assert message.startswith("not delivered to ding (ding: the robot refused the message: errcode=300001")
    assert message.endswith("; delivered to wecom")
    assert raised.value.retryable is False
    assert len(wecom.messages) == 1
    assert "ding-token" not in message and "wecom-key" not in message


def test_an_undefined_connection_beside_a_good_one_costs_only_its_own_message(robots, monkeypatch):
    _, wecom = robots
    monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "nowhere,wecom")

    with pytest.raises(
        DeliveryError, match=r"not delivered to nowhere \(nowhere: Connection 'nowhere' is not"
    ):
        dingbot.dingbot_msg_sender(make_alert())

    assert len(wecom.messages) == 1


def test_only_undefined_connections_are_a_configuration_error(robots, monkeypatch):
    monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "nowhere,neither")

    with pytest.raises(ConfigError, match="Connection 'nowhere' is not defined.*Connection 'neither'"):
        dingbot.dingbot_msg_sender(make_alert())


def test_feishu_and_slack_connections_ping_their_mention_ids(monkeypatch):
    """The ids a Feishu or Slack Connection names are who the group's client pings, at_all too."""
    clear_robot_settings(monkeypatch)
    feishu_user = "ou_7d8a6e6df7621556ce0d21922b676706"
    with (
        FakeFeishuRobot("feishu-hook-token") as feishu,
        FakeSlackWebhook("T0AAA/B0BBB/slacksecret", burst=100, per_second=100.0) as slack,
    ):
        monkeypatch.setenv(
            "AIRFLOW_CONN_FEISHU",
            conn_json(
                "feishu", password="feishu-hook-token", host=feishu.base_url, mention_ids=[feishu_user]
            ),
        )
        monkeypatch.setenv(
            "AIRFLOW_CONN_SLACK",
            conn_json(
                "slackwebhook",
                password="T0AAA/B0BBB/slacksecret",
                host=f"{slack.base_url}/services",
                mention_ids="U024BE7LH",
                at_all=True,
            ),
        )
        monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "feishu,slack")

        dingbot.dingbot_msg_sender(make_alert())

        assert feishu.messages[-1]["pinged"] == [feishu_user]
        assert slack.messages[-1]["pinged"] == ["U024BE7LH", "!channel"]
