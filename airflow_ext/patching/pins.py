"""Distribution names and exact pins (``name==version``), as the series files give them.

A series is made against the files of exactly one release of each distribution it patches, so a pin
names an exact version; anything like a specifier or a wildcard is refused. Names are compared and
shown PEP 503 normalized, whatever spelling a file or a distribution's metadata uses.
"""

from __future__ import annotations

import re

from airflow_ext.errors import PatchError

DIST_NAME = "apache-airflow"
CORE_DIST_NAME = "apache-airflow-core"  # holds the code (and the version) when apache-airflow is absent

# PEP 508 names; versions are matched exactly, so anything like a specifier or wildcard is refused.
NAME_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
VERSION_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.+!_-]*[A-Za-z0-9])?")


def parse_pin(line: str, where: str) -> tuple[str, str]:
    """``name==version`` -> ``(normalized name, version)``; exact pins only."""
    name, operator, version = line.partition("==")
    name, version = name.strip(), version.strip()
    if not operator or version.startswith("="):
        raise PatchError(f"{where}: expected an exact pin 'name==version', got {line!r}; nothing changed")
    if not NAME_PATTERN.fullmatch(name):
        raise PatchError(f"{where}: invalid distribution name {name!r}; nothing changed")
    if not VERSION_PATTERN.fullmatch(version):
        raise PatchError(
            f"{where}: invalid version {version!r} for {name} (an exact version is needed); nothing changed"
        )
    return normalize(name), version


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name, used both to compare and to display names."""
    return re.sub(r"[-_.]+", "-", name).lower()
