"""A local stand-in for a Feishu / Lark custom bot ("自定义机器人") webhook, for the demo and the tests.

What a client of the real service can observe, as Feishu documents it (custom bot guide, card
rich-text reference) or as answers quoted by other projects show it:

* ``POST /open-apis/bot/v2/hook/TOKEN`` with a JSON body; answers are HTTP 200 with ``{"code",
  "msg", "data"}``; success is ``{"code": 0, "msg": "success", "data": {}}`` (with the redundant
  ``StatusCode``/``StatusMessage`` Feishu still adds).
* refusals, checked in this order: an unknown token, 19001; a bot blocked after throttling, 11232;
  a body over 20000 bytes, 19036 (Feishu says "20K"; the fake takes the smaller reading); a body
  that is not a JSON object, 9499 "Bad Request"; with a secret, a missing, stale (more than an hour
  from the fake's clock) or wrong ``timestamp``/``sign`` in the body, 19021 (the signature is
  base64(HMAC-SHA256 keyed with ``timestamp + "\\n" + secret`` over an empty message), the timestamp
  in seconds); an unknown ``msg_type`` or a message without its content, 9499; with a keyword, a
  message whose texts do not hold it, 19024; more than 5 messages within a second, or more than
  100 within a rolling minute, 11232 "frequency limited". After the minute's limit the bot refuses
  everything for ``block_s`` (``BLOCK_S``, 60 s: Feishu does not document a block, the fake assumes
  a whole window); the per-second limit refuses only the message over it.
* who is pinged: the ids of the ``<at ...>`` tags. In a card's ``lark_md`` or ``markdown`` text those
  are ``<at id=...>`` and ``<at ids=a,b>``; in a ``text`` message ``<at user_id="...">``; in a ``post``
  the ``{"tag": "at", "user_id": ...}`` elements. ``all`` pings everyone (``at_all``). Tags are read
  from the text as sent: an HTML character reference such as ``&#60;at id=all&#62;`` is shown as the
  text it stands for and pings nobody. ``plain_text`` (the card's header) is never markup.
* what is shown (``rendered``): the card's title and text as the group sees them, with mentions as
  ``@id``, links as their label (their targets in ``links``), emphasis, code, emoji and tags reduced to
  their text, and character references decoded.

On top of that every fake's failure modes (:mod:`airflow_ext.channels.base.fake`: ``hang``,
``slow``, ``http500``, ``garbage``, ``errcode``); ``errcode`` takes ``http_status`` too (Feishu has
answered 9499 with HTTP 400). Feishu's custom bot has no idempotency key: nothing is deduplicated. Standard
library only, importable without Airflow; it never prints or logs the token or the secret.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import html
import json
import re
import threading
import time
from typing import Any, Callable

from airflow_ext.channels.base.fake import FakeChannelRobot, Reject, boxed_rows, echo_box
from airflow_ext.channels.feishu.card import card_elements

__all__ = [
    "BLOCK_S",
    "FakeFeishuRobot",
    "HOOK_PATH",
    "MAX_BODY_BYTES",
    "RATE_LIMIT_PER_SECOND",
    "RATE_LIMIT_PER_WINDOW",
    "SIGN_SKEW_S",
    "WINDOW_S",
    "compute_sign",
    "inspect_message",
    "render_lark_md",
    "render_message",
]

HOOK_PATH = "/open-apis/bot/v2/hook/"
MAX_BODY_BYTES = 20_000  # bytes of request body (UTF-8); Feishu: "请求体大小不能超过20K"
RATE_LIMIT_PER_WINDOW = 100  # messages per bot per rolling minute
RATE_LIMIT_PER_SECOND = 5  # messages per bot per rolling second
WINDOW_S = 60.0
BLOCK_S = 60.0  # not documented by Feishu: a whole window
SIGN_SKEW_S = 3600  # seconds between the signed timestamp and the fake's clock

ERR_OK, MSG_OK = 0, "success"
ERR_TOKEN, MSG_TOKEN = 19001, "param invalid: incoming webhook access token invalid"
ERR_SIGN, MSG_SIGN = 19021, "sign match fail or timestamp is not within one hour from current time"
ERR_KEYWORD, MSG_KEYWORD = 19024, "Key Words Not Found"
ERR_TOO_LARGE, MSG_TOO_LARGE = 19036, "request body exceeds the size limit"
ERR_BAD_REQUEST, MSG_BAD_REQUEST = 9499, "Bad Request"
ERR_TOO_FAST, MSG_TOO_FAST = 11232, "frequency limited"

MSG_TYPES = ("text", "post", "image", "share_chat", "interactive")

#: An ``<at ...>`` tag and its attributes; a closing ``</at>`` is optional.
_AT_TAG = re.compile(r"<at\b([^<>]*)>(?:(.*?)</at>)?", re.S)
_ATTRIBUTE = re.compile(r"([A-Za-z_]+)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)")
_LINK_TAG = re.compile(r"<(a|link)\b([^<>]*)>(.*?)</\1>", re.S)
_IMAGE = re.compile(r"!\[([^\[\]]*)\]\(([^()\s]*)\)")
_MD_LINK = re.compile(r"\[([^\[\]]*)\]\(([^()\s]*)\)")
_BREAK = re.compile(r"<br\s*/?>", re.I)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z_-]*\b[^<>]*>")
_EMPHASIS = (
    ("bold", re.compile(r"\*\*(.+?)\*\*", re.S)),
    ("bold", re.compile(r"__(.+?)__", re.S)),
    ("strike", re.compile(r"~~(.+?)~~", re.S)),
    ("italic", re.compile(r"\*(\S(?:.*?\S)?)\*", re.S)),
    ("italic", re.compile(r"(?<![A-Za-z0-9])_(\S(?:.*?\S)?)_(?![A-Za-z0-9])", re.S)),
    ("code", re.compile(r"`([^`]+)`")),
)
_EMOJI = re.compile(r":([A-Za-z0-9_+-]+):")
#: A list item, heading, quote or divider at a line's start (after "\n" or a lone "\r").
_LINE_START = re.compile(r"(?:^|(?<=\r))[ \t]*(?:(?:[-+*]|\d+[.)]|#{1,6}|>)(?:[ \t]|$)|-{3,}[ \t]*$)", re.M)


def compute_sign(secret: str, timestamp_s: int | str) -> str:
    """The signature Feishu expects for ``timestamp_s`` (seconds): base64, as it goes in the body."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


def _attributes(raw: str) -> dict[str, str]:
    return {name.lower(): value.strip("\"'") for name, value in _ATTRIBUTE.findall(raw)}


def render_lark_md(text: str) -> dict[str, Any]:
    """Card markdown as the group sees it: ``{"text", "mentions", "links", "formatting"}``.

    ``mentions`` are the ids the ``<at id=...>``/``<at ids=a,b>`` tags name (a card's form; a
    ``user_id=`` attribute is the text message's and pings nobody here); ``formatting`` names every
    construct that took effect (bold, link, tag, emoji, line-start, ...). Character references are
    decoded last: they are never markup.
    """
    mentions: list[str] = []
    links: list[str] = []
    formatting: list[str] = []

    def at(match: re.Match[str]) -> str:
        attrs = _attributes(match.group(1))
        ids = [
            who.strip()
            for name in ("id", "ids")
            if name in attrs
            for who in attrs[name].split(",")
            if who.strip()
        ]
        mentions.extend(ids)
        formatting.append("mention")
        return " ".join(f"@{who}" for who in ids) or (match.group(2) or "")

    def link_tag(match: re.Match[str]) -> str:
        attrs = _attributes(match.group(2))
        links.append(attrs.get("href") or attrs.get("url") or "")
        formatting.append("link")
        return match.group(3)

    def md_link(kind: str) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            formatting.append(kind)
            if kind == "link":
                links.append(match.group(2))
                return match.group(1)
            return f"[image {match.group(1)}]"

        return replace

    text = _AT_TAG.sub(at, text)
    text = _LINK_TAG.sub(link_tag, text)
    text = _IMAGE.sub(md_link("image"), text)
    text = _MD_LINK.sub(md_link("link"), text)
    if _BREAK.search(text):
        formatting.append("break")
        text = _BREAK.sub("\n", text)
    if _TAG.search(text):
        formatting.append("tag")
        text = _TAG.sub("", text)
    for kind, pattern in _EMPHASIS:
        if pattern.search(text):
            formatting.append(kind)
            text = pattern.sub(r"\1", text)
    if _EMOJI.search(text):
        formatting.append("emoji")
        text = _EMOJI.sub(r"[\1]", text)
    if _LINE_START.search(text):
        formatting.append("line-start")
    return {
        "text": html.unescape(text),
        "mentions": list(dict.fromkeys(mentions)),
        "links": links,
        "formatting": sorted(set(formatting)),
    }


# --- message inspection -------------------------------------------------------------------------


def _text_objects(element: Any) -> list[dict[str, Any]]:
    """The text objects of one card element, nested ones included (``div.text``, ``div.fields``...)."""
    if not isinstance(element, dict):
        raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: card element is not an object")
    found: list[dict[str, Any]] = []
    tag = element.get("tag")
    if tag == "markdown":
        if not isinstance(element.get("content"), str):
            raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: markdown element without content")
        found.append({"tag": "markdown", "content": element["content"]})
    if tag in ("plain_text", "lark_md"):
        found.append(element)
    text = element.get("text")
    if isinstance(text, dict):
        if text.get("tag") not in ("plain_text", "lark_md") or not isinstance(text.get("content"), str):
            raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: text needs a tag and a content")
        found.append(text)
    for field in element.get("fields") or []:
        if isinstance(field, dict) and isinstance(field.get("text"), dict):
            found.extend(_text_objects({"text": field["text"]}))
    for child in element.get("elements") or []:  # note, column children
        found.extend(_text_objects(child))
    return found


def _card_texts(card: Any) -> tuple[str, list[dict[str, Any]]]:
    """The card's header title and its text objects; Reject if it is not a card."""
    if isinstance(card, str):  # Feishu also takes the card as a JSON string
        try:
            card = json.loads(card)
        except ValueError:
            raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: card is not JSON") from None
    if not isinstance(card, dict):
        raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: card is missing")
    header = card.get("header") or {}
    title = header.get("title") if isinstance(header, dict) else None
    title_text = title.get("content", "") if isinstance(title, dict) else ""
    elements = card_elements(card)
    if elements is None:
        raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: card has no elements")
    texts = [obj for element in elements for obj in _text_objects(element)]
    return str(title_text), texts


def _post_paragraphs(body: dict[str, Any]) -> tuple[str, list[list[dict[str, Any]]]]:
    content = body.get("content")
    post = content.get("post") if isinstance(content, dict) else None
    if not isinstance(post, dict) or not post:
        raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: post content is missing")
    locale = next(iter(post.values()))
    if not isinstance(locale, dict) or not isinstance(locale.get("content"), list):
        raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: post has no content")
    paragraphs = [p for p in locale["content"] if isinstance(p, list)]
    return str(locale.get("title", "")), paragraphs


def inspect_message(body: Any) -> dict[str, Any]:
    """Check a message as Feishu does and describe it: its texts (for the keyword), what it shows,
    who it pings and what it links to. Raises Reject (9499) for a malformed message."""
    if not isinstance(body, dict):
        raise Reject(ERR_BAD_REQUEST, MSG_BAD_REQUEST)
    msg_type = body.get("msg_type")
    if msg_type not in MSG_TYPES:
        raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: unknown msg_type")
    texts: list[str] = []
    shown: list[str] = []
    mentions: list[str] = []
    links: list[str] = []
    formatting: list[str] = []

    def add(rendered: dict[str, Any]) -> None:
        shown.append(rendered["text"])
        mentions.extend(rendered["mentions"])
        links.extend(rendered["links"])
        formatting.extend(rendered["formatting"])

    if msg_type == "interactive":
        title, objects = _card_texts(body.get("card"))
        texts.append(title)
        shown.append(title)
        for obj in objects:
            texts.append(obj["content"])
            if obj.get("tag") == "plain_text":
                shown.append(obj["content"])
            else:
                add(render_lark_md(obj["content"]))
    elif msg_type == "text":
        content = body.get("content")
        text = content.get("text") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text:
            raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: text content is missing")
        texts.append(text)
        add(_render_text_message(text))
    elif msg_type == "post":
        title, paragraphs = _post_paragraphs(body)
        texts.append(title)
        shown.append(title)
        for paragraph in paragraphs:
            line = []
            for element in paragraph:
                if not isinstance(element, dict):
                    continue
                tag = element.get("tag")
                if tag == "at":
                    who = str(element.get("user_id", ""))
                    mentions.append(who)
                    line.append(f"@{who}")
                elif tag == "a":
                    links.append(str(element.get("href", "")))
                    line.append(str(element.get("text", "")))
                elif tag in ("text", "md"):
                    texts.append(str(element.get("text", "")))
                    line.append(str(element.get("text", "")))
            shown.append("".join(line))
    else:  # image, share_chat: nothing to read
        content = body.get("content")
        if not isinstance(content, dict) or not content:
            raise Reject(ERR_BAD_REQUEST, f"{MSG_BAD_REQUEST}: content is missing")
    pinged = list(dict.fromkeys(who for who in mentions if who))
    return {
        "msg_type": msg_type,
        "texts": texts,
        "rendered": "\n".join(shown),
        "pinged": pinged,
        "at_all": "all" in pinged,
        "links": links,
        "formatting": sorted(set(formatting)),
    }


def _render_text_message(text: str) -> dict[str, Any]:
    """A ``text`` message as shown: no markup but ``<at user_id="...">`` mentions."""
    mentions: list[str] = []

    def at(match: re.Match[str]) -> str:
        who = _attributes(match.group(1)).get("user_id", "")
        if not who:
            return match.group(0)
        mentions.append(who)
        return f"@{who}"

    shown = _AT_TAG.sub(at, text)
    return {"text": shown, "mentions": mentions, "links": [], "formatting": ["mention"] if mentions else []}


def render_message(record: dict[str, Any]) -> str:
    """An accepted message as the group would see it, boxed (no webhook URL, no token)."""
    if record.get("at_all"):
        ping_line = "pings: " + ", ".join(["@all"] + [f"@{w}" for w in record["pinged"] if w != "all"])
    elif record.get("pinged"):
        ping_line = "pings: " + ", ".join(f"@{who}" for who in record["pinged"])
    else:
        ping_line = "pings: nobody"
    body = boxed_rows(record.get("rendered", "")) + [f"│ -> {link}" for link in record.get("links") or []]
    return echo_box(f"Feishu robot message ({record.get('msg_type', '?')})", body, [f"│ {ping_line}"])


# --- the robot ----------------------------------------------------------------------------------


class FakeFeishuRobot(FakeChannelRobot):
    """A Feishu custom bot on a local port; see the module docstring for its rules."""

    OK = (ERR_OK, MSG_OK)
    TOO_FAST = (ERR_TOO_FAST, MSG_TOO_FAST)
    CHANNEL_NAME = "Feishu"
    CHANNEL = "feishu"

    DEFAULT_TOKEN = "test-hook-token"
    RATE_LIMIT = RATE_LIMIT_PER_WINDOW
    WINDOW = WINDOW_S
    BLOCK = BLOCK_S
    HAS_SIGNATURE = HAS_KEYWORD = True
    HAS_MSG_UUID = False  # a Feishu custom bot has no idempotency key

    def __init__(self, *args: Any, per_second: int = RATE_LIMIT_PER_SECOND, **kwargs: Any) -> None:
        """``per_second`` is the per-second limit (0: none); the rest as every fake takes it."""
        if per_second < 0:
            raise ValueError("per_second must be >= 0")
        super().__init__(*args, **kwargs)
        self._per_second = int(per_second)
        self._second_lock = threading.Lock()  # taken before the base lock, never inside it
        self._last_second: collections.deque[float] = collections.deque()
        self._errcode_http_status = 200

    def __repr__(self) -> str:  # never the token
        state = f"port={self._server.server_address[1]}" if self._server else "stopped"
        return f"<FakeFeishuRobot {state} signature={'on' if self._secret else 'off'}>"

    @property
    def url(self) -> str:
        return f"{self.base_url}{HOOK_PATH}{self._token}"

    def is_send_path(self, path: str) -> bool:
        return path.startswith(HOOK_PATH)

    # -- control: ``errcode`` may carry an HTTP status

    def set_mode(self, mode: str, **kw: Any) -> None:
        status = int(kw.pop("http_status", 200)) if mode == "errcode" else 200
        super().set_mode(mode, **kw)
        with self._lock:
            self._errcode_http_status = status

    def reset(self) -> None:
        with self._second_lock:
            self._last_second.clear()
        super().reset()
        with self._lock:
            self._errcode_http_status = 200

    def _handle_send(self, handler, path: str, query: str, body: bytes, received_at: float) -> None:
        with self._lock:
            mode, kw, status = self._mode, dict(self._mode_kw), self._errcode_http_status
        if mode == "errcode" and status != 200:
            self._record(received_at, len(body), kw["errcode"], status)
            self._answer(handler, Reject(kw["errcode"], kw["errmsg"], http_status=status))
            return
        super()._handle_send(handler, path, query, body, received_at)

    # -- answers

    def _answer(self, handler, rejection: Reject | None) -> None:
        if rejection is None:
            handler._send_json(
                200,
                {"StatusCode": 0, "StatusMessage": MSG_OK, "code": ERR_OK, "data": {}, "msg": MSG_OK},
            )
            return
        handler._send_json(
            rejection.http_status, {"code": rejection.errcode, "data": {}, "msg": rejection.errmsg}
        )

    def render(self, record: dict[str, Any]) -> str:
        return render_message(record)

    # -- the checks

    def _check_sign(self, body: dict[str, Any]) -> None:
        assert self._secret is not None
        timestamp, signature = body.get("timestamp"), body.get("sign")
        if (
            isinstance(timestamp, bool)
            or not isinstance(timestamp, (str, int))
            or not isinstance(signature, str)
        ):
            raise Reject(ERR_SIGN, MSG_SIGN)
        try:
            seconds = int(timestamp)
        except ValueError:
            raise Reject(ERR_SIGN, MSG_SIGN) from None
        if abs(time.time() - seconds) > SIGN_SKEW_S:
            raise Reject(ERR_SIGN, MSG_SIGN)
        if not hmac.compare_digest(signature.encode("utf-8"), compute_sign(self._secret, timestamp).encode()):
            raise Reject(ERR_SIGN, MSG_SIGN)

    def _admit_paced(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """``_admit`` under the per-second limit too; a message over it is refused, not counted."""
        with self._second_lock:
            now = time.monotonic()
            while self._last_second and now - self._last_second[0] >= 1.0:
                self._last_second.popleft()
            if self._per_second and len(self._last_second) >= self._per_second:
                raise Reject(*self.TOO_FAST)
            stored = self._admit(record)
            self._last_second.append(now)
            return stored

    def _process(self, path: str, query: str, body: bytes, received_at: float) -> dict[str, Any] | None:
        token = path[len(HOOK_PATH) :]
        if not token or not hmac.compare_digest(token.encode("utf-8"), self._token.encode("utf-8")):
            raise Reject(ERR_TOKEN, MSG_TOKEN)

        self._check_blocked()

        if len(body) > MAX_BODY_BYTES:
            raise Reject(ERR_TOO_LARGE, MSG_TOO_LARGE)
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Reject(ERR_BAD_REQUEST, MSG_BAD_REQUEST) from None
        if not isinstance(parsed, dict):
            raise Reject(ERR_BAD_REQUEST, MSG_BAD_REQUEST)

        signed = False
        if self._secret is not None:
            self._check_sign(parsed)
            signed = True

        seen = inspect_message(parsed)
        if self._keyword is not None and not any(self._keyword in text for text in seen["texts"]):
            raise Reject(ERR_KEYWORD, MSG_KEYWORD)

        record = {
            "body": parsed,
            "received_at": received_at,
            "msg_type": seen["msg_type"],
            "rendered": seen["rendered"],
            "links": seen["links"],
            "formatting": seen["formatting"],
            "pinged": seen["pinged"],
            "at_all": seen["at_all"],
            "signed": signed,
        }
        return self._admit_paced(record)
