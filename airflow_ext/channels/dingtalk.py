"""DingTalk custom robot: payload, signing, limits and the errcode contract.

DingTalk answers almost every error with HTTP 200 and a non-zero ``errcode``: success is HTTP 200
*and* ``errcode == 0``. Each refusal becomes a :class:`DeliveryError` that says whether trying again
can help.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import requests

from airflow_ext.alert import Alert
from airflow_ext.config import DingTalkSettings
from airflow_ext.errors import ConfigError, DeliveryError
from airflow_ext.problems import report_once
from airflow_ext.render import RenderedMessage, render_markdown
from airflow_ext.template import MessageTemplate

log = logging.getLogger(__name__)

#: DingTalk refuses request bodies larger than this (bytes of the UTF-8 JSON body, not characters).
MAX_BODY_BYTES = 20_000
#: A robot accepts this many messages per rolling minute, then refuses everything for 10 minutes.
RATE_LIMIT_PER_MINUTE = 20

#: Length of the msgUuid we send (hex characters).
MSG_UUID_CHARS = 32

THROTTLED_ERRCODES = frozenset({130101, 410100})
#: -1: "system busy, please retry".
BUSY_ERRCODES = frozenset({-1})
RETRYABLE_ERRCODES = THROTTLED_ERRCODES | BUSY_ERRCODES

#: Why a permanent refusal happened, in words an operator can act on.
PERMANENT_ERRCODE_HINTS = {
    310000: "security settings refused the message (signature, keyword or IP allow-list): "
    "check [dingding] secret and keyword",
    300001: "the access_token in [dingding] bot_url is not valid",
    400101: "the access_token in [dingding] bot_url is missing or not valid",
    300005: "the access_token in [dingding] bot_url is not valid",
    460101: "the message is too long",
    40035: "the request was malformed",
}


def sign(secret: str, timestamp_ms: int) -> str:
    """URL-encoded base64(HMAC-SHA256(secret, f"{timestamp_ms}\\n{secret}")), as DingTalk checks it."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return quote_plus(base64.b64encode(digest.digest()))


def is_retryable_errcode(errcode: int) -> bool:
    return errcode in RETRYABLE_ERRCODES


def is_retryable_http_status(status: int) -> bool:
    return status >= 500 or status == 429


def _network_cause(err: BaseException) -> str:
    """What the system said about a failed request ("Connection refused"), or the exception's type.

    Never the exception's own text: requests and urllib3 put the URL, and so the token, into it.
    """
    cause: BaseException | None = err
    for _ in range(10):  # a cause chain is short; this also ends a cyclic one
        if cause is None:
            break
        if isinstance(cause, OSError) and not isinstance(cause, requests.RequestException) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return type(err).__name__


_session: requests.Session | None = None
_session_pid: int | None = None
_session_lock = threading.Lock()


def shared_session() -> requests.Session:
    """One connection pool per process: keep-alive saves a TCP (and TLS) handshake per alert.

    Per process, not per interpreter: Airflow forks (task runners, LocalExecutor workers), and a
    child must never write into a socket its parent also uses.
    """
    global _session, _session_pid
    with _session_lock:
        if _session is None or _session_pid != os.getpid():
            _session, _session_pid = requests.Session(), os.getpid()
        return _session


def encode_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class DingTalkRobot:
    """One robot webhook. Thread-safe; holds no connection state between alerts."""

    def __init__(self, settings: DingTalkSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self._session = session or shared_session()
        self._template: MessageTemplate | None = None
        self._template_failed = False

    def payload(self, message: RenderedMessage, msg_uuid: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "msgtype": "markdown",
            "markdown": {"title": message.title, "text": message.text},
            "at": {"atMobiles": list(self.settings.at_mobiles), "isAtAll": self.settings.at_all},
        }
        if msg_uuid:
            payload["msgUuid"] = msg_uuid
        return payload

    @property
    def key(self) -> str:
        """Names the robot (and so its rate limit) without revealing it: a hash of its access_token."""
        token = parse_qs(urlsplit(self.settings.bot_url).query).get("access_token", [""])[0]
        return hashlib.sha256(f"dingtalk:{token}".encode()).hexdigest()[:32]

    def fits(self, message: RenderedMessage) -> bool:
        """Whether ``message`` makes a body within MAX_BODY_BYTES (a msgUuid has a fixed length)."""
        return len(encode_body(self.payload(message, "0" * MSG_UUID_CHARS))) <= MAX_BODY_BYTES

    @staticmethod
    def msg_uuid_for(alert: Alert) -> str:
        """One try of one task instance has one msgUuid: DingTalk drops a repeat of it."""
        return hashlib.sha256(alert.dedup_key.encode("utf-8")).hexdigest()[:MSG_UUID_CHARS]

    def body_for(self, alert: Alert) -> bytes:
        """The JSON body for ``alert``: at most MAX_BODY_BYTES, carrying the keyword and the mentions."""
        return encode_body(self.payload(self.render(alert), self.msg_uuid_for(alert)))

    def render(self, alert: Alert) -> RenderedMessage:
        """The alert as a message, in the operator's layout if one is set and works, else the built-in.

        A broken ``[dingding] message_template`` never costs an alert: it is logged once per
        process and the built-in layout is sent instead.
        """
        if self.settings.message_template and not self._template_failed:
            try:
                return self._render(alert, self._compiled_template())
            except ConfigError as err:  # does not compile, or cannot render this alert
                self._template_failed = True
                report_once(log, "DingTalk alerts use the built-in layout", str(err))
        return self._render(alert, None)

    def _compiled_template(self) -> MessageTemplate:
        if self._template is None:
            self._template = MessageTemplate(self.settings.message_template or "")
        return self._template

    def _render(self, alert: Alert, template: MessageTemplate | None) -> RenderedMessage:
        return render_markdown(
            alert,
            keyword=self.settings.keyword,
            at_mobiles=self.settings.at_mobiles,
            fits=self.fits,
            template=template,
        )

    def _signed_url(self) -> str:
        url = self.settings.bot_url
        if self.settings.secret:
            timestamp_ms = int(time.time() * 1000)  # fresh for every request: DingTalk allows 1 h skew
            url = f"{url}&timestamp={timestamp_ms}&sign={sign(self.settings.secret, timestamp_ms)}"
        return url

    def post(self, body: bytes, *, connect_timeout_s: float, read_timeout_s: float) -> dict[str, Any]:
        """Send once. Returns the robot's JSON answer on errcode 0, raises DeliveryError otherwise.

        Messages never include the URL: it carries the access_token (and the signature).
        """
        try:
            response = self._session.post(
                self._signed_url(),
                data=body,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=(connect_timeout_s, read_timeout_s),
                allow_redirects=False,
            )
        except requests.Timeout:
            raise DeliveryError("the robot did not answer in time", retryable=True) from None
        except requests.RequestException as err:
            raise DeliveryError(f"cannot reach the robot ({_network_cause(err)})", retryable=True) from None

        if response.status_code != 200:
            raise DeliveryError(
                f"the robot answered HTTP {response.status_code}",
                retryable=is_retryable_http_status(response.status_code),
                http_status=response.status_code,
            )
        try:
            answer = response.json()
            errcode = int(answer["errcode"])
        except (ValueError, KeyError, TypeError):
            raise DeliveryError(
                "the robot answered HTTP 200 without a JSON errcode", retryable=True, http_status=200
            ) from None
        errmsg = str(answer.get("errmsg", ""))
        if errcode != 0:
            retryable = is_retryable_errcode(errcode)
            if errcode in THROTTLED_ERRCODES:
                hint = f"throttled: more than {RATE_LIMIT_PER_MINUTE} messages a minute to this robot"
            elif retryable:
                hint = "DingTalk is busy"
            else:
                hint = PERMANENT_ERRCODE_HINTS.get(errcode, "refused")
            raise DeliveryError(
                f"the robot refused the message: errcode={errcode} errmsg={errmsg!r} ({hint})",
                retryable=retryable,
                errcode=errcode,
                errmsg=errmsg,
                http_status=200,
            )
        return answer
