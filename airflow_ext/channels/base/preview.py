"""A robot message as the group's chat client shows it: a safe HTML fragment of the JSON body a
DingTalk, WeCom, Feishu or Slack webhook receives, for the fake robot's inbox and the Alerts page.

* DingTalk and WeCom markdown is CommonMark, rendered by markdown-it-py with raw HTML off: a tag in a
  message is shown as text. DingTalk pings a mobile in ``at.atMobiles`` only where the text holds
  ``@<mobile>`` (as :mod:`airflow_ext.fake_robot` decides it); those are highlighted as the client
  does, and ``isAtAll`` is shown as @all. WeCom's ``<@userid>`` and mention lists likewise.
* Feishu cards (``lark_md``) and Slack (``mrkdwn`` in blocks) are shown more simply: their text with
  emphasis, code, quotes and line breaks, links clickable, mentions highlighted.
* Everything from the message is escaped; a link is clickable only to ``http`` or ``https``. The
  invisible U+2060 the channels put into task text to break markup is dropped from what is shown
  (after it has done its work), so an id copied or searched for on the page is the id.
* An unknown channel or a body that is not the channel's shape is shown as escaped, indented JSON.
  Rendering never raises.

:data:`MESSAGE_CSS` styles the fragment as a chat bubble; every class it uses starts ``dingbot-msg``.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Sequence
from typing import Any, Callable

from markdown_it import MarkdownIt

from airflow_ext.channels.feishu_card import card_elements

__all__ = ["CHANNELS", "MESSAGE_CSS", "render_payload_html"]

CHANNELS = ("dingtalk", "wecom", "feishu", "slack")
#: Put into task text by the channels to break markup (see airflow_ext.render and the channels).
WORD_JOINER = "\u2060"
#: Deeper nesting than any card or block a channel takes is no message: it is shown as JSON.
MAX_DEPTH = 24
#: Feishu's card header colours (its ``template`` names), each a class of MESSAGE_CSS.
FEISHU_TEMPLATES = frozenset(
    "blue wathet turquoise green yellow orange red carmine violet purple indigo grey default".split()
)

_BARE_URL = re.compile(r"https?://[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]")
_DINGTALK_TYPES = ("text", "markdown", "link", "actionCard", "feedCard")
#: Emphasis markers the client shows as written.
DINGTALK_LITERAL = frozenset({"_", "__"})
WECOM_LITERAL = frozenset({"_"})


class _Malformed(Exception):
    """The body is not the shape its channel's messages have: it is shown as JSON."""


#: A pattern and what a match of it shows, as HTML.
Rule = tuple[re.Pattern, Callable[[re.Match], str]]


# --- building blocks --------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """Text as HTML: escaped, without the word joiners that only broke markup."""
    return html.escape(str(value).replace(WORD_JOINER, ""), quote=True)


def _lines(value: Any) -> str:
    return "<br>".join(_text(line) for line in str(value).split("\n"))


def _is_web_link(url: Any) -> bool:
    """Only http(s) links are clickable: never ``javascript:``, ``data:`` or a local file."""
    if not isinstance(url, str):
        return False
    url = url.strip()
    return url.lower().startswith(("http://", "https://")) and not re.search(r"[\x00-\x20\x7f]", url)


def _link(url: Any, label_html: str) -> str:
    if not _is_web_link(url):
        return label_html
    return f'<a href="{_text(url.strip())}" target="_blank" rel="noopener noreferrer">{label_html}</a>'


def _mention(who: str) -> str:
    return f'<span class="dingbot-msg__mention">@{_text(who)}</span>'


def _scan(text: str, rules: Sequence[Rule], plain: Callable[[str], str]) -> str:
    """``text`` as HTML: the earliest match of any rule (the first rule on a tie) shown by its
    handler, the text between matches by ``plain``. Every rule's pattern matches at least a character."""
    out: list[str] = []
    pos = 0
    upcoming = [pattern.search(text) for pattern, _ in rules]
    while True:
        best = None
        for index, (pattern, _) in enumerate(rules):
            match = upcoming[index]
            if match is not None and match.start() < pos:  # overlapped by the one shown: look further
                match = upcoming[index] = pattern.search(text, pos)
            if match is not None and (best is None or match.start() < upcoming[best].start()):
                best = index
        if best is None:
            out.append(plain(text[pos:]))
            return "".join(out)
        match = upcoming[best]
        out.append(plain(text[pos : match.start()]))
        out.append(rules[best][1](match))
        pos = match.end()


def _bare_urls(plain: Callable[[str], str]) -> Rule:
    return (_BARE_URL, lambda m: _link(m.group(0), plain(m.group(0))))


def _plain_text(text: str, rules: Sequence[Rule] = ()) -> str:
    """A message without markup: line breaks kept, bare URLs clickable (as every client does)."""
    return _scan(text, [*rules, _bare_urls(_lines)], _lines)


def _bubble(
    channel: str,
    kind: str,
    body: str,
    *,
    title: str = "",
    title_class: str = "",
    pings: Sequence[str] = (),
) -> str:
    parts = [f'<div class="dingbot-msg dingbot-msg--{channel}" data-msgtype="{_text(kind)}">']
    if title:
        parts.append(f'<div class="dingbot-msg__title{title_class}">{title}</div>')
    parts.append(f'<div class="dingbot-msg__body">{body}</div>')
    if pings:
        parts.append(f'<div class="dingbot-msg__pings">{" ".join(_mention(who) for who in pings)}</div>')
    parts.append("</div>")
    return "".join(parts)


def _raw(payload: Any) -> str:
    try:
        shown = json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        shown = "(this message cannot be shown)"
    return (
        '<div class="dingbot-msg dingbot-msg--raw">'
        f'<pre class="dingbot-msg__json">{html.escape(shown, quote=True)}</pre></div>'
    )


def _get(obj: Any, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``obj[key]`` if it is of ``kind``; missing: ``default``; anything else makes the body malformed."""
    if not isinstance(obj, dict):
        raise _Malformed(key)
    value = obj.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise _Malformed(key)
    return value


# --- markdown (DingTalk, WeCom, Slack's markdown block) ----------------------------------------------


def _render_text(self, tokens, idx, options, env) -> str:
    return _scan(tokens[idx].content, env.get("rules", []), _text)


def _render_link_open(self, tokens, idx, options, env) -> str:
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", "noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


def _render_image(self, tokens, idx, options, env) -> str:
    # A chat image would be fetched from wherever the message says: shown as a link to it instead.
    alt = self.renderInlineAsText(tokens[idx].children or [], options, env)
    label = f'<span class="dingbot-msg__media">[image{": " + _text(alt) if alt else ""}]</span>'
    return _link(tokens[idx].attrGet("src"), label)


def _literal_emphasis(markers: frozenset[str]) -> Callable[[Any], None]:
    """A core rule showing emphasis written with ``markers`` as the text it is: DingTalk and WeCom
    have no underscore emphasis (airflow_ext.render leaves ``_`` unescaped for that reason)."""

    def rule(state) -> None:
        for token in state.tokens:
            for child in token.children or []:
                if child.type in ("em_open", "em_close", "strong_open", "strong_close") and (
                    child.markup in markers
                ):
                    child.type, child.tag, child.nesting, child.content = "text", "", 0, child.markup

    return rule


@functools.cache
def _markdown(breaks: bool, tables: bool, literal: frozenset[str]) -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": breaks})
    if tables:
        md.enable("table")
    md.validateLink = _is_web_link
    if literal:
        md.core.ruler.push("dingbot_literal_emphasis", _literal_emphasis(literal))
    md.add_render_rule("text", _render_text)
    md.add_render_rule("link_open", _render_link_open)
    md.add_render_rule("image", _render_image)
    return md


#: ASCII punctuation beside a word joiner: the channels put the joiner there to make it literal
#: (``*\u2060*`` is no bold to WeCom); CommonMark needs a backslash for that.
_PUNCTUATION = r"[!-/:-@\[-`{-~]"
_JOINED_PUNCTUATION = re.compile(f"{_PUNCTUATION}(?={WORD_JOINER})|(?<={WORD_JOINER}){_PUNCTUATION}")


def _markdown_html(
    text: str,
    rules: Sequence[Rule] = (),
    *,
    breaks: bool = False,
    tables: bool = False,
    literal: frozenset[str] = frozenset(),
) -> str:
    text = _JOINED_PUNCTUATION.sub(lambda m: "\\" + m.group(0), text)
    return _markdown(breaks, tables, literal).render(text, {"rules": list(rules)})


def _named_mentions(names: list[str]) -> list[Rule]:
    """``@name`` for each of ``names``, the longest first (``@1380`` inside ``@13800000000`` is not it)."""
    if not names:
        return []
    alternatives = "|".join(re.escape(name) for name in sorted(set(names), key=len, reverse=True))
    return [(re.compile(f"@({alternatives})"), lambda m: _mention(m.group(1)))]


# --- DingTalk -------------------------------------------------------------------------------------


def _dingtalk(payload: dict[str, Any]) -> str:
    msgtype = _get(payload, "msgtype", str)
    if msgtype not in _DINGTALK_TYPES:
        raise _Malformed("msgtype")
    obj = _get(payload, msgtype, dict)
    if obj is None:
        raise _Malformed(msgtype)
    at = _get(payload, "at", dict) or {}
    mobiles = [str(mobile) for mobile in _get(at, "atMobiles", list) or [] if str(mobile)]
    pings = ["all"] if at.get("isAtAll") is True else []

    def pinged_in(text: str) -> list[Rule]:
        # DingTalk pings a listed mobile only where "@<mobile>" is in the text, as the fake decides.
        return _named_mentions([mobile for mobile in mobiles if f"@{mobile}" in text])

    if msgtype == "text":
        content = _get(obj, "content", str, "")
        return _bubble("dingtalk", msgtype, _plain_text(content, pinged_in(content)), pings=pings)
    if msgtype == "markdown":
        text = _get(obj, "text", str, "")
        body = _markdown_html(text, pinged_in(text), literal=DINGTALK_LITERAL)
        return _bubble("dingtalk", msgtype, body, title=_text(_get(obj, "title", str, "")), pings=pings)
    if msgtype == "link":
        title = _link(_get(obj, "messageUrl", str, ""), _text(_get(obj, "title", str, "")))
        body = _plain_text(_get(obj, "text", str, ""))
        return _bubble("dingtalk", msgtype, body, title=title, pings=pings)
    if msgtype == "actionCard":
        body = _markdown_html(_get(obj, "text", str, ""), literal=DINGTALK_LITERAL)
        buttons = []
        if obj.get("singleTitle"):
            buttons.append((_text(_get(obj, "singleTitle", str)), obj.get("singleURL")))
        for button in _get(obj, "btns", list) or []:
            buttons.append((_text(_get(button, "title", str, "")), _get(button, "actionURL", str, "")))
        body += _buttons(buttons)
        return _bubble("dingtalk", msgtype, body, title=_text(_get(obj, "title", str, "")), pings=pings)
    links = []
    for item in _get(obj, "links", list) or []:
        links.append(
            f"<li>{_link(_get(item, 'messageURL', str, ''), _text(_get(item, 'title', str, '')))}</li>"
        )
    return _bubble("dingtalk", msgtype, f'<ul class="dingbot-msg__feed">{"".join(links)}</ul>', pings=pings)


def _buttons(buttons: list[tuple[str, Any]]) -> str:
    """Buttons from (label as HTML, URL) pairs; a button without a web link is only its label."""
    if not buttons:
        return ""
    shown = "".join(
        _link(url, f'<span class="dingbot-msg__button">{label_html}</span>') for label_html, url in buttons
    )
    return f'<div class="dingbot-msg__buttons">{shown}</div>'


# --- WeCom ----------------------------------------------------------------------------------------

#: ``<@userid>``: a mention in WeCom text and markdown (as airflow_ext.fakes.wecom reads it).
_WECOM_MENTION: Rule = (re.compile(r"<@([^<>\s]+)>"), lambda m: _mention(m.group(1)))
_WECOM_PLACEHOLDERS = {"image": "[image]", "file": "[file]", "voice": "[voice message]"}


def _wecom(payload: dict[str, Any]) -> str:
    msgtype = _get(payload, "msgtype", str)
    obj = _get(payload, msgtype, dict) if msgtype else None
    if obj is None:
        raise _Malformed("msgtype")
    if msgtype in ("markdown", "markdown_v2"):
        body = _markdown_html(
            _get(obj, "content", str, ""),
            [_WECOM_MENTION],
            breaks=True,  # a bare newline is a line break in WeCom markdown
            tables=msgtype == "markdown_v2",
            literal=WECOM_LITERAL,
        )
        return _bubble("wecom", msgtype, body)
    if msgtype == "text":
        # WeCom shows the people a text message mentions after it, "@all" as everyone.
        named = [
            *(_get(obj, "mentioned_list", list) or []),
            *(_get(obj, "mentioned_mobile_list", list) or []),
        ]
        pings = [str(who).lstrip("@") for who in dict.fromkeys(named) if str(who)]
        body = _plain_text(_get(obj, "content", str, ""), [_WECOM_MENTION])
        return _bubble("wecom", msgtype, body, pings=pings)
    if msgtype == "news":
        items = []
        for article in _get(obj, "articles", list) or []:
            title = _link(_get(article, "url", str, ""), _text(_get(article, "title", str, "")))
            description = _get(article, "description", str, "")
            items.append(f"<li>{title}{'<br>' + _lines(description) if description else ''}</li>")
        return _bubble("wecom", msgtype, f'<ul class="dingbot-msg__feed">{"".join(items)}</ul>')
    if msgtype == "template_card":
        main = _get(obj, "main_title", dict) or {}
        title = _text(_get(main, "title", str, ""))
        lines = [_get(main, "desc", str, ""), _get(obj, "sub_title_text", str, "")]
        body = "<br>".join(_lines(line) for line in lines if line)
        return _bubble("wecom", msgtype, body, title=title)
    if msgtype in _WECOM_PLACEHOLDERS:
        return _bubble(
            "wecom", msgtype, f'<span class="dingbot-msg__media">{_WECOM_PLACEHOLDERS[msgtype]}</span>'
        )
    raise _Malformed("msgtype")


# --- Feishu ---------------------------------------------------------------------------------------

_ATTRIBUTE = re.compile(r"([A-Za-z_]+)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)")


def _attributes(raw: str) -> dict[str, str]:
    return {name.lower(): value.strip("\"'") for name, value in _ATTRIBUTE.findall(raw)}


def _feishu_plain(raw: str) -> str:
    """Text between markup: character references are text, never markup (decoded last)."""
    return _lines(html.unescape(raw))


def _card_at(match: re.Match[str]) -> str:
    """A card's ``<at id=...>``/``<at ids=a,b>`` pings those ids; other attributes ping nobody."""
    attrs = _attributes(match.group(1))
    ids = [who.strip() for name in ("id", "ids") for who in attrs.get(name, "").split(",") if who.strip()]
    return " ".join(_mention(who) for who in ids) or _feishu_plain(match.group(2) or "")


def _text_at(match: re.Match[str]) -> str:
    who = _attributes(match.group(1)).get("user_id", "")
    return _mention(who) if who else _feishu_plain(match.group(0))


_AT_TAG = r"<at\b([^<>]*)>(?:(.*?)</at>)?"


def _lark_rules(depth: int) -> list[Rule]:
    def inner(match: re.Match[str], group: int = 1) -> str:
        return _lark_md(match.group(group), depth + 1)

    def tag_link(match: re.Match[str]) -> str:
        attrs = _attributes(match.group(2))
        return _link(html.unescape(attrs.get("href") or attrs.get("url") or ""), inner(match, 3))

    def md_link(match: re.Match[str]) -> str:
        return _link(html.unescape(match.group(2)), inner(match))

    def image(match: re.Match[str]) -> str:
        alt = html.unescape(match.group(1))
        return f'<span class="dingbot-msg__media">[image{": " + _text(alt) if alt else ""}]</span>'

    return [
        (re.compile(_AT_TAG, re.S), _card_at),
        (re.compile(r"<(a|link)\b([^<>]*)>(.*?)</\1>", re.S), tag_link),
        (re.compile(r"!\[([^\[\]]*)\]\(([^()\s]*)\)"), image),
        (re.compile(r"\[([^\[\]]*)\]\(([^()\s]*)\)"), md_link),
        (re.compile(r"<br\s*/?>", re.I), lambda m: "<br>"),
        (re.compile(r"\*\*(.+?)\*\*"), lambda m: f"<strong>{inner(m)}</strong>"),
        (re.compile(r"~~(.+?)~~"), lambda m: f"<del>{inner(m)}</del>"),
        (re.compile(r"\*(\S(?:.*?\S)?)\*"), lambda m: f"<em>{inner(m)}</em>"),
        (re.compile(r"`([^`\n]+)`"), lambda m: f"<code>{_text(html.unescape(m.group(1)))}</code>"),
        # Other tags (font, text_tag...) show their content only.
        (re.compile(r"</?[A-Za-z][A-Za-z_-]*\b[^<>]*>"), lambda m: ""),
        _bare_urls(_feishu_plain),
    ]


def _lark_md(text: str, depth: int = 0) -> str:
    if depth > MAX_DEPTH:
        return _feishu_plain(text)
    return _scan(text, _lark_rules(depth), _feishu_plain)


def _feishu_text_object(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    content = _get(obj, "content", str, "")
    return _lark_md(content) if obj.get("tag") in ("lark_md", "markdown") else _lines(content)


def _feishu_element(element: Any, depth: int = 0) -> str:
    if depth > MAX_DEPTH:
        raise _Malformed("nesting")
    if not isinstance(element, dict):
        return ""
    tag = element.get("tag")
    children = [_feishu_element(child, depth + 1) for child in _get(element, "elements", list) or []]
    if tag == "hr":
        return "<hr>"
    if tag == "markdown":
        return f'<div class="dingbot-msg__block">{_lark_md(_get(element, "content", str, ""))}</div>'
    if tag in ("plain_text", "lark_md"):
        return f"<span>{_feishu_text_object(element)}</span>"
    if tag == "img":
        alt = _feishu_text_object(element.get("alt"))
        return f'<span class="dingbot-msg__media">[image{": " + alt if alt else ""}]</span>'
    if tag == "note":
        return f'<div class="dingbot-msg__note">{" ".join(children)}</div>'
    if tag == "action":
        buttons = []
        for action in _get(element, "actions", list) or []:
            if isinstance(action, dict):
                url = action.get("url") or (action.get("multi_url") or {}).get("url")
                buttons.append((_feishu_text_object(action.get("text")), url))
        return _buttons(buttons)
    if tag == "column_set":
        columns = [_feishu_element(column, depth + 1) for column in _get(element, "columns", list) or []]
        return f'<div class="dingbot-msg__columns">{"".join(columns)}</div>'
    parts = []
    if isinstance(element.get("text"), dict):
        parts.append(_feishu_text_object(element["text"]))
    fields = [
        f'<div class="dingbot-msg__field">{_feishu_text_object(field.get("text"))}</div>'
        for field in _get(element, "fields", list) or []
        if isinstance(field, dict)
    ]
    if fields:
        parts.append(f'<div class="dingbot-msg__fields">{"".join(fields)}</div>')
    parts.extend(children)
    return f'<div class="dingbot-msg__block">{"".join(parts)}</div>' if parts else ""


def _feishu_post(content: dict[str, Any]) -> tuple[str, str]:
    post = _get(content, "post", dict)
    if not post:
        raise _Malformed("post")
    locale = next(iter(post.values()))
    paragraphs = []
    for paragraph in _get(locale, "content", list) or []:
        shown = []
        for element in paragraph if isinstance(paragraph, list) else []:
            if not isinstance(element, dict):
                continue
            tag = element.get("tag")
            if tag == "at":
                shown.append(_mention(str(element.get("user_id", ""))))
            elif tag == "a":
                shown.append(_link(element.get("href"), _lines(element.get("text", ""))))
            elif tag == "md":
                shown.append(_lark_md(str(element.get("text", ""))))
            elif tag == "text":
                shown.append(_plain_text(str(element.get("text", ""))))
            elif tag in ("img", "media"):
                shown.append(
                    f'<span class="dingbot-msg__media">[{"image" if tag == "img" else "video"}]</span>'
                )
            elif tag == "emotion":
                shown.append(_text(f":{element.get('emoji_type', '')}:"))
            elif tag == "code_block":
                shown.append(f'<pre class="dingbot-msg__code">{_text(element.get("text", ""))}</pre>')
            elif tag == "hr":
                shown.append("<hr>")
        paragraphs.append(f"<p>{''.join(shown)}</p>")
    return _text(_get(locale, "title", str, "")), "".join(paragraphs)


def _feishu(payload: dict[str, Any]) -> str:
    msg_type = _get(payload, "msg_type", str)
    if msg_type == "interactive":
        card = payload.get("card")
        if isinstance(card, str):  # Feishu also takes the card as a JSON string
            card = json.loads(card)
        if not isinstance(card, dict):
            raise _Malformed("card")
        header = _get(card, "header", dict) or {}
        title = _feishu_text_object(_get(header, "title", dict) or {})
        template = header.get("template")
        colour = f" dingbot-msg__title--{template}" if template in FEISHU_TEMPLATES else ""
        elements = card_elements(card)
        if elements is None:
            raise _Malformed("elements")
        body = "".join(_feishu_element(element) for element in elements)
        return _bubble("feishu", msg_type, body, title=title, title_class=colour)
    content = _get(payload, "content", dict)
    if content is None:
        raise _Malformed("content")
    if msg_type == "text":
        text = _get(content, "text", str, "")
        return _bubble("feishu", msg_type, _plain_text(text, [(re.compile(_AT_TAG, re.S), _text_at)]))
    if msg_type == "post":
        title, body = _feishu_post(content)
        return _bubble("feishu", msg_type, body, title=title)
    if msg_type in ("image", "share_chat"):
        shown = "[image]" if msg_type == "image" else "[shared chat]"
        return _bubble("feishu", msg_type, f'<span class="dingbot-msg__media">{shown}</span>')
    raise _Malformed("msg_type")


# --- Slack ----------------------------------------------------------------------------------------

_SLACK_ENTITY = re.compile(r"&(amp|lt|gt);")
#: ``<…>``: a link, mention or channel (a bare ``<`` is written ``&lt;``).
_SLACK_CONTROL = re.compile(r"<([^<>\n]*)>")
#: A span marker sits after the line's start, a space or punctuation, and before them (mrkdwn's rule).
_EDGE = r"\s!-/:-@\[-`{-~"
_SPECIAL_MENTIONS = ("channel", "here", "everyone")


def _slack_decode(raw: str) -> str:
    return _SLACK_ENTITY.sub(lambda m: {"amp": "&", "lt": "<", "gt": ">"}[m.group(1)], raw)


def _slack_plain(raw: str) -> str:
    return _lines(_slack_decode(raw))


def _slack_control(match: re.Match[str]) -> str:
    """``<@U…>``, ``<!here>``, ``<#C…|name>``, ``<url|label>``: what each shows."""
    target, _, label = match.group(1).partition("|")
    if target.startswith("@"):
        return _mention(label.lstrip("@") or target[1:])
    if target.startswith("!"):
        name = target[1:].split("^", 1)[0]
        if name in _SPECIAL_MENTIONS:
            return _mention(name)
        if name == "subteam":
            return _mention(label.lstrip("@") or target[1:])
        return _slack_plain(label or f"<{target}>")
    if target.startswith("#"):
        return f'<span class="dingbot-msg__channel">#{_slack_plain(label or target[1:])}</span>'
    return _link(_slack_decode(target), _slack_plain(label or target))


def _span(marker: str) -> re.Pattern[str]:
    m = re.escape(marker)
    return re.compile(f"(?<![^{_EDGE}]){m}(?=[^\\s{m}])(.+?)(?<=\\S){m}(?![^{_EDGE}])")


def _mrkdwn_line(line: str, verbatim: bool, depth: int = 0) -> str:
    def inner(match: re.Match[str]) -> str:
        if depth >= MAX_DEPTH:
            return _slack_plain(match.group(1))
        return _mrkdwn_line(match.group(1), verbatim, depth + 1)

    rules: list[Rule] = [
        (_SLACK_CONTROL, _slack_control),
        (_span("`"), lambda m: f"<code>{_slack_plain(m.group(1))}</code>"),
        (_span("*"), lambda m: f"<strong>{inner(m)}</strong>"),
        (_span("_"), lambda m: f"<em>{inner(m)}</em>"),
        (_span("~"), lambda m: f"<del>{inner(m)}</del>"),
    ]
    if not verbatim:  # Slack itself links bare URLs and pings a bare @here in a text not verbatim
        rules.append((re.compile(r"(?<![\w@])@(channel|here|everyone)\b"), lambda m: _mention(m.group(1))))
        rules.append(_bare_urls(_slack_plain))
    return _scan(line, rules, _slack_plain)


_QUOTE = re.compile(r"^(?:>|&gt;) ?")


def _mrkdwn(text: str, verbatim: bool = True) -> str:
    """Slack mrkdwn as HTML: code blocks, quoted lines, spans, links and mentions."""
    out = []
    for index, part in enumerate(re.split(r"```(.+?)```", text, flags=re.S)):
        if index % 2:  # inside a code block nothing is formatted; links still show their label
            code = _scan(part, [(_SLACK_CONTROL, _slack_control)], lambda raw: _text(_slack_decode(raw)))
            out.append(f'<pre class="dingbot-msg__code">{code}</pre>')
            continue
        lines, quoted = [], []
        for line in part.split("\n"):
            quote = _QUOTE.match(line)
            if quote:
                quoted.append(_mrkdwn_line(line[quote.end() :], verbatim))
                continue
            if quoted:
                lines.append(f"<blockquote>{'<br>'.join(quoted)}</blockquote>")
                quoted = []
            lines.append(_mrkdwn_line(line, verbatim) + "<br>")
        if quoted:
            lines.append(f"<blockquote>{'<br>'.join(quoted)}</blockquote>")
        shown = "".join(lines)
        out.append(shown[: -len("<br>")] if shown.endswith("<br>") else shown)
    return "".join(out)


def _slack_text_object(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    text = _get(obj, "text", str, "")
    if obj.get("type") == "mrkdwn":
        return _mrkdwn(text, verbatim=obj.get("verbatim") is True)
    return _lines(text)


def _rich_text(element: Any, depth: int = 0) -> str:
    if depth > MAX_DEPTH:
        raise _Malformed("nesting")
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind == "text":
        shown = _lines(element.get("text", ""))
        style = element.get("style") if isinstance(element.get("style"), dict) else {}
        for name, tag in (("code", "code"), ("bold", "strong"), ("italic", "em"), ("strike", "del")):
            if style.get(name):
                shown = f"<{tag}>{shown}</{tag}>"
        return shown
    if kind == "link":
        return _link(element.get("url"), _lines(element.get("text") or element.get("url") or ""))
    if kind in ("user", "usergroup"):
        return _mention(str(element.get("user_id") or element.get("usergroup_id") or ""))
    if kind == "broadcast":
        return _mention(str(element.get("range", "here")))
    if kind == "channel":
        return f'<span class="dingbot-msg__channel">#{_text(element.get("channel_id", ""))}</span>'
    if kind == "emoji":
        return _text(f":{element.get('name', '')}:")
    children = "".join(_rich_text(child, depth + 1) for child in _get(element, "elements", list) or [])
    if kind == "rich_text_preformatted":
        return f'<pre class="dingbot-msg__code">{children}</pre>'
    if kind == "rich_text_quote":
        return f"<blockquote>{children}</blockquote>"
    if kind == "rich_text_list":
        items = "".join(
            f"<li>{_rich_text(child, depth + 1)}</li>" for child in _get(element, "elements", list) or []
        )
        return f"<ol>{items}</ol>" if element.get("style") == "ordered" else f"<ul>{items}</ul>"
    return f"<div>{children}</div>" if kind in ("rich_text", "rich_text_section") else children


def _slack_block(block: Any) -> str:
    if not isinstance(block, dict):
        return ""
    kind = block.get("type")
    if kind == "header":
        return f'<div class="dingbot-msg__header">{_slack_text_object(block.get("text"))}</div>'
    if kind == "divider":
        return "<hr>"
    if kind == "section":
        parts = [_slack_text_object(block.get("text"))] if block.get("text") else []
        fields = [
            f'<div class="dingbot-msg__field">{_slack_text_object(field)}</div>'
            for field in _get(block, "fields", list) or []
        ]
        if fields:
            parts.append(f'<div class="dingbot-msg__fields">{"".join(fields)}</div>')
        return f'<div class="dingbot-msg__block">{"".join(parts)}</div>'
    if kind == "context":
        shown = []
        for element in _get(block, "elements", list) or []:
            if isinstance(element, dict) and element.get("type") == "image":
                shown.append(
                    f'<span class="dingbot-msg__media">[{_text(element.get("alt_text") or "image")}]</span>'
                )
            else:
                shown.append(_slack_text_object(element))
        return f'<div class="dingbot-msg__note">{" ".join(shown)}</div>'
    if kind == "image":
        alt = _text(block.get("alt_text") or "image")
        return _link(block.get("image_url"), f'<span class="dingbot-msg__media">[{alt}]</span>')
    if kind == "actions":
        buttons = [
            (_slack_text_object(element.get("text")), element.get("url"))
            for element in _get(block, "elements", list) or []
            if isinstance(element, dict)
        ]
        return _buttons(buttons)
    if kind == "markdown":  # standard markdown, not mrkdwn
        return f'<div class="dingbot-msg__block">{_markdown_html(_get(block, "text", str, ""))}</div>'
    if kind == "rich_text":
        return f'<div class="dingbot-msg__block">{_rich_text(block)}</div>'
    return ""


def _slack_attachment(attachment: Any) -> str:
    if not isinstance(attachment, dict):
        return ""
    parts = []
    for key in ("pretext", "title", "text"):
        value = _get(attachment, key, str, "")
        if value:
            shown = _mrkdwn(value, verbatim=False)
            if key == "title":
                shown = f"<strong>{_link(attachment.get('title_link'), shown)}</strong>"
            parts.append(f"<div>{shown}</div>")
    for field in _get(attachment, "fields", list) or []:
        if isinstance(field, dict):
            title, value = _text(field.get("title", "")), _mrkdwn(str(field.get("value", "")), verbatim=False)
            parts.append(f"<div><strong>{title}</strong><br>{value}</div>")
    parts.extend(_slack_block(block) for block in _get(attachment, "blocks", list) or [])
    if not parts and attachment.get("fallback"):
        parts.append(_lines(attachment["fallback"]))
    return f'<div class="dingbot-msg__attachment">{"".join(parts)}</div>'


def _slack(payload: dict[str, Any]) -> str:
    text = _get(payload, "text", str, "")
    blocks = _get(payload, "blocks", list) or []
    attachments = _get(payload, "attachments", list) or []
    if not text and not blocks and not attachments:
        raise _Malformed("text")
    as_mrkdwn = payload.get("mrkdwn") is not False
    shown_text = _mrkdwn(text, verbatim=False) if as_mrkdwn else _lines(text)
    body = "".join(_slack_block(block) for block in blocks)
    if not blocks:  # without blocks the text is the message; with them it is the notification
        body = shown_text
    body += "".join(_slack_attachment(attachment) for attachment in attachments)
    return _bubble("slack", "blocks" if blocks else "text", body, title=shown_text if blocks else "")


# --- entry point ----------------------------------------------------------------------------------

_RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "dingtalk": _dingtalk,
    "wecom": _wecom,
    "feishu": _feishu,
    "slack": _slack,
}


def render_payload_html(channel: str, payload: dict) -> str:
    """The message ``payload`` (the JSON body a ``channel`` robot receives) as the group's client
    shows it: one ``<div class="dingbot-msg ...">``, safe to put into any page. A JSON string is read
    first. An unknown channel or a body that is not the channel's shape is shown as escaped JSON;
    this never raises."""
    try:
        if isinstance(payload, (str, bytes)):
            payload = json.loads(payload)
        renderer = _RENDERERS.get(channel)
        if renderer is None or not isinstance(payload, dict):
            return _raw(payload)
        return renderer(payload)
    except Exception:  # noqa: BLE001 - whatever a body holds, the page showing it must not break
        return _raw(payload)


#: Styles the fragment as a chat bubble; scoped to ``.dingbot-msg``, so any page can include it.
MESSAGE_CSS = """
.dingbot-msg {
  box-sizing: border-box; max-width: 680px; padding: 10px 14px; border: 1px solid #e3e5e8;
  border-radius: 4px 14px 14px 14px; background: #fff; color: #1f2329; text-align: left;
  box-shadow: 0 1px 2px rgba(31, 35, 41, 0.08); overflow-wrap: anywhere;
  font: 14px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", "PingFang SC", "Noto Sans CJK SC",
    "Microsoft YaHei", "Helvetica Neue", Arial, sans-serif;
}
.dingbot-msg * { box-sizing: border-box; }
.dingbot-msg__title {
  margin: -10px -14px 8px; padding: 8px 14px; border-bottom: 1px solid #eef0f2;
  border-radius: 4px 14px 0 0; background: #f5f6f7; color: #646a73; font-size: 12px; font-weight: 600;
}
.dingbot-msg--feishu .dingbot-msg__title { color: #fff; font-size: 14px; background: #3370ff; }
.dingbot-msg__title--red, .dingbot-msg__title--carmine { background: #f54a45 !important; }
.dingbot-msg__title--orange, .dingbot-msg__title--yellow { background: #ff8800 !important; }
.dingbot-msg__title--green, .dingbot-msg__title--turquoise { background: #34c724 !important; }
.dingbot-msg__title--violet, .dingbot-msg__title--purple, .dingbot-msg__title--indigo {
  background: #7f3bf5 !important;
}
.dingbot-msg__title--grey, .dingbot-msg__title--default { background: #8f959e !important; }
.dingbot-msg__body > :first-child, .dingbot-msg__block > :first-child { margin-top: 0; }
.dingbot-msg__body > :last-child, .dingbot-msg__block > :last-child { margin-bottom: 0; }
.dingbot-msg p, .dingbot-msg ul, .dingbot-msg ol, .dingbot-msg blockquote, .dingbot-msg pre,
.dingbot-msg table { margin: 0 0 8px; }
.dingbot-msg h1, .dingbot-msg h2, .dingbot-msg h3, .dingbot-msg h4, .dingbot-msg h5, .dingbot-msg h6 {
  margin: 0 0 6px; line-height: 1.35; font-weight: 600;
}
.dingbot-msg h1 { font-size: 20px; } .dingbot-msg h2 { font-size: 18px; } .dingbot-msg h3 { font-size: 16px; }
.dingbot-msg h4, .dingbot-msg h5, .dingbot-msg h6 { font-size: 15px; }
.dingbot-msg ul, .dingbot-msg ol { padding-left: 22px; }
.dingbot-msg blockquote {
  padding: 2px 10px; border-left: 3px solid #d0d3d6; color: #646a73; background: #f7f8fa;
}
.dingbot-msg code, .dingbot-msg pre {
  font: 12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  background: #f2f3f5; border-radius: 4px;
}
.dingbot-msg code { padding: 1px 4px; }
.dingbot-msg pre { padding: 8px 10px; overflow-x: auto; white-space: pre-wrap; }
.dingbot-msg pre code { padding: 0; background: none; }
.dingbot-msg hr { border: 0; border-top: 1px solid #e3e5e8; margin: 8px 0; }
.dingbot-msg a { color: #1677ff; text-decoration: none; }
.dingbot-msg a:hover { text-decoration: underline; }
.dingbot-msg table { border-collapse: collapse; }
.dingbot-msg th, .dingbot-msg td { border: 1px solid #e3e5e8; padding: 3px 8px; }
.dingbot-msg__mention {
  color: #1677ff; font-weight: 500; background: rgba(22, 119, 255, 0.08); border-radius: 3px; padding: 0 2px;
}
.dingbot-msg__channel { color: #1677ff; }
.dingbot-msg__pings { margin-top: 8px; }
.dingbot-msg__media { color: #8f959e; }
.dingbot-msg__note { margin: 6px 0; color: #8f959e; font-size: 12px; }
.dingbot-msg__header { margin: 0 0 6px; font-size: 16px; font-weight: 700; }
.dingbot-msg__block { margin: 0 0 8px; }
.dingbot-msg__fields { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 16px; margin-top: 6px; }
.dingbot-msg__columns { display: flex; gap: 12px; }
.dingbot-msg__attachment { margin-top: 6px; padding-left: 10px; border-left: 4px solid #dddddd; }
.dingbot-msg__feed { list-style: none; padding: 0; }
.dingbot-msg__buttons { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 8px; }
.dingbot-msg__button {
  display: inline-block; padding: 4px 12px; border: 1px solid #d0d3d6; border-radius: 6px; color: #1f2329;
}
.dingbot-msg--raw { border-radius: 6px; background: #fafafa; }
.dingbot-msg__json { margin: 0; background: none; padding: 0; }
""".strip()
