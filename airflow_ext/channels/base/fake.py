"""A local stand-in for a DingTalk custom robot ("自定义机器人") webhook.

Used by the demo and the tests. It imitates what a client of the real service can observe:

* ``POST /robot/send?access_token=TOKEN`` with a JSON body; every refusal is **HTTP 200** with a
  non-zero ``errcode`` and an ``errmsg``; success is ``{"errcode": 0, "errmsg": "ok"}``.
* the three security settings: signature (``timestamp`` + ``sign``), keyword, and (implicitly) the
  token itself;
* the 20000-byte body limit, JSON/field validation, the 20-per-minute rate limit with its 10-minute
  block, ``msgUuid`` idempotency and the ``@mobile`` mention rule.

On top of that it has failure modes a real network can produce (``hang``, ``slow``, ``http500``,
``garbage``, ``errcode``) and HTTP control endpoints (``/_messages``, ``/_requests``, ``/_control``,
``/_reset``) so a robot running in another process can be driven by tests. ``GET /`` (or ``/inbox``)
is a page of the messages it accepted, newest first, each drawn as the group's client shows it
(:mod:`airflow_ext.ui.message_html`, which needs markdown-it-py: without it the page shows the text
the console shows).

Standard library only; it must stay importable without Airflow. It never prints, logs or shows the
access token or the secret.

Run it on its own with ``python -m airflow_ext.fake_robot --help``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import hashlib
import hmac
import html
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = [
    "BLOCK_S",
    "FakeRobot",
    "MAX_BODY_BYTES",
    "RATE_LIMIT_PER_WINDOW",
    "SIGN_SKEW_S",
    "WINDOW_S",
    "compute_sign",
    "main",
    "message_appender",
    "read_messages_file",
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
INBOX_PATHS = ("/", "/inbox")
#: Seconds between the inbox page's checks for new messages.
INBOX_POLL_S = 3
MODES = ("ok", "hang", "slow", "http500", "garbage", "errcode")
GARBAGE_BODY = b"<html>oops</html>"
HTTP500_BODY = b"internal server error"
ECHO_WIDTH = 64  # characters of the horizontal rules in the echoed box

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


class _Reject(Exception):
    """Internal: refuse the message with this code and text (DingTalk: HTTP 200 with errcode/errmsg;
    a channel that answers errors with an HTTP status sets ``http_status``)."""

    def __init__(self, errcode: int, errmsg: str, http_status: int = 200) -> None:
        super().__init__(errmsg)
        self.errcode = errcode
        self.errmsg = errmsg
        self.http_status = http_status


Reject = _Reject  # for the fakes of the other channels (airflow_ext.fakes)


# --- message inspection ---------------------------------------------------------------------


def _validate(body: Any) -> None:
    if not isinstance(body, dict):
        raise _Reject(ERR_INVALID, "invalid json: body must be a JSON object")
    msgtype = body.get("msgtype")
    if not isinstance(msgtype, str) or not msgtype:
        raise _Reject(ERR_INVALID, "param error: msgtype is missing")
    if msgtype not in _REQUIRED_FIELDS:
        raise _Reject(ERR_INVALID, f"param error: unsupported msgtype {msgtype!r}")
    key, fields = _REQUIRED_FIELDS[msgtype]
    obj = body.get(key)
    if not isinstance(obj, dict):
        raise _Reject(ERR_INVALID, f"param error: {key} is missing or not an object")
    for name in fields:
        value = obj.get(name)
        if not isinstance(value, str) or not value.strip():
            raise _Reject(ERR_INVALID, f"param error: {key}.{name} is missing or empty")
    if msgtype == "feedCard":
        links = obj.get("links")
        if not isinstance(links, list) or not links or not all(isinstance(x, dict) for x in links):
            raise _Reject(ERR_INVALID, "param error: feedCard.links must be a non-empty list")
    if msgtype == "actionCard":
        has_single = isinstance(obj.get("singleTitle"), str) and isinstance(obj.get("singleURL"), str)
        if not has_single and not isinstance(obj.get("btns"), list):
            raise _Reject(ERR_INVALID, "param error: actionCard needs singleTitle/singleURL or btns")
    at = body.get("at")
    if at is not None and not isinstance(at, dict):
        raise _Reject(ERR_INVALID, "param error: at must be an object")
    if "msgUuid" in body and not isinstance(body["msgUuid"], str):
        raise _Reject(ERR_INVALID, "param error: msgUuid must be a string")


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
    head = f"╭─ DingTalk robot message ({msgtype}) "
    lines = [head + "─" * max(3, ECHO_WIDTH - len(head))]
    lines.append(f"│ {title}")
    lines.append("├" + "─" * (ECHO_WIDTH - 1))
    lines.extend(f"│ {line}".rstrip() for line in str(text).splitlines() or [""])
    lines.append("├" + "─" * (ECHO_WIDTH - 1))
    lines.append(f"│ {ping_line}")
    lines.append("╰" + "─" * (ECHO_WIDTH - 1))
    return "\n".join(lines)


# --- the inbox page -------------------------------------------------------------------------


def _is_record(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("body"), dict)
        and isinstance(record.get("received_at"), (int, float))
    )


def _received_html(record: dict[str, Any]) -> str:
    try:
        when = float(record["received_at"])
        shown = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        machine = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    except (OverflowError, OSError, ValueError):  # a record from a file may hold any number
        return "<time>at an unknown time</time>"
    return f'<time datetime="{machine}">{shown}</time>'


#: How each channel's fake names "everyone" among whom a message pinged.
_EVERYONE = {"all", "@all", "!channel", "!here", "!everyone"}


def _pings_html(record: dict[str, Any]) -> str:
    pinged = [str(who) for who in record.get("pinged") or []]
    names = list(dict.fromkeys("@" + who.lstrip("!@") for who in pinged))
    if record.get("at_all") and not _EVERYONE & set(pinged):
        names.insert(0, "@all")
    if not names:
        return '<span class="inbox-nobody">nobody</span>'
    return " ".join(f'<span class="inbox-ping">{html.escape(name)}</span>' for name in names)


_INBOX_CSS = """
body { margin: 0; background: #eef0f3; color: #1f2329;
  font: 14px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans CJK SC", Arial, sans-serif; }
header { position: sticky; top: 0; z-index: 1; padding: 12px 24px; background: #fff;
  border-bottom: 1px solid #dfe1e5; }
header h1 { margin: 0; font-size: 17px; }
header p { margin: 2px 0 0; color: #646a73; font-size: 13px; }
main { max-width: 820px; margin: 0 auto; padding: 16px 24px 40px; }
.inbox-message { display: flex; gap: 10px; margin: 0 0 18px; }
.inbox-avatar { flex: none; width: 36px; height: 36px; border-radius: 50%; background: #3370ff;
  color: #fff; font-size: 17px; font-weight: 600; line-height: 36px; text-align: center; }
.inbox-content { min-width: 0; flex: 1; }
.inbox-meta { margin: 0 0 4px; color: #8f959e; font-size: 12px; }
.inbox-ping { color: #1677ff; font-weight: 500; }
.inbox-text { margin: 0; padding: 10px 14px; background: #fff; border-radius: 4px 14px 14px 14px;
  white-space: pre-wrap; font: 13px/1.5 ui-monospace, Menlo, Consolas, monospace; }
.inbox-empty { color: #8f959e; text-align: center; margin-top: 48px; }
""".strip()

#: The page; the script reloads it when the robot's messages change (checked every few seconds).
_INBOX_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body data-count="{count}">
<header><h1>{name}</h1><p>{summary}</p></header>
<main>
{messages}
</main>
<script>
setInterval(function () {{
  fetch("/_messages", {{cache: "no-store"}})
    .then(function (answer) {{ return answer.json(); }})
    .then(function (messages) {{
      if (messages.length !== Number(document.body.dataset.count)) location.reload();
    }})
    .catch(function () {{}});
}}, {poll_ms});
</script>
</body>
</html>
"""


# --- HTTP plumbing --------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for hanging handlers
    allow_reuse_address = True

    robot: FakeRobot

    def handle_error(self, request, client_address) -> None:  # noqa: D401 - quiet by design
        # Client disconnects (timeouts on the client side, stop() tearing connections down) are
        # normal here; anything else is a bug in this file and should be visible.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # includes ConnectionError and socket.timeout
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeDingTalkRobot/1.0"
    sys_version = ""
    timeout = 30  # seconds an idle keep-alive connection may sit before the handler gives up
    # Headers and body go out in two writes: with Nagle on, a keep-alive client waits for its
    # delayed ACK (~40 ms) before the body arrives. Real front ends (nginx: tcp_nodelay) don't.
    disable_nagle_algorithm = True

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # quiet: the default would log every request line (which contains the token)

    def setup(self) -> None:
        super().setup()
        self.server.robot._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.robot._track(self.connection, add=False)

    # -- helpers

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _send_json(self, status: int, obj: Any) -> None:
        payload = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self._send(status, payload, "application/json;charset=utf-8")

    # -- verbs

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = urllib.parse.urlsplit(self.path).path
        robot = self.server.robot
        if path in INBOX_PATHS:
            self._send(200, robot.inbox_html().encode("utf-8"), "text/html; charset=utf-8")
        elif path == "/_messages":
            self._send_json(200, robot.messages)
        elif path == "/_requests":
            self._send_json(200, robot.requests)
        elif robot.is_send_path(path):
            self._send_json(405, {"error": "method not allowed, use POST"})
        else:
            self._send_json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        split = urllib.parse.urlsplit(self.path)
        robot = self.server.robot
        received_at = time.time()
        body = self._read_body()
        if robot.is_send_path(split.path):
            robot._handle_send(self, split.path, split.query, body, received_at)
        elif split.path == "/_control":
            try:
                kw = json.loads(body.decode("utf-8") or "{}")
                if not isinstance(kw, dict):
                    raise ValueError("control body must be a JSON object")
                mode = kw.pop("mode")
                robot.set_mode(mode, **kw)
            except (ValueError, KeyError, TypeError) as exc:
                self._send_json(400, {"ok": False, "error": str(exc)})
                return
            self._send_json(200, {"ok": True, "mode": mode})
        elif split.path == "/_reset":
            robot.reset()
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"error": "not found"})


# --- the robot ------------------------------------------------------------------------------


class FakeRobot:
    """A DingTalk custom robot on a local port. Use as a context manager or via start()/stop().

    The fakes of the other channels (:mod:`airflow_ext.fakes`) subclass it: they override
    :meth:`is_send_path`, :attr:`url`, :meth:`_answer`, :meth:`_process` and :meth:`render`, and
    use :meth:`_admit` for the rate limit, its block and idempotency keys.
    """

    #: How the channel's success looks to a client, and its throttled refusal.
    OK = (ERR_OK, MSG_OK)
    TOO_FAST = (ERR_TOO_FAST, MSG_TOO_FAST)
    CHANNEL_NAME = "DingTalk"
    #: The channel as airflow_ext.ui.message_html names it, to draw the inbox.
    CHANNEL = "dingtalk"
    #: The channel's defaults: the token a test robot takes, its limits, and which of the base
    #: class's features the channel has (a channel without them ignores the arguments).
    DEFAULT_TOKEN = "test-token"
    RATE_LIMIT = RATE_LIMIT_PER_WINDOW
    WINDOW = WINDOW_S
    BLOCK = BLOCK_S
    HAS_SIGNATURE = True
    HAS_KEYWORD = True
    HAS_MSG_UUID = True

    def __init__(
        self,
        access_token: str | None = None,
        secret: str | None = None,
        keyword: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int | None = None,
        window_s: float | None = None,
        block_s: float | None = None,
        echo: Callable[[str], None] | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        dedup_msg_uuid: bool = True,
    ) -> None:
        """Limits left out are the channel's (``RATE_LIMIT`` per ``WINDOW`` s, then a ``BLOCK`` s block).
        ``dedup_msg_uuid=False`` stores a repeated ``msgUuid`` like any message: tests that prove
        exactly-once delivery use it, so that they count what the sender sent, not what the robot kept."""
        rate_limit = self.RATE_LIMIT if rate_limit is None else rate_limit
        if rate_limit < 1:
            raise ValueError("rate_limit must be >= 1")
        self._token = self.DEFAULT_TOKEN if access_token is None else access_token
        self._secret = (secret or None) if self.HAS_SIGNATURE else None
        self._keyword = (keyword or None) if self.HAS_KEYWORD else None
        self._host = host
        self._requested_port = port
        self._rate_limit = int(rate_limit)
        self._window_s = float(self.WINDOW if window_s is None else window_s)
        self._block_s = float(self.BLOCK if block_s is None else block_s)
        self._echo = echo
        self._on_message = on_message
        self._dedup_msg_uuid = dedup_msg_uuid and self.HAS_MSG_UUID

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._messages: list[dict[str, Any]] = []
        self._requests: list[dict[str, Any]] = []
        self._accepted_at: collections.deque[float] = collections.deque()  # monotonic times in the window
        self._blocked_until = 0.0  # monotonic
        self._seen_uuids: set[str] = set()
        self._mode = "ok"
        self._mode_kw: dict[str, Any] = {}

        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never show the token
        state = f"port={self._server.server_address[1]}" if self._server else "stopped"
        return f"<FakeRobot {state} signature={'on' if self._secret else 'off'}>"

    # -- lifecycle

    def start(self) -> FakeRobot:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, self._requested_port), _Handler)
        server.robot = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-dingtalk-robot",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # releases "hang" and "slow" handlers
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:  # idle keep-alive connections would otherwise linger
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if thread is not None:
            thread.join(timeout=2.0)
        self._server = None
        self._thread = None
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> FakeRobot:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- properties

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeRobot is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def url(self) -> str:
        query = urllib.parse.urlencode({"access_token": self._token})
        return f"{self.base_url}{SEND_PATH}?{query}"

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._messages)

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._requests]

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    # -- control

    def set_mode(self, mode: str, **kw: Any) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        clean: dict[str, Any] = {}
        if mode == "slow":
            delay = float(kw.pop("delay_s", 1.0))
            if delay < 0:
                raise ValueError("delay_s must be >= 0")
            clean["delay_s"] = delay
        elif mode == "errcode":
            if "errcode" not in kw:
                raise ValueError("mode 'errcode' needs errcode=<int>")
            clean["errcode"] = int(kw.pop("errcode"))
            clean["errmsg"] = str(kw.pop("errmsg", "error"))
        if kw:
            raise ValueError(f"unexpected options for mode {mode!r}: {', '.join(sorted(kw))}")
        with self._lock:
            self._mode = mode
            self._mode_kw = clean

    def reset(self) -> None:
        with self._cond:
            self._messages.clear()
            self._requests.clear()
            self._accepted_at.clear()
            self._blocked_until = 0.0
            self._seen_uuids.clear()
            self._mode = "ok"
            self._mode_kw = {}
            self._cond.notify_all()

    def load_messages(self, records: list[dict[str, Any]]) -> int:
        """Keep ``records`` (from :func:`read_messages_file`) as messages received before this robot
        started, for the inbox and ``/_messages``; they count toward no limit. Returns how many."""
        kept = [copy.deepcopy(record) for record in records if _is_record(record)]
        with self._cond:
            self._messages[:0] = kept
            self._cond.notify_all()
        return len(kept)

    def wait_for_messages(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return self.messages

    # -- request processing (called from handler threads)

    def _record(self, received_at: float, nbytes: int, errcode: int | None, status: int | None) -> None:
        with self._lock:
            self._requests.append(
                {"received_at": received_at, "errcode": errcode, "http_status": status, "bytes": nbytes}
            )

    def _handle_send(self, handler: _Handler, path: str, query: str, body: bytes, received_at: float) -> None:
        with self._lock:
            mode, mode_kw = self._mode, dict(self._mode_kw)
        nbytes = len(body)

        if mode == "hang":
            self._record(received_at, nbytes, None, None)
            self._stopping.wait()  # never answer; stop() releases us and the connection is dropped
            handler.close_connection = True
            return
        if mode == "http500":
            self._record(received_at, nbytes, None, 500)
            handler._send(500, HTTP500_BODY, "text/plain")
            return
        if mode == "garbage":
            self._record(received_at, nbytes, None, 200)
            handler._send(200, GARBAGE_BODY, "text/html")
            return
        if mode == "errcode":
            self._record(received_at, nbytes, mode_kw["errcode"], self.forced_status(mode_kw["errcode"]))
            self._answer(handler, _Reject(mode_kw["errcode"], mode_kw["errmsg"]))
            return
        if mode == "slow":
            if self._stopping.wait(mode_kw["delay_s"]):
                handler.close_connection = True
                return

        record: dict[str, Any] | None = None
        answer: _Reject | None = None
        try:
            record = self._process(path, query, body, received_at)
        except _Reject as rej:
            answer = rej
        errcode = self.OK[0] if answer is None else answer.errcode
        self._record(received_at, nbytes, errcode, 200 if answer is None else answer.http_status)
        if record is not None:
            if self._echo is not None:
                try:
                    self._echo(self.render(record))
                except Exception:  # noqa: BLE001 - a broken console must not break the robot
                    pass
            if self._on_message is not None:
                try:
                    self._on_message(record)
                except Exception:  # noqa: BLE001
                    pass
        self._answer(handler, answer)

    # -- what a channel's fake overrides

    def is_send_path(self, path: str) -> bool:
        return path == SEND_PATH

    def forced_status(self, errcode: int) -> int:
        """The HTTP status the ``errcode`` mode answers with: DingTalk's errors are all HTTP 200."""
        return 200

    def _answer(self, handler: _Handler, rejection: _Reject | None) -> None:
        """Success or ``rejection`` as the channel answers it: DingTalk, always HTTP 200 with errcode."""
        code, message = self.OK if rejection is None else (rejection.errcode, rejection.errmsg)
        handler._send_json(200, {"errcode": code, "errmsg": message})

    def render(self, record: dict[str, Any]) -> str:
        """An accepted message as the group would see it, for the console."""
        return render_message(record["body"], record["pinged"], record["at_all"])

    def inbox_html(self) -> str:
        """The inbox page: every accepted message, newest first, when it came, drawn as the group's
        client shows it, and whom it pinged. No URL, token or secret."""
        try:  # it needs markdown-it-py, which comes with Airflow; the robot runs without either
            from airflow_ext.ui import message_html
        except ImportError:
            message_html = None
        messages = self.messages
        items = []
        # The channel's initial, not an emoji: a machine without an emoji font draws a box.
        avatar = html.escape(self.CHANNEL_NAME[:1])
        for record in reversed(messages):
            if message_html is not None:
                shown = message_html.render_payload_html(self.CHANNEL, record["body"])
            else:
                shown = f'<pre class="inbox-text">{html.escape(self._console_text(record))}</pre>'
            items.append(
                f'<article class="inbox-message"><div class="inbox-avatar" aria-hidden="true">{avatar}</div>'
                f'<div class="inbox-content"><div class="inbox-meta">{_received_html(record)}'
                f" · pinged {_pings_html(record)}</div>{shown}</div></article>"
            )
        count = f"{len(messages)} message{'' if len(messages) == 1 else 's'}"
        name = html.escape(f"Fake {self.CHANNEL_NAME} robot")
        return _INBOX_PAGE.format(
            title=f"{name}: {count}",
            name=name,
            count=len(messages),
            summary=f"{count} received, newest first" if messages else "No messages yet",
            css=_INBOX_CSS + "\n" + (message_html.MESSAGE_CSS if message_html is not None else ""),
            messages="\n".join(items) or '<p class="inbox-empty">Messages the robot accepts appear here.</p>',
            poll_ms=INBOX_POLL_S * 1000,
        )

    def _console_text(self, record: dict[str, Any]) -> str:
        try:
            return self.render(record)
        except Exception:  # noqa: BLE001 - a record loaded from a file may lack what render() reads
            return json.dumps(record.get("body"), ensure_ascii=False, indent=2)

    def _admit(self, record: dict[str, Any], msg_uuid: str | None = None) -> dict[str, Any] | None:
        """Store ``record`` under the rate limit: None for a repeated ``msg_uuid`` (accepted, not
        stored), the stored copy, or a refusal once the window is full (which starts the block)."""
        with self._cond:
            if self._dedup_msg_uuid and msg_uuid is not None and msg_uuid in self._seen_uuids:
                return None  # idempotent repeat: ok, but not stored and not counted
            now = time.monotonic()
            if now < self._blocked_until:  # another thread tripped the limit meanwhile
                raise _Reject(*self.TOO_FAST)
            while self._accepted_at and now - self._accepted_at[0] >= self._window_s:
                self._accepted_at.popleft()
            if len(self._accepted_at) >= self._rate_limit:
                # The block is the penalty; once it is over the robot starts with an empty window.
                self._blocked_until = now + self._block_s
                self._accepted_at.clear()
                raise _Reject(*self.TOO_FAST)
            self._accepted_at.append(now)
            if msg_uuid is not None:
                self._seen_uuids.add(msg_uuid)
            self._messages.append(record)
            self._cond.notify_all()
            return copy.deepcopy(record)

    def _check_blocked(self) -> None:
        with self._lock:
            if time.monotonic() < self._blocked_until:
                raise _Reject(*self.TOO_FAST)

    def _check_sign(self, params: dict[str, list[str]]) -> None:
        assert self._secret is not None
        ts_raw = (params.get("timestamp") or [""])[0]
        sign = (params.get("sign") or [""])[0]
        if not ts_raw or not sign:
            raise _Reject(ERR_SECURITY, "sign not match, more: timestamp and sign are required")
        try:
            ts = int(ts_raw)
        except ValueError:
            raise _Reject(ERR_SECURITY, "sign not match, more: timestamp is not an integer (ms)") from None
        if abs(time.time() * 1000 - ts) > SIGN_SKEW_S * 1000:
            raise _Reject(
                ERR_SECURITY, f"sign not match, more: timestamp is more than {SIGN_SKEW_S} s from now"
            )
        if not hmac.compare_digest(sign.encode("utf-8"), compute_sign(self._secret, ts).encode("ascii")):
            raise _Reject(ERR_SECURITY, "sign not match, more: signature does not match the robot's secret")

    def _process(self, path: str, query: str, body: bytes, received_at: float) -> dict[str, Any] | None:
        """Apply the real robot's checks in order. Returns the stored record, None for a duplicate
        msgUuid (answered ok but not stored), or raises _Reject."""
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        token = (params.get("access_token") or [""])[0]
        if not token or not hmac.compare_digest(token.encode("utf-8"), self._token.encode("utf-8")):
            raise _Reject(ERR_TOKEN, MSG_TOKEN)

        self._check_blocked()

        signed = False
        if self._secret is not None:
            self._check_sign(params)
            signed = True

        if len(body) > MAX_BODY_BYTES:
            raise _Reject(ERR_TOO_LONG, MSG_TOO_LONG)

        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _Reject(ERR_INVALID, "invalid json: body is not valid UTF-8 JSON") from None
        _validate(parsed)

        if self._keyword is not None and not any(self._keyword in s for s in _searchable_text(parsed)):
            raise _Reject(ERR_SECURITY, MSG_KEYWORD)

        pinged, at_all = _mentions(parsed)
        record = {
            "body": parsed,
            "received_at": received_at,
            "pinged": pinged,
            "at_all": at_all,
            "signed": signed,
        }
        return self._admit(record, parsed.get("msgUuid"))


# --- CLI ------------------------------------------------------------------------------------


def read_messages_file(path: str) -> list[dict[str, Any]]:
    """The message records in ``path`` (one JSON object a line, as ``--messages-file`` writes them);
    a line that is no record (one cut short when the robot was killed) is left out."""
    records = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if _is_record(record):
                    records.append(record)
    except FileNotFoundError:
        pass
    return records


def message_appender(path: str) -> Callable[[dict[str, Any]], None]:
    """An ``on_message`` that appends each record to ``path`` as one JSON line."""
    lock = threading.Lock()

    def append(record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, sort_keys=True)
        with lock, open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()

    return append


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    from airflow_ext.fakes import FAKES, fake_class

    parser = argparse.ArgumentParser(
        prog="python -m airflow_ext.fake_robot",
        description="Run a local DingTalk-compatible custom robot (or, with --channel, a WeCom, Feishu "
        "or Slack one) that prints what the group would see.",
    )
    parser.add_argument(
        "--channel",
        choices=sorted(FAKES),
        default="dingtalk",
        help="which robot to be (default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind; 0 = any free port (default: %(default)s)"
    )
    parser.add_argument(
        "--token",
        default="demo-token",
        help="access_token (WeCom: key; Feishu, Slack: hook token) it accepts",
    )
    parser.add_argument("--secret", default=None, help="enable signature security with this secret")
    parser.add_argument("--keyword", default=None, help="enable keyword security with this keyword")
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help=f"accepted messages per window (default: the channel's; DingTalk {RATE_LIMIT_PER_WINDOW})",
    )
    parser.add_argument(
        "--window-s", type=float, default=WINDOW_S, help="rate-limit window in seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--block-s",
        type=float,
        default=None,
        help="seconds to refuse everything once the limit is exceeded (default: the channel's; "
        f"DingTalk {BLOCK_S:g})",
    )
    parser.add_argument(
        "--messages-file",
        default=None,
        metavar="PATH",
        help="append each accepted message record to PATH as one JSON line; the records PATH already "
        "holds are loaded at start, so the inbox page shows them",
    )
    parser.add_argument(
        "--port-file", default=None, metavar="PATH", help="write the bound port number to PATH once listening"
    )
    parser.add_argument("--quiet", action="store_true", help="do not echo messages to stdout")
    parser.add_argument(
        "--keep-repeated-msguuid",
        action="store_true",
        help="store a message whose msgUuid was seen before instead of dropping it (shows duplicates)",
    )
    args = parser.parse_args(argv)

    if hasattr(sys.stdout, "reconfigure"):
        try:
            sys.stdout.reconfigure(errors="replace")
        except (AttributeError, ValueError):
            pass

    echo_lock = threading.Lock()

    def echo(text: str) -> None:
        with echo_lock:
            print(text, flush=True)

    robot_class = fake_class(args.channel)
    limits = {
        key: value
        for key, value in (("rate_limit", args.rate_limit), ("block_s", args.block_s))
        if value is not None
    }
    robot = robot_class(
        args.token,
        args.secret,
        args.keyword,
        host=args.host,
        port=args.port,
        window_s=args.window_s,
        echo=None if args.quiet else echo,
        on_message=message_appender(args.messages_file) if args.messages_file else None,
        dedup_msg_uuid=not args.keep_repeated_msguuid,
        **limits,
    )
    name = f"fake {robot_class.CHANNEL_NAME} robot"
    earlier = robot.load_messages(read_messages_file(args.messages_file)) if args.messages_file else 0

    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    try:
        robot.start()
    except OSError as exc:
        print(f"{name}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        if args.port_file:
            _write_atomically(args.port_file, f"{robot.port}\n")
        print(
            f"{name} listening on {robot.base_url} "
            f"(signature: {'on' if args.secret else 'off'}, keyword: {'on' if args.keyword else 'off'})",
            flush=True,
        )
        if earlier:
            print(f"{earlier} earlier message(s) loaded from {args.messages_file}", flush=True)
        print(f"inbox: {robot.base_url}/ (what the group received)", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        robot.stop()
    print(f"{name} stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
