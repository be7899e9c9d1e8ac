"""Slack incoming webhook: Block Kit payload, mrkdwn escaping, limits and the HTTP-status contract.

``POST {host}/T…/B…/…`` with a JSON body, the webhook token being the path. A ``slackwebhook``
Connection is read as ``apache-airflow-providers-slack``'s ``SlackWebhookHook`` reads it: the
password holds the token (``T000/B000/XXXX``) or the whole webhook URL, which then wins over the
host; the host defaults to ``https://hooks.slack.com/services``. Slack has no signing and no keyword
for incoming webhooks: the token is the only credential.

Unlike DingTalk, Slack answers with the HTTP status and a short plain-text body: success is HTTP 200
with the body ``ok`` (nothing else counts), a refusal is e.g. ``404 no_service`` or ``429`` with a
``Retry-After`` header, in seconds.

The message
-----------
Block Kit ``section`` blocks with ``mrkdwn`` text: the rendered message (its heading a bold first
line) is packed into sections of at most 3000 characters, split between the message's blocks, else
between lines, else inside a line where no escape or ``<…>`` sequence is cut. The top-level ``text``,
which Slack shows in notifications, is the title. Every text object is ``verbatim``: Slack then
does not turn bare URLs, channel names or ``@here`` into links or mentions (only our own ``<…|…>``
links and ``<@U…>`` mentions work). Link previews are off: a log link needs a login anyway.

Escaping
--------
Slack's documented escapes are ``&amp;``, ``&lt;`` and ``&gt;``: with them no ``<…>`` control
sequence (link, ``<@U…>``, ``<!channel>``) can start from task text. Slack has no escape for its
formatting characters, so each of ``*``, ``_``, ``~`` and `````` ` `````` gets an invisible U+2060
WORD JOINER on both sides: mrkdwn opens a span only after a space or punctuation and closes it only
before one, and the joiner is neither, so the character can neither open nor close a span whatever
is around it. A word joiner also goes after ``@`` (no plain-text ``@channel``, should Slack parse
one), after a ``:`` that could start an ``:emoji:`` code, and before ``&gt;`` at a line's start
(no quote).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from airflow_ext.alert import clean_text
from airflow_ext.channels.base.robot import ChannelRobot, encode_body
from airflow_ext.errors import DeliveryError
from airflow_ext.render import Markup, RenderedMessage

#: Where Slack's incoming webhooks live: the Slack provider's ``DEFAULT_SLACK_WEBHOOK_ENDPOINT``.
DEFAULT_HOST = "https://hooks.slack.com/services"
#: What a ``slackwebhook`` Connection's password holds, in config errors.
TOKEN_NAME = "webhook token (T…/B…/… or the whole https://hooks.slack.com/services/… URL)"

#: A section block's text is at most this many characters (Block Kit text object).
MAX_SECTION_CHARS = 3000
#: A message holds at most this many blocks.
MAX_BLOCKS = 50
#: Slack truncates a message's top-level ``text`` above this many characters.
MAX_TEXT_CHARS = 40_000
#: Slack documents no byte limit for a webhook's body, only characters (above). A body of at most
#: 40,000 bytes holds at most 40,000 characters (a character takes at least one UTF-8 byte and at
#: most as many UTF-16 units as bytes), so no part of the message can reach the one message-wide
#: limit Slack documents, and it takes at most 14 sections, well under MAX_BLOCKS. It also keeps an
#: alert about as long as a reader scrolls through on a phone (DingTalk's is 20,000 bytes).
MAX_BODY_BYTES = 40_000
#: "1 message per second per webhook", short bursts allowed: one a second on average.
MIN_SEND_INTERVAL_S = 1.0
RATE_LIMIT_PER_MINUTE = 60
#: How long to pause after a 429 that carries no (usable) Retry-After: a whole minute.
THROTTLED_PAUSE_S = 60.0

#: The body of Slack's one success answer (with HTTP 200).
OK_BODY = "ok"
THROTTLED_STATUS = 429
#: Answered with a 5xx: "something strange and unusual happened that was likely not your fault".
RETRYABLE_ERRORS = frozenset({"rollup_error"})

#: Slack's error strings (the plain-text body) and what an operator can do; ``{name}`` is the robot.
PERMANENT_ERROR_HINTS = {
    "invalid_payload": "Slack could not read the message (a bug in airflow-dingbot: please report it)",
    "user_not_found": "a mentioned member does not exist: check the member ids (U…) configured for {name}",
    "no_text": "the message had no text (a bug in airflow-dingbot: please report it)",
    "invalid_blocks": "Slack refused the message's blocks (a bug in airflow-dingbot: please report it)",
    "invalid_blocks_format": "Slack refused the message's blocks (a bug in airflow-dingbot: report it)",
    "too_many_attachments": "the message has too many attachments (a bug in airflow-dingbot)",
    "action_prohibited": "the workspace restricts this webhook: a Slack admin must allow the app to post",
    "posting_to_general_channel_denied": "only admins may post to the webhook's channel: ask a Slack admin "
    "or create a webhook for another channel",
    "team_disabled": "the Slack workspace of {name}'s webhook is disabled",
    "invalid_token": "the webhook token of {name} is not valid (revoked, or mistyped): "
    "create a new webhook in the Slack app and put its URL into the Connection's password",
    "no_service": "the webhook of {name} is disabled, removed or not valid: check the Connection's password "
    "(T…/B…/… or the whole URL) and that the app's incoming webhook still exists",
    "no_service_id": "the webhook URL of {name} is not valid: check the Connection's password",
    "no_team": "the workspace in the webhook URL of {name} does not exist: check the Connection's password",
    "channel_not_found": "the webhook's channel no longer exists: create a webhook for another channel "
    "and put it into {name}",
    "channel_is_archived": "the webhook's channel is archived: unarchive it, or create a webhook for "
    "another channel and put it into {name}",
}
#: What a status means when the body is none of the above (a proxy's page, an undocumented error).
STATUS_HINTS = {
    400: "Slack could not accept the message as sent",
    401: "the webhook of {name} was refused: check the Connection's password",
    403: "the webhook of {name} is forbidden: check the Connection's password and the workspace's settings",
    404: "no webhook at this URL: check the host and password of {name}",
    410: "the webhook's channel is gone: create a webhook for another channel",
    **dict.fromkeys(
        (301, 302, 303, 307, 308), "the webhook URL redirects: check the host and password of {name}"
    ),
}
UNKNOWN_STATUS_HINT = "refused: see Slack's incoming-webhook errors"

#: Invisible, neither space nor punctuation: put where it breaks mrkdwn without changing what is shown.
WORD_JOINER = "\u2060"
_CONTROL = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_CONTROL_CHARS = re.compile(r"[&<>]")
_FORMAT_CHARS = re.compile(r"([*_~`])")
#: ``:name:`` would become an emoji; the joiner after the first colon keeps it text.
_EMOJI_START = re.compile(r":(?=[A-Za-z0-9_+'\-]+:)")
#: ``>`` (written ``&gt;``) at a line's start makes a quote; Slack may take ``\r`` and U+2028/9 as breaks.
_QUOTE_START = re.compile(r"(^|[\r\n\u2028\u2029])([ \t]*&gt;)")
#: A member id (users U…, enterprise users W…), as ``<@…>`` takes it.
_MEMBER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
#: Who ``<!…>`` pings: the channel's members, the active ones, everyone in the workspace.
SPECIAL_MENTIONS = frozenset({"!channel", "!here", "!everyone"})
#: How ``at_all`` is written among the mention ids.
AT_ALL = "!channel"
#: What a Connection's ``mention_ids`` may hold: member ids and the special mentions.
MENTION_ID = re.compile(r"^(?:[UW][A-Z0-9]{2,}|!channel|!here|!everyone)$")
MENTION_ID_NAME = "a Slack member id (U... or W...) or one of !channel, !here, !everyone"
#: ``T…/B…/…``: the workspace, the webhook's app and the webhook's secret.
_TOKEN = re.compile(r"^[TE][A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+$")


def escape_mrkdwn(text: str) -> str:
    """Text from a task shown as written in Slack mrkdwn: no link, mention, quote or formatting."""
    text = _CONTROL_CHARS.sub(lambda m: _CONTROL[m.group()], clean_text(text))
    text = _FORMAT_CHARS.sub(WORD_JOINER + r"\1" + WORD_JOINER, text)
    text = _EMOJI_START.sub(":" + WORD_JOINER, text).replace("@", "@" + WORD_JOINER)
    return _QUOTE_START.sub(r"\1" + WORD_JOINER + r"\2", text)


def link_target(url: str) -> str:
    """A URL that cannot end a ``<url|label>`` early: ``&`` escaped as Slack asks, ``<>|`` and spaces
    percent-encoded."""
    url = clean_text(url).replace("&", "&amp;")
    return re.sub(r"[<>|\s]", lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), url)


def mention(who: str) -> str:
    """``<@U…>`` for a member id, ``<!channel>`` and its like; anything else is shown, pinging nobody."""
    who = who.strip()
    if who in SPECIAL_MENTIONS:
        return f"<{who}>"
    member = who.lstrip("@")
    if _MEMBER_ID.match(member):
        return f"<@{member}>"
    return escape_mrkdwn(f"@{member}")


#: Slack's mrkdwn. ``heading`` gets raw text (the heading and the keyword), so it escapes.
MRKDWN = Markup(
    escape=escape_mrkdwn,
    bold=lambda text: f"*{text}*",
    heading=lambda text: f"*{escape_mrkdwn(text)}*",
    line_break="\n",
    quote=lambda line: f"> {line}",
    link=lambda label, url: f"<{link_target(url)}|{escape_mrkdwn(label)}>",
    mention=mention,
    list_item="• ",
)


def slack_chars(text: str) -> int:
    """Characters as Slack may count them: UTF-16 code units (an emoji counts two), never fewer
    than Python's characters."""
    return len(text.encode("utf-16-le")) // 2


def _head_within(text: str, limit: int) -> int:
    """The length of the longest prefix of ``text`` within ``limit`` UTF-16 units."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _safe_cut(text: str, cut: int) -> int:
    """``cut`` moved back so that no ``&…;`` escape or ``<…>`` sequence is split (if that leaves any)."""
    head = text[:cut]
    amp = head.rfind("&")
    if amp >= 0 and ";" not in head[amp:] and cut - amp <= len("&amp;") and amp > 0:
        cut = amp
        head = text[:cut]
    opened = head.rfind("<")
    if opened > 0 and head.rfind(">") < opened:
        cut = opened
    return cut


def _split_line(line: str, limit: int) -> list[str]:
    """``line`` in pieces of at most ``limit`` units; a quoted line's pieces stay quoted."""
    prefix = "> " if line.startswith("> ") else ""
    pieces: list[str] = []
    rest = line
    while slack_chars(rest) > limit:
        longest = max(_head_within(rest, limit), len(prefix) + 1)
        cut = _safe_cut(rest, longest)
        if cut <= len(prefix):  # the sequence starts the piece: it is longer than a section, cut it
            cut = longest
        pieces.append(rest[:cut])
        rest = prefix + rest[cut:]
    pieces.append(rest)
    return pieces


def _split_paragraph(paragraph: str, limit: int) -> list[str]:
    if slack_chars(paragraph) <= limit:
        return [paragraph]
    pieces: list[str] = []
    current = ""
    for line in paragraph.split("\n"):
        for piece in _split_line(line, limit):
            candidate = f"{current}\n{piece}" if current else piece
            if current and slack_chars(candidate) > limit:
                pieces.append(current)
                current = piece
            else:
                current = candidate
    pieces.append(current)
    return pieces


def split_sections(text: str, limit: int = MAX_SECTION_CHARS) -> list[str]:
    """``text`` packed into as few section texts of at most ``limit`` characters as the splits allow:
    between blocks ("\\n\\n") first, then between lines, then inside a line."""
    sections: list[str] = []
    current = ""
    for paragraph in text.split("\n\n"):
        for piece in _split_paragraph(paragraph, limit):
            if not piece.strip():
                continue
            candidate = f"{current}\n\n{piece}" if current else piece
            if current and slack_chars(candidate) > limit:
                sections.append(current)
                current = piece
            else:
                current = candidate
    if current:
        sections.append(current)
    return [section.strip("\n") for section in sections if section.strip()]


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}


def webhook_url(host: str, token: str) -> str:
    """The webhook as ``SlackWebhookHook`` builds it: a password holding a whole URL is the webhook;
    else the host (``DEFAULT_HOST`` if empty, ``https://`` if it has no scheme), a slash and the token."""
    token = (token or "").strip()
    if "://" in token:
        return token
    host = (host or "").strip() or DEFAULT_HOST
    if "://" not in host:
        host = f"https://{host}"
    return (host.rstrip("/") + "/" + token.lstrip("/")).rstrip("/")


def token_of(url: str) -> str:
    """The ``T…/B…/…`` part of a webhook URL (the path after ``/services/``, else the whole path)."""
    path = urlsplit(url).path
    index = path.find("/services/")
    return (path[index + len("/services/") :] if index >= 0 else path).strip("/")


def validate_token(token: str) -> str | None:
    """What is wrong with ``token`` (a Connection's password) as a Slack webhook, in words that never
    repeat it; None if it looks right."""
    if not token or not token.strip():
        return "is empty: it holds the webhook token (T…/B…/…) or the whole webhook URL"
    token = token.strip()
    if any(char.isspace() for char in token):
        return "contains whitespace, which a Slack webhook never has"
    if token.startswith("xox"):
        return (
            "is a Slack API token (xox…), not an incoming webhook: use the webhook's URL or its T…/B…/… part"
        )
    if "://" in token:
        parts = urlsplit(token)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return "is not an http(s) URL: it holds the webhook token (T…/B…/…) or the whole https:// URL"
        if not _TOKEN.match(token_of(token)):
            return "is a URL but not a Slack webhook's (https://hooks.slack.com/services/T…/B…/…)"
        return None
    bare = token.strip("/")
    if bare.startswith("services/") or "hooks.slack.com" in bare:
        return "holds part of the URL: put the whole https:// URL there, or only the T…/B…/… after /services/"
    parts = bare.split("/")
    if len(parts) != 3:
        return f"has {len(parts)} part(s); a Slack webhook token has three: T…/B…/…"
    if not _TOKEN.match(bare):
        return "is not shaped like a Slack webhook token (T…/B…/…, letters and digits only)"
    return None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number, or an HTTP date); None if unusable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(seconds, 0.0)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


#: Slack's error bodies are short codes; anything longer (a proxy's page) is shown cut to this.
_MAX_SHOWN_BODY_CHARS = 200


class SlackRobot(ChannelRobot):
    """One Slack incoming webhook (a ``slackwebhook`` Connection)."""

    CHANNEL = "slack"
    DISPLAY_NAME = "Slack"
    MAX_BODY_BYTES = MAX_BODY_BYTES
    RATE_LIMIT_PER_MINUTE = RATE_LIMIT_PER_MINUTE
    MIN_SEND_INTERVAL_S = MIN_SEND_INTERVAL_S
    THROTTLED_PAUSE_S = THROTTLED_PAUSE_S
    MARKUP = MRKDWN

    def payload(self, message: RenderedMessage, msg_uuid: str | None = None) -> dict[str, Any]:
        """Sections of mrkdwn and the title as the notification text; Slack has no idempotency key."""
        payload: dict[str, Any] = {"text": escape_mrkdwn(message.title) or "Airflow alert"}
        blocks = [section(text) for text in split_sections(message.text)]
        if blocks:
            payload["blocks"] = blocks
        payload["unfurl_links"] = False
        payload["unfurl_media"] = False
        return payload

    def fits(self, message: RenderedMessage) -> bool:
        """Within every limit Slack checks (blocks, section characters, text) and MAX_BODY_BYTES."""
        payload = self.payload(message)
        blocks = payload.get("blocks", [])
        if len(blocks) > MAX_BLOCKS or slack_chars(payload["text"]) > MAX_TEXT_CHARS:
            return False
        if any(slack_chars(block["text"]["text"]) > MAX_SECTION_CHARS for block in blocks):
            return False
        return len(encode_body(payload)) <= self.MAX_BODY_BYTES

    def mention_ids(self) -> tuple[str, ...]:
        """The configured member ids, and ``!channel`` when ``at_all`` is set."""
        ids = tuple(self.settings.mentions)
        if self.settings.at_all and AT_ALL not in ids:
            ids += (AT_ALL,)
        return ids

    def credential(self) -> str:
        return token_of(self.settings.url)

    def check_answer(self, response: requests.Response) -> dict[str, Any]:
        """Success is HTTP 200 with the body ``ok``; anything else is a DeliveryError."""
        status = response.status_code
        body = self._answer_text(response)
        if status == 200 and body == OK_BODY:
            return {"ok": True, "http_status": status}
        code = body if re.fullmatch(r"[a-z_]{1,64}", body) else None
        shown = code or (body[:_MAX_SHOWN_BODY_CHARS] + ("…" if len(body) > _MAX_SHOWN_BODY_CHARS else ""))
        name = f"Connection {self.settings.name!r}"
        retry_after = None
        throttled = status == THROTTLED_STATUS
        if status == 200:  # not Slack's answer: a proxy's or portal's page; it may go away
            retryable, hint = True, "an answer that is not Slack's (a proxy in between?)"
        elif throttled:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            retryable = True
            hint = f"throttled: Slack takes about {MIN_SEND_INTERVAL_S:g} message a second per webhook" + (
                f", and asked to wait {retry_after:g} s" if retry_after is not None else ""
            )
        elif status >= 500 or code in RETRYABLE_ERRORS:
            retryable, hint = True, "Slack had trouble on its side"
        else:
            retryable = False
            template = PERMANENT_ERROR_HINTS.get(code or "") or STATUS_HINTS.get(status, UNKNOWN_STATUS_HINT)
            hint = template.format(name=name)
        raise DeliveryError(
            f"Slack refused the message: HTTP {status} {shown!r} ({hint})",
            retryable=retryable,
            errmsg=code or shown,
            http_status=status,
            throttled=throttled,
            retry_after_s=retry_after,
        )

    def _answer_text(self, response: requests.Response) -> str:
        """The answer's body as text, stripped, with the token (and each of its parts) blanked out:
        a proxy's error page may quote the URL."""
        text = response.content.decode("utf-8", errors="replace").strip()
        token = self.credential()
        for secret in sorted({token, *token.split("/")}, key=len, reverse=True):
            if len(secret) >= 6:
                text = text.replace(secret, "***")
        return text
