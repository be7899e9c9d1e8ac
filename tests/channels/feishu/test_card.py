"""Reading a Feishu card's layout (airflow_ext.channels.feishu.card), table-driven."""

from __future__ import annotations

import pytest

from airflow_ext.channels.feishu.card import card_elements

pytestmark = pytest.mark.version_free

ELEMENTS = [{"tag": "div", "text": {"tag": "lark_md", "content": "Airflow"}}]


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ({"elements": ELEMENTS}, ELEMENTS),
        ({"schema": "2.0", "body": {"elements": ELEMENTS}}, ELEMENTS),
        ({"i18n_elements": {"zh_cn": ELEMENTS, "en_us": []}}, ELEMENTS),
        ({"elements": "not a list", "body": {"elements": ELEMENTS}}, ELEMENTS),
        ({"body": "not a dict"}, None),
        ({"i18n_elements": {"zh_cn": "not a list"}}, None),
        ({}, None),
    ],
)
def test_card_elements_are_found_in_each_layout_feishu_accepts(card, expected):
    assert card_elements(card) == expected
