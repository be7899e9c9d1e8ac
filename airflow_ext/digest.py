"""Many alerts → few chat messages: a digest names every failure in one short line, packed to a budget.

A DingTalk robot accepts 20 messages a minute. When many tasks fail at once, the pending alerts are
coalesced into digests: :func:`render_digests` packs them, oldest first, greedily into as few
messages as the caller's ``fits`` check (the whole encoded JSON body, in bytes) allows. A message
looks like this (a group per DAG run, in first-seen order)::

    #### 🔴 49 Airflow task failures

    **orders_daily** 37 · **billing** 12

    **orders_daily** · run scheduled__2026-11-20T00:00:00+00:00

    - load_orders [map index 3] · try 3 of 3 · failed · ValueError · on worker-2 · [log](http://...)
    - check_orders · try 1 of 3 · will retry · on worker-1 · [log](http://...)

    **billing** · run ...

    @13800000000

Each entry is named whole (task, map index, try, retry or final failure, exception type, the host
that ran the try, log link); messages and tracebacks are left out, they are one tap away behind the
link. Only an alert whose entry cannot fit even alone is shortened (its ids cut, never inside a
UTF-8 character), so that it is still reported.

Sizes are counted incrementally, not by re-encoding the message for every entry: JSON escaping is
per character, so the encoded size of a text is the sum of the encoded sizes of its pieces. The
budget is found once per call by asking ``fits`` about filler texts, and every finished message is
checked with ``fits`` itself; if the count was off (``fits`` looks at more than size), the digest is
trimmed and the rest goes to the next message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from airflow_ext.alert import Alert, clean_text
from airflow_ext.render import (
    MARKDOWN,
    Markup,
    RenderedMessage,
    finish_title,
    largest_fitting,
    mentions,
    utf8_head,
)

#: Between markdown blocks (heading, counts, a group's line, a group's list, mentions).
BLOCK_SEP = "\n\n"
#: Between the entries of one group's list.
ENTRY_SEP = "\n"
#: Between the fields of an entry, and between the DAGs of the counts line.
FIELD_SEP = " · "
#: Before the host that ran the try, in an entry.
HOST_PREFIX = "on "
#: Marks an id that was cut to make a lone, oversized alert fit.
CUT = "…"
#: ``fits`` is asked about budgets up to this many bytes; beyond it the budget counts as this.
MAX_BUDGET_BYTES = 1 << 24


@dataclass(frozen=True)
class Digest:
    """One message and the alerts it names, in input order."""

    message: RenderedMessage
    alerts: tuple[Alert, ...]


def digest_msg_uuid(digest: Digest) -> str:
    """A deterministic 32-hex-char ``msgUuid``: a resend of the same alerts is deduplicated by DingTalk."""
    keys = json.dumps(sorted(alert.dedup_key for alert in digest.alerts), ensure_ascii=False)
    return hashlib.sha256(keys.encode("utf-8")).hexdigest()[:32]


def _json_size(text: str) -> int:
    """Bytes ``text`` adds inside a JSON string (UTF-8, ``ensure_ascii=False``), quotes excluded."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _title(n: int, keyword: str | None) -> str:
    return finish_title(f"Airflow: {n} task {_plural(n, 'failure', 'failures')}", keyword)


def _heading(n: int, all_retries: bool, keyword: str | None, markup: Markup = MARKDOWN) -> str:
    if all_retries:
        heading = f"🟠 {n} failed Airflow {_plural(n, 'try', 'tries')}, will retry"
    else:
        heading = f"🔴 {n} Airflow task {_plural(n, 'failure', 'failures')}"
    if keyword and keyword not in heading:
        heading = f"{heading} · {keyword}"
    return markup.heading(heading)


def _count_segment(dag: str, markup: Markup = MARKDOWN) -> str:
    """A DAG's part of the counts line, without its count."""
    return f"{markup.bold(dag)} "


def _group_line(dag: str, run: str, markup: Markup = MARKDOWN) -> str:
    return f"{markup.bold(dag)} · run {run}"


@dataclass(frozen=True)
class _Entry:
    """An alert as shown: its (possibly cut) DAG and run, and its list line."""

    alert: Alert
    dag: str
    run: str
    line: str


_BASE_DATE = re.compile(r"&base_date=[^&]*")


def short_log_url(url: str) -> str:
    """The task's log link without ``base_date``: the grid finds the run by its id, and a digest
    fits about a fifth more failures without it."""
    return _BASE_DATE.sub("", url)


def _entry(
    alert: Alert, max_id_bytes: int | None = None, with_log_url: bool = True, markup: Markup = MARKDOWN
) -> _Entry:
    def shown(value: str) -> str:
        value = clean_text(value)
        if max_id_bytes is None or len(value.encode("utf-8")) <= max_id_bytes:
            return markup.escape(value)
        return markup.escape(utf8_head(value, max_id_bytes)) + CUT

    task = shown(alert.task_id)
    if alert.map_index >= 0:
        task = f"{task} [map index {alert.map_index}]"
    fields = [
        task,
        f"try {alert.try_number} of {alert.attempts_allowed}",
        "will retry" if alert.is_retry else "failed",
    ]
    if alert.exception_type:
        fields.append(shown(alert.exception_type))
    if alert.hostname:  # which node: a storm over many workers is often one bad node
        fields.append(f"{HOST_PREFIX}{shown(alert.hostname)}")
    if with_log_url and alert.log_url:
        fields.append(markup.link("log", short_log_url(alert.log_url)))
    return _Entry(alert, shown(alert.dag_id), shown(alert.run_id), markup.list_item + FIELD_SEP.join(fields))


def _render(
    entries: Sequence[_Entry], keyword: str | None, mention_line: str, markup: Markup = MARKDOWN
) -> RenderedMessage:
    groups: dict[tuple[str, str], list[str]] = {}
    counts: dict[str, int] = {}
    for entry in entries:
        groups.setdefault((entry.dag, entry.run), []).append(entry.line)
        counts[entry.dag] = counts.get(entry.dag, 0) + 1
    all_retries = all(entry.alert.is_retry for entry in entries)
    blocks = [
        _heading(len(entries), all_retries, keyword, markup),
        FIELD_SEP.join(f"{_count_segment(dag, markup)}{count}" for dag, count in counts.items()),
    ]
    for (dag, run), lines in groups.items():
        blocks.append(_group_line(dag, run, markup))
        blocks.append(ENTRY_SEP.join(lines))
    if mention_line:
        blocks.append(mention_line)
    return RenderedMessage(_title(len(entries), keyword), BLOCK_SEP.join(blocks))


def _budget(fits: Callable[[RenderedMessage], bool]) -> int:
    """Bytes that title and text together may take inside the JSON body; -1 if not even empty fits."""

    def ok(n: int) -> bool:
        return fits(RenderedMessage("", "x" * n))

    if not ok(0):
        return -1
    low, high = 0, 4096
    while ok(high):
        if high >= MAX_BUDGET_BYTES:
            return MAX_BUDGET_BYTES
        low, high = high, high * 2
    return largest_fitting(low, high - 1, ok) or 0


class _Packer:
    """The exact encoded size of a growing digest, updated per entry in O(1)."""

    def __init__(self, keyword: str | None, mention_line: str, markup: Markup = MARKDOWN) -> None:
        self.keyword = keyword
        self.markup = markup
        self.mentions_size = _json_size(mention_line) if mention_line else 0
        self.fixed_blocks = 3 if mention_line else 2  # heading, counts line, mention_line
        self.block_sep = _json_size(BLOCK_SEP)
        self.entry_sep = _json_size(ENTRY_SEP)
        self.field_sep = _json_size(FIELD_SEP)
        self._framing: dict[tuple[int, bool], int] = {}
        self._segments: dict[str, int] = {}
        self._group_lines: dict[tuple[str, str], int] = {}
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.all_retries = True
        self.dag_counts: dict[str, int] = {}
        self.groups: set[tuple[str, str]] = set()
        self.counts_size = 0  # the counts line, without separators
        self.groups_size = 0  # group lines and entries, without separators

    def framing(self, n: int, all_retries: bool) -> int:
        key = (n, all_retries)
        size = self._framing.get(key)
        if size is None:
            size = _json_size(_title(n, self.keyword)) + _json_size(
                _heading(n, all_retries, self.keyword, self.markup)
            )
            self._framing[key] = size
        return size

    def size_with(self, entry: _Entry, entry_size: int) -> int:
        """Encoded size of title and text if ``entry`` is added."""
        n = self.n + 1
        dags = len(self.dag_counts)
        count = self.dag_counts.get(entry.dag)
        counts_size = self.counts_size
        if count is None:
            dags += 1
            counts_size += self._segment(entry.dag) + 1
        else:
            counts_size += len(str(count + 1)) - len(str(count))
        group = (entry.dag, entry.run)
        groups = len(self.groups)
        groups_size = self.groups_size + entry_size
        if group not in self.groups:
            groups += 1
            groups_size += self._group_line(group)
        blocks = self.fixed_blocks + 2 * groups
        return (
            self.framing(n, self.all_retries and entry.alert.is_retry)
            + counts_size
            + self.field_sep * (dags - 1)
            + groups_size
            + self.entry_sep * (n - groups)
            + self.mentions_size
            + self.block_sep * (blocks - 1)
        )

    def add(self, entry: _Entry, entry_size: int) -> None:
        self.n += 1
        self.all_retries = self.all_retries and entry.alert.is_retry
        count = self.dag_counts.get(entry.dag)
        if count is None:
            self.counts_size += self._segment(entry.dag) + 1
            self.dag_counts[entry.dag] = 1
        else:
            self.counts_size += len(str(count + 1)) - len(str(count))
            self.dag_counts[entry.dag] = count + 1
        group = (entry.dag, entry.run)
        self.groups_size += entry_size
        if group not in self.groups:
            self.groups.add(group)
            self.groups_size += self._group_line(group)

    def _segment(self, dag: str) -> int:
        size = self._segments.get(dag)
        if size is None:
            size = self._segments[dag] = _json_size(_count_segment(dag, self.markup))
        return size

    def _group_line(self, group: tuple[str, str]) -> int:
        size = self._group_lines.get(group)
        if size is None:
            size = self._group_lines[group] = _json_size(_group_line(*group, self.markup))
        return size


def render_digests(
    alerts: Sequence[Alert],
    *,
    keyword: str | None = None,
    at_mobiles: Sequence[str] = (),
    fits: Callable[[RenderedMessage], bool],
    max_messages: int | None = None,
    markup: Markup = MARKDOWN,
) -> list[Digest]:
    """Pack ``alerts``, in order, greedily into as few digests as possible, each one ``fits``.

    ``fits`` should check the whole request body as it will be sent, including a ``msgUuid`` of
    the final length (:func:`digest_msg_uuid` gives 32 characters: pass a placeholder of that
    length). With ``max_messages``, only the first that many digests are returned; the alerts they
    do not name are left for the caller to keep. Every alert in a returned digest is named whole,
    except one whose entry alone does not fit: it gets a digest of its own with its ids cut.

    ``markup`` is the robot's channel's (DingTalk markdown by default).

    Raises ValueError if ``fits`` accepts not even a digest of one alert with every id cut away.
    """
    if max_messages is not None and max_messages < 0:
        raise ValueError(f"max_messages must be 0 or more, got {max_messages}")
    mention_line = mentions(at_mobiles, markup)
    budget = _budget(fits) if alerts else -1
    packer = _Packer(keyword, mention_line, markup)
    entries: list[_Entry] = []
    entry_sizes: list[int] = []
    digests: list[Digest] = []

    def entry_at(index: int) -> int:
        while len(entries) <= index:  # made on demand: max_messages may leave most alerts out
            entry = _entry(alerts[len(entries)], markup=markup)
            entries.append(entry)
            entry_sizes.append(_json_size(entry.line))
        return index

    def render(start: int, end: int) -> RenderedMessage:
        return _render(entries[start:end], keyword, mention_line, markup)

    def packed_end(start: int) -> int:
        """End of the longest run of alerts from ``start`` whose digest is counted to fit."""
        packer.reset()
        end = start
        while end < len(alerts):
            entry = entries[entry_at(end)]
            if packer.size_with(entry, entry_sizes[end]) > budget:
                break
            packer.add(entry, entry_sizes[end])
            end += 1
        return end

    def checked(start: int, end: int) -> tuple[int, RenderedMessage]:
        """The digest of ``alerts[start:end]`` if it fits, else of the longest head that does."""
        if end > start:
            message = render(start, end)
            if fits(message):
                return end, message
            # The count was off (fits looks at more than size): the rest opens the next digest.
            kept = largest_fitting(1, end - start - 1, lambda k: fits(render(start, start + k)))
            if kept:
                return start + kept, render(start, start + kept)
        return start + 1, _render_shortened(alerts[start], keyword, mention_line, fits, markup)

    start = 0
    while start < len(alerts) and (max_messages is None or len(digests) < max_messages):
        end, message = checked(start, packed_end(start))
        digests.append(Digest(message, tuple(alerts[start:end])))
        start = end
    return digests


def _render_shortened(
    alert: Alert,
    keyword: str | None,
    mention_line: str,
    fits: Callable[[RenderedMessage], bool],
    markup: Markup = MARKDOWN,
) -> RenderedMessage:
    """A digest of ``alert`` alone, its ids cut as little as needed to fit."""
    longest = max(
        len(clean_text(value).encode("utf-8"))
        for value in (alert.dag_id, alert.task_id, alert.run_id, alert.exception_type or "")
    )
    for with_log_url in (True, False) if alert.log_url else (False,):

        def render(max_id_bytes: int, with_log_url: bool = with_log_url) -> RenderedMessage:
            return _render([_entry(alert, max_id_bytes, with_log_url, markup)], keyword, mention_line, markup)

        if fits(render(longest)):
            return render(longest)
        kept = largest_fitting(0, longest, lambda n, render=render: fits(render(n)))
        if kept is not None:
            return render(kept)
    raise ValueError(
        f"no digest fits, not even one alert with its ids cut ({alert.dag_id[:40]!r}): "
        "the budget is smaller than the heading, keyword and mentions"
    )
