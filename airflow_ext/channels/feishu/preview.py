"""A Feishu / Lark message as the Feishu client shows it, as HTML: interactive cards (``lark_md``),
text and post messages, shown more simply than the client does: their text with emphasis, code and
line breaks, links clickable, mentions highlighted.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from airflow_ext.channels.base.preview import (
    MAX_DEPTH,
    Malformed,
    Rule,
    bare_urls,
    bubble,
    buttons_html,
    escaped,
    escaped_lines,
    link,
    mention,
    plain_text,
    scan,
    typed_field,
)
from airflow_ext.channels.feishu.card import card_elements

#: Feishu's card header colours (its ``template`` names), each a class of MESSAGE_CSS.
FEISHU_TEMPLATES = frozenset(
    "blue wathet turquoise green yellow orange red carmine violet purple indigo grey default".split()
)
_ATTRIBUTE = re.compile(r"([A-Za-z_]+)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)")


def _attributes(raw: str) -> dict[str, str]:
    return {name.lower(): value.strip("\"'") for name, value in _ATTRIBUTE.findall(raw)}


def _feishu_plain(raw: str) -> str:
    """Text between markup: character references are text, never markup (decoded last)."""
    return escaped_lines(html.unescape(raw))


def _card_at(match: re.Match[str]) -> str:
    """A card's ``<at id=...>``/``<at ids=a,b>`` pings those ids; other attributes ping nobody."""
    attrs = _attributes(match.group(1))
    ids = [who.strip() for name in ("id", "ids") for who in attrs.get(name, "").split(",") if who.strip()]
    return " ".join(mention(who) for who in ids) or _feishu_plain(match.group(2) or "")


def _text_at(match: re.Match[str]) -> str:
    who = _attributes(match.group(1)).get("user_id", "")
    return mention(who) if who else _feishu_plain(match.group(0))


_AT_TAG = r"<at\b([^<>]*)>(?:(.*?)</at>)?"


def _lark_rules(depth: int) -> list[Rule]:
    def inner(match: re.Match[str], group: int = 1) -> str:
        return _lark_md(match.group(group), depth + 1)

    def tag_link(match: re.Match[str]) -> str:
        attrs = _attributes(match.group(2))
        return link(html.unescape(attrs.get("href") or attrs.get("url") or ""), inner(match, 3))

    def md_link(match: re.Match[str]) -> str:
        return link(html.unescape(match.group(2)), inner(match))

    def image(match: re.Match[str]) -> str:
        alt = html.unescape(match.group(1))
        return f'<span class="dingbot-msg__media">[image{": " + escaped(alt) if alt else ""}]</span>'

    return [
        (re.compile(_AT_TAG, re.S), _card_at),
        (re.compile(r"<(a|link)\b([^<>]*)>(.*?)</\1>", re.S), tag_link),
        (re.compile(r"!\[([^\[\]]*)\]\(([^()\s]*)\)"), image),
        (re.compile(r"\[([^\[\]]*)\]\(([^()\s]*)\)"), md_link),
        (re.compile(r"<br\s*/?>", re.I), lambda m: "<br>"),
        (re.compile(r"\*\*(.+?)\*\*"), lambda m: f"<strong>{inner(m)}</strong>"),
        (re.compile(r"~~(.+?)~~"), lambda m: f"<del>{inner(m)}</del>"),
        (re.compile(r"\*(\S(?:.*?\S)?)\*"), lambda m: f"<em>{inner(m)}</em>"),
        (re.compile(r"`([^`\n]+)`"), lambda m: f"<code>{escaped(html.unescape(m.group(1)))}</code>"),
        # Other tags (font, text_tag...) show their content only.
        (re.compile(r"</?[A-Za-z][A-Za-z_-]*\b[^<>]*>"), lambda m: ""),
        bare_urls(_feishu_plain),
    ]


def _lark_md(text: str, depth: int = 0) -> str:
    if depth > MAX_DEPTH:
        return _feishu_plain(text)
    return scan(text, _lark_rules(depth), _feishu_plain)


def _feishu_text_object(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    content = typed_field(obj, "content", str, "")
    return _lark_md(content) if obj.get("tag") in ("lark_md", "markdown") else escaped_lines(content)


def _feishu_element(element: Any, depth: int = 0) -> str:
    if depth > MAX_DEPTH:
        raise Malformed("nesting")
    if not isinstance(element, dict):
        return ""
    tag = element.get("tag")
    children = [_feishu_element(child, depth + 1) for child in typed_field(element, "elements", list) or []]
    if tag == "hr":
        return "<hr>"
    if tag == "markdown":
        return f'<div class="dingbot-msg__block">{_lark_md(typed_field(element, "content", str, ""))}</div>'
    if tag in ("plain_text", "lark_md"):
        return f"<span>{_feishu_text_object(element)}</span>"
    if tag == "img":
        alt = _feishu_text_object(element.get("alt"))
        return f'<span class="dingbot-msg__media">[image{": " + alt if alt else ""}]</span>'
    if tag == "note":
        return f'<div class="dingbot-msg__note">{" ".join(children)}</div>'
    if tag == "action":
        buttons = []
        for action in typed_field(element, "actions", list) or []:
            if isinstance(action, dict):
                url = action.get("url") or (action.get("multi_url") or {}).get("url")
                buttons.append((_feishu_text_object(action.get("text")), url))
        return buttons_html(buttons)
    if tag == "column_set":
        columns = [
            _feishu_element(column, depth + 1) for column in typed_field(element, "columns", list) or []
        ]
        return f'<div class="dingbot-msg__columns">{"".join(columns)}</div>'
    parts = []
    if isinstance(element.get("text"), dict):
        parts.append(_feishu_text_object(element["text"]))
    fields = [
        f'<div class="dingbot-msg__field">{_feishu_text_object(field.get("text"))}</div>'
        for field in typed_field(element, "fields", list) or []
        if isinstance(field, dict)
    ]
    if fields:
        parts.append(f'<div class="dingbot-msg__fields">{"".join(fields)}</div>')
    parts.extend(children)
    return f'<div class="dingbot-msg__block">{"".join(parts)}</div>' if parts else ""


def _feishu_post(content: dict[str, Any]) -> tuple[str, str]:
    post = typed_field(content, "post", dict)
    if not post:
        raise Malformed("post")
    locale = next(iter(post.values()))
    paragraphs = []
    for paragraph in typed_field(locale, "content", list) or []:
        shown = []
        for element in paragraph if isinstance(paragraph, list) else []:
            if not isinstance(element, dict):
                continue
            tag = element.get("tag")
            if tag == "at":
                shown.append(mention(str(element.get("user_id", ""))))
            elif tag == "a":
                shown.append(link(element.get("href"), escaped_lines(element.get("text", ""))))
            elif tag == "md":
                shown.append(_lark_md(str(element.get("text", ""))))
            elif tag == "text":
                shown.append(plain_text(str(element.get("text", ""))))
            elif tag in ("img", "media"):
                shown.append(
                    f'<span class="dingbot-msg__media">[{"image" if tag == "img" else "video"}]</span>'
                )
            elif tag == "emotion":
                shown.append(escaped(f":{element.get('emoji_type', '')}:"))
            elif tag == "code_block":
                shown.append(f'<pre class="dingbot-msg__code">{escaped(element.get("text", ""))}</pre>')
            elif tag == "hr":
                shown.append("<hr>")
        paragraphs.append(f"<p>{''.join(shown)}</p>")
    return escaped(typed_field(locale, "title", str, "")), "".join(paragraphs)


def render_html(payload: dict[str, Any]) -> str:
    """A Feishu message body as HTML; :class:`Malformed` when it is not one."""
    msg_type = typed_field(payload, "msg_type", str)
    if msg_type == "interactive":
        card = payload.get("card")
        if isinstance(card, str):  # Feishu also takes the card as a JSON string
            card = json.loads(card)
        if not isinstance(card, dict):
            raise Malformed("card")
        header = typed_field(card, "header", dict) or {}
        title = _feishu_text_object(typed_field(header, "title", dict) or {})
        template = header.get("template")
        colour = f" dingbot-msg__title--{template}" if template in FEISHU_TEMPLATES else ""
        elements = card_elements(card)
        if elements is None:
            raise Malformed("elements")
        body = "".join(_feishu_element(element) for element in elements)
        return bubble("feishu", msg_type, body, title=title, title_class=colour)
    content = typed_field(payload, "content", dict)
    if content is None:
        raise Malformed("content")
    if msg_type == "text":
        text = typed_field(content, "text", str, "")
        return bubble("feishu", msg_type, plain_text(text, [(re.compile(_AT_TAG, re.S), _text_at)]))
    if msg_type == "post":
        title, body = _feishu_post(content)
        return bubble("feishu", msg_type, body, title=title)
    if msg_type in ("image", "share_chat"):
        shown = "[image]" if msg_type == "image" else "[shared chat]"
        return bubble("feishu", msg_type, f'<span class="dingbot-msg__media">{shown}</span>')
    raise Malformed("msg_type")
