"""Every channel's message previews (airflow_ext.channels.<name>.preview, through
airflow_ext.channels.base.preview.render_payload_html): what holds for all of them. Each channel's
own rules are tested in its folder (tests/channels/<name>/test_preview.py)."""

from __future__ import annotations

import json

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_ext import fake_robot
from airflow_ext.alert import AlertKind
from airflow_ext.channels.base.preview import CHANNELS, MESSAGE_CSS, render_payload_html
from airflow_ext.channels.base.robot import encode_body
from airflow_ext.channels.dingtalk import DingTalkRobot
from airflow_ext.channels.feishu import FeishuRobot
from airflow_ext.channels.feishu.fake import FakeFeishuRobot
from airflow_ext.channels.slack import SlackRobot
from airflow_ext.channels.slack.fake import FakeSlackWebhook
from airflow_ext.channels.wecom import WeComRobot
from airflow_ext.channels.wecom.fake import FakeWeComRobot
from airflow_ext.config import DingTalkSettings, RobotSettings
from airflow_ext.digest import render_digests
from tests.channels.previews import (
    HOSTILE,
    MOBILE,
    Shown,
    assert_safe,
    dingtalk_markdown,
    dingtalk_text,
    shown,
)
from tests.test_render import make_alert

pytestmark = pytest.mark.version_free


# --- nothing from a message runs ------------------------------------------------------------------


HOSTILE_BODIES = [
    ("dingtalk", dingtalk_markdown(HOSTILE, title=HOSTILE)),
    ("dingtalk", dingtalk_text(HOSTILE)),
    (
        "dingtalk",
        {"msgtype": "link", "link": {"title": HOSTILE, "text": HOSTILE, "messageUrl": "javascript:x"}},
    ),
    ("wecom", {"msgtype": "markdown", "markdown": {"content": HOSTILE}}),
    ("wecom", {"msgtype": "text", "text": {"content": HOSTILE, "mentioned_mobile_list": [HOSTILE]}}),
    (
        "feishu",
        {
            "msg_type": "interactive",
            "card": {
                "header": {"title": {"tag": "plain_text", "content": HOSTILE}, "template": '"><script>'},
                "elements": [{"tag": "div", "text": {"tag": "plain_text", "content": HOSTILE}}],
            },
        },
    ),
    ("feishu", {"msg_type": "text", "content": {"text": HOSTILE}}),
    ("slack", {"text": HOSTILE, "mrkdwn": False}),
    ("slack", {"blocks": [{"type": "section", "text": {"type": "plain_text", "text": HOSTILE}}]}),
]


@pytest.mark.parametrize("channel, body", HOSTILE_BODIES)
def test_markup_in_a_message_is_shown_as_text(channel, body):
    page = shown(channel, body)

    assert_safe(page)
    assert "<script>alert(1)</script>" in page.text and "<img src=x onerror=alert(2)>" in page.text
    assert not page.is_raw


@pytest.mark.parametrize(
    "channel, body",
    [
        ("dingtalk", dingtalk_markdown("[x](javascript:alert(1))")),
        ("dingtalk", dingtalk_markdown("[x](JaVaScRiPt:alert(1))")),
        ("dingtalk", dingtalk_markdown("<javascript:alert(1)>")),
        ("dingtalk", dingtalk_markdown("[x](data:text/html;base64,PHNjcmlwdD4=)")),
        ("dingtalk", dingtalk_markdown("[x](vbscript:msgbox)")),
        ("dingtalk", dingtalk_markdown("![x](javascript:alert(1))")),
        ("dingtalk", dingtalk_markdown("[x][r]\n\n[r]: javascript:alert(1)")),
        ("dingtalk", dingtalk_markdown("[x](file:///etc/passwd)")),
        ("dingtalk", dingtalk_markdown("[x](ftp://files.example/a) [y](mailto:a@b.example) <tel:123>")),
        ("dingtalk", dingtalk_markdown("[x](/admin) [y](//elsewhere.example/x)")),
        ("dingtalk", dingtalk_text("javascript:alert(1)")),
        (
            "dingtalk",
            {
                "msgtype": "actionCard",
                "actionCard": {"title": "t", "text": "x", "singleTitle": "go", "singleURL": "javascript:x"},
            },
        ),
        ("wecom", {"msgtype": "markdown", "markdown": {"content": "[x](javascript:alert(1))"}}),
        ("feishu", {"msg_type": "text", "content": {"text": "javascript:alert(1)"}}),
        (
            "feishu",
            {
                "msg_type": "interactive",
                "card": {
                    "elements": [
                        {
                            "tag": "markdown",
                            "content": "[x](javascript:alert(1)) <a href='javascript:x'>y</a>",
                        }
                    ]
                },
            },
        ),
        ("slack", {"text": "<javascript:alert(1)|x>"}),
        ("slack", {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "<javascript:x|y>"}}]}),
    ],
)
def test_only_web_links_are_clickable(channel, body):
    page = shown(channel, body)

    assert page.hrefs == []
    assert_safe(page)


# --- each channel's own messages ------------------------------------------------------------------


def _dingtalk_robot() -> DingTalkRobot:
    settings = DingTalkSettings(
        bot_url="https://oapi.dingtalk.com/robot/send?access_token=t0k",
        keyword="Airflow",
        at_mobiles=(MOBILE,),
    )
    return DingTalkRobot(settings)


def _robot(cls, channel: str, url: str, mentions=()):
    return cls(RobotSettings(channel=channel, url=url, mentions=mentions, name="conn", keyword="Airflow"))


ROBOTS = {
    "dingtalk": (_dingtalk_robot, f"@{MOBILE}"),
    "wecom markdown": (
        lambda: _robot(WeComRobot, "wecom", "https://q.example/cgi-bin/webhook/send?key=k"),
        None,
    ),
    "wecom text": (
        lambda: _robot(WeComRobot, "wecom", "https://q.example/cgi-bin/webhook/send?key=k", (MOBILE,)),
        f"@{MOBILE}",
    ),
    "feishu": (
        lambda: _robot(FeishuRobot, "feishu", "https://open.feishu.cn/open-apis/bot/v2/hook/h", ("ou_abc",)),
        "@ou_abc",
    ),
    "slack": (
        lambda: _robot(SlackRobot, "slack", "https://hooks.slack.com/services/T1/B2/abc", ("U0ONCALL1",)),
        "@U0ONCALL1",
    ),
}
ALERTS = {
    "failure": dict(),
    "retry": dict(kind=AlertKind.RETRY, try_number=1),
    "hostile": dict(task_id="load_<b>orders</b>_*x*", exception_message=HOSTILE + f" @{MOBILE}"),
}


@pytest.mark.parametrize("alert_name", sorted(ALERTS))
@pytest.mark.parametrize("robot_name", sorted(ROBOTS))
def test_each_channels_alert_shows_what_the_engineer_needs(robot_name, alert_name):
    make_robot, mention = ROBOTS[robot_name]
    robot = make_robot()
    alert = make_alert(**ALERTS[alert_name])

    page = shown(robot.CHANNEL, json.loads(robot.body_for(alert)))

    assert not page.is_raw
    assert_safe(page)
    for expected in (alert.task_id, alert.dag_id, alert.run_id, alert.exception_message):
        assert expected in page.text
    assert alert.log_url in page.hrefs
    assert page.mentions == ([mention] if mention else [])
    assert "\u2060" not in page.text


@pytest.mark.parametrize("robot_name", sorted(ROBOTS))
def test_each_channels_digest_shows_every_task(robot_name):
    robot = ROBOTS[robot_name][0]()
    alerts = [
        make_alert(task_id=f"task_{i}", log_url=f"http://airflow.example/log?task={i}") for i in range(5)
    ]
    (digest,) = render_digests(
        alerts, fits=robot.fits, at_mobiles=robot.mention_ids(), markup=robot.MARKUP, max_messages=1
    )

    page = shown(robot.CHANNEL, json.loads(encode_body(robot.payload(digest.message))))

    assert not page.is_raw
    for alert in alerts:
        assert alert.task_id in page.text and alert.log_url in page.hrefs


# --- every body a fake accepts --------------------------------------------------------------------

ACCEPTED = {
    "dingtalk": [
        dingtalk_text("Airflow text"),
        dingtalk_markdown("Airflow **md**"),
        {"msgtype": "link", "link": {"title": "Airflow", "text": "t", "messageUrl": "https://a.example/"}},
        {
            "msgtype": "actionCard",
            "actionCard": {"title": "Airflow", "text": "t", "singleTitle": "Open", "singleURL": "https://a/"},
        },
        {
            "msgtype": "actionCard",
            "actionCard": {
                "title": "Airflow",
                "text": "t",
                "btns": [{"title": "A", "actionURL": "https://a/"}],
            },
        },
        {"msgtype": "feedCard", "feedCard": {"links": [{"title": "Airflow", "messageURL": "https://a/"}]}},
    ],
    "wecom": [
        {"msgtype": "text", "text": {"content": "Airflow"}},
        {"msgtype": "markdown", "markdown": {"content": "**Airflow**"}},
        {"msgtype": "markdown_v2", "markdown_v2": {"content": "| a | b |\n|---|---|\n| Airflow | 2 |"}},
        {"msgtype": "image", "image": {"base64": "AAAA", "md5": "0" * 32}},
        {"msgtype": "news", "news": {"articles": [{"title": "Airflow", "url": "https://a/"}]}},
        {"msgtype": "file", "file": {"media_id": "m"}},
        {"msgtype": "voice", "voice": {"media_id": "m"}},
        {
            "msgtype": "template_card",
            "template_card": {"card_type": "text_notice", "main_title": {"title": "Airflow"}},
        },
    ],
    "feishu": [
        {"msg_type": "text", "content": {"text": 'Airflow <at user_id="ou_x">x</at>'}},
        {
            "msg_type": "post",
            "content": {
                "post": {
                    "zh_cn": {
                        "title": "Airflow",
                        "content": [
                            [
                                {"tag": "text", "text": "failed "},
                                {"tag": "a", "text": "log", "href": "https://a/"},
                                {"tag": "at", "user_id": "ou_x"},
                            ]
                        ],
                    }
                }
            },
        },
        {"msg_type": "image", "content": {"image_key": "img_x"}},
        {"msg_type": "share_chat", "content": {"share_chat_id": "oc_x"}},
        {
            "msg_type": "interactive",
            "card": json.dumps(
                {"elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "**Airflow**"}}]}
            ),
        },
        {
            "msg_type": "interactive",
            "card": {
                "schema": "2.0",
                "body": {"elements": [{"tag": "markdown", "content": "Airflow"}, {"tag": "hr"}]},
            },
        },
        {
            "msg_type": "interactive",
            "card": {
                "i18n_elements": {
                    "zh_cn": [
                        {
                            "tag": "div",
                            "fields": [
                                {"is_short": True, "text": {"tag": "lark_md", "content": "**Airflow**"}}
                            ],
                        },
                        {"tag": "note", "elements": [{"tag": "plain_text", "content": "note"}]},
                        {
                            "tag": "action",
                            "actions": [
                                {
                                    "tag": "button",
                                    "text": {"tag": "plain_text", "content": "Open"},
                                    "url": "https://a/",
                                }
                            ],
                        },
                    ]
                }
            },
        },
    ],
    "slack": [
        {"text": "Airflow"},
        {"text": "Airflow", "mrkdwn": False},
        {
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "Airflow"}},
                {"type": "divider"},
                {
                    "type": "section",
                    "fields": [{"type": "mrkdwn", "text": "*a*"}, {"type": "plain_text", "text": "b"}],
                },
                {
                    "type": "context",
                    "elements": [
                        {"type": "mrkdwn", "text": "ctx"},
                        {"type": "image", "image_url": "https://a/i.png", "alt_text": "i"},
                    ],
                },
                {"type": "image", "image_url": "https://a/i.png", "alt_text": "chart"},
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "text": {"type": "plain_text", "text": "Open"},
                            "url": "https://a/",
                        }
                    ],
                },
                {"type": "markdown", "text": "**Airflow** markdown"},
                {
                    "type": "rich_text",
                    "elements": [
                        {
                            "type": "rich_text_section",
                            "elements": [
                                {"type": "text", "text": "Airflow ", "style": {"bold": True}},
                                {"type": "user", "user_id": "U1"},
                                {"type": "link", "url": "https://a/", "text": "log"},
                            ],
                        },
                        {
                            "type": "rich_text_list",
                            "style": "bullet",
                            "elements": [
                                {"type": "rich_text_section", "elements": [{"type": "text", "text": "item"}]}
                            ],
                        },
                    ],
                },
            ]
        },
        {
            "attachments": [
                {
                    "color": "#f00",
                    "title": "Airflow",
                    "title_link": "https://a/",
                    "text": "*failed*",
                    "fields": [{"title": "DAG", "value": "d"}],
                }
            ]
        },
    ],
}
FAKE_ROBOTS = {
    "dingtalk": lambda: fake_robot.FakeRobot("t"),
    "wecom": lambda: FakeWeComRobot("k"),
    "feishu": lambda: FakeFeishuRobot("h", per_second=0),
    "slack": lambda: FakeSlackWebhook("T1/B2/abc", burst=100, per_second=100.0),
}
#: How each fake says it accepted a message.
ACCEPTED_ANSWER = {
    "dingtalk": lambda answer: answer.json()["errcode"] == 0,
    "wecom": lambda answer: answer.json()["errcode"] == 0,
    "feishu": lambda answer: answer.json()["code"] == 0,
    "slack": lambda answer: answer.text == "ok",
}


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_kind_of_message_a_fake_accepts_is_shown(channel):
    with FAKE_ROBOTS[channel]() as fake:
        for body in ACCEPTED[channel]:
            answer = requests.post(fake.url, data=json.dumps(body).encode(), timeout=5)
            assert answer.status_code == 200 and ACCEPTED_ANSWER[channel](answer), (body, answer.text)
        received = [message["body"] for message in fake.messages]
    assert len(received) == len(ACCEPTED[channel])

    for body in received:
        page = shown(channel, body)
        assert not page.is_raw, body
        assert_safe(page)
        assert page.text.strip(), body


# --- what is no message ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channel, payload",
    [
        ("teams", {"text": "<script>alert(1)</script>"}),
        ("dingtalk", {"msgtype": "nope", "nope": {"content": "<script>alert(1)</script>"}}),
        ("dingtalk", {"msgtype": "markdown", "markdown": "<script>alert(1)</script>"}),
        ("dingtalk", {"msgtype": "markdown", "markdown": {"text": ["<script>alert(1)</script>"]}}),
        ("dingtalk", ["<script>alert(1)</script>"]),
        ("dingtalk", None),
        ("wecom", {"msgtype": "unknown", "unknown": {"x": "<script>alert(1)</script>"}}),
        ("feishu", {"msg_type": "interactive", "card": "{not json <script>alert(1)</script>"}),
        ("feishu", {"msg_type": "interactive", "card": {"header": "<script>alert(1)</script>"}}),
        ("slack", {"blocks": "<script>alert(1)</script>"}),
        ("slack", {}),
        ("slack", "<script>alert(1)</script>"),
    ],
)
def test_what_is_no_message_of_its_channel_is_shown_as_json(channel, payload):
    page = shown(channel, payload)

    assert page.is_raw and page.tags == {"div", "pre"}
    if payload:
        assert "<script>alert(1)</script>" in page.text


def test_a_json_string_is_read_first():
    page = shown("dingtalk", json.dumps(dingtalk_markdown("**bold**")))

    assert not page.is_raw and page.texts("strong") == ["bold"]


def test_nesting_deeper_than_any_card_is_shown_as_json():
    element: dict = {"tag": "div", "text": {"tag": "plain_text", "content": "deep"}}
    for _ in range(200):
        element = {"tag": "column_set", "columns": [{"tag": "column", "elements": [element]}]}
    body = {"msg_type": "interactive", "card": {"elements": [element]}}

    assert shown("feishu", body).is_raw


_json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(
        ["<script>alert(1)</script>", "javascript:alert(1)", "**b**", "<at id=all></at>", "<@U1>"]
    ),
    st.text(max_size=30),
)
_keys = st.sampled_from(
    "msgtype msg_type text markdown content title card header elements tag blocks type fields "
    "attachments at atMobiles isAtAll mentioned_list post links messageURL url href".split()
)
_bodies = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(channel=st.sampled_from(CHANNELS), payload=st.dictionaries(_keys, _bodies, max_size=6))
def test_any_body_renders_safely_and_never_raises(channel, payload):
    assert_safe(shown(channel, payload))


def test_css_styles_every_class_the_fragments_use():
    fragments = [render_payload_html(channel, body) for channel in CHANNELS for body in ACCEPTED[channel]]
    fragments += [
        render_payload_html("dingtalk", dingtalk_markdown(f"@{MOBILE}", at={"atMobiles": [MOBILE]}))
    ]
    used = {
        name
        for fragment in fragments
        for _, attributes, _ in Shown(fragment).elements
        for name in attributes.get("class", "").split()
    }

    assert {"dingbot-msg", "dingbot-msg__body", "dingbot-msg__title", "dingbot-msg__mention"} <= used
    for name in used - {f"dingbot-msg--{channel}" for channel in CHANNELS}:
        assert f".{name}" in MESSAGE_CSS, name
