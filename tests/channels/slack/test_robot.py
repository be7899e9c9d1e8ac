"""The Slack channel against the local webhook: the URL from a Connection, limits, escaping, and
HTTP status + body → retry decisions."""

from __future__ import annotations

import email.utils
import json
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from airflow_ext.alert import clean_text
from airflow_ext.channels.base.robot import encode_body
from airflow_ext.channels.slack import (
    DEFAULT_HOST,
    MAX_BLOCKS,
    MAX_BODY_BYTES,
    MAX_SECTION_CHARS,
    MIN_SEND_INTERVAL_S,
    MRKDWN,
    SlackRobot,
    escape_mrkdwn,
    retry_after_seconds,
    slack_chars,
    split_sections,
    validate_token,
    webhook_url,
)
from airflow_ext.channels.slack.fake import HOLES, FakeSlackWebhook, parse_mrkdwn
from airflow_ext.config import RobotSettings
from airflow_ext.digest import render_digests
from airflow_ext.errors import DeliveryError
from airflow_ext.render import RenderedMessage, largest_fitting
from tests.test_render import make_alert

TOKEN = "T0TEST123/B0TEST456/s3cr3tW3bh00kT0k3nXyZ12"
SECRET_PART = TOKEN.rsplit("/", 1)[1]
ONCALL = "U0ONCALL1"
CONN_ID = "slack_alerts"
TIMEOUTS = dict(connect_timeout_s=2.0, read_timeout_s=2.0)
#: The spans our own layout draws: the heading and the field names.
OWN_LABELS = {"DAG:", "Task:", "Run:", "Logical date:", "Try:", "Host:", "ValueError:", "Error:"}


@pytest.fixture
def webhook():
    with FakeSlackWebhook(access_token=TOKEN, burst=100, per_second=100.0) as fake:
        yield fake


def robot_for(fake_or_url, **overrides) -> SlackRobot:
    url = fake_or_url if isinstance(fake_or_url, str) else fake_or_url.url
    fields = dict(channel="slack", url=url, mentions=(ONCALL,), name=CONN_ID)
    fields.update(overrides)
    return SlackRobot(RobotSettings(**fields))


def send(robot: SlackRobot, alert=None) -> dict:
    return robot.post(robot.body_for(alert or make_alert()), **TIMEOUTS)


# -- the webhook from a Connection ------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, token, expected",
    [
        (DEFAULT_HOST, "T1/B2/abc", "https://hooks.slack.com/services/T1/B2/abc"),
        ("", "T1/B2/abc", "https://hooks.slack.com/services/T1/B2/abc"),
        ("hooks.slack.com/services/", "/T1/B2/abc/", "https://hooks.slack.com/services/T1/B2/abc"),
        ("http://127.0.0.1:8080/services", "T1/B2/abc", "http://127.0.0.1:8080/services/T1/B2/abc"),
        # a whole URL in the password wins over the host, as in SlackWebhookHook
        (
            "https://ignored.example",
            "https://hooks.slack.com/services/T1/B2/abc",
            "https://hooks.slack.com/services/T1/B2/abc",
        ),
    ],
)
def test_webhook_url_is_built_like_the_slack_providers_hook(host, token, expected):
    assert webhook_url(host, token) == expected


def test_webhook_url_from_host_and_token_reaches_the_local_webhook(webhook):
    url = webhook_url(f"{webhook.base_url}/services", TOKEN)

    assert url == webhook.url
    assert send(robot_for(url))["ok"] is True


@pytest.mark.parametrize(
    "token",
    [
        TOKEN,
        "T0AB/B0CD/xyz123",
        f"https://hooks.slack.com/services/{TOKEN}",
        f"http://127.0.0.1:9/services/{TOKEN}",
    ],
)
def test_well_formed_tokens_pass(token):
    assert validate_token(token) is None


@pytest.mark.parametrize(
    "token, words",
    [
        ("", "is empty"),
        ("T0AB/B0CD", "has 2 part(s)"),
        ("T0AB/B0CD/s3cr3tpart/extra", "has 4 part(s)"),
        ("T0AB/B0CD/s3cr3t part", "whitespace"),
        ("xoxb-123456-s3cr3tpart", "Slack API token"),
        ("services/T0AB/B0CD/s3cr3tpart", "part of the URL"),
        ("hooks.slack.com/services/T0AB/B0CD/s3cr3tpart", "part of the URL"),
        ("ftp://hooks.slack.com/services/T0AB/B0CD/s3cr3tpart", "not an http(s) URL"),
        ("https://hooks.slack.com/s3cr3tpart", "not a Slack webhook's"),
        ("t0ab/b0cd/s3cr3tpart", "not shaped like"),
    ],
)
def test_malformed_tokens_are_named_without_repeating_them(token, words):
    problem = validate_token(token)

    assert problem is not None and words in problem
    assert "s3cr3t" not in problem


def test_key_names_the_webhook_by_a_hash_of_its_token_only(webhook):
    first = robot_for(webhook)
    same_token_elsewhere = robot_for(f"https://hooks.slack.com/services/{TOKEN}")
    other = robot_for("https://hooks.slack.com/services/T0TEST123/B0TEST456/another0token")

    assert first.credential() == TOKEN
    assert first.key == same_token_elsewhere.key != other.key
    assert SECRET_PART not in first.key and SECRET_PART not in repr(first)


# -- success and the message ------------------------------------------------------------------------


def test_accepted_message_is_mrkdwn_sections_pinging_the_configured_member(webhook):
    answer = send(robot_for(webhook, keyword="ETL-Alarm"))

    assert answer == {"ok": True, "http_status": 200}
    (message,) = webhook.messages
    body = message["body"]
    assert message["pinged"] == [ONCALL] and message["at_all"] is False
    assert all(b["type"] == "section" and b["text"]["type"] == "mrkdwn" for b in body["blocks"])
    assert all(b["text"]["verbatim"] is True for b in body["blocks"])
    assert body["text"].startswith("[ETL-Alarm] Airflow failed:")  # the notification
    assert message["shown"].startswith("🔴 Airflow task failed · ETL-Alarm\n")  # a bold first line
    assert ["bold", "🔴 Airflow task failed · ETL-Alarm"] in message["formatted"]
    assert "Try: 3 of 3 (final failure)" in message["shown"]
    assert message["links"] == [
        ["http://airflow.example/dags/orders_daily/grid?tab=logs", "Open the task log"]
    ]
    assert body["unfurl_links"] is False


def test_at_all_pings_the_channel(webhook):
    send(robot_for(webhook, mentions=(), at_all=True))

    (message,) = webhook.messages
    assert message["pinged"] == ["!channel"] and message["at_all"] is True


def test_only_member_ids_ping_anything_else_is_shown(webhook):
    send(robot_for(webhook, mentions=(ONCALL, "@W0ENTERPRISE", "bad>id|<!here>", "<!channel>")))

    (message,) = webhook.messages
    assert message["pinged"] == [ONCALL, "W0ENTERPRISE"] and not message["at_all"]
    assert "@bad>id|<!here>" in message["shown"]


def test_success_is_only_http_200_with_ok(webhook):
    webhook.set_mode("garbage")  # HTTP 200, an HTML page: not Slack's answer

    with pytest.raises(DeliveryError) as caught:
        send(robot_for(webhook))

    assert caught.value.retryable and caught.value.http_status == 200 and not caught.value.throttled


# -- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, body, retryable, hint_words",
    [
        (400, "invalid_payload", False, "could not read the message"),
        (400, "user_not_found", False, "member ids (U…) configured for Connection 'slack_alerts'"),
        (400, "no_text", False, "no text"),
        (400, "invalid_blocks", False, "blocks"),
        (403, "action_prohibited", False, "Slack admin"),
        (403, "invalid_token", False, "token of Connection 'slack_alerts' is not valid"),
        (404, "channel_not_found", False, "channel no longer exists"),
        (404, "no_service", False, "webhook of Connection 'slack_alerts' is disabled, removed or not valid"),
        (410, "channel_is_archived", False, "archived"),
        (403, "something_new", False, "forbidden"),
        (302, "moved", False, "redirects"),
        (500, "rollup_error", True, "trouble on its side"),
        (503, "Service Unavailable", True, "trouble on its side"),
        (200, "not ok", True, "not Slack's"),
    ],
)
def test_refusals_are_classified_by_status_and_body(webhook, status, body, retryable, hint_words):
    webhook.set_mode("errcode", errcode=status, errmsg=body)

    with pytest.raises(DeliveryError) as caught:
        send(robot_for(webhook))

    err = caught.value
    assert (err.retryable, err.http_status, err.throttled, err.retry_after_s) == (
        retryable,
        status,
        False,
        None,
    )
    assert err.errmsg == body and hint_words in str(err)


def test_a_forced_429_is_throttled_with_its_retry_after(webhook):
    webhook.set_mode("errcode", errcode=429, errmsg="rate_limited")

    with pytest.raises(DeliveryError) as caught:
        send(robot_for(webhook))

    assert caught.value.throttled and caught.value.retryable and caught.value.retry_after_s == 30.0


def test_sending_faster_than_the_webhook_takes_is_throttled_for_the_time_it_says():
    with FakeSlackWebhook(access_token=TOKEN, burst=1, per_second=1.0) as fake:
        robot = robot_for(fake)
        send(robot)

        with pytest.raises(DeliveryError) as caught:
            send(robot)

    assert caught.value.throttled and caught.value.http_status == 429 and caught.value.retry_after_s == 1.0


def test_the_per_minute_limit_says_when_the_window_frees():
    with FakeSlackWebhook(access_token=TOKEN, burst=10, per_second=100.0, rate_limit=2, window_s=4.0) as fake:
        robot = robot_for(fake)
        send(robot)
        send(robot)

        with pytest.raises(DeliveryError) as caught:
            send(robot)

    assert caught.value.throttled and caught.value.retry_after_s in (3.0, 4.0)


def test_one_message_per_min_send_interval_is_never_throttled():
    with FakeSlackWebhook(access_token=TOKEN, burst=1, per_second=1.0) as fake:
        robot = robot_for(fake)
        for _ in range(3):  # paced like the deliverer: the interval counts from the answer
            send(robot)
            time.sleep(MIN_SEND_INTERVAL_S)

        assert len(fake.messages) == 3


@pytest.mark.parametrize(
    "path_token, status, body",
    [
        ("T0TEST123/B0TEST456/wrongSecret000000000000", 403, "invalid_token"),
        ("T0OTHER00/B0OTHER00/wrongSecret000000000000", 404, "no_service"),
        ("not-a-token", 400, "invalid_payload"),
    ],
)
def test_the_webhooks_own_token_refusals(webhook, path_token, status, body):
    with pytest.raises(DeliveryError) as caught:
        send(robot_for(f"{webhook.base_url}/services/{path_token}"))

    assert (caught.value.http_status, caught.value.errmsg, caught.value.retryable) == (status, body, False)
    assert webhook.messages == []


@pytest.mark.parametrize("mode, retryable", [("http500", True), ("hang", True)])
def test_server_trouble_and_timeouts_are_retryable(webhook, mode, retryable):
    webhook.set_mode(mode)
    robot = robot_for(webhook)

    with pytest.raises(DeliveryError) as caught:
        robot.post(robot.body_for(make_alert()), connect_timeout_s=1.0, read_timeout_s=0.5)

    assert caught.value.retryable is retryable


def test_errors_never_contain_the_token(webhook):
    robot = robot_for(webhook)
    webhook.set_mode("errcode", errcode=404, errmsg=f"<html>Not Found: /services/{TOKEN}</html>")
    with pytest.raises(DeliveryError) as echoed:
        send(robot)
    webhook.stop()  # connection refused
    with pytest.raises(DeliveryError) as refused:
        send(robot)

    for err in (echoed.value, refused.value):
        assert SECRET_PART not in str(err) and SECRET_PART not in repr(err.errmsg)
        assert "B0TEST456" not in str(err)
    assert refused.value.retryable and refused.value.__cause__ is None


@pytest.mark.parametrize(
    "header, expected",
    [
        ("1", 1.0),
        ("2.5", 2.5),
        ("0", 0.0),
        ("", None),
        (None, None),
        ("-1", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_header(header, expected):
    assert retry_after_seconds(header) == expected


def test_retry_after_as_an_http_date():
    now = 1_800_000_000.0
    assert retry_after_seconds(email.utils.formatdate(now + 7, usegmt=True), now=now) == pytest.approx(7.0)
    assert retry_after_seconds(email.utils.formatdate(now - 7, usegmt=True), now=now) == 0.0


# -- limits -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, sections",
    [
        ("x" * MAX_SECTION_CHARS, 1),
        ("x" * (MAX_SECTION_CHARS + 1), 2),
        ("🔴" * (MAX_SECTION_CHARS // 2), 1),  # an emoji is two UTF-16 units: counted as two
        ("🔴" * (MAX_SECTION_CHARS // 2 + 1), 2),
        ("a" * 1500 + "\n\n" + "b" * 1498, 1),
        ("a" * 1500 + "\n\n" + "b" * 1499, 2),
    ],
)
def test_sections_hold_at_most_3000_characters(text, sections):
    parts = split_sections(text)

    assert len(parts) == sections
    assert all(slack_chars(part) <= MAX_SECTION_CHARS for part in parts)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")


def test_a_split_never_cuts_an_escape_or_a_link():
    line = "x" * (MAX_SECTION_CHARS - 2) + "&amp;" + "y" * 10
    linked = "x" * (MAX_SECTION_CHARS - 5) + "<http://a.example/|log>" + "y"

    assert split_sections(line)[1].startswith("&amp;")
    assert split_sections(linked)[1].startswith("<http://a.example/|log>")


def test_a_quoted_line_split_across_sections_stays_quoted():
    parts = split_sections("> " + "z" * (2 * MAX_SECTION_CHARS))

    assert len(parts) == 3 and all(part.startswith("> ") for part in parts)


def test_fits_tells_the_truth_at_the_body_limit(webhook):
    robot = robot_for(webhook)

    def body(n: int) -> bytes:
        return encode_body(robot.payload(RenderedMessage("t", "x" * n)))

    n = largest_fitting(0, MAX_BODY_BYTES, lambda k: len(body(k)) <= MAX_BODY_BYTES)

    assert robot.fits(RenderedMessage("t", "x" * n)) and not robot.fits(RenderedMessage("t", "x" * (n + 1)))
    assert MAX_BODY_BYTES - 100 < len(body(n)) <= MAX_BODY_BYTES  # a section adds ~70 bytes
    robot.post(body(n), **TIMEOUTS)
    assert len(webhook.messages) == 1


def test_fits_counts_blocks():
    class Unbounded(SlackRobot):
        MAX_BODY_BYTES = 10**9

    robot = Unbounded(RobotSettings(channel="slack", url=f"https://hooks.slack.com/services/{TOKEN}"))
    paragraph = "p" * MAX_SECTION_CHARS

    assert robot.fits(RenderedMessage("t", "\n\n".join([paragraph] * MAX_BLOCKS)))
    assert not robot.fits(RenderedMessage("t", "\n\n".join([paragraph] * (MAX_BLOCKS + 1))))


def test_long_cjk_traceback_comes_out_within_every_limit(webhook):
    traceback = "\n".join(f"第{i}行：数据库连接失败" for i in range(5000)) + "\nValueError: 最后一行"
    robot = robot_for(webhook)

    body = robot.body_for(make_alert(exception_message="失败" * 20_000, traceback=traceback))

    assert MAX_BODY_BYTES - 200 < len(body) <= MAX_BODY_BYTES
    payload = json.loads(body)
    assert len(payload["blocks"]) <= MAX_BLOCKS
    assert all(slack_chars(b["text"]["text"]) <= MAX_SECTION_CHARS for b in payload["blocks"])
    assert robot.post(body, **TIMEOUTS)["ok"]
    (message,) = webhook.messages
    assert "Try: 3 of 3 (final failure)" in message["shown"]  # the header is never cut
    assert message["pinged"] == [ONCALL]


def test_long_traceback_keeps_its_tail(webhook):
    traceback = "\n".join(f"frame {i}" for i in range(20_000)) + "\nValueError: the last line"
    robot = robot_for(webhook)

    send(robot, make_alert(traceback=traceback))

    (message,) = webhook.messages
    assert message["quoted"][-1] == "ValueError: the last line"
    assert "frame 0\n" not in message["shown"]


# -- hostile text -----------------------------------------------------------------------------------

HOSTILE = [
    "<@U0ATTACKER> <!channel> <!here> <!everyone> <!subteam^S123|@team>",
    "@channel @here @everyone @U0ATTACKER",
    "<http://evil.example|click me> <https://evil.example> [x](http://evil.example) http://evil.example",
    "*bold* _italic_ ~strike~ `code` ```block``` **double** __under__",
    "> not a quote\n>> nor this\n  > nor this",
    '&amp; &lt;@U0ATTACKER&gt; &#60;!channel&#62; <b>html</b> <at user_id="all"></at> # heading',
    ":skull: :white_check_mark: a*b*c x_y_z",
    "\r> after a carriage return\u2028> after a line separator",
]


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize(
    "field", ["exception_message", "traceback", "dag_id", "task_id", "run_id", "hostname"]
)
def test_hostile_text_shows_as_written_and_does_nothing(webhook, hostile, field):
    alert = make_alert(**{field: hostile})

    send(robot_for(webhook), alert)

    (message,) = webhook.messages
    assert message["pinged"] == [ONCALL] and not message["at_all"]
    assert [url for url, _ in message["links"]] == ["http://airflow.example/dags/orders_daily/grid?tab=logs"]
    assert message["emoji"] == []
    spans = {text for kind, text in message["formatted"]}
    assert all(kind == "bold" for kind, _ in message["formatted"])
    assert spans - OWN_LABELS == {"🔴 Airflow task failed"}
    if field == "traceback":
        assert message["quoted"] == hostile.split("\n")
    else:
        assert message["quoted"] == make_alert().traceback.split("\n")
        for line in hostile.split("\n"):
            assert clean_text(line) in message["shown"]
    assert "<@U0ATTACKER>" not in json.dumps(message["body"]) and "<!channel>" not in json.dumps(
        message["body"]
    )


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("*_~`<>&@!|:#>-\n \r\u2028xU0{}[]()")) | st.characters(), max_size=60
    )
)
def test_escaped_text_draws_nothing_and_shows_itself(text):
    assume(not set(text) & HOLES)  # the fake's own placeholders
    parsed = parse_mrkdwn(escape_mrkdwn(text), verbatim=False)  # even where Slack auto-parses

    assert parsed["pinged"] == [] and parsed["links"] == [] and parsed["formatted"] == []
    assert parsed["quoted"] == [] and parsed["emoji"] == []
    assert parsed["shown"] == clean_text(text).replace("\u2060", "")


def test_the_fake_sees_what_escaping_prevents():
    """The hostile cases above can fail: unescaped, the same text pings, links and formats."""
    parsed = parse_mrkdwn("\n".join(HOSTILE), verbatim=False)

    assert {"U0ATTACKER", "!channel", "!here", "!everyone"} <= set(parsed["pinged"])
    assert "http://evil.example" in {url for url, _ in parsed["links"]}
    assert {"bold", "italic", "strike", "code", "code_block"} <= {kind for kind, _ in parsed["formatted"]}
    assert "not a quote" in parsed["quoted"] and "skull" in parsed["emoji"]


def test_digests_use_the_slack_markup(webhook):
    robot = robot_for(webhook)
    alerts = [
        make_alert(task_id=f"task_{i}*", log_url=f"http://airflow.example/log?task={i}&try=1")
        for i in range(30)
    ]

    (digest,) = render_digests(
        alerts, fits=robot.fits, at_mobiles=robot.mention_ids(), markup=robot.MARKUP, max_messages=1
    )
    robot.post(encode_body(robot.payload(digest.message)), **TIMEOUTS)

    (message,) = webhook.messages
    assert len(digest.alerts) == 30 and message["pinged"] == [ONCALL]
    assert [label for _, label in message["links"]] == ["log"] * 30
    assert message["links"][0][0] == "http://airflow.example/log?task=0&try=1"
    assert "• task_0* · try 3 of 3 · failed · ValueError · on worker-7 · log" in message["shown"]


def test_markup_is_slacks():
    assert MRKDWN.bold("DAG:") == "*DAG:*"
    assert (
        MRKDWN.link("log", "http://a.example/x?a=1&b=<2>|3 4")
        == "<http://a.example/x?a=1&amp;b=%3C2%3E%7C3%204|log>"
    )
    assert MRKDWN.mention(ONCALL) == f"<@{ONCALL}>" and MRKDWN.mention("!channel") == "<!channel>"
    assert MRKDWN.heading("a*b") == "*a\u2060*\u2060b*"


@pytest.mark.parametrize(
    "host, password, expected",
    [
        (None, TOKEN, f"https://hooks.slack.com/services/{TOKEN}"),
        ("hooks.slack.com/services", TOKEN, f"https://hooks.slack.com/services/{TOKEN}"),
        (
            "https://ignored.example",
            f"https://hooks.slack.com/services/{TOKEN}",
            f"https://hooks.slack.com/services/{TOKEN}",
        ),
    ],
)
def test_a_slackwebhook_connection_becomes_this_channels_robot(host, password, expected):
    from airflow_ext.config import RobotConnection, robot_settings_from_connection

    conn = RobotConnection(CONN_ID, "slackwebhook", host, password, {"timeout": 30})
    robot = SlackRobot(robot_settings_from_connection(conn))

    assert (
        robot.settings.channel == "slack" and robot.settings.url == expected and robot.credential() == TOKEN
    )


def test_a_malformed_password_is_named_without_repeating_it():
    from airflow_ext.config import RobotConnection, robot_settings_from_connection
    from airflow_ext.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        robot_settings_from_connection(RobotConnection(CONN_ID, "slackwebhook", None, "T0AB/s3cr3tpart", {}))

    assert CONN_ID in str(caught.value) and "has 2 part(s)" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
