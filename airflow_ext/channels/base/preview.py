"""What every channel's message preview shares: a robot message as the group's chat client shows
it, as a safe HTML fragment of the JSON body the webhook receives, for the fake robots' inbox and
the Alerts page. Each channel's ``preview.py`` draws its own message types with these pieces.

* Markdown is CommonMark, rendered by markdown-it-py with raw HTML off: a tag in a message is shown
  as text (:func:`markdown_html`).
* Everything from the message is escaped; a link is clickable only to ``http`` or ``https``. The
  invisible U+2060 the channels put into task text to break markup is dropped from what is shown
  (after it has done its work), so an id copied or searched for on the page is the id.
* An unknown channel or a body that is not the channel's shape (:class:`Malformed`) is shown as
  escaped, indented JSON. Rendering never raises (:func:`render_payload_html`).

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

from airflow_ext.channels import CHANNELS, preview_module

__all__ = ["CHANNELS", "MESSAGE_CSS", "render_payload_html"]

#: Put into task text by the channels to break markup (see airflow_ext.render and the channels).
WORD_JOINER = "\u2060"
#: Deeper nesting than any card or block a channel takes is no message: it is shown as JSON.
MAX_DEPTH = 24

_BARE_URL = re.compile(r"https?://[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]")


class Malformed(Exception):
    """The body is not the shape its channel's messages have: it is shown as JSON."""


#: A pattern and what a match of it shows, as HTML.
Rule = tuple[re.Pattern, Callable[[re.Match], str]]


# --- building blocks --------------------------------------------------------------------------------


def escaped(value: Any) -> str:
    """Text as HTML: escaped, without the word joiners that only broke markup."""
    return html.escape(str(value).replace(WORD_JOINER, ""), quote=True)


def escaped_lines(value: Any) -> str:
    return "<br>".join(escaped(line) for line in str(value).split("\n"))


def is_web_link(url: Any) -> bool:
    """Only http(s) links are clickable: never ``javascript:``, ``data:`` or a local file."""
    if not isinstance(url, str):
        return False
    url = url.strip()
    return url.lower().startswith(("http://", "https://")) and not re.search(r"[\x00-\x20\x7f]", url)


def link(url: Any, label_html: str) -> str:
    if not is_web_link(url):
        return label_html
    return f'<a href="{escaped(url.strip())}" target="_blank" rel="noopener noreferrer">{label_html}</a>'


def mention(who: str) -> str:
    return f'<span class="dingbot-msg__mention">@{escaped(who)}</span>'


def scan(text: str, rules: Sequence[Rule], plain: Callable[[str], str]) -> str:
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


def bare_urls(plain: Callable[[str], str]) -> Rule:
    return (_BARE_URL, lambda m: link(m.group(0), plain(m.group(0))))


def plain_text(text: str, rules: Sequence[Rule] = ()) -> str:
    """A message without markup: line breaks kept, bare URLs clickable (as every client does)."""
    return scan(text, [*rules, bare_urls(escaped_lines)], escaped_lines)


def bubble(
    channel: str,
    kind: str,
    body: str,
    *,
    title: str = "",
    title_class: str = "",
    pings: Sequence[str] = (),
) -> str:
    parts = [f'<div class="dingbot-msg dingbot-msg--{channel}" data-msgtype="{escaped(kind)}">']
    if title:
        parts.append(f'<div class="dingbot-msg__title{title_class}">{title}</div>')
    parts.append(f'<div class="dingbot-msg__body">{body}</div>')
    if pings:
        parts.append(f'<div class="dingbot-msg__pings">{" ".join(mention(who) for who in pings)}</div>')
    parts.append("</div>")
    return "".join(parts)


def raw_json(payload: Any) -> str:
    try:
        shown = json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True, default=str)
    except (TypeError, ValueError, RecursionError):
        shown = "(this message cannot be shown)"
    return (
        '<div class="dingbot-msg dingbot-msg--raw">'
        f'<pre class="dingbot-msg__json">{html.escape(shown, quote=True)}</pre></div>'
    )


def typed_field(obj: Any, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``obj[key]`` if it is of ``kind``; missing: ``default``; anything else makes the body malformed."""
    if not isinstance(obj, dict):
        raise Malformed(key)
    value = obj.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise Malformed(key)
    return value


# --- markdown (DingTalk, WeCom, Slack's markdown block) ----------------------------------------------


def _render_text(self, tokens, idx, options, env) -> str:
    return scan(tokens[idx].content, env.get("rules", []), escaped)


def _render_link_open(self, tokens, idx, options, env) -> str:
    tokens[idx].attrSet("target", "_blank")
    tokens[idx].attrSet("rel", "noopener noreferrer")
    return self.renderToken(tokens, idx, options, env)


def _render_image(self, tokens, idx, options, env) -> str:
    # A chat image would be fetched from wherever the message says: shown as a link to it instead.
    alt = self.renderInlineAsText(tokens[idx].children or [], options, env)
    label = f'<span class="dingbot-msg__media">[image{": " + escaped(alt) if alt else ""}]</span>'
    return link(tokens[idx].attrGet("src"), label)


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
    md.validateLink = is_web_link
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


def markdown_html(
    text: str,
    rules: Sequence[Rule] = (),
    *,
    breaks: bool = False,
    tables: bool = False,
    literal: frozenset[str] = frozenset(),
) -> str:
    text = _JOINED_PUNCTUATION.sub(lambda m: "\\" + m.group(0), text)
    return _markdown(breaks, tables, literal).render(text, {"rules": list(rules)})


def named_mentions(names: list[str]) -> list[Rule]:
    """``@name`` for each of ``names``, the longest first (``@1380`` inside ``@13800000000`` is not it)."""
    if not names:
        return []
    alternatives = "|".join(re.escape(name) for name in sorted(set(names), key=len, reverse=True))
    return [(re.compile(f"@({alternatives})"), lambda m: mention(m.group(1)))]


def buttons_html(buttons: list[tuple[str, Any]]) -> str:
    """Buttons from (label as HTML, URL) pairs; a button without a web link is only its label."""
    if not buttons:
        return ""
    shown = "".join(
        link(url, f'<span class="dingbot-msg__button">{label_html}</span>') for label_html, url in buttons
    )
    return f'<div class="dingbot-msg__buttons">{shown}</div>'


# --- any channel ----------------------------------------------------------------------------------


def render_payload_html(channel: str, payload: dict) -> str:
    """The message ``payload`` (the JSON body a ``channel`` robot receives) as the group's client
    shows it (the channel's ``preview.render_html``): one ``<div class="dingbot-msg ...">``, safe to
    put into any page. A JSON string is read first. An unknown channel or a body that is not the
    channel's shape is shown as escaped JSON; this never raises."""
    try:
        if isinstance(payload, (str, bytes)):
            payload = json.loads(payload)
        if channel not in CHANNELS or not isinstance(payload, dict):
            return raw_json(payload)
        return preview_module(channel).render_html(payload)
    except Exception:  # noqa: BLE001 - whatever a body holds, the page showing it must not break
        return raw_json(payload)


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
