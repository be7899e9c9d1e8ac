"""Apply, check and revert the Airflow core patch series: quilt-like, in pure Python.

The series for an installed Airflow release is a directory of patches (DEP-3 header, then
``diff -u`` output applied with ``-p1`` to site-packages) and the distributions they patch; every
file they touch is verified against the RECORD of the distribution that owns it. Stricter than
``patch(1)`` on purpose: no fuzz, a file is patched only if it is exactly as released and restored
only to exactly that, and every file of every distribution is written, or none.

One job per module, each using only those listed after it:

* :mod:`.commands`: ``apply``, ``check`` and ``revert``, and what they say;
* :mod:`.status`: each file pristine, patched, modified or missing; the series' state;
* :mod:`.hunk_engine`: a file's hunks applied or reversed in memory, exact context, offsets;
* :mod:`.distributions`: the installed distributions a series pins, and their RECORDs;
* :mod:`.file_writing`: all files replaced or none (temp file + rename), stale bytecode dropped;
* :mod:`.diff_parsing`: a patch file into file diffs and hunks, line endings kept;
* :mod:`.series`: which series directory covers a release, its patches and its pins;
* :mod:`.pins` and :mod:`.wording`: ``name==version`` pins; how messages list things.

Nothing here imports airflow: the installation may be half-patched or broken.
"""

from __future__ import annotations

from airflow_ext.errors import PatchError
from airflow_ext.patching.commands import apply_series, check_series, revert_series
from airflow_ext.patching.series import (
    available_versions,
    default_patches_root,
    distributions_for,
    series_for,
)
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

__all__ = [
    "APPLIED",
    "MISSING",
    "MODIFIED",
    "NOT_APPLIED",
    "PARTIAL",
    "PATCHED",
    "PRISTINE",
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
