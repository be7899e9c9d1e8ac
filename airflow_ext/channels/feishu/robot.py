"""Feishu / Lark custom bot ("自定义机器人"): card payload, signing, limits, escaping and the code contract.

``POST {host}/open-apis/bot/v2/hook/{token}`` (Feishu: ``https://open.feishu.cn``, Lark:
``https://open.larksuite.com``). Feishu answers with a JSON ``code`` and ``msg``, mostly with HTTP 200
but sometimes with HTTP 400 (``9499``): success is HTTP 200 *and* ``code == 0``, and the code is read
from the body whatever the status. The answer's ``StatusCode`` field is not used: Feishu documents it
as a redundant field kept for old clients, and it has been seen as ``0`` beside an error ``code``.

The message
-----------
An ``interactive`` card: the title (what failed, with the keyword) in the card's header as
``plain_text``, which Feishu shows as written, red for a failure and orange for a try that will be
retried; the body is one ``div`` whose text is ``lark_md``: bold field names, line breaks, the
traceback behind a "┃" gutter, the log as a ``[text](url)`` link, and the mentions as
``<at id=ou_...></at>`` (``<at id=all></at>`` for everyone), the form Feishu documents for cards
(``<at user_id="...">`` is the text message's). lark_md has no headings, quotes or (before Feishu
7.6) lists: headings are bold and list items start with "•".

Escaping
--------
Feishu documents no backslash escapes for card markdown (projects using them report the backslash
shown as it is); it documents HTML character references instead: a character that would be syntax
is written as ``&#N;``, which the card shows as the character and the parser never reads as markup.
Text from a task gets that for:

* ``<`` and ``>``: no ``<at>`` mention, ``<a>`` or ``<link>`` link, ``<font>``, ``<text_tag>`` or other tag;
* ``&``: so that ``&#60;`` in a task's text is shown as written, not as ``<``;
* ``[`` and ``]``: no ``[text](url)`` link, image or ``[text](tel://...)`` number;
* ``*``, ``_``, ``~`` and the backtick: no bold, italic, strike-through or code;
* ``#``, ``|``, ``$`` and ``\\``: no heading, table, link variable, and a backslash escapes nothing;
* ``:`` before anything but whitespace: no ``:EMOJI:`` and no ``http://`` a client could turn into a link;
* ``-``, ``+`` and ``1.`` at a line's start: no list or divider.

What is shown is exactly the task's text; only the body grows (each such character takes 4 to 6
bytes), and the cut to the body limit accounts for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from airflow_ext.alert import clean_text
from airflow_ext.channels.base.robot import ChannelRobot, encode_body, is_retryable_http_status
from airflow_ext.errors import DeliveryError
from airflow_ext.render import Markup, RenderedMessage, link_target

#: The Feishu open platform, when a Connection leaves its host empty (Lark: https://open.larksuite.com).
DEFAULT_HOST = "https://open.feishu.cn"
LARK_HOST = "https://open.larksuite.com"
HOOK_PATH = "/open-apis/bot/v2/hook/"
#: What a ``feishu`` Connection's password holds, in config errors.
TOKEN_NAME = "robot's hook token (the part of the webhook after /open-apis/bot/v2/hook/)"

#: Feishu refuses request bodies larger than "20K" (请求体大小不能超过20K; 19036 above it). It does not
#: say whether K is 1000 or 1024 bytes: the smaller reading is safe under both (bytes of UTF-8 JSON).
MAX_BODY_BYTES = 20_000
#: A bot accepts 100 requests a minute and 5 a second ("100 次/分钟，5 次/秒").
RATE_LIMIT_PER_MINUTE = 100
RATE_LIMIT_PER_SECOND = 5
#: Seconds between two sends: 5 a second would be 0.2 s, but the bot counts arrivals, and network
#: jitter can bring six of them within a second; a quarter second keeps one in reserve. It costs
#: nothing sustained: 100 a minute already means 0.6 s apart on average.
MIN_SEND_INTERVAL_S = 0.25
#: Feishu does not say how long it refuses after throttling: the longest window it counts in, a
#: minute, after which both limits have room again.
THROTTLED_PAUSE_S = 60.0
#: Digits of the signed timestamp (seconds since the epoch: 10 digits until the year 2286).
TIMESTAMP_DIGITS = 10
#: Characters of a signature: base64 of a 32-byte HMAC-SHA256.
SIGN_CHARS = 44

#: 11232: "frequency limited", more than the bot's per-second or per-minute limit.
THROTTLED_CODES = frozenset({11232})
#: 9499 is "Bad Request", but under load Feishu also answers it (with HTTP 400) as "too many request".
BAD_REQUEST_CODE = 9499
TOO_MANY_REQUESTS_MSG = "too many request"
RETRYABLE_CODES = THROTTLED_CODES

#: Why a permanent refusal happened, in words an operator can act on; ``{name}`` is the robot.
PERMANENT_CODE_HINTS = {
    19001: "the hook token of {name} is not valid, or the robot was removed from its group: "
    "the password holds only the token, the part after /open-apis/bot/v2/hook/",
    19007: "the robot of {name} is disabled in its group's settings",
    19021: "signature refused: the secret of {name} is not the robot's, "
    "or this machine's clock is more than an hour off",
    19022: "the robot's IP allow-list does not include this machine's address",
    19024: "the message lacks the robot's keyword: set the keyword extra of {name} to one of them",
    19036: f"the message is larger than Feishu accepts ({MAX_BODY_BYTES} bytes)",
    BAD_REQUEST_CODE: "Feishu could not read the message (Bad Request)",
}
UNKNOWN_CODE_HINT = "refused: see Feishu's custom bot documentation for the code"


def sign(secret: str, timestamp_s: int | str) -> str:
    """base64(HMAC-SHA256 keyed with ``f"{timestamp}\\n{secret}"`` over an empty message), as Feishu checks.

    (DingTalk differs: its key is the secret and ``timestamp\\nsecret`` the message.)
    """
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


# --- escaping ------------------------------------------------------------------------------------

#: Characters that are syntax anywhere in card markdown (see the module docstring).
_ACTIVE = re.compile(r"[&<>\[\]*_~`#|$\\]|:(?=\S)")
#: At a line's start (after "\n", or a lone "\r" a client may break at) these make a list item or a
#: divider ("- ", "+ ", "---")...
_LINE_START_MARK = re.compile(r"(?:^|(?<=\r))([ \t]*)([-+])", re.M)
#: ... and so does a number followed by "." or ")".
_LINE_START_NUMBER = re.compile(r"(?:^|(?<=\r))([ \t]*\d+)([.)])", re.M)


def _reference(match: re.Match[str]) -> str:
    return "".join(f"&#{ord(ch)};" for ch in match.group(0))


def _reference_mark(match: re.Match[str]) -> str:
    return f"{match.group(1)}&#{ord(match.group(2))};"


def escape_lark_md(text: str) -> str:
    """Text from a task (ids, exception, traceback) shown as written in a card, whatever it holds.

    Nothing in it takes effect: no mention, link, tag, emphasis, emoji, list or divider. Every
    character that could be syntax is an HTML character reference (``&#60;`` for ``<``), the escape
    Feishu documents for card markdown.
    """
    text = _ACTIVE.sub(_reference, clean_text(text))
    text = _LINE_START_MARK.sub(_reference_mark, text)
    return _LINE_START_NUMBER.sub(_reference_mark, text)


_REFERENCE = re.compile(r"&#(\d+);")


def unescape_lark_md(text: str) -> str:
    """The text :func:`escape_lark_md` was given (after :func:`clean_text`)."""
    return _REFERENCE.sub(lambda m: chr(int(m.group(1))), text)


#: A user as a card's ``<at id=…>`` takes it (an open_id ``ou_…``, a union_id or a user_id, or ``all``);
#: checked where a Connection's ``mention_ids`` are read, so nothing else can get into the tag.
MENTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MENTION_ID_NAME = "a Feishu user id (an open_id like ou_..., a union_id or a user_id)"


def mention(who: str) -> str:
    """A configured mention: an open_id/user_id, or ``all`` for everyone."""
    return f"<at id={who}></at>"


#: Feishu card markdown (``lark_md``).
LARK_MD = Markup(
    escape=escape_lark_md,
    bold=lambda text: f"**{text}**",
    heading=lambda text: f"**{text}**",  # lark_md has no headings; the card's header is the title
    line_break="\n",
    quote=lambda line: f"┃ {line}",  # no quotes either: a gutter marks the traceback
    link=lambda label, url: f"[{label}]({link_target(url)})",
    mention=mention,
    list_item="• ",  # lists need Feishu 7.6; older clients show an upgrade notice instead
)


# --- the Connection ------------------------------------------------------------------------------


def webhook_url(host: str, token: str) -> str:
    """The webhook of a ``feishu`` Connection: ``{host}/open-apis/bot/v2/hook/{password}``."""
    return f"{host.rstrip('/')}{HOOK_PATH}{quote(token, safe='-._~')}"


def validate_token(token: str) -> str | None:
    """Why ``token`` cannot be a hook token (never repeating it), or None."""
    if "://" in token or "hook/" in token or "open-apis" in token:
        return "must be the hook token alone (the part after /open-apis/bot/v2/hook/), not the webhook URL"
    if any(ch.isspace() for ch in token) or any(ch in token for ch in "/?#&%=\"'<>"):
        return "is not a hook token (it holds spaces or URL characters)"
    return None


def is_retryable_code(code: int, msg: str = "") -> bool:
    return code in RETRYABLE_CODES or is_throttled(code, msg)


def is_throttled(code: int, msg: str = "") -> bool:
    return code in THROTTLED_CODES or (code == BAD_REQUEST_CODE and TOO_MANY_REQUESTS_MSG in msg.lower())


def _code_of(answer: Any) -> int | None:
    if not isinstance(answer, dict) or isinstance(answer.get("code"), bool):
        return None
    try:
        return int(answer["code"])
    except (KeyError, TypeError, ValueError):
        return None


class FeishuRobot(ChannelRobot):
    """One Feishu or Lark custom bot (a ``feishu`` Connection)."""

    CHANNEL = "feishu"
    DISPLAY_NAME = "Feishu"
    MAX_BODY_BYTES = MAX_BODY_BYTES
    RATE_LIMIT_PER_MINUTE = RATE_LIMIT_PER_MINUTE
    MIN_SEND_INTERVAL_S = MIN_SEND_INTERVAL_S
    THROTTLED_PAUSE_S = THROTTLED_PAUSE_S
    MARKUP = LARK_MD

    def payload(self, message: RenderedMessage, msg_uuid: str | None = None) -> dict[str, Any]:
        """An interactive card; Feishu's custom bot has no idempotency key, so ``msg_uuid`` is unused."""
        retry = message.text.lstrip("*").startswith("🟠")
        return {
            "msg_type": "interactive",
            "card": {
                "config": {"wide_screen_mode": True},
                "header": {
                    "template": "orange" if retry else "red",
                    "title": {"tag": "plain_text", "content": message.title},
                },
                "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": message.text}}],
            },
        }

    def fits(self, message: RenderedMessage) -> bool:
        """The body as sent, the signature fields included when the robot signs, within the limit."""
        body = encode_body(self.payload(message))
        if self.settings.secret:
            body = self._signed(body, "0" * TIMESTAMP_DIGITS, "0" * SIGN_CHARS)
        return len(body) <= self.MAX_BODY_BYTES

    def mention_ids(self) -> tuple[str, ...]:
        """The configured ids, and ``all`` when the robot pings everyone; the card's text holds them."""
        ids = [who for who in self.settings.mentions if who]
        if self.settings.at_all:
            ids.append("all")
        return tuple(dict.fromkeys(ids))

    def credential(self) -> str:
        path = urlsplit(self.settings.url).path
        return unquote(path.rsplit("/hook/", 1)[-1]) if "/hook/" in path else path

    def request(self, body: bytes) -> tuple[str, bytes]:
        if self.settings.secret:
            timestamp = str(int(time.time()))  # fresh for every attempt: Feishu allows an hour of skew
            body = self._signed(body, timestamp, sign(self.settings.secret, timestamp))
        return self.settings.url, body

    @staticmethod
    def _signed(body: bytes, timestamp: str, signature: str) -> bytes:
        """``body`` with ``timestamp`` and ``sign`` beside ``msg_type``, as Feishu reads them."""
        payload = json.loads(body.decode("utf-8"))
        payload.update(timestamp=timestamp, sign=signature)
        return encode_body(payload)

    def check_answer(self, response: requests.Response) -> dict[str, Any]:
        """Success is HTTP 200 *and* ``code == 0``; the code is read from the body whatever the status."""
        status = response.status_code
        try:
            answer = response.json()
        except ValueError:
            answer = None
        code = _code_of(answer)
        if code is None:  # a proxy's page, a gateway's error: no word from Feishu itself
            raise DeliveryError(
                f"the robot answered HTTP {status} without a JSON code",
                retryable=status == 200 or is_retryable_http_status(status),
                http_status=status,
                throttled=status == 429,
            )
        if code == 0 and status == 200:
            return answer
        msg = str(answer.get("msg", ""))
        throttled = is_throttled(code, msg)
        if throttled:
            hint = (
                f"throttled: more than {RATE_LIMIT_PER_SECOND} messages a second or "
                f"{RATE_LIMIT_PER_MINUTE} a minute to this robot"
            )
            retryable = True
        elif code == 0:  # code 0 with an error status is not Feishu's success
            hint, retryable = f"code 0 with HTTP {status}", is_retryable_http_status(status)
        else:
            hint = PERMANENT_CODE_HINTS.get(code, UNKNOWN_CODE_HINT).format(name=self.connection_name())
            retryable = code in RETRYABLE_CODES
        raise self.refusal(
            response,
            code,
            msg,
            hint,
            retryable=retryable,
            throttled=throttled,
            code_field="code",
            message_field="msg",
        )
