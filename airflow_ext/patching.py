"""Apply, check and revert the Airflow core patch series: quilt-like, in pure Python.

The series for an Airflow release lives in a directory ``<patches_root>/<series>/`` with a
``series`` file (one patch name per line; blank lines and ``#`` comments are ignored). Each patch
is a Debian DEP-3 header followed by ``diff -u`` output whose paths are applied with ``-p1``
relative to the directory holding the installed ``airflow`` package (site-packages).

Which series, and which distributions it patches:

* The series is chosen by the version of the installed ``apache-airflow`` distribution (the
  *primary* one), or of ``apache-airflow-core`` when ``apache-airflow`` is not installed.
* A series directory with a ``releases`` file covers each release listed there (one a line): a
  series made against the newest patch release of a minor covers every earlier one it applies to
  unchanged. A directory without that file covers only the release it is named after. Where a
  patch of the line's series does not apply to a release, that release has a series directory of
  its own, whose ``series`` names the line's patches it shares as ``../<series>/<patch>`` and its
  own patch in place of the one that does not apply. Exactly one directory may cover a release.
* Airflow 2.x ships all its code in ``apache-airflow``, so by default the series patches
  ``apache-airflow==<release>``. Airflow 3.x splits it: ``apache-airflow`` is a meta-package
  without code, and ``airflow/`` is filled by ``apache-airflow-core`` and
  ``apache-airflow-task-sdk`` (which has its own version numbers). The ``releases`` line of such
  a release names, after it, each distribution the series patches as ``name==version`` (a
  directory without ``releases`` names them in a ``distributions`` file, one a line).
* Before anything is read, every distribution named there must be installed at exactly that
  version: the series was made against those files and no others.
* Each patched file belongs to the one listed distribution whose ``RECORD`` lists it; a file
  listed by none or by several is an error.

Rules, stricter than ``patch(1)`` on purpose:

* No fuzz: every hunk's context and removed lines must match exactly, with exact line endings,
  including ``\\ No newline at end of file``. A hunk is looked for first at the line its header
  states (moved by the offset the file's previous hunk was found at); elsewhere only if it is not
  there, and then it must be found at exactly one line after the previous hunk (``patch -F0``
  would take the nearest of several; content that occurs twice is refused instead). Offsets let
  one series serve the patch releases of a minor, whose files differ in lines the patches do not
  touch.
* The truth about a file is the sha256 in the ``RECORD`` of the distribution that owns it. A
  file is *pristine* if it hashes to RECORD, *patched* if reverse-applying the series to it
  succeeds and yields the RECORD hash, otherwise *modified*.
* ``apply`` patches only pristine files, ``revert`` only yields RECORD-identical files; both
  compute every result in memory first and write all files of all distributions or none.

This module must not import airflow: the installation may be half-patched or broken.
No ``patch`` binary is needed (the apache/airflow image does not have one); patches are
parsed with :mod:`unidiff`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Optional

from airflow_ext.errors import PatchError

__all__ = [
    "FileStatus",
    "PatchError",
    "SeriesStatus",
    "apply_series",
    "available_versions",
    "check_series",
    "default_patches_root",
    "distributions_for",
    "revert_series",
    "series_for",
    "series_status",
]

DIST_NAME = "apache-airflow"
CORE_DIST_NAME = "apache-airflow-core"  # holds the code (and the version) when apache-airflow is absent
DISTRIBUTIONS_FILE = "distributions"
RELEASES_FILE = "releases"

# Per-file states.
PRISTINE = "pristine"  # sha256 equals RECORD: as released
PATCHED = "patched"  # reverse-applying the series yields the RECORD hash
MODIFIED = "modified"  # neither
MISSING = "missing"  # the file does not exist

# Series states.
APPLIED = "applied"
NOT_APPLIED = "not applied"
PARTIAL = "partially applied"
# MODIFIED (above) doubles as the series state when any file is modified or missing.

# A RECORD row's hash as (algorithm, urlsafe-b64 digest without padding); None if it has none.
_RecordHash = Optional[tuple[str, str]]

# PEP 508 names; versions are matched exactly, so anything like a specifier or wildcard is refused.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.+!_-]*[A-Za-z0-9])?")


# --------------------------------------------------------------------------------------------
# Locating things
# --------------------------------------------------------------------------------------------


def default_patches_root() -> Path:
    """``airflow_ext/_patches`` in an installed wheel, else the repository's ``patches/``."""
    package_dir = Path(__file__).resolve().parent
    bundled = package_dir / "_patches"
    if bundled.is_dir():
        return bundled
    return package_dir.parent / "patches"


def _root(patches_root: os.PathLike | str | None) -> Path:
    return Path(patches_root) if patches_root is not None else default_patches_root()


def _version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Sorts ``2.11.10`` after ``2.11.9``: numeric parts as numbers, others as text."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.+!_-]", version)
    )


# A release a series directory covers, with the pins its ``releases`` file gives for it (None: the
# directory has no such file, so it covers only the release it is named after).
_Claim = tuple[Path, Optional[list[tuple[str, str]]]]


def _series_dirs(root: Path) -> list[Path]:
    try:
        return sorted(child for child in root.iterdir() if (child / "series").is_file())
    except OSError:
        return []


def _read_releases(directory: Path) -> list[tuple[str, list[tuple[str, str]]]] | None:
    """The ``releases`` file of a series directory: ``[(release, pins)]``; None if it has none.

    Each line is an apache-airflow release the series applies to, then, for a release whose code
    is in other distributions (Airflow 3.x), the ``name==version`` of each one the series patches.
    """
    path = directory / RELEASES_FILE
    if not path.exists():
        return None
    label = f"the releases file of the patch series {directory.name}"
    if (directory / DISTRIBUTIONS_FILE).exists():
        raise PatchError(
            f"the patch series {directory.name} has both a {RELEASES_FILE} and a {DISTRIBUTIONS_FILE} file "
            f"(the {RELEASES_FILE} file names each release's distributions); nothing changed"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PatchError(f"cannot read {label}: {err}; nothing changed") from None
    releases: list[tuple[str, list[tuple[str, str]]]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        tokens = raw.split("#", 1)[0].split()  # '#' cannot occur in a name or a version
        if not tokens:
            continue
        where = f"{label}, line {lineno}"
        release, pin_texts = tokens[0], tokens[1:]
        if not _VERSION.fullmatch(release) or "==" in release:
            raise PatchError(f"{where}: invalid apache-airflow release {release!r}; nothing changed")
        if any(release == known for known, _ in releases):
            raise PatchError(f"{where}: {release} is listed twice; nothing changed")
        pins: list[tuple[str, str]] = []
        for pin_text in pin_texts:
            pin = _parse_pin(pin_text, where)
            if any(name == pin[0] for name, _ in pins):
                raise PatchError(f"{where}: {pin[0]} is listed twice; nothing changed")
            pins.append(pin)
        releases.append((release, pins or [(DIST_NAME, release)]))
    if not releases:
        raise PatchError(f"{label} names no release; nothing changed")
    return releases


def _claims(root: Path) -> dict[str, list[_Claim]]:
    """Every release some series directory under *root* covers, with the directories covering it."""
    claims: dict[str, list[_Claim]] = {}
    for directory in _series_dirs(root):
        releases = _read_releases(directory)
        if releases is None:
            claims.setdefault(directory.name, []).append((directory, None))
        for release, pins in releases or ():
            claims.setdefault(release, []).append((directory, pins))
    return claims


def available_versions(patches_root: os.PathLike | str | None = None) -> list[str]:
    """The apache-airflow releases some series under *patches_root* covers, oldest first."""
    return sorted(_claims(_root(patches_root)), key=_version_key)


def _series_dir(version: str, root: Path) -> _Claim:
    """The one series directory covering apache-airflow *version*, and the pins it gives for it."""
    claims = _claims(root)
    found = claims.get(version, [])
    if not found:
        available = ", ".join(sorted(claims, key=_version_key)) or "none"
        raise PatchError(
            f"no patch series for apache-airflow {version}; this airflow-dingbot supports: {available}"
        )
    if len(found) > 1:
        names = _joined([directory.name for directory, _ in found], "and")
        raise PatchError(f"the patch series {names} each claim apache-airflow {version}; nothing changed")
    return found[0]


def series_for(version: str, patches_root: os.PathLike | str | None = None) -> list[Path]:
    """The patch files of the series for Airflow *version*, in application order.

    A name in ``series`` is a file of the series directory, or ``../<series>/<file>``: a patch of
    another series that applies to this release as it is (a per-release series shares the patches
    of its line and has its own only where the line's does not apply).
    """
    root = _root(patches_root)
    version_dir, _ = _series_dir(version, root)
    series = version_dir / "series"
    try:
        text = series.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PatchError(f"cannot read the patch series for apache-airflow {version}: {err}") from None

    patches: list[Path] = []
    seen = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = line.split()
        name, options = tokens[0], tokens[1:]
        if options and options[0].startswith("#"):
            options = []
        where = f"series for apache-airflow {version}, line {lineno}"
        if any(option != "-p1" for option in options):
            raise PatchError(f"{where}: unsupported option {' '.join(options)!r} (only -p1)")
        parts = name.split("/")
        # Only the leading ".." of "../<series>/<file>" may leave the directory, and only one level.
        own_parts = parts[1:] if len(parts) == 3 and parts[0] == ".." else parts
        if name.startswith("/") or any(part in ("", ".", "..") for part in own_parts):
            raise PatchError(f"{where}: invalid patch name {name!r}")
        if name in seen:
            raise PatchError(f"{where}: {name} is listed twice")
        seen.add(name)
        path = version_dir.joinpath(*parts)
        if not path.is_file():
            raise PatchError(f"{where}: patch file {name} does not exist")
        patches.append(path)
    if not patches:
        raise PatchError(f"the patch series for apache-airflow {version} is empty")
    return patches


def distributions_for(version: str, patches_root: os.PathLike | str | None = None) -> list[tuple[str, str]]:
    """The ``(name, version)`` pins the series patches on apache-airflow *version*.

    They come from the ``releases`` file of the series directory covering *version*; a directory
    without one covers only its own release, pinned in its ``distributions`` file, and without
    that file the series patches ``apache-airflow==<version>`` alone (Airflow 2.x).
    Names are returned normalized (``Apache_Airflow.Core`` -> ``apache-airflow-core``).
    """
    version_dir, pins = _series_dir(version, _root(patches_root))
    if pins is not None:
        return pins
    path = version_dir / DISTRIBUTIONS_FILE
    if not path.exists():
        return [(DIST_NAME, version)]
    label = f"the distributions file for apache-airflow {version}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PatchError(f"cannot read {label}: {err}; nothing changed") from None

    pins: list[tuple[str, str]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()  # '#' cannot occur in a name or a version
        if line:
            pin = _parse_pin(line, f"{label}, line {lineno}")
            if any(name == pin[0] for name, _ in pins):
                raise PatchError(f"{label}, line {lineno}: {pin[0]} is listed twice; nothing changed")
            pins.append(pin)
    if not pins:
        raise PatchError(f"{label} names no distribution; nothing changed")
    return pins


def _parse_pin(line: str, where: str) -> tuple[str, str]:
    """``name==version`` -> ``(normalized name, version)``; exact pins only."""
    name, operator, version = line.partition("==")
    name, version = name.strip(), version.strip()
    if not operator or version.startswith("="):
        raise PatchError(f"{where}: expected an exact pin 'name==version', got {line!r}; nothing changed")
    if not _NAME.fullmatch(name):
        raise PatchError(f"{where}: invalid distribution name {name!r}; nothing changed")
    if not _VERSION.fullmatch(version):
        raise PatchError(
            f"{where}: invalid version {version!r} for {name} (an exact version is needed); nothing changed"
        )
    return _normalize(name), version


def _normalize(name: str) -> str:
    """PEP 503 normalized distribution name, used both to compare and to display names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _name_of(dist: metadata.Distribution) -> str:
    return _normalize(dist.metadata["Name"] or "")


def _find(name: str, dists: Sequence[metadata.Distribution] | None) -> metadata.Distribution | None:
    """The distribution called *name*: among *dists* if given, else in this Python environment."""
    if dists is not None:
        return next((dist for dist in dists if _name_of(dist) == _normalize(name)), None)
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def _resolve_primary(
    dist: metadata.Distribution | None, dists: Sequence[metadata.Distribution] | None
) -> metadata.Distribution:
    """The distribution whose version chooses the series: apache-airflow, else apache-airflow-core."""
    if dist is None:
        dist = _find(DIST_NAME, dists) or _find(CORE_DIST_NAME, dists)
        if dist is None:
            raise PatchError(
                f"neither {DIST_NAME} nor {CORE_DIST_NAME} is installed in this Python environment"
            )
    if not dist.version:
        raise PatchError(f"the installed {_name_of(dist) or DIST_NAME} has no version in its metadata")
    return dist


@dataclass(frozen=True)
class _Target:
    """A distribution the series patches, installed at the version the series needs."""

    name: str  # normalized
    version: str
    dist: metadata.Distribution = field(repr=False)
    record: dict[str, _RecordHash] = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def _resolve_targets(
    pins: Sequence[tuple[str, str]],
    primary: metadata.Distribution,
    label: str,
    dists: Sequence[metadata.Distribution] | None,
) -> list[_Target]:
    """Check every pin against what is installed first, then read the RECORDs."""
    found = []
    for name, version in pins:
        dist = primary if name == _name_of(primary) else _find(name, dists)
        if dist is None:
            installed = "it is not installed"
        elif dist.version != version:
            installed = f"{dist.version} is installed"
        else:
            found.append((name, version, dist))
            continue
        raise PatchError(
            f"the patch series for {label} needs {name}=={version}, but {installed}; nothing changed"
        )
    return [
        _Target(name, version, dist, _read_record(dist, f"{name} {version}")) for name, version, dist in found
    ]


def _read_record(dist: metadata.Distribution, label: str) -> dict[str, _RecordHash]:
    """RECORD as ``{path: (algorithm, digest) or None}``; None marks an entry without a hash."""
    text = dist.read_text("RECORD")
    if text is None:
        raise PatchError(
            f"{label} has no RECORD, so its files cannot be verified as released; nothing changed"
        )
    record: dict[str, _RecordHash] = {}
    for row in csv.reader(text.splitlines()):
        if not row:
            continue
        if len(row) < 2 or "=" not in row[1]:
            record.setdefault(row[0], None)
            continue
        algorithm, digest = row[1].split("=", 1)
        record[row[0]] = (algorithm, digest)
    return record


def _owner(rel: str, patch_name: str, targets: Sequence[_Target]) -> tuple[_Target, str, str]:
    """The one target whose RECORD lists *rel*, with the hash it records for it."""
    owners = [target for target in targets if rel in target.record]
    if not owners:
        raise PatchError(
            f"{patch_name} patches {rel}, which is not in the RECORD of "
            f"{_joined([t.label for t in targets], 'or')}; nothing changed"
        )
    if len(owners) > 1:
        raise PatchError(
            f"{patch_name} patches {rel}, which the RECORDs of {_joined([t.label for t in owners], 'and')} "
            "each list, so it is unclear which release to verify it against; nothing changed"
        )
    owner = owners[0]
    recorded = owner.record[rel]
    if recorded is None:
        raise PatchError(
            f"{patch_name} patches {rel}, which has no hash in the RECORD of {owner.label}; nothing changed"
        )
    algorithm, expected = recorded
    try:
        hashlib.new(algorithm)
    except ValueError:
        raise PatchError(f"unsupported hash {algorithm!r} for {rel} in the RECORD of {owner.label}") from None
    return owner, algorithm, expected


def _digest(data: bytes, algorithm: str) -> str:
    return base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=").decode("ascii")


def _joined(items: Sequence[str], conjunction: str) -> str:
    """``a`` / ``a and b`` / ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


# --------------------------------------------------------------------------------------------
# Parsing patches
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hunk:
    number: int  # 1-based, within its file diff (as patch(1) counts)
    src_start: int
    src_len: int
    tgt_start: int
    tgt_len: int
    old: tuple[str, ...]  # context + removed lines, exact text including line ending
    new: tuple[str, ...]  # context + added lines


@dataclass(frozen=True)
class _FileDiff:
    path: str  # after -p1: relative to site-packages, as in RECORD
    hunks: tuple[_Hunk, ...]


@dataclass(frozen=True)
class _Patch:
    name: str
    path: Path
    diffs: tuple[_FileDiff, ...]


def _split_lines(text: str) -> list[str]:
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


def _parse_patch(path: Path, name: str) -> _Patch:
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

    body = _diff_body(_split_lines(text))
    if not body:
        raise PatchError(f"patch {name} contains no diff")
    try:
        patch_set = PatchSet(body)
    except UnidiffParseError as err:
        raise PatchError(f"patch {name} is malformed: {err}") from None

    diffs: list[_FileDiff] = []
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
        diffs.append(_FileDiff(rel, tuple(hunks)))
    if not diffs:
        raise PatchError(f"patch {name} contains no diff")
    return _Patch(name, path, tuple(diffs))


def _convert_hunk(hunk, number: int, patch_name: str, rel: str) -> _Hunk:
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
    return _Hunk(
        number, hunk.source_start, hunk.source_length, hunk.target_start, hunk.target_length, old, new
    )


# --------------------------------------------------------------------------------------------
# Applying hunks, in memory
# --------------------------------------------------------------------------------------------


class _Mismatch(Exception):
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
        places = _joined([str(index + 1) for index in found], "and")
        raise _Mismatch(hunk, stated, f"its context and removed lines are at lines {places}, not here")
    if guess > highest:
        raise _Mismatch(hunk, stated, f"the file has only {len(lines)} lines")
    differs = next((i for i, text in enumerate(old) if lines[guess + i] != text), 0) if guess >= lowest else 0
    raise _Mismatch(
        hunk, max(guess, lowest) + differs + 1, "context or removed line differs, and is at no other line"
    )


def _apply_diff(lines: Sequence[str], diff: _FileDiff, *, reverse: bool) -> list[str]:
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
            raise _Mismatch(hunk.number, start, "hunk overlaps the previous one or is out of order")
        index = _locate(lines, old, stated + shift, pos, hunk.number, start)
        shift = index - stated
        end = index + len(old)
        out.extend(lines[pos:index])
        if _position(other_start, other_len) + shift != len(out):
            raise _Mismatch(hunk.number, start, "the @@ line numbers are inconsistent with earlier hunks")
        if new and out and not out[-1].endswith("\n"):
            raise _Mismatch(hunk.number, start, "text added after a last line without newline")
        if any(not text.endswith("\n") for text in new[:-1]) or (
            new and not new[-1].endswith("\n") and end < len(lines)
        ):
            raise _Mismatch(hunk.number, start, "'No newline at end of file' before the end of the file")
        out.extend(new)
        pos = end
    out.extend(lines[pos:])
    return out


def _decode(data: bytes) -> list[str] | None:
    try:
        return _split_lines(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _reverse_file(data: bytes, diffs: Sequence[tuple[str, _FileDiff]]) -> bytes | None:
    """Reverse-apply *diffs* (given in series order) to *data*; None if any hunk does not match."""
    lines = _decode(data)
    if lines is None:
        return None
    try:
        for _, diff in reversed(diffs):
            lines = _apply_diff(lines, diff, reverse=True)
    except _Mismatch:
        return None
    return "".join(lines).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------


@dataclass
class FileStatus:
    path: str  # relative to site-packages, as in RECORD and in the patches (after -p1)
    location: Path
    state: str  # PRISTINE, PATCHED, MODIFIED or MISSING
    patches: list[str]  # names of the patches touching this file, in series order
    current: bytes | None = field(default=None, repr=False)
    reverted: bytes | None = field(default=None, repr=False)  # set when state == PATCHED
    dist_name: str = DIST_NAME  # the distribution whose RECORD lists this file (normalized name)
    dist_version: str = ""

    @property
    def distribution(self) -> str:
        """``apache-airflow-task-sdk 1.3.2``."""
        return f"{self.dist_name} {self.dist_version}"

    @property
    def pin(self) -> str:
        """``apache-airflow-task-sdk==1.3.2``: what to reinstall to get the released file back."""
        return f"{self.dist_name}=={self.dist_version}"


@dataclass
class SeriesStatus:
    version: str
    patches: list[Path]
    files: list[FileStatus]
    _parsed: list[_Patch] = field(default_factory=list, repr=False)
    label: str = ""  # the primary distribution: "apache-airflow 3.3.2"
    distributions: list[str] = field(default_factory=list)  # the patched ones, "name version" each

    def __post_init__(self) -> None:
        self.label = self.label or f"{DIST_NAME} {self.version}"
        self.distributions = self.distributions or [self.label]

    @property
    def state(self) -> str:
        states = {f.state for f in self.files}
        if states & {MODIFIED, MISSING}:
            return MODIFIED
        if states == {PATCHED}:
            return APPLIED
        if states == {PRISTINE}:
            return NOT_APPLIED
        return PARTIAL

    def paths(self, *states: str) -> list[str]:
        return [f.path for f in self.files if f.state in states]

    def name(self, file: FileStatus) -> str:
        """The file's path, and its distribution when the series patches more than the primary one."""
        return file.path if self._primary_only else f"{file.path} of {file.distribution}"

    def named(self, *states: str) -> list[str]:
        """Like :meth:`paths`, each as :meth:`name` gives it."""
        return [self.name(f) for f in self.files if f.state in states]

    @property
    def _primary_only(self) -> bool:
        # The Airflow 2.x case: the label already says whose files they are.
        return self.distributions == [self.label]

    @property
    def patch_names(self) -> list[str]:
        return [p.name for p in self._parsed]

    @property
    def spread(self) -> str:
        """`` in <dist> <version> and <dist> <version>`` if the series patches others than the primary."""
        if self._primary_only:
            return ""
        return f" in {_joined(self.distributions, 'and')}"


def series_status(
    *,
    dist: metadata.Distribution | None = None,
    dists: Sequence[metadata.Distribution] | None = None,
    patches_root: os.PathLike | str | None = None,
) -> SeriesStatus:
    """Parse the series for the installed version and classify every file it touches. Writes nothing.

    *dist* is the primary distribution (apache-airflow) whose version chooses the series; *dists*,
    if given, are the distributions to use instead of looking names up in this Python environment.
    """
    primary = _resolve_primary(dist, dists)
    version = primary.version
    label = f"{_name_of(primary) or DIST_NAME} {version}"
    root = _root(patches_root)
    patch_paths = series_for(version, root)
    targets = _resolve_targets(distributions_for(version, root), primary, label, dists)
    version_dir, _ = _series_dir(version, root)
    # Named as the series lists them: "0001-x.patch", or "../2.11.2/0001-x.patch" for a shared one.
    parsed = [_parse_patch(path, Path(os.path.relpath(path, version_dir)).as_posix()) for path in patch_paths]

    per_file: dict[str, list[tuple[str, _FileDiff]]] = {}
    for patch in parsed:
        for diff in patch.diffs:
            per_file.setdefault(diff.path, []).append((patch.name, diff))
    files = [_file_status(rel, diffs, *_owner(rel, diffs[0][0], targets)) for rel, diffs in per_file.items()]
    return SeriesStatus(version, patch_paths, files, parsed, label, [t.label for t in targets])


def _file_status(
    rel: str, diffs: Sequence[tuple[str, _FileDiff]], owner: _Target, algorithm: str, expected: str
) -> FileStatus:
    location = Path(str(owner.dist.locate_file(rel)))
    patches = [name for name, _ in diffs]
    status = FileStatus(rel, location, MISSING, patches, dist_name=owner.name, dist_version=owner.version)
    try:
        current = location.read_bytes()
    except FileNotFoundError:
        return status
    except OSError as err:
        raise PatchError(f"cannot read {rel} of {owner.label}: {err.strerror or err}") from None
    status.current = current
    reverted = _reverse_file(current, diffs)
    if reverted is not None and _digest(reverted, algorithm) == expected:
        status.state, status.reverted = PATCHED, reverted
    elif _digest(current, algorithm) == expected:
        status.state = PRISTINE
    else:
        status.state = MODIFIED
    return status


# --------------------------------------------------------------------------------------------
# Writing: all files or none
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Change:
    file: FileStatus  # names the file and its distribution; its location is rewritten
    new: bytes
    old: bytes  # what to put back if a later rename fails

    @property
    def name(self) -> str:
        return f"{self.file.path} of {self.file.distribution}"


def _write_temp(target: Path, data: bytes) -> str:
    """Write *data* to a new temp file next to *target*, with *target*'s mode (and owner if possible)."""
    st = os.stat(target)
    fd, tmp = tempfile.mkstemp(dir=str(target.parent), prefix=f".{target.name}.", suffix=".airflow-ext")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        if hasattr(os, "chown") and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except OSError:
                pass
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _commit(changes: Sequence[_Change]) -> None:
    """Replace each file with its new bytes, across all distributions together.

    All temp files are written first; only then are they renamed over the targets. If a rename
    fails, the files already replaced (of whichever distribution) are put back, so the
    installation is never left half-changed.
    """
    prepared: list[tuple[Path, str]] = []
    try:
        for change in changes:
            target = Path(os.path.realpath(change.file.location))
            prepared.append((target, _write_temp(target, change.new)))
    except OSError as err:
        for _, tmp in prepared:
            _unlink(tmp)
        raise PatchError(
            f"cannot write {changes[len(prepared)].name}: {err.strerror or err}; nothing changed"
        ) from None

    for index, (target, tmp) in enumerate(prepared):
        try:
            os.replace(tmp, target)
        except OSError as err:
            for _, left in prepared[index:]:
                _unlink(left)
            not_restored = []
            for (done_target, _), done in zip(prepared[:index], changes[:index]):
                try:
                    os.replace(_write_temp(done_target, done.old), done_target)
                except OSError:
                    not_restored.append(done.name)
            outcome = f"could not restore {', '.join(not_restored)}" if not_restored else "nothing changed"
            raise PatchError(
                f"cannot replace {changes[index].name}: {err.strerror or err}; {outcome}"
            ) from None
    _drop_stale_bytecode([target for target, _ in prepared])


def _drop_stale_bytecode(targets: Sequence[Path]) -> None:
    """Remove ``__pycache__/<module>.*.pyc`` of rewritten modules (hash-based .pyc may not notice)."""
    for target in targets:
        if target.suffix != ".py":
            continue
        cache = target.parent / "__pycache__"
        try:
            names = os.listdir(cache)
        except OSError:
            continue
        for name in names:
            if name.startswith(target.stem + ".") and name.endswith(".pyc"):
                _unlink(str(cache / name))


# --------------------------------------------------------------------------------------------
# Public commands
# --------------------------------------------------------------------------------------------


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word}{'es' if word.endswith(('s', 'sh', 'ch', 'x')) else 's'}"


def _are(paths: Sequence[str]) -> str:
    """``a.py is`` / ``a.py, b.py are``."""
    return f"{', '.join(paths)} {'is' if len(paths) == 1 else 'are'}"


def _reinstall(files: Sequence[FileStatus]) -> str:
    """``reinstall apache-airflow-task-sdk==1.3.2 to restore it``: the owners of *files*, once each."""
    pins = list(dict.fromkeys(f.pin for f in files))
    return f"reinstall {_joined(pins, 'and')} to restore {'it' if len(files) == 1 else 'them'}"


def _refusal(f: FileStatus, status: SeriesStatus) -> str:
    """Why apply will not touch the non-pristine file *f*."""
    if f.state == MODIFIED:
        return f"{f.path} differs from {f.distribution} as released"
    return f"{status.name(f)} is {'missing' if f.state == MISSING else 'already patched'}"


def apply_series(
    *,
    dist: metadata.Distribution | None = None,
    dists: Sequence[metadata.Distribution] | None = None,
    patches_root: os.PathLike | str | None = None,
) -> str:
    """Apply the series to pristine files: dry run in memory first, then write all files or none."""
    status = series_status(dist=dist, dists=dists, patches_root=patches_root)
    label = status.label
    if status.state == APPLIED:
        applied = _plural(len(status._parsed), "patch")
        return f"{label}: patch series already applied ({applied}{status.spread}), nothing changed"

    not_pristine = [f for f in status.files if f.state != PRISTINE]
    if not_pristine:
        reasons = [_refusal(f, status) for f in not_pristine]
        hint = (
            "run 'airflow-ext patch revert' first"
            if status.state == PARTIAL
            else _reinstall([f for f in not_pristine if f.state in (MODIFIED, MISSING)])
        )
        raise PatchError(f"refusing to patch {label}: {'; '.join(reasons)} ({hint}); nothing changed")

    texts = _dry_run(status)
    changes = []
    for f in status.files:
        new = "".join(texts[f.path]).encode("utf-8")
        diffs = [(p.name, d) for p in status._parsed for d in p.diffs if d.path == f.path]
        # Belt and braces: what we write must be recognised as "patched" by check and revert.
        if _reverse_file(new, diffs) != f.current:
            raise PatchError(f"the series for {label} does not reverse cleanly on {f.path}; nothing changed")
        if new != f.current:
            changes.append(_Change(f, new, f.current or b""))
    _commit(changes)
    return (
        f"{label}: applied {_plural(len(status._parsed), 'patch')}{status.spread} "
        f"({', '.join(status.patch_names)})"
    )


def _dry_run(status: SeriesStatus) -> dict[str, list[str]]:
    """Every patch applied in memory to the pristine files: ``{path: lines}``. Writes nothing."""
    files = {f.path: f for f in status.files}
    texts: dict[str, list[str]] = {}
    for f in status.files:
        lines = _decode(f.current or b"")
        if lines is None:
            raise PatchError(f"{f.path} of {f.distribution} is not UTF-8 text; nothing changed")
        texts[f.path] = lines
    for patch in status._parsed:
        for diff in patch.diffs:
            try:
                texts[diff.path] = _apply_diff(texts[diff.path], diff, reverse=False)
            except _Mismatch as mismatch:
                owner = files[diff.path].distribution
                raise PatchError(
                    f"{patch.name} does not apply to {owner}: hunk #{mismatch.hunk} for {diff.path} "
                    f"fails at line {mismatch.line} ({mismatch.reason}; no fuzz); nothing changed"
                ) from None
    return texts


def check_series(
    *,
    dist: metadata.Distribution | None = None,
    dists: Sequence[metadata.Distribution] | None = None,
    patches_root: os.PathLike | str | None = None,
) -> str:
    """Succeed iff the series is applied and every patched file is exactly as the series makes it."""
    status = series_status(dist=dist, dists=dists, patches_root=patches_root)
    label = status.label
    state = status.state
    if state == APPLIED:
        return (
            f"{label}: patch series applied and intact "
            f"({_plural(len(status._parsed), 'patch')}, {_plural(len(status.files), 'file')}{status.spread})"
        )
    if state == NOT_APPLIED:
        raise PatchError(
            f"{label}: patch series not applied (all {_plural(len(status.files), 'target file')}"
            f"{status.spread} are as released); run 'airflow-ext patch apply'"
        )
    if state == PARTIAL:
        raise PatchError(
            f"{label}: patch series modified, only partially applied (patched: "
            f"{', '.join(status.named(PATCHED))}; as released: {', '.join(status.named(PRISTINE))})"
        )
    parts = []
    if status.paths(MODIFIED):
        parts.append(f"{_are(status.named(MODIFIED))} neither as released nor exactly as patched")
    if status.paths(MISSING):
        parts.append(f"{_are(status.named(MISSING))} missing")
    raise PatchError(f"{label}: patched files modified: {'; '.join(parts)}")


def revert_series(
    *,
    dist: metadata.Distribution | None = None,
    dists: Sequence[metadata.Distribution] | None = None,
    patches_root: os.PathLike | str | None = None,
) -> str:
    """Restore every patched file byte for byte (verified against its RECORD), all or nothing."""
    status = series_status(dist=dist, dists=dists, patches_root=patches_root)
    label = status.label
    if status.state == NOT_APPLIED:
        return f"{label}: patch series not applied, nothing to revert"
    bad = [f for f in status.files if f.state in (MODIFIED, MISSING)]
    if bad:
        raise PatchError(
            f"cannot revert on {label}: {_are(status.named(MODIFIED, MISSING))} neither as released nor "
            f"exactly as patched ({_reinstall(bad)}); nothing changed"
        )
    # Files already pristine (a partially applied series) are left alone; every patched file's
    # reverse-applied bytes were verified against its owner's RECORD by series_status().
    changes = [
        _Change(f, f.reverted, f.current or b"")
        for f in status.files
        if f.state == PATCHED and f.reverted is not None
    ]
    _commit(changes)
    restored = [status.name(change.file) for change in changes]
    return (
        f"{label}: reverted {_plural(len(status._parsed), 'patch')}; "
        f"restored {_plural(len(changes), 'file')} as released ({', '.join(restored)})"
    )
