"""The fake DingTalk robot's inbox in a real browser (Debian's Chromium): two alerts sent by the
DingTalk channel, signed and with the keyword, drawn as the group's client draws them."""

from __future__ import annotations

import struct

import pytest

from airflow_ext.alert import AlertKind
from tests.browser import browser_fixture, page_fixture, screenshot  # noqa: F401 - fixtures
from tests.conftest import ROBOT_SECRET, ROBOT_TOKEN, counting_robot
from tests.test_fake_robot_inbox import MOBILE, send
from tests.test_render import make_alert

pytestmark = pytest.mark.version_free


def test_the_inbox_shows_both_alerts_rendered(page):
    with counting_robot() as robot:
        send(robot, make_alert(task_id="extract_orders", kind=AlertKind.RETRY, try_number=1))
        send(robot, make_alert(task_id="load_orders", exception_message="<b>orders</b> table is empty"))

        page.goto(robot.base_url + "/")
        messages = page.locator("article.inbox-message")
        assert messages.count() == 2
        newest, oldest = messages.nth(0), messages.nth(1)

        assert "load_orders" in newest.inner_text() and "extract_orders" in oldest.inner_text()
        for message in (newest, oldest):
            assert message.locator(".dingbot-msg__body h4").count() == 1  # the "####" heading
            assert message.locator(".dingbot-msg__body strong", has_text="DAG:").count() == 1
            assert message.locator(".dingbot-msg__body blockquote").count() == 1  # the traceback
            mention = message.locator(".dingbot-msg__body .dingbot-msg__mention")
            assert mention.inner_text() == f"@{MOBILE}"
            # highlighted: drawn in a colour of its own, not the text's
            mention_colour = mention.evaluate("element => getComputedStyle(element).color")
            text_colour = message.locator(".dingbot-msg__body").evaluate(
                "element => getComputedStyle(element).color"
            )
            assert mention_colour != text_colour
            assert message.locator("a", has_text="Open the task log").get_attribute("href") == (
                "http://airflow.example/dags/orders_daily/grid?tab=logs"
            )
        assert "<b>orders</b> table is empty" in newest.inner_text()
        assert newest.locator(".dingbot-msg__body b").count() == 0

        content = page.content()
        assert ROBOT_TOKEN not in content and ROBOT_SECRET not in content and "access_token" not in content
        shot = screenshot(page, "fake-robot-inbox")

    width, height = struct.unpack(">II", shot.read_bytes()[16:24])  # the PNG's IHDR
    assert width >= 800 and height >= 600
