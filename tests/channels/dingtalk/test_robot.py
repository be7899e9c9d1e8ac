"""The DingTalk channel against the local robot: signing, limits, and errcode → retry decisions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from urllib.parse import unquote_plus

import pytest

from airflow_ext.channels.dingtalk import MAX_BODY_BYTES, DingTalkRobot, is_retryable_errcode, sign
from airflow_ext.config import DingTalkSettings
from airflow_ext.errors import DeliveryError
from airflow_ext.fake_robot import FakeRobot
from tests.conftest import ROBOT_KEYWORD, ROBOT_SECRET
from tests.test_render import make_alert

pytestmark = pytest.mark.version_free

TIMEOUTS = dict(connect_timeout_s=2.0, read_timeout_s=2.0)


def settings_for(robot, **overrides) -> DingTalkSettings:
    fields = dict(bot_url=robot.url, secret=ROBOT_SECRET, keyword=ROBOT_KEYWORD, at_mobiles=("13800000000",))
    fields.update(overrides)
    return DingTalkSettings(**fields)


def test_sign_matches_dingtalk_definition():
    expected = base64.b64encode(
        hmac.new(b"SECabc", b"1700000000000\nSECabc", hashlib.sha256).digest()
    ).decode()

    assert unquote_plus(sign("SECabc", 1700000000000)) == expected
    assert "+" not in sign("SECabc", 1700000000000) and "/" not in sign("SECabc", 1700000000000)


@pytest.mark.parametrize(
    "errcode, retryable",
    [
        (130101, True),  # send too fast
        (410100, True),  # throttled
        (-1, True),  # system busy
        (310000, False),  # signature / keyword / IP
        (300001, False),  # token does not exist
        (400101, False),  # access_token missing
        (460101, False),  # message too long
        (40035, False),  # malformed request
        (88, False),  # anything undocumented: do not hammer the robot
    ],
)
def test_errcode_retry_decision(errcode, retryable):
    assert is_retryable_errcode(errcode) is retryable


def test_accepted_message_is_signed_markdown_with_keyword_and_mention(robot):
    channel = DingTalkRobot(settings_for(robot))

    answer = channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    assert answer["errcode"] == 0
    (message,) = robot.messages
    assert message["signed"] and message["pinged"] == ["13800000000"]
    assert message["body"]["msgtype"] == "markdown" and len(message["body"]["msgUuid"]) == 32


def test_at_all_pings_everyone(robot):
    channel = DingTalkRobot(settings_for(robot, at_mobiles=(), at_all=True))

    channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    (message,) = robot.messages
    assert message["at_all"] is True and message["body"]["at"] == {"atMobiles": [], "isAtAll": True}


def test_each_request_gets_a_fresh_signature(robot, monkeypatch):
    channel = DingTalkRobot(settings_for(robot))
    clock = iter([1_700_000_000.0, 1_700_000_001.0])
    monkeypatch.setattr("airflow_ext.channels.dingtalk.robot.time.time", lambda: next(clock))

    (first, _), (second, _) = channel.request(b"{}"), channel.request(b"{}")

    assert first.split("&sign=")[1] != second.split("&sign=")[1]


def test_body_never_exceeds_limit_with_cjk_exception(robot):
    channel = DingTalkRobot(settings_for(robot))
    alert = make_alert(exception_message="失败" * 20_000, traceback="栈" * 30_000)

    body = channel.body_for(alert)

    assert MAX_BODY_BYTES - 100 < len(body) <= MAX_BODY_BYTES
    assert channel.post(body, **TIMEOUTS)["errcode"] == 0
    assert "**Try:** 3 of 3" in json.loads(body)["markdown"]["text"]


@pytest.mark.parametrize(
    "setup, retryable, errcode, status",
    [
        (lambda r: r.set_mode("errcode", errcode=130101, errmsg="send too fast"), True, 130101, 200),
        (lambda r: r.set_mode("errcode", errcode=310000, errmsg="sign not match"), False, 310000, 200),
        (lambda r: r.set_mode("http500"), True, None, 500),
        (lambda r: r.set_mode("garbage"), True, None, 200),
    ],
    ids=["throttled", "security", "http500", "garbage"],
)
def test_refusals_raise_classified_delivery_errors(robot, setup, retryable, errcode, status):
    setup(robot)
    channel = DingTalkRobot(settings_for(robot))

    with pytest.raises(DeliveryError) as caught:
        channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    assert (caught.value.retryable, caught.value.errcode, caught.value.http_status) == (
        retryable,
        errcode,
        status,
    )


def test_wrong_secret_is_refused_by_the_robot(robot):
    channel = DingTalkRobot(settings_for(robot, secret="SECwrong"))

    with pytest.raises(DeliveryError) as caught:
        channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    assert caught.value.errcode == 310000 and not caught.value.retryable


def test_configured_keyword_is_always_carried():
    with FakeRobot(access_token="t", keyword="ETL-Alarm") as keyword_robot:
        with_keyword = DingTalkRobot(DingTalkSettings(bot_url=keyword_robot.url, keyword="ETL-Alarm"))
        without = DingTalkRobot(DingTalkSettings(bot_url=keyword_robot.url))

        assert with_keyword.post(with_keyword.body_for(make_alert()), **TIMEOUTS)["errcode"] == 0
        with pytest.raises(DeliveryError) as caught:
            without.post(without.body_for(make_alert()), **TIMEOUTS)
        assert caught.value.errcode == 310000


def test_errors_never_contain_token_or_url(robot):
    channel = DingTalkRobot(settings_for(robot))
    url = robot.url
    robot.stop()  # connection refused

    with pytest.raises(DeliveryError) as caught:
        channel.post(b"{}", **TIMEOUTS)

    assert caught.value.retryable
    assert "access_token" not in str(caught.value) and url not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_connections_are_reused_within_a_process_but_not_across_forks():
    import os

    from airflow_ext.channels.dingtalk import shared_session

    parents = shared_session()
    assert shared_session() is parents
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not use the parent's pooled sockets
        os.write(write, b"1" if shared_session() is not parents else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
