"""Feishu's messages as HTML (airflow_ext.channels.feishu.preview): lark_md, and mentions are whom
the bot pings."""

from __future__ import annotations

import pytest

from airflow_ext.channels.feishu import fake as fake_feishu
from tests.channels.previews import shown

pytestmark = pytest.mark.version_free


@pytest.mark.parametrize(
    "content",
    [
        "look <at id=ou_abc></at> and <at ids=ou_d,ou_e></at>",
        "everyone <at id=all></at>",
        "shown as written: &#60;at id=all&#62;",
        'a text-message form in a card pings nobody: <at user_id="ou_x">x</at>',
    ],
)
def test_feishu_card_mentions_are_whom_the_bot_pings(content):
    body = {"msg_type": "interactive", "card": {"elements": [{"tag": "markdown", "content": content}]}}

    page = shown("feishu", body)

    assert page.mentions == [f"@{who}" for who in fake_feishu.inspect_message(body)["pinged"]]
    assert "<at" not in page.text or "&#60;" in content


def test_feishu_lark_md_becomes_html():
    content = "**bold** *it* ~~gone~~ `code` [log](https://airflow.example/x)<br>next &#42;literal&#42;"
    body = {"msg_type": "interactive", "card": {"elements": [{"tag": "markdown", "content": content}]}}

    page = shown("feishu", body)

    assert page.texts("strong") == ["bold"] and page.texts("em") == ["it"] and page.texts("del") == ["gone"]
    assert page.texts("code") == ["code"] and page.hrefs == ["https://airflow.example/x"]
    assert "next *literal*" in page.text and "br" in page.tags
