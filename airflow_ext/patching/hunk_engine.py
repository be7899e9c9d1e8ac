"""Applying and reverse-applying a file's hunks in memory: exact context, offsets, no fuzz.

Stricter than ``patch(1)`` on purpose: every hunk's context and removed lines must match exactly,
with exact line endings, including ``\\ No newline at end of file``. A hunk is looked for first at
the line its header states (moved by the offset the file's previous hunk was found at); elsewhere
only if it is not there, and then it must be found at exactly one line after the previous hunk
(``patch -F0`` would take the nearest of several; content that occurs twice is refused instead).
Offsets let one series serve the patch releases of a minor, whose files differ in lines the
patches do not touch.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow_ext.patching.diff_parsing import FileDiff, split_lines
from airflow_ext.patching.wording import joined


class Mismatch(Exception):
    """A hunk that does not match: which one, at which line of the file, and why."""

    def __init__(self, hunk: int, line: int, reason: str) -> None:
        super().__init__(reason)
        self.hunk = hunk
        self.line = line
        self.reason = reason


def _position(start: int, length: int) -> int:
    """0-based index of a hunk side: ``-5,3`` starts at line 5; ``-5,0`` inserts after line 5."""
    return start - 1 if length else start


def _matches_at(lines: Sequence[str], old: Sequence[str], index: int) -> bool:
    return lines[index : index + len(old)] == list(old)


def _locate(lines: Sequence[str], old: Sequence[str], guess: int, lowest: int, hunk: int, stated: int) -> int:
    """Where the hunk's context and removed lines *old* are in *lines*: at *guess* (the line its
    header states, moved by the offset of the hunk before it) if they are there, else at the one
    other place at or after *lowest* (the end of the previous hunk) where they are, line for line.

    An offset only moves a hunk, never changes what it must find, as ``patch -F0`` does. Unlike
    ``patch``, a hunk that is not at its stated line must be found at exactly one place: content
    that occurs twice gives no reason to prefer either, so such a hunk is refused instead of put
    at the nearer one.
    """
    highest = len(lines) - len(old)
    if lowest <= guess <= highest and _matches_at(lines, old, guess):
        return guess
    found = [index for index in range(lowest, highest + 1) if _matches_at(lines, old, index)]
    if len(found) == 1:
        return found[0]
    if found:
        places = joined([str(index + 1) for index in found], "and")
        raise Mismatch(hunk, stated, f"its context and removed lines are at lines {places}, not here")
    if guess > highest:
        raise Mismatch(hunk, stated, f"the file has only {len(lines)} lines")
    differs = next((i for i, text in enumerate(old) if lines[guess + i] != text), 0) if guess >= lowest else 0
    raise Mismatch(
        hunk, max(guess, lowest) + differs + 1, "context or removed line differs, and is at no other line"
    )


def apply_diff(lines: Sequence[str], diff: FileDiff, *, reverse: bool) -> list[str]:
    """Apply (or reverse-apply) one file's hunks: each where its header says, or moved by an offset
    (see :func:`_locate`). No fuzz."""
    out: list[str] = []
    pos = 0
    shift = 0  # the offset of the previous hunk: where the next one is looked for first
    for hunk in diff.hunks:
        if reverse:
            old, new = hunk.new, hunk.old
            start, length, other_start, other_len = hunk.tgt_start, hunk.tgt_len, hunk.src_start, hunk.src_len
        else:
            old, new = hunk.old, hunk.new
            start, length, other_start, other_len = hunk.src_start, hunk.src_len, hunk.tgt_start, hunk.tgt_len
        stated = _position(start, length)
        if stated < pos - shift:
            raise Mismatch(hunk.number, start, "hunk overlaps the previous one or is out of order")
        index = _locate(lines, old, stated + shift, pos, hunk.number, start)
        shift = index - stated
        end = index + len(old)
        out.extend(lines[pos:index])
        if _position(other_start, other_len) + shift != len(out):
            raise Mismatch(hunk.number, start, "the @@ line numbers are inconsistent with earlier hunks")
        if new and out and not out[-1].endswith("\n"):
            raise Mismatch(hunk.number, start, "text added after a last line without newline")
        if any(not text.endswith("\n") for text in new[:-1]) or (
            new and not new[-1].endswith("\n") and end < len(lines)
        ):
            raise Mismatch(hunk.number, start, "'No newline at end of file' before the end of the file")
        out.extend(new)
        pos = end
    out.extend(lines[pos:])
    return out


def decode(data: bytes) -> list[str] | None:
    """A file's lines with their endings, or None if it is not UTF-8 text."""
    try:
        return split_lines(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def reverse_file(data: bytes, diffs: Sequence[tuple[str, FileDiff]]) -> bytes | None:
    """Reverse-apply *diffs* (given in series order) to *data*; None if any hunk does not match."""
    lines = decode(data)
    if lines is None:
        return None
    try:
        for _, diff in reversed(diffs):
            lines = apply_diff(lines, diff, reverse=True)
    except Mismatch:
        return None
    return "".join(lines).encode("utf-8")
