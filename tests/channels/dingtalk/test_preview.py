"""DingTalk's messages as HTML (airflow_ext.channels.dingtalk.preview): markdown without underscore
emphasis, titles, links, and mentions where the robot pings."""

from __future__ import annotations

import pytest

from airflow_ext.channels.dingtalk.fake import _mentions
from tests.channels.previews import MOBILE, OTHER_MOBILE, dingtalk_markdown, dingtalk_text, shown

pytestmark = pytest.mark.version_free


@pytest.mark.parametrize(
    "markdown, tag, text",
    [
        ("**DAG:** orders", "strong", "DAG:"),
        ("*slanted*", "em", "slanted"),
        ("#### 🔴 Airflow task failed", "h4", "🔴 Airflow task failed"),
        ("### heading three", "h3", "heading three"),
        ("- first\n- second", "li", "second"),
        ("1. first\n2. second", "ol", "first second"),
        ("> Traceback (most recent call last):", "blockquote", "Traceback (most recent call last):"),
        ("`load_orders`", "code", "load_orders"),
        ("[Open the task log](http://airflow.example/log?a=1&b=2)", "a", "Open the task log"),
    ],
)
def test_dingtalk_markdown_becomes_html(markdown, tag, text):
    page = shown("dingtalk", dingtalk_markdown(markdown))

    assert text in page.texts(tag)
    assert not page.is_raw


def test_links_keep_their_target_and_open_apart():
    page = shown("dingtalk", dingtalk_markdown("[log](https://airflow.example/log?a=1&b=2)"))

    ((_, attributes, _),) = [element for element in page.elements if element[0] == "a"]
    assert attributes["href"] == "https://airflow.example/log?a=1&b=2"
    assert attributes["target"] == "_blank" and "noopener" in attributes["rel"]


def test_title_is_shown_above_the_text():
    page = shown("dingtalk", dingtalk_markdown("body text", title="Airflow failed: orders.load"))

    assert page.text.index("Airflow failed: orders.load") < page.text.index("body text")


@pytest.mark.parametrize(
    "markdown, literal",
    [
        # What DingTalk shows as written: airflow_ext.render leaves these unescaped for that reason.
        ("a _word_ here", "_word_"),
        ("a __word__ here", "__word__"),
        ("scheduled__2026-11-20", "scheduled__2026-11-20"),
    ],
)
def test_dingtalk_has_no_underscore_emphasis(markdown, literal):
    page = shown("dingtalk", dingtalk_markdown(markdown))

    assert literal in page.text and not page.tags & {"em", "strong"}


@pytest.mark.parametrize(
    "at_mobiles, text, highlighted",
    [
        ([MOBILE], f"please look @{MOBILE}", [MOBILE]),
        ([MOBILE], f"please look {MOBILE}", []),  # no "@": DingTalk pings nobody
        ([], f"please look @{MOBILE}", []),  # not in atMobiles: text, no ping
        ([MOBILE, OTHER_MOBILE], f"@{OTHER_MOBILE} only", [OTHER_MOBILE]),
        ([MOBILE, OTHER_MOBILE], f"@{MOBILE} and @{OTHER_MOBILE}", [MOBILE, OTHER_MOBILE]),
        ([MOBILE], f"task text @\u2060{MOBILE}", []),  # escaped by the channel: pings nobody
        ([MOBILE], f"**@{MOBILE}**", [MOBILE]),
    ],
)
@pytest.mark.parametrize("make_body", [dingtalk_markdown, dingtalk_text])
def test_dingtalk_mentions_are_highlighted_where_the_robot_pings(make_body, at_mobiles, text, highlighted):
    body = make_body(text, at={"atMobiles": at_mobiles})

    page = shown("dingtalk", body)

    assert page.mentions == [f"@{who}" for who in highlighted]
    pinged, at_all = _mentions(body)
    assert sorted(pinged) == sorted(highlighted) and not at_all


def test_dingtalk_at_all_is_shown_as_all():
    page = shown("dingtalk", dingtalk_markdown("everyone look", at={"isAtAll": True}))

    assert page.mentions == ["@all"]
    assert shown("dingtalk", dingtalk_markdown("everyone look", at={"isAtAll": False})).mentions == []
