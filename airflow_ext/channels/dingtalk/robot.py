"""DingTalk custom robot: payload, signing, limits and the errcode contract.

DingTalk answers almost every error with HTTP 200 and a non-zero ``errcode``: success is HTTP 200
*and* ``errcode == 0``. Each refusal becomes a :class:`DeliveryError` that says whether trying again
can help.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit

from airflow_ext.channels.base.robot import (  # noqa: F401 - shared_session and encode_body: re-exported
    MSG_UUID_CHARS,
    ErrcodeRobot,
    encode_body,
    is_retryable_http_status,
    shared_session,
)
from airflow_ext.render import RenderedMessage

#: DingTalk refuses request bodies larger than this (bytes of the UTF-8 JSON body, not characters).
MAX_BODY_BYTES = 20_000
#: A robot accepts this many messages per rolling minute, then refuses everything for 10 minutes.
RATE_LIMIT_PER_MINUTE = 20
#: Seconds a robot refuses everything after more than RATE_LIMIT_PER_MINUTE.
THROTTLED_PAUSE_S = 600.0

#: Where a ``dingding`` Connection without a host sends (as apache-airflow-providers-dingding does).
DEFAULT_HOST = "https://oapi.dingtalk.com"
SEND_PATH = "/robot/send"
TOKEN_NAME = "robot's access_token"

THROTTLED_ERRCODES = frozenset({130101, 410100})
#: -1: "system busy, please retry".
BUSY_ERRCODES = frozenset({-1})
RETRYABLE_ERRCODES = THROTTLED_ERRCODES | BUSY_ERRCODES

#: Why a permanent refusal happened, in words an operator can act on.
PERMANENT_ERRCODE_HINTS = {
    310000: "security settings refused the message (signature, keyword or IP allow-list): "
    "check the robot's secret and keyword",
    300001: "the robot's access_token is not valid",
    400101: "the robot's access_token is missing or not valid",
    300005: "the robot's access_token is not valid",
    460101: "the message is too long",
    40035: "the request was malformed",
}


def sign(secret: str, timestamp_ms: int) -> str:
    """URL-encoded base64(HMAC-SHA256(secret, f"{timestamp_ms}\\n{secret}")), as DingTalk checks it."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return quote_plus(base64.b64encode(digest.digest()))


def webhook_url(host: str, token: str) -> str:
    """The webhook of a ``dingding`` Connection: ``{host}/robot/send?access_token={password}``."""
    return f"{host.rstrip('/')}{SEND_PATH}?{urlencode({'access_token': token})}"


def validate_token(token: str) -> str | None:
    """Why ``token`` cannot be an access_token (never repeating it), or None."""
    if "://" in token or "access_token=" in token:
        return "must be the access_token alone, not the webhook URL"
    if any(ch.isspace() for ch in token) or any(ch in token for ch in "&?#/"):
        return "is not an access_token (it holds spaces or URL characters)"
    return None


def is_retryable_errcode(errcode: int) -> bool:
    return errcode in RETRYABLE_ERRCODES


class DingTalkRobot(ErrcodeRobot):
    """One DingTalk custom robot (``[dingding]`` or a ``dingding`` Connection)."""

    CHANNEL = "dingtalk"
    DISPLAY_NAME = "DingTalk"
    MAX_BODY_BYTES = MAX_BODY_BYTES
    RATE_LIMIT_PER_MINUTE = RATE_LIMIT_PER_MINUTE
    THROTTLED_PAUSE_S = THROTTLED_PAUSE_S
    THROTTLED_ERRCODES = THROTTLED_ERRCODES
    RETRYABLE_ERRCODES = RETRYABLE_ERRCODES
    PERMANENT_ERRCODE_HINTS = PERMANENT_ERRCODE_HINTS

    def payload(self, message: RenderedMessage, msg_uuid: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "msgtype": "markdown",
            "markdown": {"title": message.title, "text": message.text},
            "at": {"atMobiles": list(self.settings.mentions), "isAtAll": self.settings.at_all},
        }
        if msg_uuid:
            payload["msgUuid"] = msg_uuid
        return payload

    def credential(self) -> str:
        return parse_qs(urlsplit(self.settings.url).query).get("access_token", [""])[0]

    def request(self, body: bytes) -> tuple[str, bytes]:
        url = self.settings.url
        if self.settings.secret:
            timestamp_ms = int(time.time() * 1000)  # fresh for every request: DingTalk allows 1 h skew
            url = f"{url}&timestamp={timestamp_ms}&sign={sign(self.settings.secret, timestamp_ms)}"
        return url, body
