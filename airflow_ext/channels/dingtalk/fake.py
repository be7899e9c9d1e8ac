"""A local stand-in for a DingTalk custom robot ("自定义机器人") webhook, for the demo and the tests.

It imitates what a client of the real service can observe:

* ``POST /robot/send?access_token=TOKEN`` with a JSON body; every refusal is **HTTP 200** with a
  non-zero ``errcode`` and an ``errmsg``; success is ``{"errcode": 0, "errmsg": "ok"}``.
* the three security settings: signature (``timestamp`` + ``sign``), keyword, and (implicitly) the
  token itself;
* the 20000-byte body limit, JSON/field validation, the 20-per-minute rate limit with its 10-minute
  block, ``msgUuid`` idempotency and the ``@mobile`` mention rule.

The server, the failure modes, the control endpoints and the inbox page are every channel's fake's
(:mod:`airflow_ext.channels.base.fake`). Standard library only; it must stay importable without
Airflow. It never prints, logs or shows the access token or the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from typing import Any

from airflow_ext.channels.base.fake import FakeChannelRobot, Reject, boxed_rows, echo_box

__all__ = [
    "BLOCK_S",
    "FakeRobot",
    "MAX_BODY_BYTES",
    "RATE_LIMIT_PER_WINDOW",
    "SIGN_SKEW_S",
    "WINDOW_S",
    "compute_sign",
    "render_message",
]

# --- limits of the real service -------------------------------------------------------------
MAX_BODY_BYTES = 20000  # bytes of request body (UTF-8), not characters
RATE_LIMIT_PER_WINDOW = 20  # accepted messages per robot per rolling window
WINDOW_S = 60.0  # seconds, length of the rolling rate-limit window
BLOCK_S = 600.0  # seconds a robot refuses everything after exceeding the rate limit
SIGN_SKEW_S = 3600  # seconds, max distance between the signed timestamp and the server clock

# --- errcodes / errmsgs of the real service -------------------------------------------------
ERR_OK = 0
ERR_TOKEN = 300001
ERR_SECURITY = 310000
ERR_TOO_LONG = 460101
ERR_INVALID = 40035
ERR_TOO_FAST = 130101

MSG_OK = "ok"
MSG_TOKEN = "token is not exist"
MSG_KEYWORD = "keywords not in content"
MSG_TOO_LONG = "message too long"
MSG_TOO_FAST = "send too fast, exceed 20 times per minute"

SEND_PATH = "/robot/send"

# Required string fields per msgtype: (object key, [field names]).
_REQUIRED_FIELDS = {
    "text": ("text", ["content"]),
    "markdown": ("markdown", ["title", "text"]),
    "link": ("link", ["title", "text", "messageUrl"]),
    "actionCard": ("actionCard", ["title", "text"]),
    "feedCard": ("feedCard", []),
}


def compute_sign(secret: str, timestamp_ms: int) -> str:
    """Return the *un-encoded* base64 signature for ``timestamp_ms`` (the client URL-encodes it)."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


# --- message inspection ---------------------------------------------------------------------


def _validate(body: Any) -> None:
    if not isinstance(body, dict):
        raise Reject(ERR_INVALID, "invalid json: body must be a JSON object")
    msgtype = body.get("msgtype")
    if not isinstance(msgtype, str) or not msgtype:
        raise Reject(ERR_INVALID, "param error: msgtype is missing")
    if msgtype not in _REQUIRED_FIELDS:
        raise Reject(ERR_INVALID, f"param error: unsupported msgtype {msgtype!r}")
    key, fields = _REQUIRED_FIELDS[msgtype]
    obj = body.get(key)
    if not isinstance(obj, dict):
        raise Reject(ERR_INVALID, f"param error: {key} is missing or not an object")
    for name in fields:
        value = obj.get(name)
        if not isinstance(value, str) or not value.strip():
            raise Reject(ERR_INVALID, f"param error: {key}.{name} is missing or empty")
    if msgtype == "feedCard":
        links = obj.get("links")
        if not isinstance(links, list) or not links or not all(isinstance(x, dict) for x in links):
            raise Reject(ERR_INVALID, "param error: feedCard.links must be a non-empty list")
    if msgtype == "actionCard":
        has_single = isinstance(obj.get("singleTitle"), str) and isinstance(obj.get("singleURL"), str)
        if not has_single and not isinstance(obj.get("btns"), list):
            raise Reject(ERR_INVALID, "param error: actionCard needs singleTitle/singleURL or btns")
    at = body.get("at")
    if at is not None and not isinstance(at, dict):
        raise Reject(ERR_INVALID, "param error: at must be an object")
    if "msgUuid" in body and not isinstance(body["msgUuid"], str):
        raise Reject(ERR_INVALID, "param error: msgUuid must be a string")


def _searchable_text(body: dict[str, Any]) -> list[str]:
    """The strings the keyword check looks into (title and text of the message)."""
    msgtype = body["msgtype"]
    obj = body[_REQUIRED_FIELDS[msgtype][0]]
    if msgtype == "text":
        return [obj["content"]]
    if msgtype == "feedCard":
        return [str(link.get("title", "")) for link in obj["links"]]
    return [obj.get("title", ""), obj.get("text", "")]


def _mention_text(body: dict[str, Any]) -> str:
    """The text in which ``@<mobile>`` must appear for a mention to ping (text and markdown only)."""
    if body["msgtype"] == "text":
        return body["text"]["content"]
    if body["msgtype"] == "markdown":
        return body["markdown"]["text"]
    return ""


def _mentions(body: dict[str, Any]):
    at = body.get("at") or {}
    mobiles = at.get("atMobiles") or []
    text = _mention_text(body)
    pinged: list[str] = []
    if isinstance(mobiles, list):
        for mobile in mobiles:
            mobile = str(mobile)
            if mobile and f"@{mobile}" in text and mobile not in pinged:
                pinged.append(mobile)
    return pinged, bool(at.get("isAtAll") is True)


def render_message(body: dict[str, Any], pinged: list[str], at_all: bool) -> str:
    """Render an accepted message the way the group would see it, as a boxed block (no URL of the
    webhook, no token)."""
    msgtype = body.get("msgtype", "?")
    obj = body.get(_REQUIRED_FIELDS.get(msgtype, (msgtype, []))[0]) or {}
    if msgtype == "text":
        title, text = "(text message)", obj.get("content", "")
    elif msgtype == "feedCard":
        title = "(feed card)"
        text = "\n".join(
            f"* {ln.get('title', '')} -> {ln.get('messageURL', '')}" for ln in obj.get("links", [])
        )
    else:
        title, text = obj.get("title", ""), obj.get("text", "")
        if msgtype == "link":
            text = f"{text}\n-> {obj.get('messageUrl', '')}"
        elif msgtype == "actionCard":
            if obj.get("singleTitle"):
                text = f"{text}\n[{obj['singleTitle']}] -> {obj.get('singleURL', '')}"
            for btn in obj.get("btns") or []:
                if isinstance(btn, dict):
                    text = f"{text}\n[{btn.get('title', '')}] -> {btn.get('actionURL', '')}"
    if at_all:
        ping_line = "pings: @all"
    elif pinged:
        ping_line = "pings: " + ", ".join(f"@{m}" for m in pinged)
    else:
        ping_line = "pings: nobody"
    return echo_box(
        f"DingTalk robot message ({msgtype})", [f"│ {title}"], boxed_rows(text), [f"│ {ping_line}"]
    )


class FakeRobot(FakeChannelRobot):
    """A DingTalk custom robot on a local port. Use as a context manager or via start()/stop()."""

    OK = (ERR_OK, MSG_OK)
    TOO_FAST = (ERR_TOO_FAST, MSG_TOO_FAST)
    CHANNEL_NAME = "DingTalk"
    CHANNEL = "dingtalk"
    DEFAULT_TOKEN = "test-token"
    RATE_LIMIT = RATE_LIMIT_PER_WINDOW
    WINDOW = WINDOW_S
    BLOCK = BLOCK_S
    HAS_SIGNATURE = HAS_KEYWORD = HAS_MSG_UUID = True

    @property
    def url(self) -> str:
        query = urllib.parse.urlencode({"access_token": self._token})
        return f"{self.base_url}{SEND_PATH}?{query}"

    def is_send_path(self, path: str) -> bool:
        return path == SEND_PATH

    def _answer(self, handler, rejection: Reject | None) -> None:
        """Success or ``rejection`` as DingTalk answers it: always HTTP 200 with errcode and errmsg."""
        code, message = self.OK if rejection is None else (rejection.errcode, rejection.errmsg)
        handler._send_json(200, {"errcode": code, "errmsg": message})

    def render(self, record: dict[str, Any]) -> str:
        """An accepted message as the group would see it, for the console."""
        return render_message(record["body"], record["pinged"], record["at_all"])

    def _check_sign(self, params: dict[str, list[str]]) -> None:
        assert self._secret is not None
        ts_raw = (params.get("timestamp") or [""])[0]
        sign = (params.get("sign") or [""])[0]
        if not ts_raw or not sign:
            raise Reject(ERR_SECURITY, "sign not match, more: timestamp and sign are required")
        try:
            ts = int(ts_raw)
        except ValueError:
            raise Reject(ERR_SECURITY, "sign not match, more: timestamp is not an integer (ms)") from None
        if abs(time.time() * 1000 - ts) > SIGN_SKEW_S * 1000:
            raise Reject(
                ERR_SECURITY, f"sign not match, more: timestamp is more than {SIGN_SKEW_S} s from now"
            )
        if not hmac.compare_digest(sign.encode("utf-8"), compute_sign(self._secret, ts).encode("ascii")):
            raise Reject(ERR_SECURITY, "sign not match, more: signature does not match the robot's secret")

    def _process(self, path: str, query: str, body: bytes, received_at: float) -> dict[str, Any] | None:
        """Apply the real robot's checks in order. Returns the stored record, None for a duplicate
        msgUuid (answered ok but not stored), or raises Reject."""
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        token = (params.get("access_token") or [""])[0]
        if not token or not hmac.compare_digest(token.encode("utf-8"), self._token.encode("utf-8")):
            raise Reject(ERR_TOKEN, MSG_TOKEN)

        self._check_blocked()

        signed = False
        if self._secret is not None:
            self._check_sign(params)
            signed = True

        if len(body) > MAX_BODY_BYTES:
            raise Reject(ERR_TOO_LONG, MSG_TOO_LONG)

        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Reject(ERR_INVALID, "invalid json: body is not valid UTF-8 JSON") from None
        _validate(parsed)

        if self._keyword is not None and not any(self._keyword in s for s in _searchable_text(parsed)):
            raise Reject(ERR_SECURITY, MSG_KEYWORD)

        pinged, at_all = _mentions(parsed)
        record = {
            "body": parsed,
            "received_at": received_at,
            "pinged": pinged,
            "at_all": at_all,
            "signed": signed,
        }
        return self._admit(record, parsed.get("msgUuid"))
