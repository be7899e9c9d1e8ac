"""The local WeCom group robot (airflow_ext.channels.wecom.fake), over real HTTP on loopback."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import requests

from airflow_ext.channels.wecom.fake import FakeWeComRobot

pytestmark = pytest.mark.version_free

KEY = "5f1c0d2e-7a3b-4c9d-8e1f-2a3b4c5d6e7f"


@pytest.fixture
def robot():
    with FakeWeComRobot(KEY) as fake:
        yield fake


def md(content: str = "### failed\n**DAG:** d") -> dict:
    return {"msgtype": "markdown", "markdown": {"content": content}}


def txt(content: str = "failed", **mentions) -> dict:
    return {"msgtype": "text", "text": {"content": content, **mentions}}


def post(url: str, body) -> requests.Response:
    if isinstance(body, (bytes, str)):
        data = body.encode("utf-8") if isinstance(body, str) else body
        return requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=5)
    return requests.post(url, json=body, timeout=5)


def answer(resp: requests.Response) -> tuple[int, str]:
    assert resp.status_code == 200, resp.text  # WeCom answers every outcome with HTTP 200
    return resp.json()["errcode"], resp.json()["errmsg"]


def test_accepts_markdown_and_stores_it(robot):
    assert answer(post(robot.url, md())) == (0, "ok")

    (record,) = robot.messages
    assert record["body"] == md() and record["pinged"] == [] and record["at_all"] is False
    assert record["signed"] is False and record["received_at"] > 0
    assert robot.url.endswith(f"/cgi-bin/webhook/send?key={KEY}")


@pytest.mark.parametrize(
    "url_of, errcode",
    [
        (lambda r: r.url.replace(KEY, "0" * len(KEY)), 93000),
        (lambda r: r.url.split("?")[0], 93000),
        (lambda r: r.url.replace("key=", "access_token="), 93000),
    ],
    ids=["wrong key", "no key", "dingtalk-style parameter"],
)
def test_refuses_an_unknown_key(robot, url_of, errcode):
    code, message = answer(post(url_of(robot), md()))

    assert code == errcode and "invalid webhook url" in message and KEY not in message
    assert robot.messages == []


@pytest.mark.parametrize(
    "body, errcode",
    [
        (b"not json", 40008),
        (b"\xff\xfe", 40008),
        ("[1, 2]", 40008),
        ({"markdown": {"content": "x"}}, 40008),  # no msgtype
        ({"msgtype": "card", "card": {}}, 40008),  # unknown msgtype
        ({"msgtype": 1, "markdown": {"content": "x"}}, 40008),
        ({"msgtype": "markdown"}, 44004),
        ({"msgtype": "markdown", "markdown": {}}, 44004),
        (md(""), 44004),
        ({"msgtype": "markdown", "markdown": {"content": 7}}, 44004),
        (txt(""), 44004),
        (txt("x", mentioned_mobile_list="13800000000"), 40058),
        (txt("x", mentioned_list=[1]), 40058),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_refuses_malformed_messages_with_the_documented_codes(robot, body, errcode):
    assert answer(post(robot.url, body))[0] == errcode
    assert robot.messages == []


@pytest.mark.parametrize(
    "make, limit",
    [(md, 4096), (txt, 2048)],
    ids=["markdown", "text"],
)
def test_content_limit_is_utf8_bytes_at_the_boundary(robot, make, limit):
    at_limit = "数" * (limit // 3) + "x" * (limit % 3)
    assert len(at_limit.encode()) == limit and len(at_limit) < limit

    assert answer(post(robot.url, make(at_limit)))[0] == 0
    code, message = answer(post(robot.url, make(at_limit + "x")))
    assert code == 40058 and f"exceed max length {limit}" in message
    assert [content for r in robot.messages for content in [r["body"][r["body"]["msgtype"]]["content"]]] == [
        at_limit
    ]


def test_markdown_v2_has_no_documented_limit_and_is_accepted(robot):
    body = {"msgtype": "markdown_v2", "markdown_v2": {"content": "x" * 10_000}}

    assert answer(post(robot.url, body))[0] == 0


@pytest.mark.parametrize(
    "body, pinged, at_all",
    [
        (
            txt("x", mentioned_mobile_list=["13800000000", "13900000000"]),
            ["13800000000", "13900000000"],
            False,
        ),
        (
            txt("x", mentioned_list=["zhangsan"], mentioned_mobile_list=["13800000000"]),
            ["zhangsan", "13800000000"],
            False,
        ),
        (txt("x", mentioned_mobile_list=["@all"]), [], True),
        (txt("x", mentioned_list=["@all", "lisi"]), ["lisi"], True),
        (txt("hi <@wangwu> and <@wangwu>"), ["wangwu"], False),
        (txt("@all @13800000000 in the text"), [], False),  # only the lists and <@userid> ping
        (md("hi <@zhangsan>, <@lisi>"), ["zhangsan", "lisi"], False),
        (md("@all and @13800000000"), [], False),
        (md("<\u2060@zhangsan> <@ lisi>"), [], False),  # broken syntax pings nobody
        (
            {"msgtype": "markdown", "markdown": {"content": "x", "mentioned_mobile_list": ["13800000000"]}},
            [],
            False,
        ),
    ],
    ids=lambda value: repr(value)[:50] if isinstance(value, dict) else None,
)
def test_pinged_follows_wecom_mention_rules(robot, body, pinged, at_all):
    assert answer(post(robot.url, body))[0] == 0

    (record,) = robot.messages
    assert (record["pinged"], record["at_all"]) == (pinged, at_all)


def test_rate_limit_throttles_then_blocks_then_recovers():
    with FakeWeComRobot(KEY, rate_limit=3, window_s=30, block_s=0.4) as robot:
        codes = [answer(post(robot.url, md(f"m{i}")))[0] for i in range(3)]
        assert codes == [0, 0, 0]

        code, message = answer(post(robot.url, md("over")))
        assert (code, message) == (45009, "api freq out of limit")
        assert answer(post(robot.url, md("blocked")))[0] == 45009  # the block refuses everything
        assert answer(post(robot.url, {"msgtype": "nonsense"}))[0] == 45009  # even before validation

        time.sleep(0.5)
        assert answer(post(robot.url, md("after")))[0] == 0  # a fresh window after the block
        assert [r["body"]["markdown"]["content"] for r in robot.messages] == ["m0", "m1", "m2", "after"]


def test_a_wrong_key_is_refused_even_while_blocked():
    with FakeWeComRobot(KEY, rate_limit=1, block_s=30) as robot:
        post(robot.url, md())
        assert answer(post(robot.url, md()))[0] == 45009

        assert answer(post(robot.url.replace(KEY, "x"), md()))[0] == 93000


def test_repeats_are_not_deduplicated(robot):
    for _ in range(2):
        assert answer(post(robot.url, {**md(), "msgUuid": "same"}))[0] == 0

    assert len(robot.messages) == 2


def test_failure_modes_and_control_endpoints_are_inherited(robot):
    control = f"{robot.base_url}/_control"
    assert requests.post(control, json={"mode": "errcode", "errcode": 93000, "errmsg": "gone"}, timeout=5).ok
    assert answer(post(robot.url, md())) == (93000, "gone")

    requests.post(control, json={"mode": "http500"}, timeout=5)
    assert post(robot.url, md()).status_code == 500

    requests.post(f"{robot.base_url}/_reset", timeout=5)
    assert answer(post(robot.url, md()))[0] == 0
    assert requests.get(f"{robot.base_url}/_messages", timeout=5).json()[0]["body"] == md()
    assert [r["errcode"] for r in requests.get(f"{robot.base_url}/_requests", timeout=5).json()] == [0]
    assert requests.get(robot.url, timeout=5).status_code == 405


def test_secret_and_keyword_have_no_effect():
    with FakeWeComRobot(KEY, secret="SECabc", keyword="Airflow") as robot:
        assert answer(post(robot.url, md("no keyword here")))[0] == 0
        assert robot.messages[0]["signed"] is False


def test_the_console_echo_shows_the_message_and_who_is_pinged_but_never_the_key():
    echoed: list[str] = []
    with FakeWeComRobot(KEY, echo=echoed.append) as robot:
        post(robot.url, txt("line one\nline two", mentioned_mobile_list=["13800000000", "@all"]))
        post(robot.url, md("### heading"))

    text_echo, md_echo = echoed
    assert "WeCom robot message (text)" in text_echo and "│ line two" in text_echo
    assert "pings: @all, 13800000000" in text_echo
    assert "(markdown)" in md_echo and "│ ### heading" in md_echo and "pings: nobody" in md_echo
    assert all(KEY not in echo for echo in echoed)


def test_the_fake_imports_without_airflow_or_requests():
    code = (
        "import sys, airflow_ext.channels.wecom.fake; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('airflow', 'requests')]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
