"""A Slack message as the Slack client shows it, as HTML: ``mrkdwn`` text, Block Kit blocks
(section, header, context, image, actions, markdown, rich_text) and attachments, shown more simply
than the client does: emphasis, code, quotes and line breaks, links clickable, mentions highlighted.
"""

from __future__ import annotations

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
    markdown_html,
    mention,
    scan,
    typed_field,
)

_SLACK_ENTITY = re.compile(r"&(amp|lt|gt);")
#: ``<…>``: a link, mention or channel (a bare ``<`` is written ``&lt;``).
_SLACK_CONTROL = re.compile(r"<([^<>\n]*)>")
#: A span marker sits after the line's start, a space or punctuation, and before them (mrkdwn's rule).
_EDGE = r"\s!-/:-@\[-`{-~"
_SPECIAL_MENTIONS = ("channel", "here", "everyone")


def _slack_decode(raw: str) -> str:
    return _SLACK_ENTITY.sub(lambda m: {"amp": "&", "lt": "<", "gt": ">"}[m.group(1)], raw)


def _slack_plain(raw: str) -> str:
    return escaped_lines(_slack_decode(raw))


def _slack_control(match: re.Match[str]) -> str:
    """``<@U…>``, ``<!here>``, ``<#C…|name>``, ``<url|label>``: what each shows."""
    target, _, label = match.group(1).partition("|")
    if target.startswith("@"):
        return mention(label.lstrip("@") or target[1:])
    if target.startswith("!"):
        name = target[1:].split("^", 1)[0]
        if name in _SPECIAL_MENTIONS:
            return mention(name)
        if name == "subteam":
            return mention(label.lstrip("@") or target[1:])
        return _slack_plain(label or f"<{target}>")
    if target.startswith("#"):
        return f'<span class="dingbot-msg__channel">#{_slack_plain(label or target[1:])}</span>'
    return link(_slack_decode(target), _slack_plain(label or target))


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
        rules.append((re.compile(r"(?<![\w@])@(channel|here|everyone)\b"), lambda m: mention(m.group(1))))
        rules.append(bare_urls(_slack_plain))
    return scan(line, rules, _slack_plain)


_QUOTE = re.compile(r"^(?:>|&gt;) ?")


def _mrkdwn(text: str, verbatim: bool = True) -> str:
    """Slack mrkdwn as HTML: code blocks, quoted lines, spans, links and mentions."""
    out = []
    for index, part in enumerate(re.split(r"```(.+?)```", text, flags=re.S)):
        if index % 2:  # inside a code block nothing is formatted; links still show their label
            code = scan(part, [(_SLACK_CONTROL, _slack_control)], lambda raw: escaped(_slack_decode(raw)))
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
    text = typed_field(obj, "text", str, "")
    if obj.get("type") == "mrkdwn":
        return _mrkdwn(text, verbatim=obj.get("verbatim") is True)
    return escaped_lines(text)


def _rich_text(element: Any, depth: int = 0) -> str:
    if depth > MAX_DEPTH:
        raise Malformed("nesting")
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind == "text":
        shown = escaped_lines(element.get("text", ""))
        style = element.get("style") if isinstance(element.get("style"), dict) else {}
        for name, tag in (("code", "code"), ("bold", "strong"), ("italic", "em"), ("strike", "del")):
            if style.get(name):
                shown = f"<{tag}>{shown}</{tag}>"
        return shown
    if kind == "link":
        return link(element.get("url"), escaped_lines(element.get("text") or element.get("url") or ""))
    if kind in ("user", "usergroup"):
        return mention(str(element.get("user_id") or element.get("usergroup_id") or ""))
    if kind == "broadcast":
        return mention(str(element.get("range", "here")))
    if kind == "channel":
        return f'<span class="dingbot-msg__channel">#{escaped(element.get("channel_id", ""))}</span>'
    if kind == "emoji":
        return escaped(f":{element.get('name', '')}:")
    children = "".join(_rich_text(child, depth + 1) for child in typed_field(element, "elements", list) or [])
    if kind == "rich_text_preformatted":
        return f'<pre class="dingbot-msg__code">{children}</pre>'
    if kind == "rich_text_quote":
        return f"<blockquote>{children}</blockquote>"
    if kind == "rich_text_list":
        items = "".join(
            f"<li>{_rich_text(child, depth + 1)}</li>"
            for child in typed_field(element, "elements", list) or []
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
            for field in typed_field(block, "fields", list) or []
        ]
        if fields:
            parts.append(f'<div class="dingbot-msg__fields">{"".join(fields)}</div>')
        return f'<div class="dingbot-msg__block">{"".join(parts)}</div>'
    if kind == "context":
        shown = []
        for element in typed_field(block, "elements", list) or []:
            if isinstance(element, dict) and element.get("type") == "image":
                shown.append(
                    f'<span class="dingbot-msg__media">[{escaped(element.get("alt_text") or "image")}]</span>'
                )
            else:
                shown.append(_slack_text_object(element))
        return f'<div class="dingbot-msg__note">{" ".join(shown)}</div>'
    if kind == "image":
        alt = escaped(block.get("alt_text") or "image")
        return link(block.get("image_url"), f'<span class="dingbot-msg__media">[{alt}]</span>')
    if kind == "actions":
        buttons = [
            (_slack_text_object(element.get("text")), element.get("url"))
            for element in typed_field(block, "elements", list) or []
            if isinstance(element, dict)
        ]
        return buttons_html(buttons)
    if kind == "markdown":  # standard markdown, not mrkdwn
        return f'<div class="dingbot-msg__block">{markdown_html(typed_field(block, "text", str, ""))}</div>'
    if kind == "rich_text":
        return f'<div class="dingbot-msg__block">{_rich_text(block)}</div>'
    return ""


def _slack_attachment(attachment: Any) -> str:
    if not isinstance(attachment, dict):
        return ""
    parts = []
    for key in ("pretext", "title", "text"):
        value = typed_field(attachment, key, str, "")
        if value:
            shown = _mrkdwn(value, verbatim=False)
            if key == "title":
                shown = f"<strong>{link(attachment.get('title_link'), shown)}</strong>"
            parts.append(f"<div>{shown}</div>")
    for field in typed_field(attachment, "fields", list) or []:
        if isinstance(field, dict):
            title, value = (
                escaped(field.get("title", "")),
                _mrkdwn(str(field.get("value", "")), verbatim=False),
            )
            parts.append(f"<div><strong>{title}</strong><br>{value}</div>")
    parts.extend(_slack_block(block) for block in typed_field(attachment, "blocks", list) or [])
    if not parts and attachment.get("fallback"):
        parts.append(escaped_lines(attachment["fallback"]))
    return f'<div class="dingbot-msg__attachment">{"".join(parts)}</div>'


def render_html(payload: dict[str, Any]) -> str:
    """A Slack message body as HTML; :class:`Malformed` when it is not one."""
    text = typed_field(payload, "text", str, "")
    blocks = typed_field(payload, "blocks", list) or []
    attachments = typed_field(payload, "attachments", list) or []
    if not text and not blocks and not attachments:
        raise Malformed("text")
    as_mrkdwn = payload.get("mrkdwn") is not False
    shown_text = _mrkdwn(text, verbatim=False) if as_mrkdwn else escaped_lines(text)
    body = "".join(_slack_block(block) for block in blocks)
    if not blocks:  # without blocks the text is the message; with them it is the notification
        body = shown_text
    body += "".join(_slack_attachment(attachment) for attachment in attachments)
    return bubble("slack", "blocks" if blocks else "text", body, title=shown_text if blocks else "")
