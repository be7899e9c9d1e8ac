"""The fake robots' inbox page (``GET /``): what the group received, newest first, drawn as the
client draws it, without the webhook's credentials; and ``--messages-file`` bringing earlier
messages back after a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser

import pytest
import requests

import airflow_ext.channels.base
import airflow_ext.channels.dingtalk
from airflow_ext.alert import AlertKind
from airflow_ext.channels import fake_class
from airflow_ext.channels.dingtalk import DingTalkRobot
from airflow_ext.config import DingTalkSettings
from airflow_ext.fake_robot import FakeRobot, message_appender, read_messages_file
from tests.conftest import REPO_ROOT, ROBOT_KEYWORD, ROBOT_SECRET, ROBOT_TOKEN, counting_robot
from tests.test_render import make_alert

pytestmark = pytest.mark.version_free

MOBILE = "13800000000"
TIMEOUTS = dict(connect_timeout_s=2.0, read_timeout_s=2.0)
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"
EARLIER = 1_764_158_400.0  # 2025-11-26 12:00 UTC: when messages loaded from a file came


class Page(HTMLParser):
    """The inbox as a browser builds it: the messages' texts in page order, the scripts' sources."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.messages: list[str] = []
        self.scripts: list[str] = []
        self.images = 0
        self._in_message = 0
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag == "article" and "inbox-message" in classes:
            self.messages.append("")
            self._in_message = 1
        elif self._in_message and tag not in ("br", "hr", "img"):
            self._in_message += 1
        self.images += tag == "img"
        if tag == "script":
            self.scripts.append("")
            self._in_script = True

    def handle_endtag(self, tag):
        if self._in_message:
            self._in_message -= 1
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_message:
            self.messages[-1] += data
        if self._in_script:
            self.scripts[-1] += data


def inbox(robot: FakeRobot, path: str = "/") -> str:
    answer = requests.get(robot.base_url + path, timeout=5)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")
    return answer.text


def send(robot: FakeRobot | str, alert) -> None:
    """``alert`` as the DingTalk channel sends it, to ``robot`` or a webhook URL."""
    url = robot if isinstance(robot, str) else robot.url
    channel = DingTalkRobot(
        DingTalkSettings(bot_url=url, secret=ROBOT_SECRET, keyword=ROBOT_KEYWORD, at_mobiles=(MOBILE,))
    )
    assert channel.post(channel.body_for(alert), **TIMEOUTS)["errcode"] == 0


def assert_no_credentials(text: str, *credentials: str) -> None:
    for credential in credentials:
        assert credential not in text
    assert "access_token" not in text and "/robot/send" not in text


def test_the_inbox_lists_exactly_the_accepted_messages_newest_first():
    with counting_robot() as robot:
        send(robot, make_alert(task_id="extract", kind=AlertKind.RETRY, try_number=1))
        refused = requests.post(
            robot.url, json={"msgtype": "text", "text": {"content": "Airflow"}}, timeout=5
        )
        assert refused.json()["errcode"] == 310000  # unsigned: refused, not in the inbox
        send(robot, make_alert(task_id="load_orders"))

        page = Page(inbox(robot))

    assert len(page.messages) == 2
    assert "load_orders" in page.messages[0] and "final failure" in page.messages[0]
    assert "extract" in page.messages[1] and "will retry" in page.messages[1]
    for shown in page.messages:
        assert f"pinged @{MOBILE}" in shown


def test_inbox_and_root_are_the_same_page():
    with counting_robot() as robot:
        send(robot, make_alert())

        assert Page(inbox(robot, "/inbox")).messages == Page(inbox(robot, "/")).messages


def test_an_empty_inbox_says_so():
    with FakeRobot() as robot:
        page = inbox(robot)

    assert Page(page).messages == [] and "No messages yet" in page


def test_hostile_content_is_shown_as_text():
    with counting_robot() as robot:
        send(robot, make_alert(task_id=f"t{HOSTILE}", exception_message=HOSTILE))

        text = inbox(robot)
        page = Page(text)

    (shown,) = page.messages
    assert HOSTILE in shown
    assert page.images == 0
    (own_script,) = page.scripts  # the page's own refresh, and nothing from the message
    assert "alert" not in own_script


@pytest.mark.parametrize("channel", ["dingtalk", "wecom", "feishu", "slack"])
def test_no_page_shows_the_webhooks_credentials(channel):
    token = {"slack": "T0SECRET1/B0SECRET2/topSecretWebhookPart99"}.get(channel, "tok-c7a91e0f5b2d4388")
    bodies = {
        "dingtalk": {"msgtype": "markdown", "markdown": {"title": "Airflow", "text": "**Airflow** failed"}},
        "wecom": {"msgtype": "markdown", "markdown": {"content": "**Airflow** failed"}},
        "feishu": {"msg_type": "text", "content": {"text": "Airflow failed"}},
        "slack": {"text": "*Airflow* failed"},
    }
    with fake_class(channel)(token) as robot:
        webhook = robot.url
        assert requests.post(webhook, json=bodies[channel], timeout=5).status_code == 200
        text = inbox(robot)

    assert "Airflow" in Page(text).messages[0]
    assert_no_credentials(text, token, *token.split("/"), webhook)


def test_a_signed_robots_inbox_shows_neither_token_nor_secret():
    with counting_robot() as robot:
        send(robot, make_alert())
        text = inbox(robot)

    assert len(Page(text).messages) == 1
    assert_no_credentials(text, ROBOT_TOKEN, ROBOT_SECRET)


def test_without_markdown_it_the_inbox_shows_the_console_text(monkeypatch):
    monkeypatch.setitem(sys.modules, "markdown_it", None)  # importing it raises ImportError
    for module in ("airflow_ext.channels.base.preview", "airflow_ext.channels.dingtalk.preview"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.delattr(airflow_ext.channels.base, "preview", raising=False)
    monkeypatch.delattr(airflow_ext.channels.dingtalk, "preview", raising=False)
    with counting_robot() as robot:
        send(robot, make_alert(exception_message=HOSTILE))
        text = inbox(robot)

    page = Page(text)
    (shown,) = page.messages
    # the markdown as sent, escaped by the channel: shown as text, never as markup
    assert "DingTalk robot message (markdown)" in shown and r"\<script\>alert(1)\</script\>" in shown
    assert page.images == 0 and len(page.scripts) == 1
    assert 'class="dingbot-msg' not in text
    assert_no_credentials(text, ROBOT_TOKEN, ROBOT_SECRET)


def test_the_robot_module_imports_without_markdown_it():
    code = (
        "import sys; sys.modules['markdown_it'] = None\n"
        "import airflow_ext.fake_robot, airflow_ext.channels.slack.fake\n"
        "assert not [name for name in sys.modules if name.endswith('.preview')], sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- earlier messages from --messages-file -----------------------------------------------------


def test_read_messages_file_keeps_the_records_and_leaves_out_broken_lines(tmp_path):
    path = tmp_path / "messages.jsonl"
    with FakeRobot(on_message=message_appender(str(path))) as robot:
        for n in range(2):
            requests.post(robot.url, json={"msgtype": "text", "text": {"content": f"m{n}"}}, timeout=5)
        kept = robot.messages
    with path.open("a", encoding="utf-8") as fh:
        fh.write('["not a record"]\n{"body": {"msgtype": "text"}}\n{"body": {"msgtype": "te')  # cut short

    assert read_messages_file(str(path)) == kept
    assert read_messages_file(str(tmp_path / "missing.jsonl")) == []


def test_loaded_messages_come_before_new_ones_and_count_toward_no_limit():
    earlier = [
        {
            "body": {"msgtype": "text", "text": {"content": f"old {n}"}},
            "received_at": EARLIER + n,
            "pinged": [],
        }
        for n in range(3)
    ]
    with FakeRobot(rate_limit=1) as robot:
        assert robot.load_messages([*earlier, {"no": "record"}]) == 3
        answer = requests.post(robot.url, json={"msgtype": "text", "text": {"content": "new"}}, timeout=5)
        assert answer.json()["errcode"] == 0
        page = Page(inbox(robot))

    assert [message["body"]["text"]["content"] for message in robot.messages] == [
        "old 0",
        "old 1",
        "old 2",
        "new",
    ]
    assert ["new" in shown for shown in page.messages] == [True, False, False, False]
    assert "old 0" in page.messages[-1]
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(EARLIER)) in page.messages[-1]


def test_the_cli_robot_shows_what_an_earlier_run_received(tmp_path):
    messages_file = tmp_path / "robot-messages.jsonl"
    with FakeRobot(ROBOT_TOKEN, ROBOT_SECRET, on_message=message_appender(str(messages_file))) as earlier:
        send(earlier, make_alert(task_id="from_the_demo"))
    port_file = tmp_path / "port"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONIOENCODING="utf-8")
    command = [sys.executable, "-m", "airflow_ext.fake_robot", "--port", "0", "--port-file", str(port_file)]
    command += ["--token", ROBOT_TOKEN, "--secret", ROBOT_SECRET, "--messages-file", str(messages_file)]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        base = f"http://127.0.0.1:{int(port_file.read_text())}"
        send(f"{base}/robot/send?access_token={ROBOT_TOKEN}", make_alert(task_id="after_the_restart"))
        page = Page(requests.get(base + "/", timeout=5).text)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert len(page.messages) == 2
    assert "after_the_restart" in page.messages[0] and "from_the_demo" in page.messages[1]
    assert [json.loads(line)["body"]["msgtype"] for line in messages_file.read_text().splitlines()] == [
        "markdown",
        "markdown",
    ]
    stdout = out.decode("utf-8")
    assert f"1 earlier message(s) loaded from {messages_file}" in stdout
    assert f"inbox: {base}/" in stdout
    assert ROBOT_TOKEN not in stdout + err.decode() and ROBOT_SECRET not in stdout + err.decode()
