"""What every chat channel shares: one HTTP pool per process, rendering to the channel's limits, the
send with its network errors, and a robot's identity for the shared rate limit.

A channel module subclasses :class:`ChannelRobot` and fills in what is its own: the payload, the
webhook URL (signing, if it is done there), how its answer says success or failure, and its limits
as named constants. Nothing here ever puts a webhook URL, token or secret into a message or log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from typing import Any, ClassVar

import requests

from airflow_ext.alert import Alert
from airflow_ext.config import RobotSettings
from airflow_ext.errors import ConfigError, DeliveryError
from airflow_ext.problems import report_once
from airflow_ext.render import MARKDOWN, Markup, RenderedMessage, render_markdown
from airflow_ext.template import MessageTemplate

log = logging.getLogger(__name__)

#: Length of the idempotency key sent where a channel has one (DingTalk's msgUuid), hex characters.
MSG_UUID_CHARS = 32

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


def network_cause(err: BaseException) -> str:
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


def is_retryable_http_status(status: int) -> bool:
    return status >= 500 or status == 429


def msg_uuid_for(alert: Alert) -> str:
    """One try of one task instance has one id: a channel that deduplicates drops a repeat of it."""
    return hashlib.sha256(alert.dedup_key.encode("utf-8")).hexdigest()[:MSG_UUID_CHARS]


class ChannelRobot:
    """One robot webhook of one channel. Thread-safe; holds no connection state between alerts."""

    #: The channel's name, as in ``[dingbot]`` docs and the robot key.
    CHANNEL: ClassVar[str]
    #: The channel as its users call it, in log lines.
    DISPLAY_NAME: ClassVar[str]
    #: The channel refuses request bodies larger than this (bytes of the UTF-8 JSON body).
    MAX_BODY_BYTES: ClassVar[int]
    #: Messages one robot accepts per rolling minute.
    RATE_LIMIT_PER_MINUTE: ClassVar[int]
    #: Seconds to leave between two messages to one robot (a per-second limit); 0: none.
    MIN_SEND_INTERVAL_S: ClassVar[float] = 0.0
    #: Seconds a robot refuses everything after it throttled us, unless it says how long.
    THROTTLED_PAUSE_S: ClassVar[float] = 60.0
    #: How text is marked up in this channel's messages.
    MARKUP: ClassVar[Markup] = MARKDOWN

    def __init__(self, settings: RobotSettings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self._session = session or shared_session()
        self._template: MessageTemplate | None = None
        self._template_failed = False

    def __repr__(self) -> str:  # never the webhook
        return f"<{type(self).__name__} {self.settings.name}>"

    # -- what a channel fills in ------------------------------------------------------------------

    def payload(self, message: RenderedMessage, msg_uuid: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def credential(self) -> str:
        """The part of the webhook that identifies the robot (its token or key)."""
        raise NotImplementedError

    def request(self, body: bytes) -> tuple[str, bytes]:
        """The URL and body of one attempt: a channel that signs does it here, fresh each time."""
        return self.settings.url, body

    def check_answer(self, response: requests.Response) -> dict[str, Any]:
        """The channel's answer as a dict if it says the message was accepted; else DeliveryError."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """Names the robot (and so its rate limit) without revealing it: a hash of its credential."""
        return hashlib.sha256(f"{self.CHANNEL}:{self.credential()}".encode()).hexdigest()[:32]

    @property
    def name(self) -> str:
        return self.settings.name

    def fits(self, message: RenderedMessage) -> bool:
        """Whether ``message`` makes a body within the channel's limits (an id has a fixed length)."""
        return len(encode_body(self.payload(message, "0" * MSG_UUID_CHARS))) <= self.MAX_BODY_BYTES

    @staticmethod
    def msg_uuid_for(alert: Alert) -> str:
        return msg_uuid_for(alert)

    def body_for(self, alert: Alert) -> bytes:
        """The JSON body for ``alert``: within the channel's limits, carrying keyword and mentions."""
        return encode_body(self.payload(self.render(alert), self.msg_uuid_for(alert)))

    def render(self, alert: Alert) -> RenderedMessage:
        """The alert as a message, in the operator's layout if one is set and works, else the built-in.

        A broken ``message_template`` never costs an alert: it is logged once per process and the
        built-in layout is sent instead.
        """
        if self.settings.message_template and not self._template_failed:
            try:
                return self._render(alert, self._compiled_template())
            except ConfigError as err:  # does not compile, or cannot render this alert
                self._template_failed = True
                report_once(log, f"{self.DISPLAY_NAME} alerts use the built-in layout", str(err))
        return self._render(alert, None)

    def _compiled_template(self) -> MessageTemplate:
        if self._template is None:
            self._template = MessageTemplate(self.settings.message_template or "")
        return self._template

    def _render(self, alert: Alert, template: MessageTemplate | None) -> RenderedMessage:
        return render_markdown(
            alert,
            keyword=self.settings.keyword,
            at_mobiles=self.mention_ids(),
            fits=self.fits,
            template=template,
            markup=self.MARKUP,
        )

    def mention_ids(self) -> tuple[str, ...]:
        """Who the text mentions (written with ``MARKUP.mention``); a channel may mention elsewhere."""
        return self.settings.mentions

    def post(self, body: bytes, *, connect_timeout_s: float, read_timeout_s: float) -> dict[str, Any]:
        """Send once. Returns the channel's answer when it accepted the message, raises DeliveryError.

        Messages never include the URL: it carries the token (and, for some channels, a signature).
        """
        url, data = self.request(body)
        try:
            response = self._session.post(
                url,
                data=data,
                headers={"Content-Type": "application/json; charset=utf-8"},
                timeout=(connect_timeout_s, read_timeout_s),
                allow_redirects=False,
            )
        except requests.Timeout:
            raise DeliveryError("the robot did not answer in time", retryable=True) from None
        except requests.RequestException as err:
            raise DeliveryError(f"cannot reach the robot ({network_cause(err)})", retryable=True) from None
        return self.check_answer(response)

    def json_answer(self, response: requests.Response, code_field: str) -> tuple[dict[str, Any], int]:
        """For channels answering HTTP 200 with a JSON error code: the answer and its code.

        A non-200 status or an answer without the code is a DeliveryError (retryable when the
        channel is likely to recover: 5xx, 429, a proxy's HTML page).
        """
        if response.status_code != 200:
            code = self._code_in(response, code_field)
            if code is not None:  # some channels send their own code with a 4xx (Feishu's 9499)
                return response.json(), code
            raise DeliveryError(
                f"the robot answered HTTP {response.status_code}",
                retryable=is_retryable_http_status(response.status_code),
                http_status=response.status_code,
            )
        code = self._code_in(response, code_field)
        if code is None:
            raise DeliveryError(
                f"the robot answered HTTP 200 without a JSON {code_field}", retryable=True, http_status=200
            )
        return response.json(), code

    def refusal(
        self,
        response: requests.Response,
        code: int,
        message: str,
        hint: str,
        *,
        retryable: bool,
        throttled: bool = False,
        code_field: str = "errcode",
        message_field: str = "errmsg",
    ) -> DeliveryError:
        """The DeliveryError of a channel's own refusal, in one wording for every channel."""
        return DeliveryError(
            f"the robot refused the message: {code_field}={code} {message_field}={message!r} ({hint})",
            retryable=retryable,
            errcode=code,
            errmsg=message,
            http_status=response.status_code,
            throttled=throttled,
        )

    def connection_name(self) -> str:
        """How hints name the robot: its Connection, or the ``[dingding]`` section."""
        if self.settings.name.startswith("["):
            return self.settings.name
        return f"Connection {self.settings.name!r}"

    @staticmethod
    def _code_in(response: requests.Response, code_field: str) -> int | None:
        try:
            answer = response.json()
            return int(answer[code_field])
        except (ValueError, KeyError, TypeError):
            return None


class ErrcodeRobot(ChannelRobot):
    """A channel that answers (almost) every request HTTP 200 with an ``errcode`` and ``errmsg``
    (DingTalk, WeCom): success is HTTP 200 *and* ``errcode == 0``; the channel's code tables say
    which refusals are worth another try and which mean the robot is throttled."""

    THROTTLED_ERRCODES: ClassVar[frozenset[int]]
    RETRYABLE_ERRCODES: ClassVar[frozenset[int]]
    #: What to do about a permanent refusal, by errcode; ``{name}`` is the Connection (or section).
    PERMANENT_ERRCODE_HINTS: ClassVar[dict[int, str]]
    UNKNOWN_ERRCODE_HINT: ClassVar[str] = "refused"

    def check_answer(self, response: requests.Response) -> dict[str, Any]:
        answer, errcode = self.json_answer(response, "errcode")
        if errcode == 0:
            return answer
        errmsg = str(answer.get("errmsg", ""))
        retryable = errcode in self.RETRYABLE_ERRCODES
        throttled = errcode in self.THROTTLED_ERRCODES
        if throttled:
            hint = f"throttled: more than {self.RATE_LIMIT_PER_MINUTE} messages a minute to this robot"
        elif retryable:
            hint = f"{self.DISPLAY_NAME} is busy"
        else:
            hint = self.PERMANENT_ERRCODE_HINTS.get(errcode, self.UNKNOWN_ERRCODE_HINT)
            hint = hint.format(name=self.connection_name())
        raise self.refusal(response, errcode, errmsg, hint, retryable=retryable, throttled=throttled)
