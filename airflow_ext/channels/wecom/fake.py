"""A local stand-in for a WeCom (企业微信) group robot webhook, for the demo and the tests.

What a client of the real service can observe, as documented (group robot configuration, WeCom's
global error codes) or seen in answers other projects quote:

* ``POST /cgi-bin/webhook/send?key=KEY`` with a JSON body; every answer is **HTTP 200** with
  ``{"errcode", "errmsg"}``; success is ``{"errcode": 0, "errmsg": "ok"}``. The key is the only
  credential: no signature, keyword or IP list.
* refusals, checked in this order: a missing or unknown key, 93000 "invalid webhook url"; a robot
  blocked after throttling, 45009; a body that is not a JSON object, or a ``msgtype`` missing or
  unknown, 40008 "invalid message type"; ``text``/``markdown`` without an object or with an empty
  ``content``, 44004 "empty content"; ``markdown.content`` over 4096 bytes or ``text.content`` over
  2048 bytes (UTF-8), or mention lists that are not lists of strings, 40058; more than 20 messages a
  rolling minute, 45009 "api freq out of limit", after which the robot refuses everything for
  ``block_s`` (``BLOCK_S``, 60 s: WeCom does not document how long, a whole window is assumed).
* who is pinged: for ``text``, the ``mentioned_list`` user ids, the ``mentioned_mobile_list`` mobiles
  and the ``<@userid>`` in the content (``"@all"`` in either list pings everyone, ``at_all``); for
  ``markdown``, only the ``<@userid>`` in the content (the lists are ignored there).

WeCom has no idempotency key: nothing is deduplicated. ``secret`` and ``keyword`` are accepted so that
every channel's fake is built alike, and have no effect. Standard library only, importable without
Airflow; it never prints or logs the key.
"""

from __future__ import annotations

import hmac
import json
import re
import urllib.parse
from typing import Any

from airflow_ext.channels.base.fake import FakeChannelRobot, Reject, boxed_rows, echo_box

__all__ = [
    "BLOCK_S",
    "FakeWeComRobot",
    "MAX_MARKDOWN_CONTENT_BYTES",
    "MAX_TEXT_CONTENT_BYTES",
    "RATE_LIMIT_PER_WINDOW",
    "SEND_PATH",
    "WINDOW_S",
    "render_message",
]

SEND_PATH = "/cgi-bin/webhook/send"
MAX_MARKDOWN_CONTENT_BYTES = 4096  # bytes of UTF-8 in markdown.content
MAX_TEXT_CONTENT_BYTES = 2048  # bytes of UTF-8 in text.content
RATE_LIMIT_PER_WINDOW = 20  # messages per robot per rolling window
WINDOW_S = 60.0
BLOCK_S = 60.0  # not documented by WeCom: a whole window

ERR_OK, MSG_OK = 0, "ok"
ERR_KEY, MSG_KEY = (
    93000,
    "invalid webhook url, hint: [fake], more info at https://open.work.weixin.qq.com/devtool/query?e=93000",
)
ERR_TOO_FAST, MSG_TOO_FAST = 45009, "api freq out of limit"
ERR_MSGTYPE, MSG_MSGTYPE = 40008, "invalid message type"
ERR_EMPTY, MSG_EMPTY = 44004, "empty content"
ERR_PARAM = 40058
MSG_WRONG_JSON = "Warning: wrong json format."

#: Every msgtype a group robot takes; only text and markdown are checked in detail.
MSGTYPES = ("text", "markdown", "markdown_v2", "image", "news", "file", "voice", "template_card")
CONTENT_LIMITS = {"text": MAX_TEXT_CONTENT_BYTES, "markdown": MAX_MARKDOWN_CONTENT_BYTES}
#: ``<@userid>``: a mention in text and markdown content.
USER_MENTION = re.compile(r"<@([^<>\s]+)>")
AT_ALL = "@all"


def _validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Reject(ERR_MSGTYPE, f"{MSG_MSGTYPE}. {MSG_WRONG_JSON}")
    msgtype = body.get("msgtype")
    if not isinstance(msgtype, str) or msgtype not in MSGTYPES:
        raise Reject(ERR_MSGTYPE, MSG_MSGTYPE)
    obj = body.get(msgtype)
    if not isinstance(obj, dict):
        raise Reject(ERR_EMPTY if msgtype in CONTENT_LIMITS else ERR_MSGTYPE, MSG_EMPTY)
    if msgtype in CONTENT_LIMITS:
        content = obj.get("content")
        if not isinstance(content, str) or not content:
            raise Reject(ERR_EMPTY, MSG_EMPTY)
        limit = CONTENT_LIMITS[msgtype]
        if len(content.encode("utf-8")) > limit:
            raise Reject(ERR_PARAM, f"{msgtype}.content exceed max length {limit}")
    if msgtype == "text":
        for field in ("mentioned_list", "mentioned_mobile_list"):
            value = obj.get(field)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise Reject(ERR_PARAM, f"invalid Request Parameter: text.{field} must be a list of strings")
    return body


def pinged_by(body: dict[str, Any]) -> tuple[list[str], bool]:
    """Who a valid message pings, in first-seen order, and whether it pings everyone."""
    msgtype = body["msgtype"]
    obj = body.get(msgtype) or {}
    content = obj.get("content") if msgtype in CONTENT_LIMITS else None
    named: list[str] = []
    if msgtype == "text":
        named += obj.get("mentioned_list") or []
        named += obj.get("mentioned_mobile_list") or []
    if isinstance(content, str):
        named += USER_MENTION.findall(content)
    pinged = [who for who in dict.fromkeys(named) if who and who != AT_ALL]
    at_all = msgtype == "text" and AT_ALL in named
    return pinged, at_all


def render_message(body: dict[str, Any], pinged: list[str], at_all: bool) -> str:
    """An accepted message as the group would see it, boxed (no webhook URL, no key)."""
    msgtype = body.get("msgtype", "?")
    obj = body.get(msgtype) or {}
    text = obj.get("content") if isinstance(obj.get("content"), str) else json.dumps(obj, ensure_ascii=False)
    ping_line = "pings: " + (", ".join(([AT_ALL] if at_all else []) + pinged) or "nobody")
    return echo_box(f"WeCom robot message ({msgtype})", boxed_rows(text), [f"│ {ping_line}"])


class FakeWeComRobot(FakeChannelRobot):
    """A WeCom group robot on a local port; see the module docstring for its rules."""

    OK = (ERR_OK, MSG_OK)
    TOO_FAST = (ERR_TOO_FAST, MSG_TOO_FAST)
    CHANNEL_NAME = "WeCom"
    CHANNEL = "wecom"

    DEFAULT_TOKEN = "test-key"
    RATE_LIMIT = RATE_LIMIT_PER_WINDOW
    WINDOW = WINDOW_S
    BLOCK = BLOCK_S
    #: WeCom group robots have no signing, keyword or idempotency key: those arguments do nothing.
    HAS_SIGNATURE = HAS_KEYWORD = HAS_MSG_UUID = False

    def is_send_path(self, path: str) -> bool:
        return path == SEND_PATH

    @property
    def url(self) -> str:
        return f"{self.base_url}{SEND_PATH}?{urllib.parse.urlencode({'key': self._token})}"

    def _answer(self, handler, rejection: Reject | None) -> None:
        """Always HTTP 200 with ``errcode`` and ``errmsg``."""
        code, message = self.OK if rejection is None else (rejection.errcode, rejection.errmsg)
        handler._send_json(200, {"errcode": code, "errmsg": message})

    def render(self, record: dict[str, Any]) -> str:
        return render_message(record["body"], record["pinged"], record["at_all"])

    def _process(self, path: str, query: str, body: bytes, received_at: float) -> dict[str, Any] | None:
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        key = (params.get("key") or [""])[0]
        if not key or not hmac.compare_digest(key.encode("utf-8"), self._token.encode("utf-8")):
            raise Reject(ERR_KEY, MSG_KEY)
        self._check_blocked()
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Reject(ERR_MSGTYPE, f"{MSG_MSGTYPE}. {MSG_WRONG_JSON}") from None
        _validate(parsed)
        pinged, at_all = pinged_by(parsed)
        record = {
            "body": parsed,
            "received_at": received_at,
            "pinged": pinged,
            "at_all": at_all,
            "signed": False,
        }
        return self._admit(record)
