"""Reading a patch file: a Debian DEP-3 header, then ``diff -u`` output applied with ``-p1``.

Paths are relative to the directory holding the installed ``airflow`` package (site-packages), as
RECORD lists them. No ``patch`` binary is needed (the apache/airflow image does not have one); the
diff is parsed with :mod:`unidiff`, every line kept with its exact line ending, so that a hunk can
be matched byte for byte (``\\ No newline at end of file`` included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from airflow_ext.errors import PatchError


@dataclass(frozen=True)
class Hunk:
    number: int  # 1-based, within its file diff (as patch(1) counts)
    src_start: int
    src_len: int
    tgt_start: int
    tgt_len: int
    old: tuple[str, ...]  # context + removed lines, exact text including line ending
    new: tuple[str, ...]  # context + added lines


@dataclass(frozen=True)
class FileDiff:
    path: str  # after -p1: relative to site-packages, as in RECORD
    hunks: tuple[Hunk, ...]


@dataclass(frozen=True)
class Patch:
    name: str
    path: Path
    diffs: tuple[FileDiff, ...]


def split_lines(text: str) -> list[str]:
    """Split on ``\\n`` only, keeping line endings (``\\r\\n`` stays intact); ``"".join`` inverts it."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _diff_body(lines: Sequence[str]) -> list[str]:
    """Drop the DEP-3 header: everything before the first ``--- `` (or ``diff --git``) line."""
    for index, line in enumerate(lines):
        if line.startswith(("--- ", "diff --git ")):
            return list(lines[index:])
    return []


def _strip_p1(name: str, patch_name: str) -> str:
    name = name.strip().rstrip("\r")
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        name = name[1:-1]
    parts = name.split("/")
    rest = parts[1:]
    if not rest or name.startswith("/") or any(part in ("", ".", "..") for part in rest):
        raise PatchError(f"{patch_name}: unsupported file name {name!r} in the diff")
    return "/".join(rest)


def parse_patch(path: Path, name: str) -> Patch:
    try:
        from unidiff import PatchSet
        from unidiff.errors import UnidiffParseError
    except ImportError:  # pragma: no cover - unidiff is a declared dependency
        raise PatchError("the 'unidiff' package is required to apply the patch series") from None

    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise PatchError(f"cannot read patch {name}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise PatchError(f"patch {name} is not UTF-8 text") from None

    body = _diff_body(split_lines(text))
    if not body:
        raise PatchError(f"patch {name} contains no diff")
    try:
        patch_set = PatchSet(body)
    except UnidiffParseError as err:
        raise PatchError(f"patch {name} is malformed: {err}") from None

    diffs: list[FileDiff] = []
    for patched_file in patch_set:
        source, target = patched_file.source_file, patched_file.target_file
        if getattr(patched_file, "is_binary_file", False):
            raise PatchError(f"{name}: binary diffs are not supported")
        if source in (None, "/dev/null") or target in (None, "/dev/null"):
            raise PatchError(f"{name}: creating or deleting files is not supported")
        rel = _strip_p1(source, name)
        if _strip_p1(target, name) != rel:
            raise PatchError(f"{name}: renaming files is not supported ({rel})")
        if not len(patched_file):
            raise PatchError(f"{name}: the diff for {rel} has no hunks")
        hunks = []
        for number, hunk in enumerate(patched_file, 1):
            hunks.append(_convert_hunk(hunk, number, name, rel))
        diffs.append(FileDiff(rel, tuple(hunks)))
    if not diffs:
        raise PatchError(f"patch {name} contains no diff")
    return Patch(name, path, tuple(diffs))


def _convert_hunk(hunk, number: int, patch_name: str, rel: str) -> Hunk:
    entries: list[list[str]] = []  # [line_type, text]
    for line in hunk:
        kind = line.line_type
        if kind in (" ", "-", "+"):
            entries.append([kind, line.value])
        elif kind == "\\":  # "\ No newline at end of file" applies to the line before it
            if not entries or not entries[-1][1].endswith("\n"):
                raise PatchError(f"{patch_name}: misplaced 'No newline' marker in hunk #{number} for {rel}")
            entries[-1][1] = entries[-1][1][:-1]
        # anything else (a blank separator line after the hunk) carries no content
    old = tuple(text for kind, text in entries if kind in " -")
    new = tuple(text for kind, text in entries if kind in " +")
    if len(old) != hunk.source_length or len(new) != hunk.target_length:
        raise PatchError(f"{patch_name}: hunk #{number} for {rel} does not match its @@ line counts")
    return Hunk(
        number, hunk.source_start, hunk.source_length, hunk.target_start, hunk.target_length, old, new
    )
