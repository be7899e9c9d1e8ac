"""Alert → chat message: a markdown title and text, readable on a phone, cut to a byte budget.

The message has three parts. The header (what failed, where, which try) and the footer (log link,
mentions) are never cut; the detail (exception message and traceback) is cut to make the encoded
message fit, never inside a UTF-8 character: first the traceback loses lines from its top, then the
exception message loses its end.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from airflow_ext.alert import Alert, clean_text

if TYPE_CHECKING:
    from airflow_ext.template import MessageTemplate

TRUNCATED = "… [truncated]"
#: Notification titles are shown in one line on a phone; ids are cut with "…" beyond this.
MAX_TITLE_CHARS = 120


#: Characters that make structure in DingTalk markdown: links and images ([ ]), emphasis and code
#: (* ` ~), headings (#), quotes and HTML (< >), tables (|) and the escape itself.
_MARKDOWN_ACTIVE = re.compile(r"([\\`*\[\]<>#|~])")
#: At the start of a line these make lists (- + 1.) or, under a line, a heading (= -).
_LINE_START_MARK = re.compile(r"^(\s*)([-+=])", re.M)
_LINE_START_NUMBER = re.compile(r"^(\s*\d+)([.)])", re.M)
#: U+2060 WORD JOINER: invisible, yet "@\u206013800000000" is no longer "@13800000000", which pings.
_UNMENTION = "@\u2060"


def escape_markdown(text: str) -> str:
    """Text from a task (ids, exception, traceback) shown as written, whatever it holds.

    Nothing in it takes effect: no link, image, heading, quote, HTML tag, and no mention (only
    the configured ``at_mobiles`` ping anyone). Backslash escapes are CommonMark's; ``@`` is
    followed by an invisible word joiner, because DingTalk matches ``@<mobile>`` literally.
    """
    text = _MARKDOWN_ACTIVE.sub(r"\\\1", clean_text(text))
    text = _LINE_START_NUMBER.sub(r"\1\\\2", _LINE_START_MARK.sub(r"\1\\\2", text))
    return text.replace("@", _UNMENTION)


def unescape_markdown(text: str) -> str:
    """The text :func:`escape_markdown` was given (after :func:`clean_text`)."""
    return re.sub(r"\\(.)", r"\1", text.replace(_UNMENTION, "@"), flags=re.S)


@dataclass(frozen=True)
class RenderedMessage:
    title: str
    text: str


def link_target(url: str) -> str:
    """A URL that cannot end the markdown link early: spaces and parentheses percent-encoded."""
    return clean_text(url).replace(" ", "%20").replace("(", "%28").replace(")", "%29")


@dataclass(frozen=True)
class Markup:
    """How one channel's message markup writes the parts of an alert.

    ``escape`` makes text from a task (ids, exception, traceback) show as written: nothing in it may
    format, link or mention. Everything else builds structure around text already escaped.
    """

    escape: Callable[[str], str]
    bold: Callable[[str], str]
    heading: Callable[[str], str]
    #: Between the lines of one block (a bare newline is not a line break in every markdown).
    line_break: str
    quote: Callable[[str], str]
    link: Callable[[str, str], str]
    #: How a configured mention (a mobile number, a user id) is written in the text.
    mention: Callable[[str], str]
    list_item: str = "- "


#: DingTalk's markdown (a CommonMark subset); WeCom's markdown reads the same.
MARKDOWN = Markup(
    escape=escape_markdown,
    bold=lambda text: f"**{text}**",
    heading=lambda text: f"#### {text}",
    line_break="  \n",
    quote=lambda line: f"> {line}",
    link=lambda label, url: f"[{label}]({link_target(url)})",
    mention=lambda who: f"@{who}",
)


def utf8_head(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding is at most ``max_bytes`` bytes."""
    return text.encode("utf-8")[: max(max_bytes, 0)].decode("utf-8", errors="ignore")


def utf8_tail(text: str, max_bytes: int) -> str:
    """The longest suffix of ``text`` whose UTF-8 encoding is at most ``max_bytes`` bytes."""
    data = text.encode("utf-8")
    if max_bytes <= 0:
        return ""
    return data[-max_bytes:].decode("utf-8", errors="ignore")


def largest_fitting(low: int, high: int, fits: Callable[[int], bool]) -> int | None:
    """Largest n in [low, high] with fits(n), fits being true up to some n; None if not fits(low)."""
    if not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def finish_title(title: str, keyword: str | None) -> str:
    """``title`` carrying the keyword (first, so a cut keeps it), at most MAX_TITLE_CHARS long."""
    if keyword and keyword not in title:  # keyword security: the robot refuses messages without it
        title = f"[{keyword}] {title}"
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1] + "…"
    return title


def render_title(alert: Alert, keyword: str | None = None) -> str:
    what = "retry" if alert.is_retry else "failed"
    return finish_title(f"Airflow {what}: {alert.dag_id}.{alert.task_id}", keyword)


def _header(alert: Alert, keyword: str | None, markup: Markup = MARKDOWN) -> str:
    if alert.is_retry:
        heading = "🟠 Airflow task failed, will retry"
    else:
        heading = "🔴 Airflow task failed"
    if keyword and keyword not in heading:
        heading = f"{heading} · {keyword}"
    escape, bold = markup.escape, markup.bold
    task = escape(alert.task_id)
    if alert.map_index >= 0:
        task = f"{task} [map index {alert.map_index}]"
    lines = [
        markup.heading(heading),
        f"{bold('DAG:')} {escape(alert.dag_id)}",
        f"{bold('Task:')} {task}",
        f"{bold('Run:')} {escape(alert.run_id)}",
    ]
    if alert.logical_date:
        lines.append(f"{bold('Logical date:')} {escape(alert.logical_date)}")
    lines.append(f"{bold('Try:')} {alert.try_number} of {alert.attempts_allowed} ({outcome_words(alert)})")
    if alert.hostname:
        lines.append(f"{bold('Host:')} {escape(alert.hostname)}")
    return markup.line_break.join(lines)


def outcome_words(alert: Alert) -> str:
    return "will retry" if alert.is_retry else "final failure"


def _error_line(alert: Alert, message: str, markup: Markup = MARKDOWN) -> str:
    """``message`` is already escaped; its own line breaks stay line breaks."""
    message = markup.line_break.join(message.split("\n"))  # only \n: other separators are shown as is
    if alert.exception_type:
        exception_type = markup.escape(alert.exception_type)
        return f"{markup.bold(exception_type + ':')} {message}" if message else markup.bold(exception_type)
    return f"{markup.bold('Error:')} {message}" if message else ""


def _quote(traceback: str, markup: Markup = MARKDOWN) -> str:
    """``traceback`` is already escaped."""
    return markup.line_break.join(markup.quote(line) for line in traceback.split("\n"))


def log_link(alert: Alert, markup: Markup = MARKDOWN) -> str:
    return markup.link("Open the task log", alert.log_url) if alert.log_url else ""


def mentions(at_mobiles: Sequence[str], markup: Markup = MARKDOWN) -> str:
    # DingTalk pings a number only when "@<mobile>" is in the text too
    return " ".join(markup.mention(mobile) for mobile in at_mobiles)


def _cut_tail(text: str, max_bytes: int, escape: Callable[[str], str] = escape_markdown) -> str:
    """The escaped tail of ``text`` within ``max_bytes`` (of the raw text), marked when cut."""
    if max_bytes >= len(text.encode("utf-8")):
        return escape(text)
    return TRUNCATED + "\n" + escape(utf8_tail(text, max_bytes)) if max_bytes > 0 else ""


def _cut_head(text: str, max_bytes: int, escape: Callable[[str], str] = escape_markdown) -> str:
    """The escaped head of ``text`` within ``max_bytes`` (of the raw text), marked when cut."""
    if max_bytes >= len(text.encode("utf-8")):
        return escape(text)
    return escape(utf8_head(text, max_bytes)) + TRUNCATED if max_bytes > 0 else TRUNCATED


def render_markdown(
    alert: Alert,
    *,
    keyword: str | None = None,
    at_mobiles: Sequence[str] = (),
    fits: Callable[[RenderedMessage], bool] = lambda message: True,
    template: MessageTemplate | None = None,
    markup: Markup = MARKDOWN,
) -> RenderedMessage:
    """Render ``alert``; ``fits`` says whether a candidate message is within the channel's limits.

    Text from the task is cut first, then escaped (an escape is never cut in half), so what is
    shown is always a prefix of the exception message and a suffix of the traceback. With a
    ``template`` (``[dingding] message_template``) the operator's layout replaces the built-in
    one; the configured mentions and the keyword are still added. ``markup`` is the channel's.
    """
    escape = markup.escape
    title = render_title(alert, keyword)
    header = _header(alert, keyword, markup)
    footer_mentions = mentions(at_mobiles, markup)
    message_text = (alert.exception_message or "").rstrip("\n")  # a trailing newline shows nothing
    traceback = alert.traceback or ""

    def build(message: str, tb: str) -> RenderedMessage:
        error, quoted = _error_line(alert, message, markup), _quote(tb, markup) if tb else ""
        link = log_link(alert, markup)
        if template is not None:
            body = template.render(alert, header=header, error=error, traceback=quoted, log_link=link)
            if keyword and keyword not in body:
                body = f"{keyword} · {body}"
            blocks = [body, footer_mentions]
        else:
            blocks = [header, error, quoted, link, footer_mentions]
        return RenderedMessage(title, "\n\n".join(block for block in blocks if block))

    full = build(escape(message_text), escape(traceback))
    if fits(full):
        return full

    # Keep the traceback's tail (where it was raised), as much of it as fits.
    tb_bytes = len(traceback.encode("utf-8"))
    message_whole = escape(message_text)
    kept = largest_fitting(0, tb_bytes, lambda n: fits(build(message_whole, _cut_tail(traceback, n, escape))))
    if kept is not None:
        return build(message_whole, _cut_tail(traceback, kept, escape))

    # Not even the whole message fits without a traceback: keep its head.
    msg_bytes = len(message_text.encode("utf-8"))
    kept = largest_fitting(0, msg_bytes, lambda n: fits(build(_cut_head(message_text, n, escape), "")))
    if kept is not None:
        return build(_cut_head(message_text, kept, escape), "")
    # Only an operator's template can be this long on its own: keep the head of what it made.
    return _cut_to_fit(build(TRUNCATED, ""), footer_mentions, fits)


def _cut_to_fit(
    message: RenderedMessage, footer: str, fits: Callable[[RenderedMessage], bool]
) -> RenderedMessage:
    body = (message.text[: len(message.text) - len(footer)] if footer else message.text).rstrip()

    def cut(n: int) -> RenderedMessage:
        return RenderedMessage(
            message.title, "\n\n".join(p for p in (utf8_head(body, n) + TRUNCATED, footer) if p)
        )

    kept = largest_fitting(0, len(body.encode("utf-8")), lambda n: fits(cut(n)))
    return cut(kept or 0)
