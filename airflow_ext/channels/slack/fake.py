"""A local stand-in for a Slack incoming webhook, for the demo and the tests.

What a client of the real service can observe, as Slack documents it (incoming webhooks and their
errors, Block Kit's limits, mrkdwn formatting, rate limits):

* ``POST /services/T…/B…/…`` with a JSON body; the token in the path is the only credential (no
  signing, no keyword). Success is **HTTP 200** with the plain-text body ``ok``; every refusal is an
  HTTP status with a short plain-text error string.
* refusals, checked in this order: a path that is no webhook token at all, 400 ``invalid_payload``;
  a token whose workspace and app match the webhook's but whose secret does not, 403
  ``invalid_token``; any other token, 404 ``no_service`` (no such webhook); a body that is not a JSON
  object, or a ``text`` that is not a string, 400 ``invalid_payload``; ``blocks`` not a list, 400
  ``invalid_blocks_format``; neither ``text`` nor ``blocks`` (nor ``attachments``), 400 ``no_text``;
  more than 50 blocks, a block of an unknown type, a section whose text is missing, empty or longer
  than 3000 characters, a header not plain_text or longer than 150, 400 ``invalid_blocks``; too fast,
  429 ``rate_limited`` with ``Retry-After`` (whole seconds).
* the rate limit: "1 message per second per webhook, short bursts allowed" — a bucket of ``burst``
  messages refilled at ``per_second``, and at most ``rate_limit`` messages a rolling ``window_s``
  (a minute). Retry-After says when the next message would be taken. Slack documents no block
  after throttling, so ``block_s`` has no effect.
* a top-level ``text`` over 40,000 characters is accepted and cut (``text_truncated`` in the record).
* who is pinged (``pinged``): the ``<@U…>`` member ids and ``!channel``/``!here``/``!everyone`` for
  ``<!channel>``, ``<!here>``, ``<!everyone>`` in mrkdwn texts (sections, context elements, and the
  top-level ``text`` unless ``"mrkdwn": false``); where a text is not ``verbatim`` (the top-level text,
  a mrkdwn object without ``"verbatim": true``) Slack also parses bare ``@channel``/``@here``/
  ``@everyone`` and makes bare URLs links. plain_text pings nobody. ``at_all``: any of the three.
* what a reader sees: each record has ``links`` ([url, label]), ``formatted`` ([kind, text] for
  every bold, italic, strike, code span and code block mrkdwn would draw), ``quoted`` (quoted lines),
  ``emoji`` (the names of ``:name:`` codes, drawn as emoji) and ``shown`` (the blocks' text as
  shown: control sequences replaced by what they show, escapes decoded, markers of drawn spans and
  quotes removed, invisible U+2060 dropped). The span rules are mrkdwn's: a marker opens a span
  after the line's start, a space or punctuation and before a non-space; it closes one after a
  non-space and before the line's end, a space or punctuation.

Slack has no idempotency key: nothing is deduplicated. ``secret`` and ``keyword`` are accepted so that
every channel's fake is built alike, and have no effect. Standard library only, importable without
Airflow; it never prints or logs the token.
"""

from __future__ import annotations

import collections
import hmac
import json
import math
import re
import threading
import time
import unicodedata
from typing import Any

from airflow_ext.channels.base.fake import FakeChannelRobot, Reject, echo_box

__all__ = [
    "BURST",
    "FakeSlackWebhook",
    "MAX_BLOCKS",
    "MAX_HEADER_CHARS",
    "MAX_SECTION_CHARS",
    "MAX_TEXT_CHARS",
    "PER_SECOND",
    "RATE_LIMIT_PER_WINDOW",
    "SEND_PREFIX",
    "WINDOW_S",
    "parse_mrkdwn",
    "render_message",
]

SEND_PREFIX = "/services/"
MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000  # characters of a section's text object
MAX_HEADER_CHARS = 150  # characters of a header block's plain_text
MAX_CONTEXT_ELEMENTS = 10
MAX_TEXT_CHARS = 40_000  # the top-level text is cut beyond this
PER_SECOND = 1.0  # messages a second, on average
BURST = 3  # messages taken at once before the per-second rate applies ("short bursts")
RATE_LIMIT_PER_WINDOW = 60  # messages per rolling window
WINDOW_S = 60.0
#: A forced 429 (``set_mode("errcode", errcode=429, ...)``) asks to wait this long.
FORCED_RETRY_AFTER_S = 30

OK_STATUS, OK_BODY = 200, "ok"
TOO_FAST = (429, "rate_limited")
INVALID_PAYLOAD = (400, "invalid_payload")
INVALID_TOKEN = (403, "invalid_token")
NO_SERVICE = (404, "no_service")
NO_TEXT = (400, "no_text")
INVALID_BLOCKS = (400, "invalid_blocks")
INVALID_BLOCKS_FORMAT = (400, "invalid_blocks_format")

_TOKEN = re.compile(r"^([TE][A-Z0-9]+)/(B[A-Z0-9]+)/([A-Za-z0-9]+)$")
BLOCK_TYPES = ("section", "header", "divider", "context", "image", "actions", "rich_text", "markdown")
_ANGLE = re.compile(r"<([^<>\n]*)>")
_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_BARE_SPECIAL = re.compile(r"(?<![\w@])@(channel|here|everyone)\b")
_BARE_URL = re.compile(r"\b(?:https?|ftp|mailto):[^\s<>]+")
_QUOTE = re.compile(r"^(?:>|&gt;) ?")
#: ``:name:`` is drawn as an emoji (outside code blocks).
_EMOJI = re.compile(r":([A-Za-z0-9_+'\-]+):")
_INVISIBLE = "\u2060"
_MARKERS = {"*": "bold", "_": "italic", "~": "strike", "`": "code"}
#: ``<hole>n<end>`` stands for a control sequence or code block while spans are found: neither space nor
#: punctuation, like the text it stands for.
_HOLE, _HOLE_END = "\ufdd0", "\ufdd1"  # Unicode noncharacters, for internal use; dropped from input
HOLES = frozenset({_HOLE, _HOLE_END})
_HOLE_AT = re.compile(f"{_HOLE}(\\d+){_HOLE_END}")


def _is_edge(char: str | None) -> bool:
    """Whether a span marker may sit next to ``char`` on its outer side: none, a space, punctuation."""
    if char is None or char.isspace():
        return True
    return unicodedata.category(char)[0] in "PS"


def _spans(line: str) -> tuple[list[tuple[str, str]], set[int]]:
    """The spans mrkdwn draws in one line: [(kind, inner text)] and the positions of their markers."""
    found: list[tuple[str, str]] = []
    markers: set[int] = set()
    i = 0
    while i < len(line):
        char = line[i]
        kind = _MARKERS.get(char)
        before = line[i - 1] if i > 0 else None
        after = line[i + 1] if i + 1 < len(line) else None
        if kind and _is_edge(before) and after is not None and not after.isspace() and after != char:
            end = i + 2
            while end < len(line):
                if (
                    line[end] == char
                    and not line[end - 1].isspace()
                    and _is_edge(line[end + 1] if end + 1 < len(line) else None)
                ):
                    break
                end += 1
            if end < len(line):
                found.append((kind, line[i + 1 : end]))
                markers.update((i, end))
                i = end + 1
                continue
        i += 1
    return found, markers


def parse_mrkdwn(text: str, verbatim: bool = True) -> dict[str, Any]:
    """What Slack draws of a mrkdwn ``text``: pinged, at_all, links, formatted, quoted and shown."""
    pinged: list[str] = []
    links: list[list[str]] = []
    formatted: list[list[str]] = []
    quoted: list[str] = []
    emoji: list[str] = []
    holes: list[str] = []

    def hole(shown: str) -> str:
        holes.append(shown)
        return f"{_HOLE}{len(holes) - 1}{_HOLE_END}"

    def control(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            pinged.append(target[1:])
            return hole(label or target)
        if target.startswith("!"):
            name = target[1:].split("^", 1)[0]
            pinged.append(f"!{name}" if name in ("channel", "here", "everyone") else target)
            return hole(label or f"@{name}")
        links.append([target, label])  # a URL, or a #channel
        return hole(label or target)

    raw = _ANGLE.sub(control, text.replace(_HOLE, "").replace(_HOLE_END, ""))
    if not verbatim:
        pinged.extend(f"!{name}" for name in _BARE_SPECIAL.findall(raw))
        links.extend([url, ""] for url in _BARE_URL.findall(raw))

    def code_block(match: re.Match[str]) -> str:  # nothing inside a code block is formatted
        formatted.append(["code_block", match.group(1)])
        return hole(match.group(1))

    raw = re.sub(r"```(.+?)```", code_block, raw, flags=re.S)
    emoji.extend(_EMOJI.findall(raw))
    shown_lines = []
    for line in raw.split("\n"):
        quote = _QUOTE.match(line)
        if quote:
            line = line[quote.end() :]
        spans, markers = _spans(line)
        formatted.extend([kind, inner] for kind, inner in spans)
        line = "".join(char for index, char in enumerate(line) if index not in markers)
        if quote:
            quoted.append(line)
        shown_lines.append(line)

    def filled(value: str) -> str:
        for _ in range(3):  # a code block's hole may hold a control sequence's hole
            value = _HOLE_AT.sub(lambda m: holes[int(m.group(1))], value)
        return value

    shown = filled("\n".join(shown_lines))
    quoted[:] = [filled(line) for line in quoted]
    formatted[:] = [[kind, filled(inner)] for kind, inner in formatted]

    def decode(value: str) -> str:
        return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], value).replace(_INVISIBLE, "")

    return {
        "pinged": list(dict.fromkeys(pinged)),
        "links": [[decode(url), decode(label)] for url, label in links],
        "formatted": [[kind, decode(inner)] for kind, inner in formatted],
        "quoted": [decode(line) for line in quoted],
        "emoji": emoji,
        "shown": decode(shown),
    }


def _chars(value: Any) -> int:
    return len(value) if isinstance(value, str) else -1


def _validate_text_object(obj: Any, max_chars: int, plain_only: bool = False) -> None:
    if not isinstance(obj, dict) or obj.get("type") not in (
        ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    ):
        raise Reject(*INVALID_BLOCKS, http_status=INVALID_BLOCKS[0])
    if not 1 <= _chars(obj.get("text")) <= max_chars:
        raise Reject(*INVALID_BLOCKS, http_status=INVALID_BLOCKS[0])


def _validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Reject(*INVALID_PAYLOAD, http_status=400)
    text, blocks = body.get("text"), body.get("blocks")
    if text is not None and not isinstance(text, str):
        raise Reject(*INVALID_PAYLOAD, http_status=400)
    if blocks is not None and not isinstance(blocks, list):
        raise Reject(*INVALID_BLOCKS_FORMAT, http_status=400)
    if not text and not blocks and not body.get("attachments"):
        raise Reject(*NO_TEXT, http_status=400)
    if len(blocks or []) > MAX_BLOCKS:
        raise Reject(*INVALID_BLOCKS, http_status=400)
    for block in blocks or []:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            raise Reject(*INVALID_BLOCKS, http_status=400)
        if block["type"] == "section":
            if "text" in block or not block.get("fields"):
                _validate_text_object(block.get("text"), MAX_SECTION_CHARS)
        elif block["type"] == "header":
            _validate_text_object(block.get("text"), MAX_HEADER_CHARS, plain_only=True)
        elif block["type"] == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS:
                raise Reject(*INVALID_BLOCKS, http_status=400)
    return body


def _texts(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every text of a valid message with how Slack reads it: ("mrkdwn" | "plain", text object)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for block in body.get("blocks") or []:
        objects = []
        if block.get("type") in ("section", "header") and isinstance(block.get("text"), dict):
            objects.append(block["text"])
        if block.get("type") == "section":
            objects.extend(f for f in block.get("fields") or [] if isinstance(f, dict))
        if block.get("type") == "context":
            objects.extend(e for e in block.get("elements") or [] if isinstance(e, dict) and "text" in e)
        for obj in objects:
            out.append(("mrkdwn" if obj.get("type") == "mrkdwn" else "plain", obj))
    return out


def inspect(body: dict[str, Any]) -> dict[str, Any]:
    """What a valid message does: who it pings, its links, spans, quotes, and what is shown."""
    pinged: list[str] = []
    links: list[list[str]] = []
    formatted: list[list[str]] = []
    quoted: list[str] = []
    emoji: list[str] = []
    shown: list[str] = []
    for kind, obj in _texts(body):
        text = str(obj.get("text", ""))
        if kind == "plain":
            shown.append(text)
            continue
        parsed = parse_mrkdwn(text, verbatim=obj.get("verbatim") is True)
        pinged += parsed["pinged"]
        links += parsed["links"]
        formatted += parsed["formatted"]
        quoted += parsed["quoted"]
        emoji += parsed["emoji"]
        shown.append(parsed["shown"])
    text = body.get("text") or ""
    notification = text
    if text and body.get("mrkdwn") is not False:
        parsed = parse_mrkdwn(text, verbatim=False)
        pinged += parsed["pinged"]
        notification = parsed["shown"]
        if not body.get("blocks"):  # without blocks, the text is the message
            links += parsed["links"]
            formatted += parsed["formatted"]
            quoted += parsed["quoted"]
            emoji += parsed["emoji"]
    if not body.get("blocks"):
        shown = [notification]
    pinged = list(dict.fromkeys(pinged))
    return {
        "pinged": pinged,
        "at_all": any(who in ("!channel", "!here", "!everyone") for who in pinged),
        "links": links,
        "formatted": formatted,
        "quoted": quoted,
        "emoji": emoji,
        "shown": "\n".join(shown),
        "notification": notification,
    }


def render_message(record: dict[str, Any]) -> str:
    """An accepted message as the channel would show it, boxed (no webhook URL, no token)."""
    pinged = record.get("pinged") or []
    ping_line = "pings: " + (", ".join(pinged) or "nobody")
    quoted = set(record.get("quoted") or [])
    body = [
        (f"│ ┃ {line}" if line in quoted else f"│ {line}").rstrip()
        for line in str(record.get("shown", "")).splitlines() or [""]
    ]
    body += [f"│ [{label or url}] -> {url}" for url, label in record.get("links") or []]
    notification = [f"│ {record.get('notification', '')}".rstrip()]
    return echo_box("Slack incoming webhook message", notification, body, [f"│ {ping_line}"])


class _Throttled(Reject):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(*TOO_FAST, http_status=TOO_FAST[0])
        self.retry_after_s = retry_after_s


class _Limiter:
    """A bucket of ``burst`` refilled at ``per_second``, and ``limit`` messages a rolling ``window_s``."""

    def __init__(self, per_second: float, burst: int, limit: int, window_s: float) -> None:
        self.per_second, self.burst, self.limit, self.window_s = per_second, burst, limit, window_s
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.tokens = float(self.burst)
        self.refilled_at = time.monotonic()
        self.taken: collections.deque[float] = collections.deque()

    def take(self) -> float | None:
        """None if a message is taken now; else the seconds until one would be."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.refilled_at) * self.per_second)
            self.refilled_at = now
            while self.taken and now - self.taken[0] >= self.window_s:
                self.taken.popleft()
            waits = []
            if self.tokens < 1:
                waits.append((1 - self.tokens) / self.per_second)
            if len(self.taken) >= self.limit:
                waits.append(self.taken[0] + self.window_s - now)
            if waits:
                return max(waits)
            self.tokens -= 1
            self.taken.append(now)
            return None


class FakeSlackWebhook(FakeChannelRobot):
    """A Slack incoming webhook on a local port; see the module docstring for its rules."""

    OK = (OK_STATUS, OK_BODY)
    TOO_FAST = TOO_FAST
    CHANNEL_NAME = "Slack"
    CHANNEL = "slack"

    DEFAULT_TOKEN = "T0FAKE000/B0FAKE000/fakewebhooksecret000000"
    RATE_LIMIT = RATE_LIMIT_PER_WINDOW
    WINDOW = WINDOW_S
    BLOCK = 0.0
    #: Slack's webhooks have no signing, keyword or idempotency key: those arguments do nothing.
    HAS_SIGNATURE = HAS_KEYWORD = HAS_MSG_UUID = False

    def __init__(
        self,
        access_token: str | None = None,
        *args: Any,
        per_second: float = PER_SECOND,
        burst: int = BURST,
        **kwargs: Any,
    ) -> None:
        """``access_token`` is the ``T…/B…/…`` path the webhook answers at (any other string is taken
        as is, for tests). ``block_s`` has no effect: Slack answers 429 with Retry-After instead."""
        if per_second <= 0 or burst < 1:
            raise ValueError("per_second must be > 0 and burst >= 1")
        super().__init__((access_token or self.DEFAULT_TOKEN).strip("/"), *args, **kwargs)
        # The base class's window never refuses (its limit is out of reach): the limiter does it.
        self._limiter = _Limiter(float(per_second), int(burst), self._rate_limit, self._window_s)
        self._rate_limit, self._block_s = 1 << 62, 0.0

    def is_send_path(self, path: str) -> bool:
        return path.startswith(SEND_PREFIX)

    @property
    def url(self) -> str:
        return f"{self.base_url}{SEND_PREFIX}{self._token}"

    def reset(self) -> None:
        super().reset()
        self._limiter.reset()

    def forced_status(self, errcode: int) -> int:
        """Slack's errors are HTTP statuses: a forced errcode that is no HTTP status is a 500."""
        return int(errcode) if 100 <= int(errcode) <= 599 else 500

    def _answer(self, handler, rejection: Reject | None) -> None:
        """The HTTP status and a plain-text body; a 429 with ``Retry-After`` in whole seconds."""
        status, text = self.OK if rejection is None else (rejection.errcode, rejection.errmsg)
        status = self.forced_status(status)
        payload = str(text).encode("utf-8")
        handler.send_response(int(status))
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(payload)))
        if int(status) == 429:
            wait = getattr(rejection, "retry_after_s", FORCED_RETRY_AFTER_S)
            handler.send_header("Retry-After", str(max(1, math.ceil(wait))))
        handler.end_headers()
        handler.wfile.write(payload)
        handler.wfile.flush()

    def render(self, record: dict[str, Any]) -> str:
        return render_message(record)

    def _check_token(self, path: str) -> None:
        token = path[len(SEND_PREFIX) :].strip("/")
        if hmac.compare_digest(token.encode("utf-8"), self._token.encode("utf-8")):
            return
        given, mine = _TOKEN.match(token), _TOKEN.match(self._token)
        if not given:
            raise Reject(*INVALID_PAYLOAD, http_status=400)
        if mine and given.group(1, 2) == mine.group(1, 2):
            raise Reject(*INVALID_TOKEN, http_status=403)
        raise Reject(*NO_SERVICE, http_status=404)

    def _process(self, path: str, query: str, body: bytes, received_at: float) -> dict[str, Any] | None:
        self._check_token(path)
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Reject(*INVALID_PAYLOAD, http_status=400) from None
        _validate(parsed)
        wait = self._limiter.take()
        if wait is not None:
            raise _Throttled(wait)
        truncated = isinstance(parsed.get("text"), str) and len(parsed["text"]) > MAX_TEXT_CHARS
        if truncated:
            parsed["text"] = parsed["text"][:MAX_TEXT_CHARS]
        record = {
            "body": parsed,
            "received_at": received_at,
            "signed": False,
            "text_truncated": truncated,
            **inspect(parsed),
        }
        return self._admit(record)
