"""What every channel's local robot shares: the HTTP server, failure modes, control endpoints, the
rate limit with its block, idempotency keys and the inbox page.

A channel's fake (``airflow_ext.channels.<name>.fake``) subclasses :class:`FakeChannelRobot` with
what is its own: the send path and URL, the checks of a request (:meth:`~FakeChannelRobot._process`),
how it answers (:meth:`~FakeChannelRobot._answer`), how the console shows a message
(:meth:`~FakeChannelRobot.render`), and its limits as named constants.

On top of a channel's rules every fake has failure modes a real network can produce (``hang``,
``slow``, ``http500``, ``garbage``, ``errcode``) and HTTP control endpoints (``/_messages``,
``/_requests``, ``/_control``, ``/_reset``) so a robot running in another process can be driven by
tests. ``GET /`` (or ``/inbox``) is a page of the messages it accepted, newest first, each drawn as
the group's client shows it (the channel's ``preview``, which needs markdown-it-py: without it the
page shows the text the console shows).

Standard library only; it must stay importable without Airflow. It never prints, logs or shows a
token or a secret.
"""

from __future__ import annotations

import collections
import copy
import html
import json
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, ClassVar

__all__ = [
    "ECHO_WIDTH",
    "FakeChannelRobot",
    "Reject",
    "boxed_rows",
    "echo_box",
    "message_appender",
    "read_messages_file",
]

INBOX_PATHS = ("/", "/inbox")
#: Seconds between the inbox page's checks for new messages.
INBOX_POLL_S = 3
MODES = ("ok", "hang", "slow", "http500", "garbage", "errcode")
GARBAGE_BODY = b"<html>oops</html>"
HTTP500_BODY = b"internal server error"
ECHO_WIDTH = 64  # characters of the horizontal rules in the echoed box


def boxed_rows(text: object) -> list[str]:
    """``text``'s lines as rows of the echoed box (an empty text is one empty row)."""
    return [f"│ {line}".rstrip() for line in str(text).splitlines() or [""]]


def echo_box(heading: str, *sections: list[str]) -> str:
    """The console's box of one accepted message: ``heading`` in its top rule, then the sections'
    rows (already ``│ ``-prefixed), a rule between each two."""
    head = f"╭─ {heading} "
    lines = [head + "─" * max(3, ECHO_WIDTH - len(head))]
    for number, rows in enumerate(sections):
        if number:
            lines.append("├" + "─" * (ECHO_WIDTH - 1))
        lines.extend(rows)
    lines.append("╰" + "─" * (ECHO_WIDTH - 1))
    return "\n".join(lines)


class Reject(Exception):
    """Refuse the message with this code and text (DingTalk: HTTP 200 with errcode/errmsg; a
    channel that answers errors with an HTTP status sets ``http_status``)."""

    def __init__(self, errcode: int, errmsg: str, http_status: int = 200) -> None:
        super().__init__(errmsg)
        self.errcode = errcode
        self.errmsg = errmsg
        self.http_status = http_status


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

    robot: FakeChannelRobot

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


class FakeChannelRobot:
    """A channel's robot on a local port. Use as a context manager or via start()/stop().

    A channel's fake overrides :meth:`is_send_path`, :attr:`url`, :meth:`_answer`, :meth:`_process`
    and :meth:`render`, and uses :meth:`_admit` for the rate limit, its block and idempotency keys.
    """

    #: How the channel's success looks to a client, and its throttled refusal.
    OK: ClassVar[tuple[Any, str]]
    TOO_FAST: ClassVar[tuple[Any, str]]
    #: The channel as its users call it, on the console and the inbox page.
    CHANNEL_NAME: ClassVar[str]
    #: The channel's folder under airflow_ext.channels, whose preview draws the inbox.
    CHANNEL: ClassVar[str]
    #: The channel's defaults: the token a test robot takes, its limits (messages per WINDOW
    #: seconds, then a BLOCK of seconds refusing everything), and which of the base class's
    #: features the channel has (a channel without them ignores the arguments).
    DEFAULT_TOKEN: ClassVar[str]
    RATE_LIMIT: ClassVar[int]
    WINDOW: ClassVar[float]
    BLOCK: ClassVar[float]
    HAS_SIGNATURE: ClassVar[bool] = False
    HAS_KEYWORD: ClassVar[bool] = False
    HAS_MSG_UUID: ClassVar[bool] = False

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
        return f"<{type(self).__name__} {state} signature={'on' if self._secret else 'off'}>"

    # -- lifecycle

    def start(self) -> FakeChannelRobot:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self._host, self._requested_port), _Handler)
        server.robot = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-{self.CHANNEL}-robot",
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

    def __enter__(self) -> FakeChannelRobot:
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
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """The webhook a sender posts to, token included."""
        raise NotImplementedError

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
            self._answer(handler, Reject(mode_kw["errcode"], mode_kw["errmsg"]))
            return
        if mode == "slow":
            if self._stopping.wait(mode_kw["delay_s"]):
                handler.close_connection = True
                return

        record: dict[str, Any] | None = None
        answer: Reject | None = None
        try:
            record = self._process(path, query, body, received_at)
        except Reject as rej:
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
        raise NotImplementedError

    def forced_status(self, errcode: int) -> int:
        """The HTTP status the ``errcode`` mode answers with: HTTP 200 where the channel's errors are
        codes in the body (DingTalk, WeCom)."""
        return 200

    def _answer(self, handler: _Handler, rejection: Reject | None) -> None:
        """Success or ``rejection`` as the channel answers it."""
        raise NotImplementedError

    def render(self, record: dict[str, Any]) -> str:
        """An accepted message as the group would see it, for the console."""
        raise NotImplementedError

    def _process(self, path: str, query: str, body: bytes, received_at: float) -> dict[str, Any] | None:
        """Apply the channel's checks in order. Returns the stored record, None for a repeated
        idempotency key (answered ok but not stored), or raises Reject."""
        raise NotImplementedError

    def inbox_html(self) -> str:
        """The inbox page: every accepted message, newest first, when it came, drawn as the group's
        client shows it, and whom it pinged. No URL, token or secret."""
        try:  # it needs markdown-it-py, which comes with Airflow; the robot runs without either
            from airflow_ext.channels.base.preview import MESSAGE_CSS, render_payload_html
        except ImportError:
            MESSAGE_CSS = render_payload_html = None
        messages = self.messages
        items = []
        # The channel's initial, not an emoji: a machine without an emoji font draws a box.
        avatar = html.escape(self.CHANNEL_NAME[:1])
        for record in reversed(messages):
            if render_payload_html is not None:
                shown = render_payload_html(self.CHANNEL, record["body"])
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
            css=_INBOX_CSS + "\n" + (MESSAGE_CSS or ""),
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
                raise Reject(*self.TOO_FAST)
            while self._accepted_at and now - self._accepted_at[0] >= self._window_s:
                self._accepted_at.popleft()
            if len(self._accepted_at) >= self._rate_limit:
                # The block is the penalty; once it is over the robot starts with an empty window.
                self._blocked_until = now + self._block_s
                self._accepted_at.clear()
                raise Reject(*self.TOO_FAST)
            self._accepted_at.append(now)
            if msg_uuid is not None:
                self._seen_uuids.add(msg_uuid)
            self._messages.append(record)
            self._cond.notify_all()
            return copy.deepcopy(record)

    def _check_blocked(self) -> None:
        with self._lock:
            if time.monotonic() < self._blocked_until:
                raise Reject(*self.TOO_FAST)


# --- messages kept in a file ---------------------------------------------------------------


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
