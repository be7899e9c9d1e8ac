"""The installed distributions a series patches, and the RECORDs that say what they released.

* The series is chosen by the version of the installed ``apache-airflow`` distribution (the
  *primary* one), or of ``apache-airflow-core`` when ``apache-airflow`` is not installed.
* Before anything is read, every distribution the series pins must be installed at exactly that
  version: the series was made against those files and no others.
* Each patched file belongs to the one pinned distribution whose ``RECORD`` lists it; a file
  listed by none or by several is an error. The sha256 that RECORD gives it is the truth about the
  file as released.
"""

from __future__ import annotations

import base64
import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Optional

from airflow_ext.errors import PatchError
from airflow_ext.patching.pins import CORE_DIST_NAME, DIST_NAME, normalize
from airflow_ext.patching.wording import joined

# A RECORD row's hash as (algorithm, urlsafe-b64 digest without padding); None if it has none.
RecordHash = Optional[tuple[str, str]]


def name_of(dist: metadata.Distribution) -> str:
    return normalize(dist.metadata["Name"] or "")


def _find(name: str, dists: Sequence[metadata.Distribution] | None) -> metadata.Distribution | None:
    """The distribution called *name*: among *dists* if given, else in this Python environment."""
    if dists is not None:
        return next((dist for dist in dists if name_of(dist) == normalize(name)), None)
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def resolve_primary(
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
        raise PatchError(f"the installed {name_of(dist) or DIST_NAME} has no version in its metadata")
    return dist


@dataclass(frozen=True)
class Target:
    """A distribution the series patches, installed at the version the series needs."""

    name: str  # normalized
    version: str
    dist: metadata.Distribution = field(repr=False)
    record: dict[str, RecordHash] = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def resolve_targets(
    pins: Sequence[tuple[str, str]],
    primary: metadata.Distribution,
    label: str,
    dists: Sequence[metadata.Distribution] | None,
) -> list[Target]:
    """Check every pin against what is installed first, then read the RECORDs."""
    found = []
    for name, version in pins:
        dist = primary if name == name_of(primary) else _find(name, dists)
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
        Target(name, version, dist, _read_record(dist, f"{name} {version}")) for name, version, dist in found
    ]


def _read_record(dist: metadata.Distribution, label: str) -> dict[str, RecordHash]:
    """RECORD as ``{path: (algorithm, digest) or None}``; None marks an entry without a hash."""
    text = dist.read_text("RECORD")
    if text is None:
        raise PatchError(
            f"{label} has no RECORD, so its files cannot be verified as released; nothing changed"
        )
    record: dict[str, RecordHash] = {}
    for row in csv.reader(text.splitlines()):
        if not row:
            continue
        if len(row) < 2 or "=" not in row[1]:
            record.setdefault(row[0], None)
            continue
        algorithm, digest = row[1].split("=", 1)
        record[row[0]] = (algorithm, digest)
    return record


def owner(rel: str, patch_name: str, targets: Sequence[Target]) -> tuple[Target, str, str]:
    """The one target whose RECORD lists *rel*, with the hash it records for it."""
    owners = [target for target in targets if rel in target.record]
    if not owners:
        raise PatchError(
            f"{patch_name} patches {rel}, which is not in the RECORD of "
            f"{joined([t.label for t in targets], 'or')}; nothing changed"
        )
    if len(owners) > 1:
        raise PatchError(
            f"{patch_name} patches {rel}, which the RECORDs of {joined([t.label for t in owners], 'and')} "
            "each list, so it is unclear which release to verify it against; nothing changed"
        )
    found = owners[0]
    recorded = found.record[rel]
    if recorded is None:
        raise PatchError(
            f"{patch_name} patches {rel}, which has no hash in the RECORD of {found.label}; nothing changed"
        )
    algorithm, expected = recorded
    try:
        hashlib.new(algorithm)
    except ValueError:
        raise PatchError(f"unsupported hash {algorithm!r} for {rel} in the RECORD of {found.label}") from None
    return found, algorithm, expected


def digest(data: bytes, algorithm: str) -> str:
    """*data*'s hash as RECORD writes it: urlsafe base64 without padding."""
    return base64.urlsafe_b64encode(hashlib.new(algorithm, data).digest()).rstrip(b"=").decode("ascii")
