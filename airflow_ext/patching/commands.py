"""``airflow-ext patch apply|check|revert``: what each does to the series' files, and what it says.

``apply`` patches only pristine files, ``revert`` only yields RECORD-identical files; both compute
every result in memory first and write all files of all distributions or none. ``check`` writes
nothing. Each returns its one-line report, or raises :class:`PatchError` saying why it refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import metadata

from airflow_ext.errors import PatchError
from airflow_ext.patching.file_writing import Change, commit
from airflow_ext.patching.hunk_engine import Mismatch, apply_diff, decode, reverse_file
from airflow_ext.patching.status import (
    APPLIED,
    MISSING,
    MODIFIED,
    NOT_APPLIED,
    PARTIAL,
    PATCHED,
    PRISTINE,
    FileStatus,
    SeriesStatus,
    series_status,
)
from airflow_ext.patching.wording import are, joined, plural


def _change(f: FileStatus, new: bytes) -> Change:
    return Change(f.location, f"{f.path} of {f.distribution}", new, f.current or b"")


def _reinstall(files: Sequence[FileStatus]) -> str:
    """``reinstall apache-airflow-task-sdk==1.3.2 to restore it``: the owners of *files*, once each."""
    pins = list(dict.fromkeys(f.pin for f in files))
    return f"reinstall {joined(pins, 'and')} to restore {'it' if len(files) == 1 else 'them'}"


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
        applied = plural(len(status.parsed), "patch")
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
        diffs = [(p.name, d) for p in status.parsed for d in p.diffs if d.path == f.path]
        # Belt and braces: what we write must be recognised as "patched" by check and revert.
        if reverse_file(new, diffs) != f.current:
            raise PatchError(f"the series for {label} does not reverse cleanly on {f.path}; nothing changed")
        if new != f.current:
            changes.append(_change(f, new))
    commit(changes)
    return (
        f"{label}: applied {plural(len(status.parsed), 'patch')}{status.spread} "
        f"({', '.join(status.patch_names)})"
    )


def _dry_run(status: SeriesStatus) -> dict[str, list[str]]:
    """Every patch applied in memory to the pristine files: ``{path: lines}``. Writes nothing."""
    files = {f.path: f for f in status.files}
    texts: dict[str, list[str]] = {}
    for f in status.files:
        lines = decode(f.current or b"")
        if lines is None:
            raise PatchError(f"{f.path} of {f.distribution} is not UTF-8 text; nothing changed")
        texts[f.path] = lines
    for patch in status.parsed:
        for diff in patch.diffs:
            try:
                texts[diff.path] = apply_diff(texts[diff.path], diff, reverse=False)
            except Mismatch as mismatch:
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
            f"({plural(len(status.parsed), 'patch')}, {plural(len(status.files), 'file')}{status.spread})"
        )
    if state == NOT_APPLIED:
        raise PatchError(
            f"{label}: patch series not applied (all {plural(len(status.files), 'target file')}"
            f"{status.spread} are as released); run 'airflow-ext patch apply'"
        )
    if state == PARTIAL:
        raise PatchError(
            f"{label}: patch series modified, only partially applied (patched: "
            f"{', '.join(status.named(PATCHED))}; as released: {', '.join(status.named(PRISTINE))})"
        )
    parts = []
    if status.paths(MODIFIED):
        parts.append(f"{are(status.named(MODIFIED))} neither as released nor exactly as patched")
    if status.paths(MISSING):
        parts.append(f"{are(status.named(MISSING))} missing")
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
            f"cannot revert on {label}: {are(status.named(MODIFIED, MISSING))} neither as released nor "
            f"exactly as patched ({_reinstall(bad)}); nothing changed"
        )
    # Files already pristine (a partially applied series) are left alone; every patched file's
    # reverse-applied bytes were verified against its owner's RECORD by series_status().
    restored = [f for f in status.files if f.state == PATCHED and f.reverted is not None]
    commit([_change(f, f.reverted) for f in restored])
    names = [status.name(f) for f in restored]
    return (
        f"{label}: reverted {plural(len(status.parsed), 'patch')}; "
        f"restored {plural(len(restored), 'file')} as released ({', '.join(names)})"
    )
