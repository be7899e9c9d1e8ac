"""Alert → chat message: a markdown title and text, readable on a phone, cut to a byte budget.

The message has three parts. The header (what failed, where, which try) and the footer (log link,
mentions) are never cut; the detail (exception message and traceback) is cut to make the encoded
message fit, never inside a UTF-8 character: first the traceback loses lines from its top, then the
exception message loses its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from airflow_ext.alert import Alert

TRUNCATED = "… [truncated]"
#: Notification titles are shown in one line on a phone; ids are cut with "…" beyond this.
MAX_TITLE_CHARS = 120


@dataclass(frozen=True)
class RenderedMessage:
    title: str
    text: str


def utf8_head(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding is at most ``max_bytes`` bytes."""
    return text.encode("utf-8")[: max(max_bytes, 0)].decode("utf-8", errors="ignore")


def utf8_tail(text: str, max_bytes: int) -> str:
    """The longest suffix of ``text`` whose UTF-8 encoding is at most ``max_bytes`` bytes."""
    data = text.encode("utf-8")
    if max_bytes <= 0:
        return ""
    return data[-max_bytes:].decode("utf-8", errors="ignore")


def largest_fitting(low: int, high: int, fits: Callable[[int], bool]) -> int | None:
    """Largest n in [low, high] with fits(n), fits being true up to some n; None if not fits(low)."""
    if not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def finish_title(title: str, keyword: str | None) -> str:
    """``title`` carrying the keyword (first, so a cut keeps it), at most MAX_TITLE_CHARS long."""
    if keyword and keyword not in title:  # keyword security: the robot refuses messages without it
        title = f"[{keyword}] {title}"
    if len(title) > MAX_TITLE_CHARS:
        title = title[: MAX_TITLE_CHARS - 1] + "…"
    return title


def render_title(alert: Alert, keyword: str | None = None) -> str:
    what = "retry" if alert.is_retry else "failed"
    return finish_title(f"Airflow {what}: {alert.dag_id}.{alert.task_id}", keyword)


def _header(alert: Alert, keyword: str | None) -> str:
    if alert.is_retry:
        heading = "🟠 Airflow task failed, will retry"
        outcome = "will retry"
    else:
        heading = "🔴 Airflow task failed"
        outcome = "final failure"
    if keyword and keyword not in heading:
        heading = f"{heading} · {keyword}"
    task = alert.task_id if alert.map_index < 0 else f"{alert.task_id} [map index {alert.map_index}]"
    lines = [
        f"#### {heading}",
        f"**DAG:** {alert.dag_id}",
        f"**Task:** {task}",
        f"**Run:** {alert.run_id}",
    ]
    if alert.logical_date:
        lines.append(f"**Logical date:** {alert.logical_date}")
    lines.append(f"**Try:** {alert.try_number} of {alert.attempts_allowed} ({outcome})")
    if alert.hostname:
        lines.append(f"**Host:** {alert.hostname}")
    return "  \n".join(lines)


def _error_line(alert: Alert, message: str) -> str:
    if alert.exception_type:
        return f"**{alert.exception_type}:** {message}" if message else f"**{alert.exception_type}**"
    return f"**Error:** {message}" if message else ""


def _quote(traceback: str) -> str:
    return "  \n".join(f"> {line}" for line in traceback.splitlines())


def _footer(alert: Alert, at_mobiles: Sequence[str]) -> str:
    parts = []
    if alert.log_url:
        parts.append(f"[Open the task log]({alert.log_url})")
    if at_mobiles:  # DingTalk pings a number only when "@<mobile>" is in the text too
        parts.append(" ".join(f"@{mobile}" for mobile in at_mobiles))
    return "\n\n".join(parts)


def render_markdown(
    alert: Alert,
    *,
    keyword: str | None = None,
    at_mobiles: Sequence[str] = (),
    fits: Callable[[RenderedMessage], bool] = lambda message: True,
) -> RenderedMessage:
    """Render ``alert``; ``fits`` says whether a candidate message is within the channel's limits."""
    title = render_title(alert, keyword)
    header, footer = _header(alert, keyword), _footer(alert, at_mobiles)
    message_text = alert.exception_message or ""
    traceback = alert.traceback or ""

    def build(message: str, tb: str) -> RenderedMessage:
        blocks = [header, _error_line(alert, message), _quote(tb) if tb else "", footer]
        return RenderedMessage(title, "\n\n".join(block for block in blocks if block))

    full = build(message_text, traceback)
    if fits(full):
        return full

    # Keep the traceback's tail (where it was raised), as much of it as fits.
    tb_bytes = len(traceback.encode("utf-8"))
    kept = largest_fitting(0, tb_bytes, lambda n: fits(build(message_text, _cut_tail(traceback, n))))
    if kept is not None:
        return build(message_text, _cut_tail(traceback, kept))

    # Not even the whole message fits without a traceback: keep its head.
    msg_bytes = len(message_text.encode("utf-8"))
    kept = largest_fitting(0, msg_bytes, lambda n: fits(build(_cut_head(message_text, n), "")))
    return build(_cut_head(message_text, kept or 0), "")


def _cut_tail(text: str, max_bytes: int) -> str:
    if max_bytes >= len(text.encode("utf-8")):
        return text
    return TRUNCATED + "\n" + utf8_tail(text, max_bytes) if max_bytes > 0 else ""


def _cut_head(text: str, max_bytes: int) -> str:
    if max_bytes >= len(text.encode("utf-8")):
        return text
    return utf8_head(text, max_bytes) + TRUNCATED if max_bytes > 0 else TRUNCATED
