"""The Feishu channel against the local bot: signing, limits, escaping, and code → retry decisions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_ext.alert import AlertKind, clean_text
from airflow_ext.channels import feishu
from airflow_ext.channels.feishu import (
    DEFAULT_HOST,
    LARK_HOST,
    LARK_MD,
    MAX_BODY_BYTES,
    FeishuRobot,
    escape_lark_md,
    is_retryable_code,
    is_throttled,
    sign,
    unescape_lark_md,
    validate_token,
    webhook_url,
)
from airflow_ext.channels.feishu.fake import FakeFeishuRobot, render_lark_md
from airflow_ext.config import RobotSettings
from airflow_ext.digest import render_digests
from airflow_ext.errors import DeliveryError
from airflow_ext.render import RenderedMessage
from tests.test_render import make_alert

pytestmark = pytest.mark.version_free

TIMEOUTS = dict(connect_timeout_s=2.0, read_timeout_s=2.0)
TOKEN = "3c9e1a7b-2d4f-4b8e-9a6c-5f0e1d2c3b4a"
SECRET = "fsSEC-9d8c7b6a5f4e3d2c1b0a"
KEYWORD = "Airflow"
CONFIGURED = "ou_7d8a6e6df7621556ce0d21922b676706"
LOG_URL = "http://airflow.example/dags/orders_daily/grid?tab=logs"
CONN_ID = "ml_feishu"


def settings_for(fake: FakeFeishuRobot, **overrides) -> RobotSettings:
    fields = dict(
        channel="feishu",
        url=fake.url,
        secret=SECRET,
        keyword=KEYWORD,
        mentions=(CONFIGURED,),
        name=CONN_ID,
    )
    fields.update(overrides)
    return RobotSettings(**fields)


@pytest.fixture
def fake():
    with FakeFeishuRobot(TOKEN, secret=SECRET, keyword=KEYWORD) as robot:
        yield robot


def sent(fake: FakeFeishuRobot, alert=None, **overrides) -> dict:
    channel = FeishuRobot(settings_for(fake, **overrides))
    answer = channel.post(channel.body_for(alert or make_alert()), **TIMEOUTS)
    assert answer["code"] == 0
    return fake.messages[-1]


# --- signing --------------------------------------------------------------------------------------


def test_sign_matches_feishus_definition():
    # Feishu: key = timestamp + "\n" + secret, HMAC-SHA256 over an empty message, base64.
    expected = base64.b64encode(hmac.new(b"1700000000\nSECabc", b"", hashlib.sha256).digest()).decode()
    dingtalk_style = base64.b64encode(
        hmac.new(b"SECabc", b"1700000000\nSECabc", hashlib.sha256).digest()
    ).decode()

    assert sign("SECabc", 1700000000) == expected == sign("SECabc", "1700000000")
    assert sign("SECabc", 1700000000) != dingtalk_style
    assert len(expected) == feishu.SIGN_CHARS


def test_request_puts_seconds_and_signature_in_the_body(fake, monkeypatch):
    channel = FeishuRobot(settings_for(fake))
    monkeypatch.setattr("airflow_ext.channels.feishu.robot.time.time", lambda: 1_700_000_000.9)

    url, body = channel.request(channel.body_for(make_alert()))

    payload = json.loads(body)
    assert url == fake.url and "?" not in url
    assert payload["timestamp"] == "1700000000"  # a string of seconds, not milliseconds
    assert (
        payload["sign"]
        == base64.b64encode(hmac.new(f"1700000000\n{SECRET}".encode(), b"", hashlib.sha256).digest()).decode()
    )
    assert payload["msg_type"] == "interactive"


def test_each_attempt_gets_a_fresh_signature(fake, monkeypatch):
    channel = FeishuRobot(settings_for(fake))
    clock = iter([1_700_000_000.0, 1_700_000_001.0])
    monkeypatch.setattr("airflow_ext.channels.feishu.robot.time.time", lambda: next(clock))
    body = channel.body_for(make_alert())

    first, second = (json.loads(channel.request(body)[1]) for _ in range(2))

    assert (first["timestamp"], second["timestamp"]) == ("1700000000", "1700000001")
    assert first["sign"] != second["sign"]


def test_without_a_secret_nothing_is_added(fake):
    channel = FeishuRobot(settings_for(fake, secret=None))
    body = channel.body_for(make_alert())

    assert channel.request(body) == (fake.url, body)
    assert "timestamp" not in json.loads(body) and "sign" not in json.loads(body)


def test_signed_card_is_accepted_with_keyword_and_mention(fake):
    message = sent(fake)

    assert message["signed"] and message["pinged"] == [CONFIGURED] and not message["at_all"]
    card = message["body"]["card"]
    assert message["body"]["msg_type"] == "interactive"
    assert card["header"]["title"] == {
        "tag": "plain_text",
        "content": "Airflow failed: orders_daily.load_orders",
    }
    assert card["header"]["template"] == "red"
    (element,) = card["elements"]
    assert element["tag"] == "div" and element["text"]["tag"] == "lark_md"
    assert f"<at id={CONFIGURED}></at>" in element["text"]["content"]
    assert message["links"] == [LOG_URL]


def test_wrong_secret_is_refused_for_good(fake):
    channel = FeishuRobot(settings_for(fake, secret="fsSEC-wrong"))

    with pytest.raises(DeliveryError) as caught:
        channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    assert caught.value.errcode == 19021 and not caught.value.retryable and not caught.value.throttled
    assert CONN_ID in str(caught.value) and "clock" in str(caught.value)


def test_missing_keyword_is_refused():
    with FakeFeishuRobot(TOKEN, keyword="ETL-Alarm") as fake:
        with_keyword = FeishuRobot(settings_for(fake, secret=None, keyword="ETL-Alarm"))
        without = FeishuRobot(settings_for(fake, secret=None, keyword=None))

        assert with_keyword.post(with_keyword.body_for(make_alert()), **TIMEOUTS)["code"] == 0
        with pytest.raises(DeliveryError) as caught:
            without.post(without.body_for(make_alert()), **TIMEOUTS)

    assert caught.value.errcode == 19024 and "keyword" in str(caught.value)


# --- mentions and the card -----------------------------------------------------------------------


def test_at_all_pings_everyone_with_the_card_form(fake):
    message = sent(fake, mentions=(), at_all=True)

    assert message["at_all"] is True and message["pinged"] == ["all"]
    assert message["body"]["card"]["elements"][0]["text"]["content"].endswith("<at id=all></at>")


def test_mention_ids_add_all_once():
    def ids(mentions, at_all):
        return FeishuRobot(
            RobotSettings(
                channel="feishu", url=webhook_url(DEFAULT_HOST, TOKEN), mentions=mentions, at_all=at_all
            ),
            session=object(),
        ).mention_ids()

    assert ids(("ou_1", "ou_2"), False) == ("ou_1", "ou_2")
    assert ids(("ou_1",), True) == ("ou_1", "all")
    assert ids(("all", "ou_1", "ou_1"), True) == ("all", "ou_1")


def test_a_retry_has_an_orange_header(fake):
    message = sent(fake, alert=make_alert(kind=AlertKind.RETRY, try_number=1))

    assert message["body"]["card"]["header"]["template"] == "orange"
    assert message["body"]["card"]["header"]["title"]["content"].startswith("Airflow retry:")


def test_card_shows_what_an_engineer_needs(fake):
    message = sent(fake)

    shown = message["rendered"]
    for expected in (
        "DAG: orders_daily",
        "Task: load_orders",
        "Run: scheduled__2026-11-20T00:00:00+00:00",
        "Try: 3 of 3 (final failure)",
        "ValueError: orders table is empty",
        '┃   File "dag.py", line 3',
        "Open the task log",
        f"@{CONFIGURED}",
    ):
        assert expected in shown
    assert message["formatting"] == ["bold", "link", "mention"]


# --- limits ---------------------------------------------------------------------------------------


def test_constants():
    assert FeishuRobot.MAX_BODY_BYTES == MAX_BODY_BYTES == 20_000
    assert FeishuRobot.RATE_LIMIT_PER_MINUTE == 100
    assert 1 / FeishuRobot.MIN_SEND_INTERVAL_S <= feishu.RATE_LIMIT_PER_SECOND
    assert FeishuRobot.THROTTLED_PAUSE_S == 60.0 and FeishuRobot.MARKUP is LARK_MD


@pytest.mark.parametrize("secret", [SECRET, None], ids=["signed", "unsigned"])
def test_long_cjk_traceback_comes_out_within_the_limit(secret):
    with FakeFeishuRobot(TOKEN, secret=secret, keyword=KEYWORD) as robot:
        channel = FeishuRobot(settings_for(robot, secret=secret))
        traceback = "\n".join(f"  文件 “任务{i}.py”, 第 {i} 行，在 <模块> 中：失败_{i}" for i in range(5000))
        alert = make_alert(exception_message="失败" * 20_000, traceback=traceback)

        body = channel.body_for(alert)
        _, sent_body = channel.request(body)

        assert MAX_BODY_BYTES - 200 < len(sent_body) <= MAX_BODY_BYTES
        assert channel.post(body, **TIMEOUTS)["code"] == 0
    text = json.loads(body)["card"]["elements"][0]["text"]["content"]
    assert "**Try:** 3 of 3" in text and text.endswith(f"<at id={CONFIGURED}></at>")
    assert robot.messages[0]["rendered"].count("失败") > 100


def test_fits_is_exact_at_the_boundary(fake):
    for secret in (SECRET, None):
        channel = FeishuRobot(settings_for(fake, secret=secret))
        base = RenderedMessage("t", "")
        overhead = len(channel.request(feishu.encode_body(channel.payload(base)))[1])
        at_limit = RenderedMessage("t", "x" * (MAX_BODY_BYTES - overhead))

        _, body = channel.request(feishu.encode_body(channel.payload(at_limit)))
        assert len(body) == MAX_BODY_BYTES and channel.fits(at_limit)
        assert not channel.fits(RenderedMessage("t", at_limit.text + "x"))


def test_body_of_exactly_the_limit_is_accepted_by_the_bot():
    with FakeFeishuRobot(TOKEN, secret=SECRET) as robot:
        channel = FeishuRobot(settings_for(robot, keyword=None))
        overhead = len(channel.request(feishu.encode_body(channel.payload(RenderedMessage("t", ""))))[1])
        message = RenderedMessage("t", "y" * (MAX_BODY_BYTES - overhead))

        assert channel.post(feishu.encode_body(channel.payload(message)), **TIMEOUTS)["code"] == 0
        with pytest.raises(DeliveryError) as caught:
            channel.post(
                feishu.encode_body(channel.payload(RenderedMessage("t", message.text + "y"))), **TIMEOUTS
            )

    assert caught.value.errcode == 19036 and not caught.value.retryable


def test_messages_at_the_send_interval_are_not_throttled():
    with FakeFeishuRobot(TOKEN) as robot:
        channel = FeishuRobot(settings_for(robot, secret=None, keyword=None))
        body = channel.body_for(make_alert())
        for _ in range(7):
            started = time.monotonic()
            channel.post(body, **TIMEOUTS)
            time.sleep(max(0.0, FeishuRobot.MIN_SEND_INTERVAL_S - (time.monotonic() - started)))

    assert len(robot.messages) == 7


# --- answers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, msg, status, retryable, throttled, words",
    [
        (11232, "frequency limited", 200, True, True, "throttled"),
        (9499, "too many request", 400, True, True, "throttled"),
        (9499, "Bad Request", 200, False, False, "could not read"),
        (9499, "Bad Request", 400, False, False, "could not read"),
        (19001, "param invalid: incoming webhook access token invalid", 200, False, False, "hook token"),
        (19007, "Bot Not Enabled", 200, False, False, "disabled"),
        (19021, "sign match fail", 200, False, False, "secret"),
        (19022, "Ip Not Allowed", 200, False, False, "IP allow-list"),
        (19024, "Key Words Not Found", 200, False, False, "keyword"),
        (19036, "too large", 200, False, False, "larger"),
        (12345, "something new", 200, False, False, "refused"),
        (0, "success", 500, True, False, "HTTP 500"),
    ],
)
def test_codes_are_classified(fake, code, msg, status, retryable, throttled, words):
    fake.set_mode("errcode", errcode=code, errmsg=msg, http_status=status)
    channel = FeishuRobot(settings_for(fake))

    with pytest.raises(DeliveryError) as caught:
        channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    error = caught.value
    assert (error.errcode, error.http_status, error.retryable, error.throttled) == (
        code,
        status,
        retryable,
        throttled,
    )
    assert error.errmsg == msg and words in str(error)


@pytest.mark.parametrize(
    "code, msg, retryable, throttled",
    [
        (11232, "", True, True),
        (9499, "Too Many Request", True, True),
        (9499, "Bad Request", False, False),
        (19021, "", False, False),
        (1, "", False, False),
    ],
)
def test_retry_decision_table(code, msg, retryable, throttled):
    assert is_retryable_code(code, msg) is retryable and is_throttled(code, msg) is throttled


@pytest.mark.parametrize(
    "mode, retryable, status",
    [("http500", True, 500), ("garbage", True, 200)],
)
def test_answers_without_a_code(fake, mode, retryable, status):
    fake.set_mode(mode)
    channel = FeishuRobot(settings_for(fake))

    with pytest.raises(DeliveryError) as caught:
        channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    assert (caught.value.retryable, caught.value.errcode, caught.value.http_status) == (
        retryable,
        None,
        status,
    )


def test_legacy_status_code_alone_is_not_success():
    # Feishu documents StatusCode as redundant, and has sent StatusCode 0 beside an error code.
    assert feishu._code_of({"StatusCode": 0, "StatusMessage": "success"}) is None
    assert feishu._code_of({"StatusCode": 0, "code": 9499}) == 9499
    assert feishu._code_of({"code": True}) is None and feishu._code_of(["code"]) is None


def test_wrong_token_names_the_connection_not_the_token():
    with FakeFeishuRobot(TOKEN) as robot:
        channel = FeishuRobot(
            settings_for(robot, url=webhook_url(robot.base_url, "wrong-token-123"), secret=None)
        )
        with pytest.raises(DeliveryError) as caught:
            channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    assert caught.value.errcode == 19001 and not caught.value.retryable
    assert repr(CONN_ID) in str(caught.value) and "wrong-token-123" not in str(caught.value)


def test_errors_never_contain_token_secret_or_url(fake):
    channel = FeishuRobot(settings_for(fake))
    url = fake.url
    fake.stop()  # connection refused

    with pytest.raises(DeliveryError) as caught:
        channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    for secret in (TOKEN, SECRET, url):
        assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert caught.value.retryable and caught.value.__cause__ is None and caught.value.__suppress_context__
    assert TOKEN not in repr(channel) and SECRET not in repr(channel.settings)


# --- the Connection -------------------------------------------------------------------------------


def test_webhook_url_for_feishu_and_lark():
    assert webhook_url(DEFAULT_HOST, TOKEN) == f"https://open.feishu.cn/open-apis/bot/v2/hook/{TOKEN}"
    assert webhook_url(LARK_HOST + "/", TOKEN) == f"https://open.larksuite.com/open-apis/bot/v2/hook/{TOKEN}"


def test_credential_is_the_token_and_names_the_robot():
    def robot(token):
        return FeishuRobot(
            RobotSettings(channel="feishu", url=webhook_url(DEFAULT_HOST, token)), session=object()
        )

    assert robot(TOKEN).credential() == TOKEN
    assert robot(TOKEN).key == robot(TOKEN).key != robot("other-token").key
    assert TOKEN not in robot(TOKEN).key


@pytest.mark.parametrize(
    "token, problem",
    [
        (TOKEN, None),
        ("abcDEF123_-.~", None),
        (f"https://open.feishu.cn/open-apis/bot/v2/hook/{TOKEN}", "not the webhook URL"),
        (f"open.feishu.cn/open-apis/bot/v2/hook/{TOKEN}", "not the webhook URL"),
        (f"hook/{TOKEN}", "not the webhook URL"),
        ("abc def", "spaces or URL characters"),
        ("abc?x=1", "spaces or URL characters"),
        ("abc/def", "spaces or URL characters"),
        ("abc%20", "spaces or URL characters"),
    ],
)
def test_validate_token(token, problem):
    found = validate_token(token)

    assert (found is None) if problem is None else (problem in found and token not in found)


# --- hostile text ---------------------------------------------------------------------------------

HOSTILE = [
    "<at id=all></at>",
    '<at user_id="all">所有人</at>',
    f"<at id={CONFIGURED}></at> <at ids=ou_1,ou_2></at>",
    "<@U123> <!channel> @all @13800000000",
    "[x](http://evil.example) ![img](img_v2_1) [call](tel://110)",
    "<http://evil.example|x> <a href='http://evil.example'>x</a> <link url='http://evil.example'>x</link>",
    "**bold** __bold__ *it* _it_ ~~strike~~ `code` ```block```",
    "# heading\n> quote\n- item\n+ item\n1. one\n2) two\n---\n| a | b |",
    "<font color='red'>red</font> <text_tag color='red'>tag</text_tag> <br> <person id='ou_1'></person>",
    "<b>html</b> <script>alert(1)</script> &lt;at id=all&gt; &#60;at id=all&#62; &amp;",
    ":OK: :THUMBSUP::DONE: http://evil.example/x ${var} [差异化跳转]($urlVal)",
    "C:\\path\\to\\*file*_name_ \\*not escaped\\*",
    "a\r- b\r\n1) c",
]


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("where", ["exception_message", "traceback", "dag_id", "task_id"])
def test_hostile_text_is_shown_as_written_and_does_nothing(fake, hostile, where):
    message = sent(fake, alert=make_alert(**{where: hostile}))

    assert message["pinged"] == [CONFIGURED] and message["at_all"] is False
    assert message["links"] == [LOG_URL]
    assert message["formatting"] == ["bold", "link", "mention"]
    body_text = render_lark_md(message["body"]["card"]["elements"][0]["text"]["content"])["text"]
    for line in hostile.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        assert line in body_text.replace("\r\n", "\n").replace("\r", "\n")


def test_hostile_ids_are_plain_text_in_the_header(fake):
    message = sent(fake, alert=make_alert(dag_id="<at id=all></at>", task_id="**x**"))

    assert message["body"]["card"]["header"]["title"] == {
        "tag": "plain_text",
        "content": "Airflow failed: <at id=all></at>.**x**",
    }
    assert message["pinged"] == [CONFIGURED]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
    | st.text(alphabet="<>[]()*_~`#|$\\:&;-+.!= \n\r1aT@", max_size=60)
)
def test_escaped_text_renders_as_itself_and_is_inert(text):
    escaped = escape_lark_md(text)
    rendered = render_lark_md(escaped)

    assert rendered["text"] == clean_text(text)
    assert (rendered["mentions"], rendered["links"], rendered["formatting"]) == ([], [], [])
    assert unescape_lark_md(escaped) == clean_text(text)
    # Not one character Feishu documents as syntax is left raw (a "&" only starts a reference).
    assert re.fullmatch(r"(?:[^&]|&#\d+;)*", escaped, re.S)
    assert not set(re.sub(r"&#\d+;", "", escaped)) & set("<>[]*_~`#|$\\")


def test_escape_keeps_plain_text_and_costs_only_active_characters():
    assert escape_lark_md("orders table is empty") == "orders table is empty"
    assert escape_lark_md("ValueError: x (a, b)") == "ValueError: x (a, b)"
    assert escape_lark_md("a_b") == "a&#95;b"
    assert escape_lark_md("12:30 http://x") == "12&#58;30 http&#58;//x"


# --- digests --------------------------------------------------------------------------------------


def test_digest_of_many_failures_is_a_valid_card(fake):
    channel = FeishuRobot(settings_for(fake))
    alerts = [
        make_alert(task_id=f"task_{i}<at id=all></at>", log_url=f"{LOG_URL}&task_id=task_{i}")
        for i in range(60)
    ]

    digests = render_digests(
        alerts, keyword=KEYWORD, at_mobiles=channel.mention_ids(), fits=channel.fits, markup=channel.MARKUP
    )

    assert sum(len(digest.alerts) for digest in digests) == 60
    for digest in digests:
        assert channel.post(feishu.encode_body(channel.payload(digest.message)), **TIMEOUTS)["code"] == 0
    for message, digest in zip(fake.messages, digests):
        assert message["pinged"] == [CONFIGURED] and not message["at_all"]
        assert len(message["links"]) == len(digest.alerts)
        assert message["formatting"] == ["bold", "link", "mention"]
        for alert in digest.alerts:  # each failure named as written, its id inert
            assert alert.task_id in message["rendered"]
