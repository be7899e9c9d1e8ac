"""The local Slack incoming webhook itself: its paths, answers, limits and what it says a message does.

Plain HTTP (requests), so that these tests check the fake, not the channel that talks to it.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from airflow_ext.channels.slack.fake import (
    MAX_BLOCKS,
    MAX_HEADER_CHARS,
    MAX_SECTION_CHARS,
    MAX_TEXT_CHARS,
    FakeSlackWebhook,
    parse_mrkdwn,
)

pytestmark = pytest.mark.version_free

TOKEN = "T0FAKE123/B0FAKE456/w3bh00kS3cr3tPart000000"
SECRET_PART = TOKEN.rsplit("/", 1)[1]


@pytest.fixture
def hook():
    with FakeSlackWebhook(access_token=TOKEN, burst=100, per_second=100.0) as fake:
        yield fake


def post(url: str, body) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=5)


def section(text: str, **extra) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, **extra}}


def test_success_is_http_200_with_ok(hook):
    answer = post(hook.url, {"text": "hello", "blocks": [section("*hi* <@U0AAA>", verbatim=True)]})

    assert (answer.status_code, answer.text) == (200, "ok")
    (record,) = hook.messages
    assert record["pinged"] == ["U0AAA"] and record["at_all"] is False and record["signed"] is False
    assert record["formatted"] == [["bold", "hi"]] and record["shown"] == "hi @U0AAA"
    assert record["notification"] == "hello"


@pytest.mark.parametrize(
    "path_token, status, body",
    [
        ("T0FAKE123/B0FAKE456/wrongSecret0000000000000", 403, "invalid_token"),  # this webhook, wrong secret
        ("T0FAKE123/B0OTHER00/w3bh00kS3cr3tPart000000", 404, "no_service"),  # no such webhook
        ("T0OTHER00/B0FAKE456/w3bh00kS3cr3tPart000000", 404, "no_service"),
        ("nonsense", 400, "invalid_payload"),
        ("", 400, "invalid_payload"),
    ],
)
def test_the_token_in_the_path_is_checked(hook, path_token, status, body):
    answer = post(f"{hook.base_url}/services/{path_token}", {"text": "hello"})

    assert (answer.status_code, answer.text) == (status, body)
    assert hook.messages == []


def test_get_is_not_allowed(hook):
    assert requests.get(hook.url, timeout=5).status_code == 405


@pytest.mark.parametrize(
    "body, status, error",
    [
        (b"not json", 400, "invalid_payload"),
        (b"\xff\xfe", 400, "invalid_payload"),
        ([1, 2], 400, "invalid_payload"),
        ({"text": 5}, 400, "invalid_payload"),
        ({"blocks": "x"}, 400, "invalid_blocks_format"),
        ({}, 400, "no_text"),
        ({"text": ""}, 400, "no_text"),
        ({"blocks": [section("x")] * (MAX_BLOCKS + 1)}, 400, "invalid_blocks"),
        ({"blocks": [section("x" * (MAX_SECTION_CHARS + 1))]}, 400, "invalid_blocks"),
        ({"blocks": [section("")]}, 400, "invalid_blocks"),
        ({"blocks": [{"type": "section"}]}, 400, "invalid_blocks"),
        ({"blocks": [{"type": "banner", "text": "x"}]}, 400, "invalid_blocks"),
        (
            {
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "h" * (MAX_HEADER_CHARS + 1)}}
                ]
            },
            400,
            "invalid_blocks",
        ),
        ({"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]}, 400, "invalid_blocks"),
        ({"blocks": [{"type": "context", "elements": []}]}, 400, "invalid_blocks"),
    ],
)
def test_invalid_messages_are_refused(hook, body, status, error):
    answer = post(hook.url, body)

    assert (answer.status_code, answer.text) == (status, error)
    assert hook.messages == []


@pytest.mark.parametrize(
    "body",
    [
        {"blocks": [section("x" * MAX_SECTION_CHARS)] * MAX_BLOCKS},  # every limit, reached exactly
        {"blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * MAX_HEADER_CHARS}}]},
        {"blocks": [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}]}]},
        {"blocks": [{"type": "divider"}, {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}]}]},
        {"text": "\u4e2d" * MAX_SECTION_CHARS},  # characters, not bytes
    ],
)
def test_messages_at_the_limits_are_accepted(hook, body):
    assert post(hook.url, body).text == "ok"
    assert len(hook.messages) == 1


def test_a_long_text_is_accepted_and_cut(hook):
    assert post(hook.url, {"text": "t" * (MAX_TEXT_CHARS + 5)}).text == "ok"

    (record,) = hook.messages
    assert record["text_truncated"] and len(record["body"]["text"]) == MAX_TEXT_CHARS


def test_a_burst_then_one_a_second_with_retry_after():
    with FakeSlackWebhook(access_token=TOKEN, burst=3, per_second=1.0) as fake:
        answers = [post(fake.url, {"text": f"m{i}"}) for i in range(4)]

        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[3].text == "rate_limited" and answers[3].headers["Retry-After"] == "1"
        time.sleep(1.05)
        assert post(fake.url, {"text": "later"}).status_code == 200
        assert len(fake.messages) == 4
        assert [r["http_status"] for r in fake.requests] == [200, 200, 200, 429, 200]


def test_the_rolling_window_caps_a_minute():
    with FakeSlackWebhook(access_token=TOKEN, burst=50, per_second=50.0, rate_limit=3, window_s=3.0) as fake:
        answers = [post(fake.url, {"text": f"m{i}"}) for i in range(4)]

        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[3].headers["Retry-After"] == "3"


def test_reset_empties_messages_and_the_rate_limit():
    with FakeSlackWebhook(access_token=TOKEN, burst=1, per_second=0.01) as fake:
        post(fake.url, {"text": "a"})
        assert post(fake.url, {"text": "b"}).status_code == 429

        requests.post(f"{fake.base_url}/_reset", timeout=5)

        assert fake.messages == [] and post(fake.url, {"text": "c"}).status_code == 200


@pytest.mark.parametrize(
    "mode, status, body",
    [
        ({"mode": "errcode", "errcode": 410, "errmsg": "channel_is_archived"}, 410, "channel_is_archived"),
        ({"mode": "errcode", "errcode": 429, "errmsg": "rate_limited"}, 429, "rate_limited"),
        ({"mode": "http500"}, 500, "internal server error"),
        ({"mode": "garbage"}, 200, "<html>oops</html>"),
    ],
)
def test_failure_modes_over_the_control_endpoint(hook, mode, status, body):
    assert requests.post(f"{hook.base_url}/_control", json=mode, timeout=5).json()["ok"]

    answer = post(hook.url, {"text": "x"})

    assert (answer.status_code, answer.text) == (status, body)
    if status == 429:
        assert answer.headers["Retry-After"] == "30"


def test_messages_over_http_and_no_token_anywhere(hook):
    echoed: list[str] = []
    with FakeSlackWebhook(access_token=TOKEN, echo=echoed.append) as fake:
        post(
            fake.url, {"text": "fallback", "blocks": [section("<http://x.example/?a=1&amp;b=2|log> <!here>")]}
        )
        listed = requests.get(f"{fake.base_url}/_messages", timeout=5).json()

    assert listed[0]["links"] == [["http://x.example/?a=1&b=2", "log"]] and listed[0]["at_all"]
    assert "[log] -> http://x.example/?a=1&b=2" in echoed[0] and "pings: !here" in echoed[0]
    for text in (json.dumps(listed), echoed[0]):
        assert SECRET_PART not in text and "B0FAKE456" not in text


# -- what mrkdwn draws ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, inner",
    [
        ("*bold*", "bold", "bold"),
        ("a _it_ b", "italic", "it"),
        ("(~gone~)", "strike", "gone"),
        ("run `ls`.", "code", "ls"),
        ("```x *not bold*```", "code_block", "x *not bold*"),
        ("*DAG:* orders", "bold", "DAG:"),
    ],
)
def test_spans_that_mrkdwn_draws(text, kind, inner):
    assert parse_mrkdwn(text)["formatted"] == [[kind, inner]]


@pytest.mark.parametrize(
    "text", ["a*b*c", "* x*", "*x *", "**", "snake_case_name", "2*3*4", "*x\ny*", "a\u2060*x*\u2060b"]
)
def test_markers_that_draw_nothing(text):
    assert parse_mrkdwn(text)["formatted"] == []


def test_markers_next_to_escapes_are_punctuation():
    assert parse_mrkdwn("&lt;*x*&gt;")["formatted"] == [["bold", "x"]]


def test_mentions_and_links():
    parsed = parse_mrkdwn(
        "<@U1> <@W2|ann> <!channel> <!here|here> <!subteam^S1|@ops> <#C1|general> <http://a.b|ab>"
    )

    assert parsed["pinged"] == ["U1", "W2", "!channel", "!here", "!subteam^S1"]
    assert parsed["links"] == [["#C1", "general"], ["http://a.b", "ab"]]
    assert parsed["shown"] == "@U1 ann @channel here @ops general ab"


def test_bare_mentions_and_urls_count_only_where_slack_parses_them():
    text = "@here look at http://a.example/x"

    assert parse_mrkdwn(text, verbatim=True)["pinged"] == [] and parse_mrkdwn(text)["links"] == []
    loose = parse_mrkdwn(text, verbatim=False)
    assert loose["pinged"] == ["!here"] and loose["links"] == [["http://a.example/x", ""]]


def test_verbatim_is_read_per_text_object_and_plain_text_pings_nobody(hook):
    post(
        hook.url,
        {
            "text": "@channel",  # the top-level text is parsed
            "blocks": [
                section("@here"),  # not verbatim: parsed
                section("@everyone", verbatim=True),
                {"type": "header", "text": {"type": "plain_text", "text": "<@U0PLAIN>"}},
            ],
        },
    )

    (record,) = hook.messages
    assert record["pinged"] == ["!here", "!channel"] and record["at_all"]


def test_quotes_escapes_and_emoji():
    parsed = parse_mrkdwn("> quoted\n&gt; also quoted\n\u2060&gt; not quoted\n:tada: &amp;")

    assert parsed["quoted"] == ["quoted", "also quoted"]
    assert parsed["emoji"] == ["tada"]
    assert parsed["shown"] == "quoted\nalso quoted\n> not quoted\n:tada: &"
