"""Slack's messages as HTML (airflow_ext.channels.slack.preview): mrkdwn, spans at a word's edge,
and mentions are whom the webhook pings."""

from __future__ import annotations

import pytest

from airflow_ext.channels.slack import fake as fake_slack
from tests.channels.previews import shown

pytestmark = pytest.mark.version_free


@pytest.mark.parametrize(
    "text, verbatim",
    [
        ("<@U0ONCALL1> and <!here>", True),
        ("<!channel> <!subteam^S123|@oncall>", True),
        ("bare @here is a ping only where not verbatim", False),
        ("bare @here is text where verbatim", True),
        ("task text &lt;@U0ONCALL1&gt; and @\u2060here are text", False),  # as escape_mrkdwn writes it
    ],
)
def test_slack_mentions_are_whom_the_webhook_pings(text, verbatim):
    body = {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": verbatim}}]}

    page = shown("slack", body)

    pinged = fake_slack.inspect(body)["pinged"]
    shown_as = {"!subteam^S123": "@oncall"}
    assert page.mentions == [shown_as.get(who, f"@{who.lstrip('!')}") for who in pinged]


@pytest.mark.parametrize(
    "mrkdwn, tag, text",
    [
        ("*bold* words", "strong", "bold"),
        ("an _italic_ word", "em", "italic"),
        ("~struck~ out", "del", "struck"),
        ("run `airflow tasks test`", "code", "airflow tasks test"),
        ("```line one\nline two```", "pre", "line one line two"),
        ("> quoted line", "blockquote", "quoted line"),
        ("<https://airflow.example/log?a=1&amp;b=2|the log>", "a", "the log"),
    ],
)
def test_slack_mrkdwn_becomes_html(mrkdwn, tag, text):
    page = shown("slack", {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}]})

    assert text in page.texts(tag)


def test_slack_spans_need_an_edge():
    # mrkdwn draws a span only at a word's edge: an id with a star or underscore stays as it is.
    page = shown("slack", {"text": "task_a_b and 2*3*4"})

    assert "task_a_b and 2*3*4" in page.text and not page.tags & {"em", "strong"}
