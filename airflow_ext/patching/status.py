"""Where the installed files stand against the series: every file it touches classified. Writes nothing.

The truth about a file is the sha256 in the ``RECORD`` of the distribution that owns it. A file is
*pristine* if it hashes to RECORD, *patched* if reverse-applying the series to it succeeds and
yields the RECORD hash, otherwise *modified* (or *missing*). The series as a whole is applied,
not applied, partially applied, or modified.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from airflow_ext.errors import PatchError
from airflow_ext.patching.diff_parsing import FileDiff, Patch, parse_patch
from airflow_ext.patching.distributions import (
    Target,
    digest,
    name_of,
    owner,
    resolve_primary,
    resolve_targets,
)
from airflow_ext.patching.hunk_engine import reverse_file
from airflow_ext.patching.pins import DIST_NAME
from airflow_ext.patching.series import distributions_for, resolve_root, series_dir, series_for
from airflow_ext.patching.wording import joined

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
    parsed: list[Patch] = field(default_factory=list, repr=False)
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
        return [p.name for p in self.parsed]

    @property
    def spread(self) -> str:
        """`` in <dist> <version> and <dist> <version>`` if the series patches others than the primary."""
        if self._primary_only:
            return ""
        return f" in {joined(self.distributions, 'and')}"


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
    primary = resolve_primary(dist, dists)
    version = primary.version
    label = f"{name_of(primary) or DIST_NAME} {version}"
    root = resolve_root(patches_root)
    patch_paths = series_for(version, root)
    targets = resolve_targets(distributions_for(version, root), primary, label, dists)
    version_dir, _ = series_dir(version, root)
    # Named as the series lists them: "0001-x.patch", or "../2.11.2/0001-x.patch" for a shared one.
    parsed = [parse_patch(path, Path(os.path.relpath(path, version_dir)).as_posix()) for path in patch_paths]

    per_file: dict[str, list[tuple[str, FileDiff]]] = {}
    for patch in parsed:
        for diff in patch.diffs:
            per_file.setdefault(diff.path, []).append((patch.name, diff))
    files = [_file_status(rel, diffs, *owner(rel, diffs[0][0], targets)) for rel, diffs in per_file.items()]
    return SeriesStatus(version, patch_paths, files, parsed, label, [t.label for t in targets])


def _file_status(
    rel: str, diffs: Sequence[tuple[str, FileDiff]], found: Target, algorithm: str, expected: str
) -> FileStatus:
    location = Path(str(found.dist.locate_file(rel)))
    patches = [name for name, _ in diffs]
    status = FileStatus(rel, location, MISSING, patches, dist_name=found.name, dist_version=found.version)
    try:
        current = location.read_bytes()
    except FileNotFoundError:
        return status
    except OSError as err:
        raise PatchError(f"cannot read {rel} of {found.label}: {err.strerror or err}") from None
    status.current = current
    reverted = reverse_file(current, diffs)
    if reverted is not None and digest(reverted, algorithm) == expected:
        status.state, status.reverted = PATCHED, reverted
    elif digest(current, algorithm) == expected:
        status.state = PRISTINE
    else:
        status.state = MODIFIED
    return status
