"""airflow_ext.ui.message_html: a robot's message as HTML, the way the group's client shows it.

The fragments are read back with the standard library's HTML parser, as a browser would build
them: which elements there are, the text they show, the links and the highlighted mentions.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_ext import fake_robot
from airflow_ext.alert import AlertKind
from airflow_ext.channels.base import encode_body
from airflow_ext.channels.dingtalk import DingTalkRobot
from airflow_ext.channels.feishu import FeishuRobot
from airflow_ext.channels.slack import SlackRobot
from airflow_ext.channels.wecom import WeComRobot
from airflow_ext.config import DingTalkSettings, RobotSettings
from airflow_ext.digest import render_digests
from airflow_ext.fakes import feishu as fake_feishu
from airflow_ext.fakes import slack as fake_slack
from airflow_ext.fakes import wecom as fake_wecom
from airflow_ext.fakes.feishu import FakeFeishuRobot
from airflow_ext.fakes.slack import FakeSlackWebhook
from airflow_ext.fakes.wecom import FakeWeComRobot
from airflow_ext.ui.message_html import CHANNELS, MESSAGE_CSS, render_payload_html
from tests.test_render import make_alert

pytestmark = pytest.mark.version_free

MOBILE, OTHER_MOBILE = "13800000000", "13900000000"
HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(2)> **not bold** [x](javascript:alert(3))"
VOID = {"br", "hr", "img", "input", "meta", "link", "wbr"}


class Shown(HTMLParser):
    """What a fragment shows: its elements (tag, attributes, text inside), its visible text, the
    hrefs of its links and the texts of its highlighted mentions."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str], str]] = []
        self.text = ""
        self._open: list[list] = []
        self.feed(fragment)
        self.close()
        assert not self._open, f"unclosed elements: {[tag for tag, *_ in self._open]}"

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        if tag in VOID:
            self.elements.append((tag, attributes, ""))
        else:
            self._open.append([tag, attributes, ""])

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {name: value or "" for name, value in attrs}, ""))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self._open and self._open[-1][0] == tag, f"</{tag}> closes {self._open[-1:]}"
        self.elements.append(tuple(self._open.pop()))

    def handle_data(self, data):
        self.text += data
        for element in self._open:
            element[2] += data

    def texts(self, tag: str) -> list[str]:
        """The texts of the ``tag`` elements, white space collapsed as a browser shows it."""
        return [" ".join(text.split()) for name, _, text in self.elements if name == tag]

    @property
    def tags(self) -> set[str]:
        return {tag for tag, _, _ in self.elements}

    @property
    def hrefs(self) -> list[str]:
        return [attributes["href"] for tag, attributes, _ in self.elements if "href" in attributes]

    @property
    def mentions(self) -> list[str]:
        return [
            text
            for _, attributes, text in self.elements
            if "dingbot-msg__mention" in attributes.get("class", "")
        ]

    @property
    def is_raw(self) -> bool:
        return any("dingbot-msg--raw" in attributes.get("class", "") for _, attributes, _ in self.elements)


def shown(channel: str, payload) -> Shown:
    return Shown(render_payload_html(channel, payload))


def dingtalk_markdown(text: str, title: str = "Airflow failed: d.t", at: dict | None = None) -> dict:
    return {"msgtype": "markdown", "markdown": {"title": title, "text": text}, "at": at or {}}


def dingtalk_text(content: str, at: dict | None = None) -> dict:
    return {"msgtype": "text", "text": {"content": content}, "at": at or {}}


def assert_safe(page: Shown) -> None:
    """Nothing in the fragment runs: no script or image element, no event handler, no link but http(s)."""
    assert not page.tags & {"script", "img", "iframe", "object", "style"}
    for _, attributes, _ in page.elements:
        assert not [name for name in attributes if name.startswith("on")], attributes
    assert all(href.startswith(("http://", "https://")) for href in page.hrefs), page.hrefs


# --- markdown -------------------------------------------------------------------------------------


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


def test_a_word_joiner_keeps_wecom_markup_as_written():
    # The WeCom channel breaks "**bold**" and "<@id>" in task text with U+2060: shown as written,
    # without the invisible joiners (an id copied from the page is the id).
    content = "**DAG:** a*\u2060*\u2060b*\u2060*\u2060 <\u2060@zhangsan> x_\u2060_\u2060y"

    page = shown("wecom", {"msgtype": "markdown", "markdown": {"content": content}})

    assert page.texts("strong") == ["DAG:"]
    assert "a**b** <@zhangsan> x__y" in page.text and "\u2060" not in page.text
    assert page.mentions == []


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


# --- mentions -------------------------------------------------------------------------------------


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
    pinged, at_all = fake_robot._mentions(body)
    assert sorted(pinged) == sorted(highlighted) and not at_all


def test_dingtalk_at_all_is_shown_as_all():
    page = shown("dingtalk", dingtalk_markdown("everyone look", at={"isAtAll": True}))

    assert page.mentions == ["@all"]
    assert shown("dingtalk", dingtalk_markdown("everyone look", at={"isAtAll": False})).mentions == []


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


def test_feishu_lark_md_becomes_html():
    content = "**bold** *it* ~~gone~~ `code` [log](https://airflow.example/x)<br>next &#42;literal&#42;"
    body = {"msg_type": "interactive", "card": {"elements": [{"tag": "markdown", "content": content}]}}

    page = shown("feishu", body)

    assert page.texts("strong") == ["bold"] and page.texts("em") == ["it"] and page.texts("del") == ["gone"]
    assert page.texts("code") == ["code"] and page.hrefs == ["https://airflow.example/x"]
    assert "next *literal*" in page.text and "br" in page.tags


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
