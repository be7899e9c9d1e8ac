"""Synthetic installed distributions and patch series for the tests of airflow_ext.patching.

No real Airflow is needed (and none is modified): each test builds ``site/fakepkg/*.py`` plus an
``apache_airflow-9.9.9.dist-info`` with real sha256 RECORD entries in tmp_path, and a patch series
for 9.9.9. The Airflow 3.x layout is mimicked by ``MultiEnv``: apache-airflow 9.9.9 as a
meta-package, its code split between fake-core 9.9.9 and fake-sdk 1.2.3, and a ``distributions``
file naming both (or a ``releases`` file naming them for each release the series covers).
"""

from __future__ import annotations

import base64
import hashlib
import os
from importlib import metadata
from pathlib import Path

from airflow_ext import patching

VERSION = "9.9.9"

ALPHA = "".join(f"value_{i} = {i}\n" for i in range(1, 21)).encode()
BETA = b"def beta():\n    return 1\n\nBETA = 1"  # no newline at end of file
OTHER = b"untouched = True\n"

ALPHA_PATCHED = (
    b"value_1 = 1\nvalue_2 = 2\nvalue_3 = 3\ninserted_a = True\n"
    + "".join(f"value_{i} = {i}\n" for i in range(4, 16)).encode()
    + b"value_16 = 160\n"
    + "".join(f"value_{i} = {i}\n" for i in range(17, 21)).encode()
    + b'TAIL = "added by 0002"\n'
)
BETA_PATCHED = b"def beta():\n    # patched\n    return 2\n\nBETA = 2"


def lines(*items: str) -> str:
    return "".join(item + "\n" for item in items)


# Two hunks in one file; the second one's target line is shifted by the first.
PATCH_1 = lines(
    "Description: Insert a flag into alpha and change value_16",
    " The description may span lines; it is metadata, not diff.",
    "Author: airflow-dingbot tests",
    "Forwarded: not-needed",
    "Last-Update: 2026-01-01",
    "---",
    "--- a/fakepkg/alpha.py",
    "+++ b/fakepkg/alpha.py",
    "@@ -2,4 +2,5 @@",
    " value_2 = 2",
    " value_3 = 3",
    "+inserted_a = True",
    " value_4 = 4",
    " value_5 = 5",
    "@@ -15,3 +16,3 @@",
    " value_15 = 15",
    "-value_16 = 16",
    "+value_16 = 160",
    " value_17 = 17",
)

# A second file without trailing newline, and alpha again at line numbers shifted by patch 1.
PATCH_2 = lines(
    "Description: Patch beta (no newline at end of file) and append to alpha",
    "Author: airflow-dingbot tests",
    "Forwarded: not-needed",
    "---",
    "--- a/fakepkg/beta.py",
    "+++ b/fakepkg/beta.py",
    "@@ -1,4 +1,5 @@",
    " def beta():",
    "-    return 1",
    "+    # patched",
    "+    return 2",
    " ",
    "-BETA = 1",
    "\\ No newline at end of file",
    "+BETA = 2",
    "\\ No newline at end of file",
    "--- a/fakepkg/alpha.py",
    "+++ b/fakepkg/alpha.py",
    "@@ -19,3 +19,4 @@",
    " value_18 = 18",
    " value_19 = 19",
    " value_20 = 20",
    '+TAIL = "added by 0002"',
)

SERIES = lines(
    "# test series",
    "",
    "0001-alpha-two-hunks.patch",
    "0002-beta-and-alpha-tail.patch",
)


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def info_dir(site: Path, name: str, version: str) -> Path:
    return site / f"{name.replace('-', '_')}-{version}.dist-info"


def install(
    site: Path, name: str, version: str, files: dict[str, bytes], unhashed: tuple[str, ...] = ()
) -> metadata.PathDistribution:
    """Put *files* and a ``<name>-<version>.dist-info`` with METADATA and a sha256 RECORD under *site*;
    *unhashed* paths are listed in RECORD without a hash (as pip lists bytecode)."""
    record = [f"{rel},," for rel in unhashed]
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        record.append(f"{rel},{record_hash(data)},{len(data)}")
    info = info_dir(site, name, version)
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    record.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")
    return metadata.PathDistribution(info)


def write_series(root: Path, patches: dict[str, str], series: str) -> None:
    """``root/<VERSION>/``: the patch files and their ``series``."""
    series_dir = root / VERSION
    series_dir.mkdir(parents=True)
    for name, text in patches.items():
        (series_dir / name).write_text(text)
    (series_dir / "series").write_text(series)


class Env:
    """A synthetic site-packages with apache-airflow <version> installed, and a patch series."""

    def __init__(self, tmp_path: Path, version: str = VERSION, patches: dict[str, str] | None = None):
        self.site = tmp_path / "site"
        self.root = tmp_path / "patches"
        self.originals = {"fakepkg/alpha.py": ALPHA, "fakepkg/beta.py": BETA, "fakepkg/other.py": OTHER}
        pyc = ("fakepkg/__pycache__/alpha.cpython-311.pyc",)
        self.dist = install(self.site, "apache-airflow", version, self.originals, unhashed=pyc)
        patches = patches or {
            "0001-alpha-two-hunks.patch": PATCH_1,
            "0002-beta-and-alpha-tail.patch": PATCH_2,
        }
        write_series(self.root, patches, SERIES if set(patches) == _DEFAULT_NAMES else lines(*patches))

    def path(self, rel: str) -> Path:
        return self.site / rel

    def read(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def snapshot(self) -> dict[str, tuple[bytes, int, int]]:
        """Bytes, mtime_ns and mode of every file under site (including any stray temp file)."""
        return {
            str(p.relative_to(self.site)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode)
            for p in sorted(self.site.rglob("*"))
            if p.is_file()
        }

    def kw(self) -> dict:
        return {"dist": self.dist, "patches_root": self.root}


_DEFAULT_NAMES = {"0001-alpha-two-hunks.patch", "0002-beta-and-alpha-tail.patch"}


def set_old_mtimes(env: Env) -> None:
    """Push mtimes into the past so that any rewrite is visible in st_mtime_ns."""
    for p in env.site.rglob("*.py"):
        os.utime(p, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))


def one_file_env(tmp_path: Path, original: bytes, patch_text: str) -> Env:
    env = Env(tmp_path, patches={"0001-one.patch": patch_text})
    env.path("fakepkg/alpha.py").write_bytes(original)
    env.originals["fakepkg/alpha.py"] = original
    info = env.site / f"apache_airflow-{VERSION}.dist-info" / "RECORD"
    info.write_text(info.read_text().replace(record_hash(ALPHA), record_hash(original)))
    return env


SDK_VERSION = "1.2.3"
CORE_FILES = {"fakepkg/alpha.py": ALPHA, "fakepkg/other.py": OTHER}
SDK_FILES = {"fakepkg/sdk/beta.py": BETA}  # like airflow/sdk/: the same package, another distribution
# Patch 0002 now touches a file of each distribution: fake-sdk's beta and fake-core's alpha.
PATCH_2_SPLIT = PATCH_2.replace("fakepkg/beta.py", "fakepkg/sdk/beta.py")
DISTRIBUTIONS = lines(
    "# what the 9.9.9 series patches",
    "",
    "fake-core==9.9.9",
    "Fake_SDK == 1.2.3  # names are normalized, comments ignored",
)


class MultiEnv(Env):
    """apache-airflow 9.9.9 as a meta-package; its code in fake-core 9.9.9 and fake-sdk 1.2.3.

    Builds its own site (Env.__init__ is not called) and reuses Env's path/read/snapshot helpers.
    """

    def __init__(
        self,
        tmp_path: Path,
        *,
        core_name: str = "fake-core",
        sdk_version: str = SDK_VERSION,
        distributions: str | None = DISTRIBUTIONS,
        patches: dict[str, str] | None = None,
    ):
        self.site = tmp_path / "site"
        self.root = tmp_path / "patches"
        self.originals = {**CORE_FILES, **SDK_FILES}
        self.meta = install(self.site, "apache-airflow", VERSION, {})
        self.core = install(self.site, core_name, VERSION, CORE_FILES)
        self.sdk = install(self.site, "fake-sdk", sdk_version, SDK_FILES)
        self.dists = [self.meta, self.core, self.sdk]

        patches = patches or {
            "0001-alpha-two-hunks.patch": PATCH_1,
            "0002-beta-and-alpha-tail.patch": PATCH_2_SPLIT,
        }
        write_series(self.root, patches, lines(*patches))
        if distributions is not None:
            (self.root / VERSION / "distributions").write_text(distributions)

    def kw(self) -> dict:
        return {"dist": self.meta, "dists": self.dists, "patches_root": self.root}

    def edit_record(self, name: str, version: str, edit) -> None:
        record = info_dir(self.site, name, version) / "RECORD"
        record.write_text(edit(record.read_text()))


ACTIONS = [patching.apply_series, patching.check_series, patching.revert_series]
STRAY = lines("---", "--- a/fakepkg/stray.py", "+++ b/fakepkg/stray.py", "@@ -1 +1 @@", "-a", "+b")


def no_temp_files(env: Env) -> bool:
    return not list(env.site.rglob("*.airflow-ext"))
