"""A WeCom group robot message as the WeCom client shows it, as HTML (markdown, markdown_v2, text,
news, template_card; media as placeholders).

Markdown is CommonMark where a bare newline is a line break and underscores are no emphasis;
``<@userid>`` and the mention lists are highlighted.
"""

from __future__ import annotations

import re
from typing import Any

from airflow_ext.channels.base.preview import (
    Malformed,
    Rule,
    bubble,
    escaped,
    escaped_lines,
    link,
    markdown_html,
    mention,
    plain_text,
    typed_field,
)

#: Emphasis markers the client shows as written.
WECOM_LITERAL = frozenset({"_"})
#: ``<@userid>``: a mention in WeCom text and markdown (as the fake robot reads it).
_WECOM_MENTION: Rule = (re.compile(r"<@([^<>\s]+)>"), lambda m: mention(m.group(1)))
_WECOM_PLACEHOLDERS = {"image": "[image]", "file": "[file]", "voice": "[voice message]"}


def render_html(payload: dict[str, Any]) -> str:
    """A WeCom message body as HTML; :class:`Malformed` when it is not one."""
    msgtype = typed_field(payload, "msgtype", str)
    obj = typed_field(payload, msgtype, dict) if msgtype else None
    if obj is None:
        raise Malformed("msgtype")
    if msgtype in ("markdown", "markdown_v2"):
        body = markdown_html(
            typed_field(obj, "content", str, ""),
            [_WECOM_MENTION],
            breaks=True,  # a bare newline is a line break in WeCom markdown
            tables=msgtype == "markdown_v2",
            literal=WECOM_LITERAL,
        )
        return bubble("wecom", msgtype, body)
    if msgtype == "text":
        # WeCom shows the people a text message mentions after it, "@all" as everyone.
        named = [
            *(typed_field(obj, "mentioned_list", list) or []),
            *(typed_field(obj, "mentioned_mobile_list", list) or []),
        ]
        pings = [str(who).lstrip("@") for who in dict.fromkeys(named) if str(who)]
        body = plain_text(typed_field(obj, "content", str, ""), [_WECOM_MENTION])
        return bubble("wecom", msgtype, body, pings=pings)
    if msgtype == "news":
        items = []
        for article in typed_field(obj, "articles", list) or []:
            title = link(
                typed_field(article, "url", str, ""), escaped(typed_field(article, "title", str, ""))
            )
            description = typed_field(article, "description", str, "")
            items.append(f"<li>{title}{'<br>' + escaped_lines(description) if description else ''}</li>")
        return bubble("wecom", msgtype, f'<ul class="dingbot-msg__feed">{"".join(items)}</ul>')
    if msgtype == "template_card":
        main = typed_field(obj, "main_title", dict) or {}
        title = escaped(typed_field(main, "title", str, ""))
        lines = [typed_field(main, "desc", str, ""), typed_field(obj, "sub_title_text", str, "")]
        body = "<br>".join(escaped_lines(line) for line in lines if line)
        return bubble("wecom", msgtype, body, title=title)
    if msgtype in _WECOM_PLACEHOLDERS:
        return bubble(
            "wecom", msgtype, f'<span class="dingbot-msg__media">{_WECOM_PLACEHOLDERS[msgtype]}</span>'
        )
    raise Malformed("msgtype")
