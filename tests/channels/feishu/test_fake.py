"""Tests for the local Feishu custom bot (airflow_ext.channels.feishu.fake), over real HTTP on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import requests

from airflow_ext.channels.feishu import fake as fake_feishu
from airflow_ext.channels.feishu.fake import FakeFeishuRobot, compute_sign, render_lark_md

pytestmark = pytest.mark.version_free

TOKEN = "8a1f3c2e-5b7d-4e9a-a0c1-d2e3f4a5b6c7"
SECRET = "fs-secret-Qm7Tz3"
KEYWORD = "Airflow"


def card(text: str = "**Airflow** task failed", title: str = "Airflow failed: d.t", **extra) -> dict:
    body = {
        "msg_type": "interactive",
        "card": {
            "header": {"title": {"tag": "plain_text", "content": title}},
            "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": text}}],
        },
    }
    body.update(extra)
    return body


def signed(
    body: dict, secret: str = SECRET, timestamp: int | None = None, signature: str | None = None
) -> dict:
    timestamp = int(time.time()) if timestamp is None else timestamp
    key = f"{timestamp}\n{secret}".encode()
    expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    return {**body, "timestamp": str(timestamp), "sign": expected if signature is None else signature}


def post(url: str, body) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode("utf-8")
    return requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=5)


def code_of(response: requests.Response) -> int:
    assert response.status_code == 200, response.text
    return response.json()["code"]


@pytest.fixture
def robot():
    with FakeFeishuRobot(TOKEN) as fake:
        yield fake


@pytest.fixture
def secure_robot():
    with FakeFeishuRobot(TOKEN, secret=SECRET, keyword=KEYWORD) as fake:
        yield fake


# --- answers and the token ------------------------------------------------------------------------


def test_accepts_a_card_and_answers_like_feishu(robot):
    response = post(robot.url, card())

    assert response.status_code == 200
    assert response.json() == {
        "StatusCode": 0,
        "StatusMessage": "success",
        "code": 0,
        "data": {},
        "msg": "success",
    }
    (message,) = robot.messages
    assert message["body"] == card() and message["msg_type"] == "interactive" and not message["signed"]
    assert message["rendered"] == "Airflow failed: d.t\nAirflow task failed"


def test_url_is_the_hook_path_with_the_token(robot):
    assert robot.url == f"{robot.base_url}/open-apis/bot/v2/hook/{TOKEN}"
    assert TOKEN not in repr(robot)


@pytest.mark.parametrize("token", ["", "wrong-token", TOKEN + "x", TOKEN[:-1]])
def test_unknown_token_is_19001(robot, token):
    response = post(f"{robot.base_url}/open-apis/bot/v2/hook/{token}", card())

    assert response.json() == {
        "code": 19001,
        "data": {},
        "msg": "param invalid: incoming webhook access token invalid",
    }
    assert robot.messages == []


def test_get_is_not_a_send(robot):
    assert requests.get(robot.url, timeout=5).status_code == 405
    assert requests.post(f"{robot.base_url}/robot/send", json=card(), timeout=5).status_code == 404


# --- signature ------------------------------------------------------------------------------------


def test_compute_sign_is_feishus_definition():
    key = b"1599360473\nSECRET"
    assert (
        compute_sign("SECRET", 1599360473)
        == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    )
    assert compute_sign("SECRET", "1599360473") == compute_sign("SECRET", 1599360473)


def test_signed_message_is_accepted_and_marked(secure_robot):
    assert code_of(post(secure_robot.url, signed(card()))) == 0
    assert secure_robot.messages[0]["signed"] is True


@pytest.mark.parametrize(
    "make_body",
    [
        lambda: card(),  # unsigned
        lambda: {**signed(card()), "sign": ""},
        lambda: {k: v for k, v in signed(card()).items() if k != "timestamp"},
        lambda: signed(card(), secret="another-secret"),
        lambda: signed(card(), timestamp=int(time.time()) - 3601),  # more than an hour old
        lambda: signed(card(), timestamp=int(time.time()) + 3601),  # more than an hour ahead
        lambda: signed(card(), timestamp=int(time.time() * 1000)),  # DingTalk's milliseconds
        lambda: {**signed(card()), "timestamp": "soon"},
        lambda: {**signed(card()), "timestamp": True},
    ],
    ids=[
        "unsigned",
        "empty-sign",
        "no-timestamp",
        "wrong-secret",
        "stale",
        "future",
        "milliseconds",
        "text",
        "bool",
    ],
)
def test_bad_signatures_are_19021(secure_robot, make_body):
    response = post(secure_robot.url, make_body())

    assert response.json()["code"] == 19021
    assert response.json()["msg"] == "sign match fail or timestamp is not within one hour from current time"
    assert secure_robot.messages == []


def test_signature_within_the_hour_is_accepted(secure_robot):
    assert code_of(post(secure_robot.url, signed(card(), timestamp=int(time.time()) - 3500))) == 0


def test_integer_timestamp_is_read_too(secure_robot):
    body = signed(card())
    body["timestamp"] = int(body["timestamp"])

    assert code_of(post(secure_robot.url, body)) == 0


def test_signature_in_the_query_string_does_not_count(secure_robot):
    ts = int(time.time())
    url = f"{secure_robot.url}?timestamp={ts}&sign={compute_sign(SECRET, ts)}"

    assert post(url, card()).json()["code"] == 19021


# --- size, format, keyword ------------------------------------------------------------------------


def _body_of_size(size: int) -> bytes:
    base = json.dumps(card(text=""), ensure_ascii=False, separators=(",", ":")).encode()
    filler = size - len(base)
    assert filler > 0
    body = json.dumps(card(text="x" * filler), ensure_ascii=False, separators=(",", ":")).encode()
    assert len(body) == size
    return body


def test_body_of_exactly_20000_bytes_is_accepted_one_more_is_19036(robot):
    assert code_of(post(robot.url, _body_of_size(20_000))) == 0
    assert post(robot.url, _body_of_size(20_001)).json() == {
        "code": 19036,
        "data": {},
        "msg": "request body exceeds the size limit",
    }
    assert len(robot.messages) == 1


def test_size_counts_utf8_bytes_not_characters(robot):
    base = len(json.dumps(card(text=""), ensure_ascii=False, separators=(",", ":")).encode())
    chars = (20_000 - base) // 3 + 1  # three bytes each: one character too many
    body = json.dumps(card(text="栈" * chars), ensure_ascii=False, separators=(",", ":")).encode()

    assert len(body) > 20_000 and len(body.decode()) < 20_000
    assert post(robot.url, body).json()["code"] == 19036


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"msg_type": "markdown", "content": {"text": "x"}}).encode(),
        json.dumps({"content": {"text": "x"}}).encode(),
        json.dumps({"msg_type": "interactive"}).encode(),
        json.dumps({"msg_type": "interactive", "card": {"header": {}}}).encode(),
        json.dumps(
            {"msg_type": "interactive", "card": {"elements": [{"tag": "div", "text": {"content": 1}}]}}
        ).encode(),
        json.dumps({"msg_type": "text", "content": {"text": ""}}).encode(),
        json.dumps({"msg_type": "post", "content": {}}).encode(),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "array",
        "unknown-type",
        "no-type",
        "no-card",
        "no-elements",
        "bad-text",
        "empty-text",
        "empty-post",
    ],
)
def test_malformed_messages_are_9499(robot, body):
    response = post(robot.url, body)

    assert response.status_code == 200 and response.json()["code"] == 9499
    assert response.json()["msg"].startswith("Bad Request")
    assert robot.messages == []


def test_keyword_is_looked_for_in_header_and_texts():
    with FakeFeishuRobot(TOKEN, keyword="ETL-Alarm") as fake:
        assert code_of(post(fake.url, card(title="ETL-Alarm: d.t", text="x"))) == 0
        assert code_of(post(fake.url, card(title="d.t", text="**ETL-Alarm**"))) == 0
        refused = post(fake.url, card(title="d.t", text="ETL Alarm"))

    assert refused.json() == {"code": 19024, "data": {}, "msg": "Key Words Not Found"}


def test_card_given_as_json_string_and_card_v2_body_are_read(robot):
    as_string = {"msg_type": "interactive", "card": json.dumps(card()["card"])}
    v2 = {
        "msg_type": "interactive",
        "card": {"schema": "2.0", "body": {"elements": [{"tag": "markdown", "content": "hi"}]}},
    }

    assert code_of(post(robot.url, as_string)) == 0
    assert code_of(post(robot.url, v2)) == 0
    assert robot.messages[1]["rendered"].endswith("hi")


# --- mentions and what is shown -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, pinged",
    [
        ("<at id=ou_1></at> failed", ["ou_1"]),
        ("<at id=\"ou_1\"></at><at id='ou_2'>Bob</at>", ["ou_1", "ou_2"]),
        ("<at ids=ou_1,ou_2></at>", ["ou_1", "ou_2"]),
        ("<at id=all></at>", ["all"]),
        ("<at id=ou_1>", ["ou_1"]),  # unclosed still pings
        ('<at user_id="ou_1"></at>', []),  # the text message's form: not in a card
        ("&#60;at id=all&#62;&#60;/at&#62;", []),  # a character reference is text
        ("&lt;at id=ou_1&gt;", []),
        ("@all @ou_1 <@U123> <!channel>", []),
        ("", []),
    ],
)
def test_who_a_card_pings(robot, text, pinged):
    assert code_of(post(robot.url, card(text=text or "x"))) == 0

    (message,) = robot.messages
    assert message["pinged"] == pinged
    assert message["at_all"] is ("all" in pinged)


def test_plain_text_is_never_markup(robot):
    body = card()
    body["card"]["elements"].append(
        {"tag": "div", "text": {"tag": "plain_text", "content": "<at id=all></at> **x**"}}
    )
    body["card"]["header"]["title"]["content"] = "<at id=ou_1></at>"

    assert code_of(post(robot.url, body)) == 0
    (message,) = robot.messages
    assert message["pinged"] == [] and message["rendered"].endswith("<at id=all></at> **x**")
    assert message["rendered"].startswith("<at id=ou_1></at>")


def test_text_and_post_messages_ping_their_own_way(robot):
    text = {"msg_type": "text", "content": {"text": 'hi <at user_id="ou_1">Ann</at> <at id=ou_2></at> **x**'}}
    post_msg = {
        "msg_type": "post",
        "content": {
            "post": {
                "zh_cn": {
                    "title": "t",
                    "content": [
                        [
                            {"tag": "text", "text": "a "},
                            {"tag": "at", "user_id": "all"},
                            {"tag": "a", "text": "log", "href": "http://x/l"},
                        ]
                    ],
                }
            }
        },
    }

    assert code_of(post(robot.url, text)) == 0
    assert code_of(post(robot.url, post_msg)) == 0
    first, second = robot.messages
    assert first["pinged"] == ["ou_1"] and first["rendered"] == "hi @ou_1 <at id=ou_2></at> **x**"
    assert second["pinged"] == ["all"] and second["at_all"] and second["links"] == ["http://x/l"]
    assert second["rendered"] == "t\na @alllog"


@pytest.mark.parametrize(
    "text, shown, links, formatting",
    [
        ("**bold** and *it*", "bold and it", [], ["bold", "italic"]),
        ("__b__ ~~s~~ `c`", "b s c", [], ["bold", "code", "strike"]),
        ("[log](http://x/log)", "log", ["http://x/log"], ["link"]),
        (
            "<a href='http://x/a'>a</a> <link url='http://x/b'>b</link>",
            "a b",
            ["http://x/a", "http://x/b"],
            ["link"],
        ),
        ("![pic](img_v2_1)", "[image pic]", [], ["image"]),
        ("<font color='red'>red</font><br>next", "red\nnext", [], ["break", "tag"]),
        ("done :OK:", "done [OK]", [], ["emoji"]),
        ("- item\n1. one\n---", "- item\n1. one\n---", [], ["line-start"]),
        (
            "&#60;at id=all&#62; &#91;x&#93;(http://e) &#42;&#42;b&#42;&#42;",
            "<at id=all> [x](http://e) **b**",
            [],
            [],
        ),
        ("snake_case_name and 5 * 3", "snake_case_name and 5 * 3", [], []),
    ],
)
def test_render_lark_md(text, shown, links, formatting):
    rendered = render_lark_md(text)

    assert (rendered["text"], rendered["links"], rendered["formatting"]) == (shown, links, formatting)


def test_echo_shows_the_message_without_secrets():
    lines: list[str] = []
    with FakeFeishuRobot(TOKEN, secret=SECRET, echo=lines.append) as fake:
        post(fake.url, signed(card(text="**DAG:** d\n[Open the task log](http://x/log)\n<at id=ou_1></at>")))

    (echoed,) = lines
    assert "Feishu robot message (interactive)" in echoed and "DAG: d" in echoed
    assert "-> http://x/log" in echoed and "pings: @ou_1" in echoed
    assert TOKEN not in echoed and SECRET not in echoed


# --- rate limits ----------------------------------------------------------------------------------


def test_sixth_message_within_a_second_is_11232_and_not_counted():
    with FakeFeishuRobot(TOKEN, rate_limit=100) as fake:
        codes = [post(fake.url, card()).json()["code"] for _ in range(6)]
        time.sleep(1.05)
        after = post(fake.url, card()).json()["code"]

    assert codes == [0, 0, 0, 0, 0, 11232]
    assert after == 0  # the per-second limit does not block the robot
    assert len(fake.messages) == 6


def test_messages_spaced_a_fifth_of_a_second_apart_pass():
    with FakeFeishuRobot(TOKEN) as fake:
        codes = []
        for _ in range(7):
            codes.append(post(fake.url, card()).json()["code"])
            time.sleep(0.21)

    assert codes == [0] * 7


def test_minute_limit_blocks_everything_for_block_s():
    with FakeFeishuRobot(TOKEN, rate_limit=3, window_s=60, block_s=0.6, per_second=0) as fake:
        codes = [post(fake.url, card()).json()["code"] for _ in range(4)]
        blocked = post(fake.url, card()).json()
        wrong_token = post(f"{fake.base_url}/open-apis/bot/v2/hook/other", card()).json()["code"]
        time.sleep(0.7)
        after = post(fake.url, card()).json()["code"]

    assert codes == [0, 0, 0, 11232]
    assert blocked == {"code": 11232, "data": {}, "msg": "frequency limited"}
    assert wrong_token == 19001  # the token is checked first
    assert after == 0 and len(fake.messages) == 4


def test_defaults_are_feishus_limits():
    assert (fake_feishu.RATE_LIMIT_PER_WINDOW, fake_feishu.RATE_LIMIT_PER_SECOND) == (100, 5)
    assert (fake_feishu.WINDOW_S, fake_feishu.MAX_BODY_BYTES, fake_feishu.SIGN_SKEW_S) == (60.0, 20_000, 3600)
    with pytest.raises(ValueError):
        FakeFeishuRobot(TOKEN, per_second=-1)


def test_reset_clears_the_per_second_window(robot):
    for _ in range(5):
        post(robot.url, card())
    robot.reset()

    assert code_of(post(robot.url, card())) == 0 and len(robot.messages) == 1


# --- failure modes --------------------------------------------------------------------------------


def test_errcode_mode_answers_with_the_given_http_status(robot):
    robot.set_mode("errcode", errcode=9499, errmsg="too many request", http_status=400)
    response = post(robot.url, card())

    assert response.status_code == 400
    assert response.json() == {"code": 9499, "data": {}, "msg": "too many request"}
    assert robot.requests[-1]["http_status"] == 400 and robot.requests[-1]["errcode"] == 9499
    assert robot.messages == []


def test_errcode_mode_defaults_to_http_200_and_reset_restores_ok(robot):
    robot.set_mode("errcode", errcode=11232, errmsg="frequency limited")
    response = post(robot.url, card())
    robot.reset()

    assert response.status_code == 200 and response.json()["code"] == 11232
    assert code_of(post(robot.url, card())) == 0


def test_control_endpoint_takes_http_status(robot):
    control = requests.post(
        f"{robot.base_url}/_control",
        json={"mode": "errcode", "errcode": 19022, "http_status": 403},
        timeout=5,
    )

    assert control.json() == {"ok": True, "mode": "errcode"}
    assert post(robot.url, card()).status_code == 403


@pytest.mark.parametrize("mode, status", [("http500", 500), ("garbage", 200)])
def test_inherited_failure_modes(robot, mode, status):
    robot.set_mode(mode)
    response = post(robot.url, card())

    assert response.status_code == status
    with pytest.raises(ValueError):
        response.json()


def test_nothing_is_deduplicated(robot):
    for _ in range(2):
        post(robot.url, card())

    assert len(robot.wait_for_messages(2, timeout=2)) == 2
