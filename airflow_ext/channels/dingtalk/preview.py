"""A DingTalk robot message as the DingTalk client shows it, as HTML (text, markdown, link,
actionCard, feedCard).

Markdown is CommonMark without underscore emphasis, which DingTalk does not have. DingTalk pings a
mobile in ``at.atMobiles`` only where the text holds ``@<mobile>`` (as the fake robot decides it);
those are highlighted as the client does, and ``isAtAll`` is shown as @all.
"""

from __future__ import annotations

from typing import Any

from airflow_ext.channels.base.preview import (
    Malformed,
    Rule,
    bubble,
    buttons_html,
    escaped,
    link,
    markdown_html,
    named_mentions,
    plain_text,
    typed_field,
)

_DINGTALK_TYPES = ("text", "markdown", "link", "actionCard", "feedCard")
#: Emphasis markers the client shows as written.
DINGTALK_LITERAL = frozenset({"_", "__"})


def render_html(payload: dict[str, Any]) -> str:
    """A DingTalk message body as HTML; :class:`Malformed` when it is not one."""
    msgtype = typed_field(payload, "msgtype", str)
    if msgtype not in _DINGTALK_TYPES:
        raise Malformed("msgtype")
    obj = typed_field(payload, msgtype, dict)
    if obj is None:
        raise Malformed(msgtype)
    at = typed_field(payload, "at", dict) or {}
    mobiles = [str(mobile) for mobile in typed_field(at, "atMobiles", list) or [] if str(mobile)]
    pings = ["all"] if at.get("isAtAll") is True else []

    def pinged_in(text: str) -> list[Rule]:
        # DingTalk pings a listed mobile only where "@<mobile>" is in the text, as the fake decides.
        return named_mentions([mobile for mobile in mobiles if f"@{mobile}" in text])

    if msgtype == "text":
        content = typed_field(obj, "content", str, "")
        return bubble("dingtalk", msgtype, plain_text(content, pinged_in(content)), pings=pings)
    if msgtype == "markdown":
        text = typed_field(obj, "text", str, "")
        body = markdown_html(text, pinged_in(text), literal=DINGTALK_LITERAL)
        return bubble(
            "dingtalk", msgtype, body, title=escaped(typed_field(obj, "title", str, "")), pings=pings
        )
    if msgtype == "link":
        title = link(typed_field(obj, "messageUrl", str, ""), escaped(typed_field(obj, "title", str, "")))
        body = plain_text(typed_field(obj, "text", str, ""))
        return bubble("dingtalk", msgtype, body, title=title, pings=pings)
    if msgtype == "actionCard":
        body = markdown_html(typed_field(obj, "text", str, ""), literal=DINGTALK_LITERAL)
        buttons = []
        if obj.get("singleTitle"):
            buttons.append((escaped(typed_field(obj, "singleTitle", str)), obj.get("singleURL")))
        for button in typed_field(obj, "btns", list) or []:
            buttons.append(
                (escaped(typed_field(button, "title", str, "")), typed_field(button, "actionURL", str, ""))
            )
        body += buttons_html(buttons)
        return bubble(
            "dingtalk", msgtype, body, title=escaped(typed_field(obj, "title", str, "")), pings=pings
        )
    links = []
    for item in typed_field(obj, "links", list) or []:
        title = escaped(typed_field(item, "title", str, ""))
        links.append(f"<li>{link(typed_field(item, 'messageURL', str, ''), title)}</li>")
    return bubble("dingtalk", msgtype, f'<ul class="dingbot-msg__feed">{"".join(links)}</ul>', pings=pings)
