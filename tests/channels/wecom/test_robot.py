"""The WeCom channel against the local robot: message type, limits, escaping, errcode → retry decisions."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_ext.alert import clean_text
from airflow_ext.channels import wecom
from airflow_ext.channels.wecom import (
    DEFAULT_HOST,
    MAX_MARKDOWN_CONTENT_BYTES,
    MAX_TEXT_CONTENT_BYTES,
    WECOM_MARKDOWN,
    WECOM_TEXT,
    WeComRobot,
    escape_wecom_markdown,
    is_retryable_errcode,
    validate_token,
    webhook_url,
)
from airflow_ext.channels.wecom import fake as fake_wecom
from airflow_ext.channels.wecom.fake import FakeWeComRobot
from airflow_ext.config import RobotSettings
from airflow_ext.digest import render_digests
from airflow_ext.errors import DeliveryError
from airflow_ext.render import RenderedMessage
from tests.test_render import make_alert

pytestmark = pytest.mark.version_free

TIMEOUTS = dict(connect_timeout_s=2.0, read_timeout_s=2.0)
KEY = "693a91f6-7e2b-4bc4-97a0-0ec2a1fa5aaa"
MOBILES = ("13800000000", "13900000000")
CONN = "ops_wecom"
WJ = "\u2060"


@pytest.fixture
def fake():
    with FakeWeComRobot(access_token=KEY) as robot:
        yield robot


def channel_for(fake: FakeWeComRobot, **overrides) -> WeComRobot:
    fields = dict(channel="wecom", url=fake.url, name=CONN)
    fields.update(overrides)
    return WeComRobot(RobotSettings(**fields))


def send(channel: WeComRobot, alert) -> dict:
    channel.post(channel.body_for(alert), **TIMEOUTS)
    return channel


def content_of(record: dict) -> str:
    body = record["body"]
    return body[body["msgtype"]]["content"]


def shown(text: str) -> str:
    """What the group sees: the word joiner is invisible, the look-alike reads as a backtick."""
    return text.replace(WJ, "").replace("\u02cb", "`")


# -- configuration -------------------------------------------------------------------------------


def test_webhook_url_is_built_from_host_and_key():
    assert webhook_url(DEFAULT_HOST, KEY) == f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY}"
    assert (
        webhook_url("http://proxy.corp:8080/wecom/", "k")
        == "http://proxy.corp:8080/wecom/cgi-bin/webhook/send?key=k"
    )
    assert webhook_url("", "k") == webhook_url("qyapi.weixin.qq.com", "k") == webhook_url(DEFAULT_HOST, "k")
    assert webhook_url(DEFAULT_HOST, "a&b=c").endswith("?key=a%26b%3Dc")  # a key never adds a parameter


def test_credential_is_the_key_and_names_the_robot_without_showing_it():
    channel = WeComRobot(RobotSettings(channel="wecom", url=webhook_url(DEFAULT_HOST, KEY), name=CONN))
    other = WeComRobot(RobotSettings(channel="wecom", url=webhook_url(DEFAULT_HOST, KEY + "x"), name=CONN))

    assert channel.credential() == KEY
    assert channel.key != other.key and KEY not in channel.key
    assert KEY not in repr(channel) and KEY not in repr(channel.settings)


@pytest.mark.parametrize(
    "token, problem",
    [
        (KEY, None),
        ("abc_DEF-123", None),
        ("", "is empty"),
        (f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={KEY}", "whole webhook URL"),
        (f"key={KEY}", "whole webhook URL"),
        (f"{KEY} ", "whitespace"),
        (f"{KEY}\n", "whitespace"),
        (f"{KEY}%20", "characters"),
        ("密钥", "characters"),
    ],
)
def test_validate_token_names_the_problem_but_never_the_key(token, problem):
    found = validate_token(token)

    if problem is None:
        assert found is None
    else:
        assert problem in found
        assert KEY not in found and (not token.strip() or token.strip() not in found)


def test_module_exports_what_the_config_reader_needs():
    assert wecom.DEFAULT_HOST == "https://qyapi.weixin.qq.com"
    assert callable(wecom.webhook_url) and callable(wecom.validate_token)
    # the fake is standard library only, so it keeps its own copy of the limits: they must agree
    assert fake_wecom.MAX_MARKDOWN_CONTENT_BYTES == MAX_MARKDOWN_CONTENT_BYTES == 4096
    assert fake_wecom.MAX_TEXT_CONTENT_BYTES == MAX_TEXT_CONTENT_BYTES == 2048
    assert fake_wecom.RATE_LIMIT_PER_WINDOW == WeComRobot.RATE_LIMIT_PER_MINUTE == 20
    assert fake_wecom.BLOCK_S == WeComRobot.THROTTLED_PAUSE_S == 60.0


# -- message type and mentions -------------------------------------------------------------------


def test_without_mentions_a_readable_markdown_message_pings_nobody(fake):
    send(channel_for(fake), make_alert())

    (record,) = fake.messages
    content = content_of(record)
    assert record["body"]["msgtype"] == "markdown" and set(record["body"]) == {"msgtype", "markdown"}
    assert content.startswith("### 🔴 Airflow task failed\n**DAG:** orders_daily\n")
    assert "**Try:** 3 of 3 (final failure)" in content
    assert "[Open the task log](http://airflow.example/dags/orders_daily/grid?tab=logs)" in content
    assert "> ValueError: orders table is empty" in content
    assert record["pinged"] == [] and record["at_all"] is False and record["signed"] is False


def test_with_mentions_a_text_message_pings_the_mobiles(fake):
    channel = channel_for(fake, mentions=MOBILES)

    send(channel, make_alert())

    (record,) = fake.messages
    assert record["body"]["msgtype"] == "text"
    assert record["body"]["text"]["mentioned_mobile_list"] == list(MOBILES)
    assert record["pinged"] == list(MOBILES) and record["at_all"] is False
    content = content_of(record)
    assert content.startswith("🔴 Airflow task failed\nDAG: orders_daily\nTask: load_orders\n")
    assert "**" not in content and "[Open" not in content  # no markup a text message would show raw
    assert "Open the task log: http://airflow.example/dags/orders_daily/grid?tab=logs" in content
    assert "13800000000" not in content  # WeCom names the mentioned people itself
    assert channel.MARKUP is WECOM_TEXT and WeComRobot.MARKUP is WECOM_MARKDOWN


@pytest.mark.parametrize(
    "mentions, at_all", [(("@all",), False), ((), True), (("13800000000", "@all"), True)], ids=str
)
def test_at_all_pings_everyone_through_the_text_message(fake, mentions, at_all):
    send(channel_for(fake, mentions=mentions, at_all=at_all), make_alert())

    (record,) = fake.messages
    assert record["body"]["msgtype"] == "text" and record["at_all"] is True
    assert record["body"]["text"]["mentioned_mobile_list"].count("@all") == 1
    assert record["pinged"] == [m for m in mentions if m != "@all"]


@pytest.mark.parametrize("mentions", [(), MOBILES], ids=["markdown", "text"])
def test_configured_keyword_is_carried_though_wecom_does_not_check_it(fake, mentions):
    send(channel_for(fake, mentions=mentions, keyword="ETL-Alarm"), make_alert())

    assert "ETL-Alarm" in content_of(fake.messages[0]).split("\n")[0]


# -- limits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mentions, limit", [((), 4096), (MOBILES, 2048)], ids=["markdown", "text"])
def test_fits_is_the_content_byte_limit_exactly(fake, mentions, limit):
    channel = channel_for(fake, mentions=mentions)
    at_limit = RenderedMessage("t", "数" * (limit // 3) + "x" * (limit % 3))  # 3 bytes a character

    assert len(at_limit.text.encode()) == limit
    assert channel.fits(at_limit)
    assert not channel.fits(RenderedMessage("t", at_limit.text + "x"))
    assert not channel.fits(RenderedMessage("t", at_limit.text[:-1] + "é"))  # 2 bytes, not 1 character
    # the fake agrees on both sides of the boundary
    channel.post(wecom.encode_body(channel.payload(at_limit)), **TIMEOUTS)
    with pytest.raises(DeliveryError) as caught:
        channel.post(
            wecom.encode_body(channel.payload(RenderedMessage("t", at_limit.text + "x"))), **TIMEOUTS
        )
    assert caught.value.errcode == 40058 and not caught.value.retryable


@pytest.mark.parametrize("mentions, limit", [((), 4096), (MOBILES, 2048)], ids=["markdown", "text"])
def test_a_long_cjk_traceback_is_cut_within_the_limit_keeping_header_message_and_tail(fake, mentions, limit):
    channel = channel_for(fake, mentions=mentions, keyword="ETL-Alarm")
    traceback = "\n".join(f"第{i}行：数据库连接失败" for i in range(5000)) + "\nValueError: 最后一行"
    alert = make_alert(exception_message="连接失败：" * 20, traceback=traceback, dag_id="数据" * 100)

    body = channel.body_for(alert)
    content = json.loads(body)[channel.msgtype]["content"]

    assert limit - 64 < len(content.encode("utf-8")) <= limit
    assert "数据" * 100 in content and "3 of 3 (final failure)" in content and "ETL-Alarm" in content
    assert "连接失败：" * 20 in content and "> ValueError: 最后一行\n" in content and "> 第0行" not in content
    channel.post(body, **TIMEOUTS)  # the fake accepts it
    assert fake.messages[0]["body"] == json.loads(body)


@pytest.mark.parametrize("mentions", [(), MOBILES], ids=["markdown", "text"])
def test_a_short_traceback_keeps_its_tail_when_the_message_is_long(fake, mentions):
    channel = channel_for(fake, mentions=mentions)
    traceback = "\n".join(f"frame {i}" for i in range(2000)) + "\nValueError: the last line"

    content = json.loads(channel.body_for(make_alert(traceback=traceback)))[channel.msgtype]["content"]

    assert "> frame 1999\n> ValueError: the last line\n\n" in content
    assert "> frame 0\n" not in content and "> … [truncated]\n" in content


# -- hostile text ----------------------------------------------------------------------------------

HOSTILE = {
    "mention": "<@zhangsan> <@U123> and <@all>",
    "font": '<font color="warning">fake alarm</font> <font color=info>',
    "html": '<a href="http://evil.example">x</a><script>alert(1)</script><at user_id="ou_1">x</at>',
    "slack": "<!channel> <http://evil.example|click> <@U123|bob>",
    "link": "click [here](http://evil.example/phish) ![img](http://evil.example/p.png) [a] (b)",
    "bold": "**DAG:** someone_else **bold** __init__ ~~strike~~ ***x***",
    "heading and quote": "# FAKE\n## FAKE\n> fake quote\n>> nested\n---\n===\n1. one\n2) two\n- item\n+ plus",
    "code": "`rm -rf /` ``x`` ```block```",
    "at": "@all @13800000000 @所有人 call",
    "backslash": "\\*not bold\\* \\<@U1\\> C:\\Users\\x\\",
}


def assert_inert(part: str) -> None:
    """Nothing of WeCom's markdown in ``part`` (text from the task, as sent)."""
    for token in (
        "<@",
        "<font",
        "<a",
        "<s",
        "<!",
        "<h",
        "](",
        "][",
        "**",
        "__",
        "~~",
        "`",
        "@a",
        "@1",
        "@所",
    ):
        assert token not in part, token
    for line in part.split("\n"):
        assert not re.match(r"^\s*([#>\-+=]|\d+[.)])", line), line


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_task_text_in_markdown_is_shown_as_written_and_takes_no_effect(fake, text):
    dag_id = "dag " + text.replace("\n", " ")  # an Airflow id has no line break
    alert = make_alert(
        dag_id=dag_id, exception_message=text, traceback=f"Traceback:\n{text}\nValueError: {text}"
    )

    send(channel_for(fake), alert)

    (record,) = fake.messages
    assert record["pinged"] == [] and record["at_all"] is False
    content = content_of(record)
    blocks = content.split("\n\n")
    message = blocks[1].removeprefix("**ValueError:** ")
    quoted = [line.removeprefix("> ") for line in blocks[2].split("\n")]
    assert shown(message) == text and shown("\n".join(quoted)) == alert.traceback
    assert_inert(message)
    assert_inert("\n".join(quoted))
    dag_line = content.split("\n")[1].removeprefix("**DAG:** ")
    assert shown(dag_line) == dag_id
    assert_inert(dag_line)
    assert content.count("](") == 1  # our own log link only


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_task_text_in_a_text_message_pings_only_the_configured_mobiles(fake, text):
    alert = make_alert(exception_message=text, traceback=f"Traceback:\n{text}")

    send(channel_for(fake, mentions=MOBILES), alert)

    (record,) = fake.messages
    assert record["pinged"] == list(MOBILES) and record["at_all"] is False
    content = content_of(record)
    assert f"ValueError: {text}" in shown(content)
    for token in ("<@", "<font", "<a", "@all", "@1", "@所"):
        assert token not in content, token


@pytest.mark.parametrize("markup", [WECOM_MARKDOWN, WECOM_TEXT], ids=["markdown", "text"])
def test_digests_of_hostile_alerts_fit_and_ping_nobody(fake, markup):
    channel = channel_for(fake, mentions=() if markup is WECOM_MARKDOWN else MOBILES)
    alerts = [
        make_alert(
            dag_id=f"d{i % 3}", task_id=f"t{i} <@U{i}> [x](http://evil) **b**", exception_type="E`@all`"
        )
        for i in range(60)
    ]

    digests = render_digests(
        alerts, keyword="KW", at_mobiles=channel.mention_ids(), fits=channel.fits, markup=channel.MARKUP
    )

    assert sum(len(d.alerts) for d in digests) == 60 and len(digests) >= 2
    for digest in digests:
        channel.post(wecom.encode_body(channel.payload(digest.message)), **TIMEOUTS)
    for record in fake.messages:
        content = content_of(record)
        assert len(content.encode("utf-8")) <= channel.max_content_bytes
        assert record["pinged"] == list(channel.mobiles) and not record["at_all"]
        assert "<@" not in content and "@all" not in content
        if markup is WECOM_MARKDOWN:
            assert content.count("](") == content.count("[log](http://airflow.example")  # only our links
        else:
            assert "log: http://airflow.example" in content


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(list("\\`*[]()<>#|~!-+=_@.\n\r\t 1a") + ["<@U1>", "<font", "**", "__", "all", "数"])
        | st.characters(exclude_characters="\u2060\u02cb"),
        max_size=80,
    ).map("".join)
)
def test_escaping_shows_the_text_as_written_and_leaves_nothing_active(text):
    escaped = escape_wecom_markdown(text)

    assert shown(escaped) == clean_text(text)
    for token in ("<@", "<f", "](", "**", "~~", "`", "@a"):
        assert token not in escaped
    assert not re.search(r"\\[!-/:-@\[-`{-~]", escaped)  # a backslash escapes nothing
    for line in re.split(r"\r\n|\r|\n", escaped):
        assert not re.match(r"^[ \t]*([#>\-+=]|\d+[.)])", line), line
    assert not re.search(r"(^|[^\w])__|__($|[^\w])", escaped.replace(WJ, "\u2061"))  # no run at an edge
    escaped.encode("utf-8")


# -- answers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "errcode, retryable, throttled, hint",
    [
        (45009, True, True, "throttled"),
        (-1, True, False, "busy"),
        (93000, False, False, f"webhook key of Connection '{CONN}' is not valid"),
        (40058, False, False, "longer than WeCom accepts"),
        (40008, False, False, "message type"),
        (44004, False, False, "empty"),
        (40001, False, False, "global error codes"),  # anything else: do not hammer the robot
    ],
)
def test_errcodes_are_classified_by_the_table(fake, errcode, retryable, throttled, hint):
    fake.set_mode("errcode", errcode=errcode, errmsg="from the robot")
    channel = channel_for(fake)

    with pytest.raises(DeliveryError) as caught:
        channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    err = caught.value
    assert (err.retryable, err.throttled, err.errcode, err.errmsg, err.http_status) == (
        retryable,
        throttled,
        errcode,
        "from the robot",
        200,
    )
    assert is_retryable_errcode(errcode) is retryable
    assert hint in str(err) and KEY not in str(err)


@pytest.mark.parametrize(
    "mode, retryable, status",
    [("http500", True, 500), ("garbage", True, 200)],
)
def test_answers_without_an_errcode_are_failures(fake, mode, retryable, status):
    fake.set_mode(mode)
    channel = channel_for(fake)

    with pytest.raises(DeliveryError) as caught:
        channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    assert (caught.value.retryable, caught.value.errcode, caught.value.http_status) == (
        retryable,
        None,
        status,
    )


def test_a_wrong_key_is_refused_permanently_naming_the_connection_not_the_key(fake):
    wrong = "00000000-1111-2222-3333-444444444444"
    channel = WeComRobot(RobotSettings(channel="wecom", url=fake.url.replace(KEY, wrong), name=CONN))

    with pytest.raises(DeliveryError) as caught:
        channel.post(channel.body_for(make_alert()), **TIMEOUTS)

    assert caught.value.errcode == 93000 and not caught.value.retryable
    assert CONN in str(caught.value) and wrong not in str(caught.value) and KEY not in repr(caught.value)
    assert fake.messages == []


def test_throttling_by_the_robot_pauses_it():
    with FakeWeComRobot(access_token=KEY, rate_limit=2, block_s=30) as fake:
        channel = channel_for(fake)
        body = channel.body_for(make_alert())
        channel.post(body, **TIMEOUTS)
        channel.post(body, **TIMEOUTS)  # no idempotency key on WeCom: a repeat is a new message

        for _ in range(2):  # the one over the limit, then the block
            with pytest.raises(DeliveryError) as caught:
                channel.post(body, **TIMEOUTS)
            assert caught.value.throttled and caught.value.retryable and caught.value.errcode == 45009

        assert len(fake.messages) == 2


def test_network_errors_never_contain_the_key(fake):
    channel = channel_for(fake)
    url = fake.url
    fake.stop()  # connection refused

    with pytest.raises(DeliveryError) as caught:
        channel.post(b"{}", **TIMEOUTS)

    assert caught.value.retryable
    assert KEY not in str(caught.value) and url not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
