"""Which patch series covers an apache-airflow release: its directory, its patches, its pins.

The series for an Airflow release lives in a directory ``<patches_root>/<series>/`` with a
``series`` file (one patch name per line; blank lines and ``#`` comments are ignored).

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
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from airflow_ext.errors import PatchError
from airflow_ext.patching.pins import DIST_NAME, VERSION_PATTERN, parse_pin
from airflow_ext.patching.wording import joined

DISTRIBUTIONS_FILE = "distributions"
RELEASES_FILE = "releases"

# A release a series directory covers, with the pins its ``releases`` file gives for it (None: the
# directory has no such file, so it covers only the release it is named after).
Claim = tuple[Path, Optional[list[tuple[str, str]]]]


def default_patches_root() -> Path:
    """``airflow_ext/_patches`` in an installed wheel, else the repository's ``patches/``."""
    package_dir = Path(__file__).resolve().parents[1]  # airflow_ext/, which holds this subpackage
    bundled = package_dir / "_patches"
    if bundled.is_dir():
        return bundled
    return package_dir.parent / "patches"


def resolve_root(patches_root: os.PathLike | str | None) -> Path:
    return Path(patches_root) if patches_root is not None else default_patches_root()


def _version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Sorts ``2.11.10`` after ``2.11.9``: numeric parts as numbers, others as text."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.+!_-]", version)
    )


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
        if not VERSION_PATTERN.fullmatch(release) or "==" in release:
            raise PatchError(f"{where}: invalid apache-airflow release {release!r}; nothing changed")
        if any(release == known for known, _ in releases):
            raise PatchError(f"{where}: {release} is listed twice; nothing changed")
        pins: list[tuple[str, str]] = []
        for pin_text in pin_texts:
            pin = parse_pin(pin_text, where)
            if any(name == pin[0] for name, _ in pins):
                raise PatchError(f"{where}: {pin[0]} is listed twice; nothing changed")
            pins.append(pin)
        releases.append((release, pins or [(DIST_NAME, release)]))
    if not releases:
        raise PatchError(f"{label} names no release; nothing changed")
    return releases


def _claims(root: Path) -> dict[str, list[Claim]]:
    """Every release some series directory under *root* covers, with the directories covering it."""
    claims: dict[str, list[Claim]] = {}
    for directory in _series_dirs(root):
        releases = _read_releases(directory)
        if releases is None:
            claims.setdefault(directory.name, []).append((directory, None))
        for release, pins in releases or ():
            claims.setdefault(release, []).append((directory, pins))
    return claims


def available_versions(patches_root: os.PathLike | str | None = None) -> list[str]:
    """The apache-airflow releases some series under *patches_root* covers, oldest first."""
    return sorted(_claims(resolve_root(patches_root)), key=_version_key)


def series_dir(version: str, root: Path) -> Claim:
    """The one series directory covering apache-airflow *version*, and the pins it gives for it."""
    claims = _claims(root)
    found = claims.get(version, [])
    if not found:
        available = ", ".join(sorted(claims, key=_version_key)) or "none"
        raise PatchError(
            f"no patch series for apache-airflow {version}; this airflow-dingbot supports: {available}"
        )
    if len(found) > 1:
        names = joined([directory.name for directory, _ in found], "and")
        raise PatchError(f"the patch series {names} each claim apache-airflow {version}; nothing changed")
    return found[0]


def series_for(version: str, patches_root: os.PathLike | str | None = None) -> list[Path]:
    """The patch files of the series for Airflow *version*, in application order.

    A name in ``series`` is a file of the series directory, or ``../<series>/<file>``: a patch of
    another series that applies to this release as it is (a per-release series shares the patches
    of its line and has its own only where the line's does not apply).
    """
    root = resolve_root(patches_root)
    version_dir, _ = series_dir(version, root)
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
    version_dir, pins = series_dir(version, resolve_root(patches_root))
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
            pin = parse_pin(line, f"{label}, line {lineno}")
            if any(name == pin[0] for name, _ in pins):
                raise PatchError(f"{label}, line {lineno}: {pin[0]} is listed twice; nothing changed")
            pins.append(pin)
    if not pins:
        raise PatchError(f"{label} names no distribution; nothing changed")
    return pins
