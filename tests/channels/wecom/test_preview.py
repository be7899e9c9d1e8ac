"""WeCom's messages as HTML (airflow_ext.channels.wecom.preview): markup the channel broke with a
word joiner stays as written; mentions are whom the robot pings."""

from __future__ import annotations

import pytest

from airflow_ext.channels.wecom import fake as fake_wecom
from tests.channels.previews import MOBILE, shown

pytestmark = pytest.mark.version_free


def test_a_word_joiner_keeps_wecom_markup_as_written():
    # The WeCom channel breaks "**bold**" and "<@id>" in task text with U+2060: shown as written,
    # without the invisible joiners (an id copied from the page is the id).
    content = "**DAG:** a*\u2060*\u2060b*\u2060*\u2060 <\u2060@zhangsan> x_\u2060_\u2060y"

    page = shown("wecom", {"msgtype": "markdown", "markdown": {"content": content}})

    assert page.texts("strong") == ["DAG:"]
    assert "a**b** <@zhangsan> x__y" in page.text and "\u2060" not in page.text
    assert page.mentions == []


@pytest.mark.parametrize(
    "body",
    [
        {"msgtype": "markdown", "markdown": {"content": "look <@zhangsan> and <@lisi>"}},
        {"msgtype": "markdown", "markdown": {"content": "task text <\u2060@zhangsan>"}},
        {"msgtype": "text", "text": {"content": "look", "mentioned_mobile_list": [MOBILE, "@all"]}},
        {"msgtype": "text", "text": {"content": "look <@wangwu>", "mentioned_list": ["zhangsan"]}},
    ],
)
def test_wecom_mentions_are_whom_the_robot_pings(body):
    page = shown("wecom", body)

    pinged, at_all = fake_wecom.pinged_by(body)
    assert sorted(page.mentions) == sorted([f"@{who}" for who in pinged] + (["@all"] if at_all else []))
