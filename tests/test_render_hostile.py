"""Hostile text from a task: whatever an exception, a traceback or an id holds, the request is valid
JSON within DingTalk's byte limit, nothing in it takes effect as markdown, HTML, a mention or a
template, and what is shown is exactly the head of the message and the tail of the traceback."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_ext.alert import Alert, AlertKind, clean_text
from airflow_ext.channels.dingtalk import MAX_BODY_BYTES, DingTalkRobot
from airflow_ext.channels.dingtalk.fake import _mentions
from airflow_ext.config import DingTalkSettings
from airflow_ext.errors import ConfigError
from airflow_ext.render import TRUNCATED, escape_markdown, unescape_markdown
from airflow_ext.template import MessageTemplate
from tests.test_render import make_alert

pytestmark = pytest.mark.version_free

CONFIGURED = ("13900000000",)
ACTIVE = set("\\`*[]<>#|~")


def robot(template: str | None = None, keyword: str | None = "Airflow") -> DingTalkRobot:
    settings = DingTalkSettings(
        bot_url="https://oapi.dingtalk.com/robot/send?access_token=t",
        at_mobiles=CONFIGURED,
        keyword=keyword,
        message_template=template,
    )
    return DingTalkRobot(settings, session=object())


def sent(alert: Alert, template: str | None = None) -> dict:
    body = robot(template).body_for(alert)
    assert len(body) <= MAX_BODY_BYTES
    return json.loads(body.decode("utf-8"))  # valid UTF-8, valid JSON


def unescaped_active(text: str) -> list[str]:
    """Markdown-active characters in ``text`` that no backslash escapes."""
    found, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] in ACTIVE:
            found.append(text[i])
        i += 1
    return found


def blocks(payload: dict) -> list[str]:
    return payload["markdown"]["text"].split("\n\n")


def shown_message(payload: dict, exception_type: str = "ValueError") -> str:
    """The exception message as shown, unescaped, without the cut marker."""
    if f"**{exception_type}**" in blocks(payload):
        return ""
    prefix = f"**{exception_type}:** "
    (block,) = [b for b in blocks(payload) if b.startswith(prefix)]
    text = "\n".join(block[len(prefix) :].split("  \n"))
    return unescape_markdown(text.removesuffix(TRUNCATED))


def shown_traceback(payload: dict) -> str | None:
    quoted = [b for b in blocks(payload) if b.startswith("> ")]
    if not quoted:
        return None
    lines = [line.removeprefix("> ") for line in quoted[0].split("  \n")]
    if lines[0] == TRUNCATED:
        lines = lines[1:]
    return unescape_markdown("\n".join(lines))


HOSTILE = {
    "markdown link": "click [here](http://evil.example/phish) now",
    "markdown image": "![pixel](http://evil.example/track.png)",
    "html": '<font color="red">fake</font><a href="http://evil.example">x</a><script>alert(1)</script>',
    "heading and quote": "# FAKE HEADING\n> fake quote\n---\n1. list\n- item\n===",
    "fake field": "oops\n**DAG:** someone_else  \n**Try:** 9 of 9",
    "mention of a number": "call @13800000000 and @13900000000 now",
    "mention of all": "@all @所有人 everybody",
    "jinja": "{{ 7*7 }} {% for x in range(3) %}{{ x }}{% endfor %} {{ config }}",
    "code and table": "`rm -rf /` | col | ~~strike~~ \\backslash\\",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("template", [None, "{{ header }}\n\n{{ error }}\n\n{{ traceback }}"])
def test_hostile_exception_text_is_shown_as_written_and_takes_no_effect(text, template):
    alert = make_alert(exception_message=text, traceback=f"Traceback:\n  {text}\nValueError: {text}")

    payload = sent(alert, template)
    user_parts = [b for b in blocks(payload) if b.startswith(("**ValueError:**", "> "))]

    assert shown_message(payload) == text
    assert shown_traceback(payload) == alert.traceback
    for part in user_parts:  # without our own markup: the bold type, the quote's "> "
        shown = [line.removeprefix("> ") for line in part.removeprefix("**ValueError:**").split("  \n")]
        assert unescaped_active("\n".join(shown)) == []
        assert "@1" not in part and "@all" not in part and "@所" not in part
    pinged, at_all = _mentions(payload)
    assert pinged == list(CONFIGURED) and at_all is False  # only the configured mention pings
    assert "49" not in payload["markdown"]["text"]  # "{{ 7*7 }}" was never evaluated


def test_ids_and_host_are_escaped_too():
    alert = make_alert(
        dag_id="d", task_id="t", run_id="manual__[x](http://evil)@13800000000", hostname="<b>h</b>"
    )

    text = sent(alert)["markdown"]["text"]

    assert "**Run:** manual\\_\\_" not in text  # underscores inside words are left alone
    assert "manual__\\[x\\](http://evil)@\u206013800000000" in text
    assert "\\<b\\>h\\</b\\>" in text


def test_a_megabyte_exception_and_long_ids_fit_and_keep_the_header():
    alert = make_alert(
        dag_id="d" * 250,
        task_id="t" * 250,
        run_id="r" * 250,
        exception_message="数据" * 350_000,  # > 2 MB of UTF-8
        traceback="\n".join(f"  frame {i} 🔥" for i in range(60_000)),
    )

    payload = sent(alert)
    text = payload["markdown"]["text"]

    assert "d" * 250 in text and "t" * 250 in text and "r" * 250 in text
    assert "**Try:** 3 of 3 (final failure)" in text
    assert (alert.exception_message or "").startswith(shown_message(payload))
    assert text.endswith("@13900000000")


def test_lone_surrogates_and_undecodable_bytes_become_replacement_characters():
    raw = b"bad \xff\xfe bytes".decode("utf-8", errors="surrogateescape")
    alert = Alert.from_task_instance(_TI(), ValueError(f"lone \ud800 surrogate and {raw}"), AlertKind.FAILURE)

    payload = sent(alert)

    assert "lone \ufffd surrogate" in payload["markdown"]["text"]
    assert "\ufffd\ufffd bytes" in payload["markdown"]["text"]


class _TI:
    dag_id, task_id, run_id, map_index, try_number, max_tries = "d", "t", "r", -1, 1, 0
    execution_date = hostname = log_url = None


def test_a_template_is_given_the_text_as_data_never_as_template_source():
    template = MessageTemplate("{{ header }} {{ alert.exception_type }} {{ error }}")
    alert = make_alert(exception_type="Boom{{ 1+1 }}", exception_message="{{ 7*7 }}{% raw %}")

    text = template.render(alert, header="H", error="E {{ 3*3 }}", traceback="", log_link="")

    assert text == "H Boom{{ 1+1 }} E {{ 3*3 }}"


# -- properties ------------------------------------------------------------------------------------

any_text = st.lists(
    st.one_of(
        st.sampled_from(list("\\`*[]()<>#|~!-+=_@.\n\t ") + ["13800000000", "all", "{{", "}}", "数", "🔥"]),
        st.characters(),  # includes lone surrogates
    ),
    max_size=120,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_escaping_round_trips_and_leaves_nothing_active(text):
    escaped = escape_markdown(text)

    assert unescape_markdown(escaped) == clean_text(text)
    assert unescaped_active(escaped) == []
    assert "@" not in escaped.replace("@\u2060", "")
    for line in escaped.split("\n"):
        stripped = line.lstrip()
        assert not stripped.startswith(("-", "+", "=")), line
        assert not (stripped[:1].isdigit() and stripped.lstrip("0123456789")[:1] in (".", ")")), line
    escaped.encode("utf-8")  # no lone surrogate survives


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    message=any_text.map(lambda t: t * 80) | any_text,
    traceback=st.none() | any_text.map(lambda t: t * 120) | any_text,
    ids=st.text(min_size=1, max_size=250),
    template=st.sampled_from([None, "{{ header }}\n\n{{ error }}\n\n{{ traceback }}\n\n{{ log_link }}"]),
)
def test_any_alert_is_valid_json_within_the_limit_and_shows_exact_head_and_tail(
    message, traceback, ids, template
):
    alert = make_alert(dag_id=ids, task_id=ids, run_id=ids, exception_message=message, traceback=traceback)

    payload = sent(alert, template)

    assert clean_text(message).startswith(shown_message(payload))
    kept = shown_traceback(payload)
    if traceback and kept is not None:
        assert clean_text(traceback).endswith(kept)
    pinged, _ = _mentions(payload)
    assert pinged == list(CONFIGURED)


def test_a_template_cannot_reach_the_webhook_or_the_secret():
    settings = DingTalkSettings(
        bot_url="https://oapi.dingtalk.com/robot/send?access_token=t0k3n", secret="SECs3cr3t"
    )
    every_variable = "{{ alert }} {{ header }} {{ error }} {{ traceback }} {{ log_link }}"

    text = (
        DingTalkRobot(settings, session=object())._render(make_alert(), MessageTemplate(every_variable)).text
    )

    assert "t0k3n" not in text and "SECs3cr3t" not in text
    for reach in (
        "{{ settings }}",
        "{{ conf }}",
        "{{ alert.__class__ }}",
        "{{ cycler.__init__ }}",
    ):
        with pytest.raises(ConfigError):
            MessageTemplate(reach).render(make_alert(), header="", error="", traceback="", log_link="")
