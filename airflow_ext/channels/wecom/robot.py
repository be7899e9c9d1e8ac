"""WeCom (企业微信) group robot: payload, limits, escaping and the errcode contract.

``POST {host}/cgi-bin/webhook/send?key=KEY``. The key is the robot's only credential: WeCom has no
signing, keyword or IP list for group robots. Like DingTalk, WeCom answers almost every error with
HTTP 200 and a non-zero ``errcode``: success is HTTP 200 *and* ``errcode == 0``.

Which message type
------------------
A robot without configured mentions sends ``markdown``: bold field names, the traceback quoted,
the log as a link, up to 4096 bytes of content. Markdown cannot ping a mobile number, though: WeCom
takes ``mentioned_mobile_list`` only with ``text`` messages (markdown knows ``<@userid>`` alone, and
a Connection names people by mobile). The configured mentions are there to make a phone ring, so a
robot with mentions (or ``@all`` among them) sends ``text`` with ``mentioned_mobile_list``: the same
lines without markup, cut to the text limit of 2048 bytes. One message per alert either way, never
a markdown message plus a separate ping: that would halve the 20 messages a minute a robot takes.
WeCom shows the names of the people a text message mentions itself, so the text does not repeat
them.

Escaping
--------
WeCom documents no backslash escapes, so text from a task is neutralized with an invisible U+2060
WORD JOINER placed where it breaks the syntax of WeCom's markdown while what is shown stays the same
(a look-alike character would change what an engineer copies and searches for):

* after ``<``: no ``<@userid>`` mention, ``<font color=...>`` or other tag can start;
* after ``]``: no ``[text](url)`` link or image;
* after ``*`` and ``~``, and between the underscores of a run at a word's edge: no ``**bold**``,
  ``~~strike~~``, ``__bold__`` (``scheduled__2026`` inside a word is no emphasis and stays as is);
* after ``@``: no ``@all``; after ``\\``: a backslash escapes nothing;
* before ``#`` and ``>``: no heading or quote, at a line's start or after our own ``> ``;
* before a list or setext marker (``-``, ``+``, ``=``, ``1.``) at a line's start.

Inline code is a single backtick, which no inserted character can split: a backtick becomes U+02CB
MODIFIER LETTER GRAVE ACCENT, which looks alike. Text messages have no markup: only ``<`` (tags,
``<@userid>``) and ``@`` get the word joiner there.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import requests

from airflow_ext.alert import clean_text
from airflow_ext.channels.base.robot import ErrcodeRobot, encode_body
from airflow_ext.config import RobotSettings
from airflow_ext.render import Markup, RenderedMessage, link_target

#: The WeCom API host, when a Connection leaves its host empty.
DEFAULT_HOST = "https://qyapi.weixin.qq.com"
SEND_PATH = "/cgi-bin/webhook/send"
#: What a ``wecom`` Connection's password holds, in config errors.
TOKEN_NAME = "webhook key"

#: ``markdown.content`` longer than this (bytes of UTF-8, not characters) is refused with 40058.
MAX_MARKDOWN_CONTENT_BYTES = 4096
#: ``text.content`` longer than this (bytes of UTF-8) is refused.
MAX_TEXT_CONTENT_BYTES = 2048
#: WeCom documents no limit on the whole body, only on the content. The content limits bind first
#: (JSON escaping makes a 4096-byte content at most 6 × 4096 bytes); this only keeps a body bounded.
MAX_BODY_BYTES = 32 * 1024
#: A robot accepts this many messages per minute ("每个机器人发送的消息不能超过20条/分钟").
RATE_LIMIT_PER_MINUTE = 20
#: How long a robot refuses after throttling is not documented: a whole rate-limit window.
THROTTLED_PAUSE_S = 60.0

#: 45009: "api freq out of limit" (接口调用超过限制), WeCom's rate-limit code.
THROTTLED_ERRCODES = frozenset({45009})
#: -1: "system busy" (系统繁忙), which WeCom's global error codes say to retry.
BUSY_ERRCODES = frozenset({-1})
RETRYABLE_ERRCODES = THROTTLED_ERRCODES | BUSY_ERRCODES

#: Why a permanent refusal happened, in words an operator can act on; ``{name}`` is the robot.
PERMANENT_ERRCODE_HINTS = {
    93000: "the webhook key of {name} is not valid, or the robot was removed from its group: "
    "the password holds only the key, the part after key=",
    40058: "the message is longer than WeCom accepts",
    40008: "WeCom did not understand the message type",
    44004: "the message content was empty",
}
UNKNOWN_ERRCODE_HINT = "refused: see WeCom's global error codes"

#: Inserted where it breaks markup without changing what is shown.
WORD_JOINER = "\u2060"
#: Shown instead of a backtick, which would start inline code.
BACKTICK_LOOKALIKE = "\u02cb"

#: A word joiner after these: ``<`` tags and mentions, ``]`` links, ``*``/``~`` emphasis, ``@``, ``\\``.
_JOIN_AFTER = re.compile(r"([<\]*~@\\])")
#: ... between the underscores of a run at a word's edge: ``__bold__``, ``___`` rules. Inside a
#: word (``scheduled__2026``) a run is no emphasis and stays as it is: ids are copied from alerts.
_UNDERSCORE_RUN = re.compile(r"(?<!_)_{2,}(?!_)")  # whole runs: one inside a word is left whole


def _break_run_at_an_edge(run: re.Match) -> str:
    text, (start, end) = run.string, run.span()
    inside_a_word = start > 0 and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()
    return run.group() if inside_a_word else WORD_JOINER.join(run.group())


#: ... before ``#`` (headings) and ``>`` (quotes), wherever they are: our own quote precedes lines.
_JOIN_BEFORE = re.compile(r"([#>])")
#: ... before list and setext markers at a line's start (after a newline or a carriage return).
_LINE_START_MARK = re.compile(r"((?:^|\r)[ \t]*)(?=[-+=]|\d+[.)])", re.M)
_TEXT_ACTIVE = re.compile(r"([<@])")


def escape_wecom_markdown(text: str) -> str:
    """Text from a task shown as written in WeCom markdown: no mention, link, tag or formatting."""
    text = clean_text(text).replace("`", BACKTICK_LOOKALIKE)
    text = _JOIN_AFTER.sub(r"\1" + WORD_JOINER, text)
    text = _UNDERSCORE_RUN.sub(_break_run_at_an_edge, text)
    text = _JOIN_BEFORE.sub(WORD_JOINER + r"\1", text)
    return _LINE_START_MARK.sub(r"\1" + WORD_JOINER, text)


def escape_wecom_text(text: str) -> str:
    """Text from a task in a WeCom text message: no ``<@userid>`` mention, tag or ``@all``."""
    return _TEXT_ACTIVE.sub(r"\1" + WORD_JOINER, clean_text(text))


#: WeCom's markdown: a bare newline is a line break there.
WECOM_MARKDOWN = Markup(
    escape=escape_wecom_markdown,
    bold=lambda text: f"**{text}**",
    heading=lambda text: f"### {text}",
    line_break="\n",
    quote=lambda line: f"> {line}",
    link=lambda label, url: f"[{label}]({link_target(url)})",
    mention=lambda who: f"<@{who}>",
)

#: WeCom's text messages: no markup; the client makes a bare URL a link.
WECOM_TEXT = Markup(
    escape=escape_wecom_text,
    bold=lambda text: text,
    heading=lambda text: text,
    line_break="\n",
    quote=lambda line: f"> {line}",
    link=lambda label, url: f"{label}: {link_target(url)}",
    mention=lambda who: f"<@{who}>",
)


def webhook_url(host: str, token: str) -> str:
    """The webhook of the robot with key ``token`` on ``host`` (``DEFAULT_HOST`` if empty)."""
    host = (host or "").strip() or DEFAULT_HOST
    if "://" not in host:
        host = f"https://{host}"
    return f"{host.rstrip('/')}{SEND_PATH}?key={quote(token, safe='')}"


_KEY_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")


def validate_token(token: str) -> str | None:
    """What is wrong with ``token`` as a WeCom webhook key, in words naming no secret; None if fine."""
    if not token or not token.strip():
        return "is empty: it holds the robot's webhook key"
    if "://" in token or "key=" in token or "/" in token:
        return "looks like a whole webhook URL: it holds only the key, the part after key="
    if any(char.isspace() for char in token):
        return "contains whitespace, which a WeCom webhook key never has"
    if not _KEY_CHARS.match(token):
        return "contains characters a WeCom webhook key never has (it is like 693a91f6-7xxx-4bc4-...)"
    return None


def is_retryable_errcode(errcode: int) -> bool:
    return errcode in RETRYABLE_ERRCODES


class WeComRobot(ErrcodeRobot):
    """One WeCom group robot (a ``wecom`` Connection). See the module docstring for the message type."""

    CHANNEL = "wecom"
    DISPLAY_NAME = "WeCom"
    MAX_BODY_BYTES = MAX_BODY_BYTES
    RATE_LIMIT_PER_MINUTE = RATE_LIMIT_PER_MINUTE
    THROTTLED_PAUSE_S = THROTTLED_PAUSE_S
    THROTTLED_ERRCODES = THROTTLED_ERRCODES
    RETRYABLE_ERRCODES = RETRYABLE_ERRCODES
    PERMANENT_ERRCODE_HINTS = PERMANENT_ERRCODE_HINTS
    UNKNOWN_ERRCODE_HINT = UNKNOWN_ERRCODE_HINT
    #: The markup of a robot without mentions; a robot with mentions uses WECOM_TEXT (per instance).
    MARKUP = WECOM_MARKDOWN

    def __init__(self, settings: RobotSettings, session: requests.Session | None = None) -> None:
        super().__init__(settings, session)
        #: Who ``mentioned_mobile_list`` pings: the configured mobiles, and "@all" if asked for.
        self.mobiles = tuple(dict.fromkeys((*settings.mentions, *(("@all",) if settings.at_all else ()))))
        self.msgtype = "text" if self.mobiles else "markdown"
        if self.msgtype == "text":
            self.MARKUP = WECOM_TEXT  # this robot's messages, digests too, are text

    @property
    def max_content_bytes(self) -> int:
        return MAX_TEXT_CONTENT_BYTES if self.msgtype == "text" else MAX_MARKDOWN_CONTENT_BYTES

    def payload(self, message: RenderedMessage, msg_uuid: str | None = None) -> dict[str, Any]:
        """WeCom has no title field (the heading line carries the keyword) and no idempotency key."""
        if self.msgtype == "text":
            return {
                "msgtype": "text",
                "text": {"content": message.text, "mentioned_mobile_list": list(self.mobiles)},
            }
        return {"msgtype": "markdown", "markdown": {"content": message.text}}

    def fits(self, message: RenderedMessage) -> bool:
        """The content within its type's byte limit (what WeCom checks), and the body bounded."""
        if len(message.text.encode("utf-8")) > self.max_content_bytes:
            return False
        return len(encode_body(self.payload(message))) <= self.MAX_BODY_BYTES

    def mention_ids(self) -> tuple[str, ...]:
        """Nobody is mentioned in the text: mobiles ping through ``mentioned_mobile_list``."""
        return ()

    def credential(self) -> str:
        return parse_qs(urlsplit(self.settings.url).query).get("key", [""])[0]
