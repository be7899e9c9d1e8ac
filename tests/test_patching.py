"""Tests for airflow_ext.patching against synthetic installed distributions.

No real Airflow is needed (and none is modified): each test builds ``site/fakepkg/*.py`` plus an
``apache_airflow-9.9.9.dist-info`` with real sha256 RECORD entries in tmp_path, and a patch series
for 9.9.9. The Airflow 3.x layout is mimicked by ``MultiEnv``: apache-airflow 9.9.9 as a
meta-package, its code split between fake-core 9.9.9 and fake-sdk 1.2.3, and a ``distributions``
file naming both (or a ``releases`` file naming them for each release the series covers). Two
tests dry-run the repository's real 2.11.2 and 3.3.2 series on copies of the real files, when that
Airflow is installed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import stat
import tempfile
from importlib import metadata
from pathlib import Path

import pytest

from airflow_ext import patching
from airflow_ext.errors import DingbotError, PatchError

REPO_PATCHES = Path(__file__).resolve().parents[1] / "patches"
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


@pytest.fixture
def env(tmp_path) -> Env:
    return Env(tmp_path)


def set_old_mtimes(env: Env) -> None:
    """Push mtimes into the past so that any rewrite is visible in st_mtime_ns."""
    for p in env.site.rglob("*.py"):
        os.utime(p, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))


# --- the happy path --------------------------------------------------------------------------


def test_synthetic_dist_locates_files_relative_to_site(env):
    assert env.dist.version == VERSION
    assert Path(str(env.dist.locate_file("fakepkg/alpha.py"))) == env.path("fakepkg/alpha.py")


def test_series_for_skips_comments_and_blank_lines(env):
    assert [p.name for p in patching.series_for(VERSION, env.root)] == [
        "0001-alpha-two-hunks.patch",
        "0002-beta-and-alpha-tail.patch",
    ]


def test_apply_then_check(env):
    message = patching.apply_series(**env.kw())
    assert VERSION in message
    assert "0001-alpha-two-hunks.patch" in message and "0002-beta-and-alpha-tail.patch" in message
    assert env.read("fakepkg/alpha.py") == ALPHA_PATCHED
    assert env.read("fakepkg/beta.py") == BETA_PATCHED  # still without trailing newline
    assert env.read("fakepkg/other.py") == OTHER

    ok = patching.check_series(**env.kw())
    assert "applied and intact" in ok and VERSION in ok
    assert patching.series_status(**env.kw()).state == patching.APPLIED


def test_second_apply_is_a_noop(env):
    patching.apply_series(**env.kw())
    set_old_mtimes(env)
    before = env.snapshot()
    message = patching.apply_series(**env.kw())
    assert "already applied" in message and VERSION in message
    assert env.snapshot() == before


def test_revert_restores_bytes_exactly(env):
    patching.apply_series(**env.kw())
    message = patching.revert_series(**env.kw())
    assert "reverted" in message and VERSION in message
    for rel, original in env.originals.items():
        data = env.read(rel)
        assert data == original
        assert record_hash(data) == record_hash(original)
    assert patching.series_status(**env.kw()).state == patching.NOT_APPLIED
    # and the cycle repeats
    patching.apply_series(**env.kw())
    patching.revert_series(**env.kw())
    assert {rel: env.read(rel) for rel in env.originals} == env.originals


def test_revert_on_pristine_tree_is_a_noop(env):
    set_old_mtimes(env)
    before = env.snapshot()
    message = patching.revert_series(**env.kw())
    assert "not applied, nothing to revert" in message and VERSION in message
    assert env.snapshot() == before


def test_file_modes_preserved_and_no_temp_files_left(env):
    env.path("fakepkg/alpha.py").chmod(0o640)
    env.path("fakepkg/beta.py").chmod(0o755)
    patching.apply_series(**env.kw())
    assert stat.S_IMODE(env.path("fakepkg/alpha.py").stat().st_mode) == 0o640
    assert stat.S_IMODE(env.path("fakepkg/beta.py").stat().st_mode) == 0o755
    patching.revert_series(**env.kw())
    assert stat.S_IMODE(env.path("fakepkg/alpha.py").stat().st_mode) == 0o640
    assert stat.S_IMODE(env.path("fakepkg/beta.py").stat().st_mode) == 0o755
    assert sorted(p.name for p in env.path("fakepkg").iterdir()) == ["alpha.py", "beta.py", "other.py"]


def test_apply_drops_stale_bytecode_of_patched_modules_only(env):
    cache = env.path("fakepkg/__pycache__")
    cache.mkdir()
    for name in ("alpha.cpython-311.pyc", "alpha.cpython-311.opt-1.pyc", "other.cpython-311.pyc"):
        (cache / name).write_bytes(b"stale")
    patching.apply_series(**env.kw())
    assert sorted(p.name for p in cache.iterdir()) == ["other.cpython-311.pyc"]


# --- refusals ---------------------------------------------------------------------------------


def test_unknown_version_is_refused(tmp_path):
    env = Env(tmp_path, version="1.2.3")
    for action in (patching.apply_series, patching.check_series, patching.revert_series):
        with pytest.raises(PatchError) as err:
            action(**env.kw())
        assert "1.2.3" in str(err.value) and VERSION in str(err.value)
    assert isinstance(err.value, DingbotError)
    with pytest.raises(PatchError, match="9.9.9"):
        patching.series_for("0.0.1", env.root)


def test_hand_edited_target_is_refused_and_nothing_written(env):
    env.path("fakepkg/beta.py").write_bytes(BETA + b"\n# local hack\n")
    set_old_mtimes(env)
    before = env.snapshot()
    with pytest.raises(PatchError) as err:
        patching.apply_series(**env.kw())
    message = str(err.value)
    assert "fakepkg/beta.py" in message
    assert f"differs from apache-airflow {VERSION} as released" in message
    assert "fakepkg/alpha.py" not in message
    assert "local hack" not in message  # never file contents
    assert env.snapshot() == before  # alpha (pristine) was not patched either


@pytest.mark.parametrize(
    "bad_patch, expected",
    [
        # Context made against different content: value_19 is not 190 in the released file.
        (
            PATCH_2.replace(" value_19 = 19\n", " value_19 = 190\n"),
            ("hunk #1", "fakepkg/alpha.py", "line 20"),
        ),
        # Context found nowhere, not even at an offset: value_18 = 180 occurs in no line.
        (
            PATCH_2.replace(" value_18 = 18\n", " value_18 = 180\n"),
            ("hunk #1", "fakepkg/alpha.py", "line 19", "at no other line"),
        ),
        # Missing "\ No newline" marker: "BETA = 1\n" is not what the file ends with.
        (
            PATCH_2.replace("-BETA = 1\n\\ No newline at end of file\n", "-BETA = 1\n"),
            ("hunk #1", "fakepkg/beta.py", "line 4"),
        ),
    ],
    ids=["context-differs", "context-nowhere", "newline-at-eof"],
)
def test_mismatching_hunk_is_refused_and_nothing_written(tmp_path, bad_patch, expected):
    env = Env(
        tmp_path,
        patches={"0001-alpha-two-hunks.patch": PATCH_1, "0002-beta-and-alpha-tail.patch": bad_patch},
    )
    set_old_mtimes(env)
    before = env.snapshot()
    with pytest.raises(PatchError) as err:
        patching.apply_series(**env.kw())
    message = str(err.value)
    assert "0002-beta-and-alpha-tail.patch" in message and VERSION in message
    for fragment in expected:
        assert fragment in message
    assert "nothing changed" in message
    # Patch 0001 applied cleanly in the dry run, but nothing at all was written.
    assert env.snapshot() == before


def test_second_hunk_mismatch_names_hunk_2(tmp_path):
    bad = PATCH_1.replace("-value_16 = 16\n", "-value_16 = 61\n")
    env = Env(
        tmp_path, patches={"0001-alpha-two-hunks.patch": bad, "0002-beta-and-alpha-tail.patch": PATCH_2}
    )
    before = env.snapshot()
    with pytest.raises(
        PatchError, match=r"0001-alpha-two-hunks\.patch.*hunk #2 for fakepkg/alpha\.py.*line 16"
    ):
        patching.apply_series(**env.kw())
    assert env.snapshot() == before


def test_patched_file_not_in_record_is_refused(tmp_path):
    stray = lines("---", "--- a/fakepkg/stray.py", "+++ b/fakepkg/stray.py", "@@ -1 +1 @@", "-a", "+b")
    env = Env(tmp_path, patches={"0001-stray.patch": stray})
    with pytest.raises(PatchError, match=r"fakepkg/stray\.py.*RECORD"):
        patching.apply_series(**env.kw())


# --- check --------------------------------------------------------------------------------------


def test_check_on_pristine_tree_says_not_applied(env):
    with pytest.raises(PatchError, match="not applied") as err:
        patching.check_series(**env.kw())
    assert VERSION in str(err.value)


def test_check_on_tampered_patched_file_says_modified(env):
    patching.apply_series(**env.kw())
    with env.path("fakepkg/alpha.py").open("ab") as fh:
        fh.write(b"# tampered\n")
    with pytest.raises(PatchError, match="modified") as err:
        patching.check_series(**env.kw())
    assert "fakepkg/alpha.py" in str(err.value)
    assert "fakepkg/beta.py" not in str(err.value)

    # Neither apply nor revert touches anything in that state.
    set_old_mtimes(env)
    before = env.snapshot()
    with pytest.raises(PatchError, match="fakepkg/alpha.py"):
        patching.revert_series(**env.kw())
    with pytest.raises(PatchError, match="fakepkg/alpha.py"):
        patching.apply_series(**env.kw())
    assert env.snapshot() == before
    assert env.read("fakepkg/beta.py") == BETA_PATCHED


def test_partially_applied_series(env):
    patching.apply_series(**env.kw())
    env.path("fakepkg/beta.py").write_bytes(BETA)  # as released again, alpha still patched
    with pytest.raises(PatchError, match="partially applied"):
        patching.check_series(**env.kw())
    with pytest.raises(PatchError, match="revert"):
        patching.apply_series(**env.kw())
    # revert restores the patched files and leaves the pristine one alone
    patching.revert_series(**env.kw())
    assert {rel: env.read(rel) for rel in env.originals} == env.originals


def test_missing_target_file(env):
    env.path("fakepkg/beta.py").unlink()
    with pytest.raises(PatchError, match=r"fakepkg/beta\.py.*missing"):
        patching.check_series(**env.kw())
    with pytest.raises(PatchError, match=r"fakepkg/beta\.py is missing"):
        patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == ALPHA


# --- line endings -------------------------------------------------------------------------------


def _one_file_env(tmp_path: Path, original: bytes, patch_text: str) -> Env:
    env = Env(tmp_path, patches={"0001-one.patch": patch_text})
    env.path("fakepkg/alpha.py").write_bytes(original)
    env.originals["fakepkg/alpha.py"] = original
    info = env.site / f"apache_airflow-{VERSION}.dist-info" / "RECORD"
    info.write_text(info.read_text().replace(record_hash(ALPHA), record_hash(original)))
    return env


def test_patch_adding_the_missing_final_newline(tmp_path):
    patch_text = lines(
        "---",
        "--- a/fakepkg/alpha.py",
        "+++ b/fakepkg/alpha.py",
        "@@ -1,2 +1,3 @@",
        " first",
        "-last",
        "\\ No newline at end of file",
        "+last",
        "+appended",
    )
    env = _one_file_env(tmp_path, b"first\nlast", patch_text)
    patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == b"first\nlast\nappended\n"
    patching.check_series(**env.kw())
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == b"first\nlast"


def test_crlf_line_endings_preserved(tmp_path):
    patch_text = (
        "Description: CRLF file\n"
        "---\n"
        "--- a/fakepkg/alpha.py\n"
        "+++ b/fakepkg/alpha.py\n"
        "@@ -1,2 +1,3 @@\n"
        " one\r\n"
        "+inserted\r\n"
        " two\r\n"
    )
    original = b"one\r\ntwo\r\nthree\r\n"
    env = _one_file_env(tmp_path, original, patch_text)
    patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == b"one\r\ninserted\r\ntwo\r\nthree\r\n"
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == original


def test_lf_patch_does_not_apply_to_crlf_file(tmp_path):
    patch_text = lines(
        "---",
        "--- a/fakepkg/alpha.py",
        "+++ b/fakepkg/alpha.py",
        "@@ -1,2 +1,3 @@",
        " one",
        "+inserted",
        " two",
    )
    env = _one_file_env(tmp_path, b"one\r\ntwo\r\n", patch_text)
    with pytest.raises(PatchError, match="hunk #1 for fakepkg/alpha.py fails at line 1"):
        patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == b"one\r\ntwo\r\n"


# --- several distributions (the Airflow 3.x layout) -------------------------------------------

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


@pytest.fixture
def multi(tmp_path) -> MultiEnv:
    return MultiEnv(tmp_path)


PATCHED_MULTI = {
    "fakepkg/alpha.py": ALPHA_PATCHED,
    "fakepkg/other.py": OTHER,
    "fakepkg/sdk/beta.py": BETA_PATCHED,
}
ACTIONS = [patching.apply_series, patching.check_series, patching.revert_series]
STRAY = lines("---", "--- a/fakepkg/stray.py", "+++ b/fakepkg/stray.py", "@@ -1 +1 @@", "-a", "+b")


def no_temp_files(env: Env) -> bool:
    return not list(env.site.rglob("*.airflow-ext"))


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, [("apache-airflow", VERSION)]),  # no file: the 2.x case
        (DISTRIBUTIONS, [("fake-core", "9.9.9"), ("fake-sdk", "1.2.3")]),
        ("apache-airflow-core==3.3.2\napache-airflow-task-sdk==1.3.2", None),  # no final newline
        ("  Apache.Airflow_Core==3.3.2rc1+local.1\n", [("apache-airflow-core", "3.3.2rc1+local.1")]),
    ],
    ids=["no-file", "comments-and-normalized-names", "no-final-newline", "odd-spelling"],
)
def test_distributions_for(tmp_path, text, expected):
    (tmp_path / VERSION).mkdir()
    (tmp_path / VERSION / "series").write_text("0001-x.patch\n")
    if text is not None:
        (tmp_path / VERSION / "distributions").write_text(text)
    if expected is None:
        expected = [("apache-airflow-core", "3.3.2"), ("apache-airflow-task-sdk", "1.3.2")]
    assert patching.distributions_for(VERSION, tmp_path) == expected


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("fake-core>=9.9.9\n", ("line 1", "expected an exact pin 'name==version'", "'fake-core>=9.9.9'")),
        ("fake-core===9.9.9\n", ("line 1", "expected an exact pin")),
        ("# header\nfake-core\n", ("line 2", "expected an exact pin", "'fake-core'")),
        ("fake core==9.9.9\n", ("line 1", "invalid distribution name 'fake core'")),
        ("fake-core==\n", ("line 1", "invalid version '' for fake-core")),
        ("fake-core==9.9.*\n", ("line 1", "invalid version '9.9.*'", "an exact version is needed")),
        ("fake-core==9.9.9 fake-sdk==1.2.3\n", ("line 1", "invalid version '9.9.9 fake-sdk==1.2.3'")),
        ("fake-core==9.9.9\n\nFake_Core==9.9.9\n", ("line 3", "fake-core is listed twice")),
        ("# nothing yet\n\n", ("names no distribution",)),
        (b"fake-core==9.9.9\xff\n", ("cannot read",)),
    ],
    ids=[
        "range",
        "arbitrary-equality",
        "no-version",
        "bad-name",
        "empty-version",
        "wildcard",
        "two-on-a-line",
        "duplicate",
        "empty",
        "not-utf8",
    ],
)
def test_malformed_distributions_file_is_refused_and_nothing_written(tmp_path, text, fragments):
    env = MultiEnv(tmp_path)
    distributions = env.root / VERSION / "distributions"
    distributions.write_bytes(text if isinstance(text, bytes) else text.encode())
    set_old_mtimes(env)
    before = env.snapshot()
    for action in ACTIONS:
        with pytest.raises(PatchError) as err:
            action(**env.kw())
        message = str(err.value)
        assert f"the distributions file for apache-airflow {VERSION}" in message
        assert message.endswith("nothing changed")
        for fragment in fragments:
            assert fragment in message
    assert env.snapshot() == before


def test_apply_check_revert_across_two_distributions(multi):
    status = patching.series_status(**multi.kw())
    assert status.label == f"apache-airflow {VERSION}"
    assert status.distributions == ["fake-core 9.9.9", "fake-sdk 1.2.3"]
    owners = {f.path: (f.distribution, f.patches) for f in status.files}
    assert owners == {
        "fakepkg/alpha.py": (
            "fake-core 9.9.9",
            ["0001-alpha-two-hunks.patch", "0002-beta-and-alpha-tail.patch"],
        ),
        "fakepkg/sdk/beta.py": ("fake-sdk 1.2.3", ["0002-beta-and-alpha-tail.patch"]),
    }  # one patch, files of both distributions

    message = patching.apply_series(**multi.kw())
    assert message == (
        "apache-airflow 9.9.9: applied 2 patches in fake-core 9.9.9 and fake-sdk 1.2.3 "
        "(0001-alpha-two-hunks.patch, 0002-beta-and-alpha-tail.patch)"
    )
    assert {rel: multi.read(rel) for rel in PATCHED_MULTI} == PATCHED_MULTI
    assert patching.check_series(**multi.kw()) == (
        "apache-airflow 9.9.9: patch series applied and intact "
        "(2 patches, 2 files in fake-core 9.9.9 and fake-sdk 1.2.3)"
    )

    set_old_mtimes(multi)
    before = multi.snapshot()
    assert "already applied" in patching.apply_series(**multi.kw())
    assert multi.snapshot() == before

    message = patching.revert_series(**multi.kw())
    assert message == (
        "apache-airflow 9.9.9: reverted 2 patches; restored 2 files as released "
        "(fakepkg/alpha.py of fake-core 9.9.9, fakepkg/sdk/beta.py of fake-sdk 1.2.3)"
    )
    for rel, original in multi.originals.items():
        assert multi.read(rel) == original  # byte for byte, hence the RECORD hash too
    assert patching.series_status(**multi.kw()).state == patching.NOT_APPLIED
    assert no_temp_files(multi)


def test_revert_after_repeated_cycles_is_byte_for_byte(multi):
    for _ in range(3):
        patching.apply_series(**multi.kw())
        patching.revert_series(**multi.kw())
    assert {rel: multi.read(rel) for rel in multi.originals} == multi.originals
    with pytest.raises(PatchError, match="not applied"):
        patching.check_series(**multi.kw())


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (
            lambda path: path.write_bytes(BETA + b"\n# local hack\n"),
            "differs from fake-sdk 1.2.3 as released",
        ),
        (lambda path: path.unlink(), "of fake-sdk 1.2.3 is missing"),
    ],
    ids=["modified", "missing"],
)
def test_damaged_file_in_second_dist_refuses_apply_and_writes_nothing_in_first(multi, damage, fragment):
    damage(multi.path("fakepkg/sdk/beta.py"))
    set_old_mtimes(multi)
    before = multi.snapshot()
    with pytest.raises(PatchError) as err:
        patching.apply_series(**multi.kw())
    message = str(err.value)
    assert message.startswith(f"refusing to patch apache-airflow {VERSION}: fakepkg/sdk/beta.py ")
    assert fragment in message
    assert "(reinstall fake-sdk==1.2.3 to restore it); nothing changed" in message
    assert "fakepkg/alpha.py" not in message and "fake-core==" not in message
    assert "local hack" not in message  # never file contents
    # Bytes and mtimes of both distributions' files: fake-core's pristine alpha was not patched.
    assert multi.snapshot() == before
    assert multi.read("fakepkg/alpha.py") == ALPHA


def test_check_and_revert_name_the_distribution_of_a_tampered_file(multi):
    patching.apply_series(**multi.kw())
    with multi.path("fakepkg/sdk/beta.py").open("ab") as fh:
        fh.write(b"\n# tampered\n")
    with pytest.raises(PatchError) as err:
        patching.check_series(**multi.kw())
    assert str(err.value) == (
        "apache-airflow 9.9.9: patched files modified: fakepkg/sdk/beta.py of fake-sdk 1.2.3 "
        "is neither as released nor exactly as patched"
    )
    set_old_mtimes(multi)
    before = multi.snapshot()
    with pytest.raises(PatchError) as err:
        patching.revert_series(**multi.kw())
    assert "fakepkg/sdk/beta.py of fake-sdk 1.2.3" in str(err.value)
    assert "(reinstall fake-sdk==1.2.3 to restore it); nothing changed" in str(err.value)
    assert multi.snapshot() == before  # fake-core's patched alpha stays patched
    assert multi.read("fakepkg/alpha.py") == ALPHA_PATCHED


def test_partially_applied_across_distributions(multi):
    patching.apply_series(**multi.kw())
    multi.path("fakepkg/sdk/beta.py").write_bytes(BETA)  # fake-sdk as released, fake-core patched
    with pytest.raises(PatchError) as err:
        patching.check_series(**multi.kw())
    assert (
        "(patched: fakepkg/alpha.py of fake-core 9.9.9; as released: fakepkg/sdk/beta.py of fake-sdk"
        in str(err.value)
    )
    with pytest.raises(PatchError, match="run 'airflow-ext patch revert' first"):
        patching.apply_series(**multi.kw())
    patching.revert_series(**multi.kw())
    assert {rel: multi.read(rel) for rel in multi.originals} == multi.originals


def _fail_for_sdk_files(real):
    """A stand-in for os.replace / tempfile.mkstemp that fails on files under fakepkg/sdk/."""

    def fake(*args, **kwargs):
        where = args[1] if len(args) > 1 else kwargs.get("dir", "")  # os.replace's dst, mkstemp's dir
        if "sdk" in Path(where).parts:
            raise PermissionError(13, "Permission denied")
        fake.succeeded.append(Path(where).name)
        return real(*args, **kwargs)

    fake.succeeded = []
    return fake


@pytest.mark.parametrize("action", ["apply", "revert"])
def test_failing_rename_in_second_dist_restores_the_first(multi, monkeypatch, action):
    if action == "revert":
        patching.apply_series(**multi.kw())
    expected = {rel: multi.read(rel) for rel in multi.originals}
    replace = _fail_for_sdk_files(os.replace)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PatchError) as err:
        getattr(patching, f"{action}_series")(**multi.kw())
    assert str(err.value) == (
        "cannot replace fakepkg/sdk/beta.py of fake-sdk 1.2.3: Permission denied; nothing changed"
    )
    assert replace.succeeded == ["alpha.py", "alpha.py"]  # replaced, then put back
    # fake-core's alpha had been replaced already; it was put back.
    assert {rel: multi.read(rel) for rel in multi.originals} == expected
    assert no_temp_files(multi)
    monkeypatch.undo()
    state = patching.APPLIED if action == "revert" else patching.NOT_APPLIED
    assert patching.series_status(**multi.kw()).state == state


def test_failing_temp_file_in_second_dist_writes_nothing(multi, monkeypatch):
    set_old_mtimes(multi)
    before = multi.snapshot()
    monkeypatch.setattr(tempfile, "mkstemp", _fail_for_sdk_files(tempfile.mkstemp))
    with pytest.raises(PatchError) as err:
        patching.apply_series(**multi.kw())
    assert str(err.value) == (
        "cannot write fakepkg/sdk/beta.py of fake-sdk 1.2.3: Permission denied; nothing changed"
    )
    assert multi.snapshot() == before  # fake-core's temp file was removed, alpha never replaced


NEEDS = "the patch series for apache-airflow 9.9.9 needs "


@pytest.mark.parametrize(
    "sdk_version, left_out, patches, expected",
    [
        (SDK_VERSION, "sdk", None, NEEDS + "fake-sdk==1.2.3, but it is not installed; nothing changed"),
        (SDK_VERSION, "core", None, NEEDS + "fake-core==9.9.9, but it is not installed; nothing changed"),
        ("1.2.4", None, None, NEEDS + "fake-sdk==1.2.3, but 1.2.4 is installed; nothing changed"),
        # The pins are checked before anything else: this series' patch is not even read.
        (
            "1.2.4",
            None,
            {"0001-stray.patch": STRAY},
            NEEDS + "fake-sdk==1.2.3, but 1.2.4 is installed; nothing changed",
        ),
    ],
    ids=["sdk-missing", "core-missing", "sdk-wrong-version", "checked-first"],
)
def test_distribution_not_installed_as_the_series_needs(tmp_path, sdk_version, left_out, patches, expected):
    env = MultiEnv(tmp_path, sdk_version=sdk_version, patches=patches)
    if left_out:
        env.dists.remove(getattr(env, left_out))
    set_old_mtimes(env)
    before = env.snapshot()
    for action in ACTIONS:
        with pytest.raises(PatchError) as err:
            action(**env.kw())
        assert str(err.value) == expected
    assert env.snapshot() == before


def _list_alpha_in_sdk_record(text: str) -> str:
    return text + f"fakepkg/alpha.py,{record_hash(ALPHA)},{len(ALPHA)}\n"


@pytest.mark.parametrize(
    "patches, edit, expected",
    [
        (
            {"0001-stray.patch": STRAY},
            None,
            "0001-stray.patch patches fakepkg/stray.py, which is not in the RECORD of fake-core 9.9.9 "
            "or fake-sdk 1.2.3; nothing changed",
        ),
        (
            None,
            _list_alpha_in_sdk_record,
            "0001-alpha-two-hunks.patch patches fakepkg/alpha.py, which the RECORDs of fake-core 9.9.9 "
            "and fake-sdk 1.2.3 each list, so it is unclear which release to verify it against; "
            "nothing changed",
        ),
        (
            None,
            lambda text: text.replace(f"fakepkg/sdk/beta.py,{record_hash(BETA)},", "fakepkg/sdk/beta.py,,"),
            "0002-beta-and-alpha-tail.patch patches fakepkg/sdk/beta.py, which has no hash in the RECORD "
            "of fake-sdk 1.2.3; nothing changed",
        ),
    ],
    ids=["owned-by-none", "owned-by-two", "no-hash"],
)
def test_file_owned_by_no_single_distribution_is_refused(tmp_path, patches, edit, expected):
    env = MultiEnv(tmp_path, patches=patches)
    if edit is not None:
        env.edit_record("fake-sdk", SDK_VERSION, edit)
    before = env.snapshot()
    for action in ACTIONS:
        with pytest.raises(PatchError) as err:
            action(**env.kw())
        assert str(err.value) == expected
    assert env.snapshot() == before


@pytest.mark.parametrize(
    "installed, label",
    [
        (["meta", "core", "sdk"], "apache-airflow 9.9.9"),
        (["core", "sdk"], "apache-airflow-core 9.9.9"),  # no meta-package: the core's version chooses
    ],
)
def test_series_chosen_by_apache_airflow_else_apache_airflow_core(tmp_path, installed, label):
    env = MultiEnv(
        tmp_path,
        core_name="apache-airflow-core",
        distributions="apache-airflow-core==9.9.9\nfake-sdk==1.2.3\n",
    )
    dists = [getattr(env, name) for name in installed]
    message = patching.apply_series(dists=dists, patches_root=env.root)
    assert message.startswith(f"{label}: applied 2 patches in apache-airflow-core 9.9.9 and fake-sdk 1.2.3 ")
    assert patching.check_series(dists=dists, patches_root=env.root).startswith(f"{label}: ")


def test_neither_apache_airflow_nor_core_installed(multi):
    with pytest.raises(PatchError) as err:
        patching.series_status(dists=[multi.sdk], patches_root=multi.root)
    assert (
        str(err.value)
        == "neither apache-airflow nor apache-airflow-core is installed in this Python environment"
    )


def test_without_distributions_file_the_series_patches_apache_airflow(tmp_path):
    # apache-airflow is the meta-package here, so it owns none of the files the series patches.
    env = MultiEnv(tmp_path, distributions=None)
    with pytest.raises(
        PatchError, match=r"fakepkg/alpha\.py, which is not in the RECORD of apache-airflow 9\.9\.9"
    ):
        patching.apply_series(**env.kw())


def test_distributions_file_naming_apache_airflow_alone_changes_nothing(tmp_path):
    plain, pinned = Env(tmp_path / "plain"), Env(tmp_path / "pinned")
    (pinned.root / VERSION / "distributions").write_text("apache-airflow==9.9.9\n")
    for action in ACTIONS:
        assert action(**plain.kw()) == action(**pinned.kw())
    with pytest.raises(PatchError) as plain_err:
        patching.check_series(**plain.kw())
    with pytest.raises(PatchError) as pinned_err:
        patching.check_series(**pinned.kw())
    assert str(plain_err.value) == str(pinned_err.value)


# --- offsets: one series for several patch releases --------------------------------------------

# What a neighbouring patch release changes in lines the patches do not touch: two lines more
# before alpha's first hunk, one less between its two hunks.
ALPHA_SHIFTED = b"# two lines the series never saw\nimport os\n" + ALPHA.replace(b"value_10 = 10\n", b"")


def test_hunks_found_at_an_offset_apply_check_and_revert_byte_for_byte(tmp_path):
    env = _one_file_env(tmp_path, ALPHA_SHIFTED, PATCH_1)
    set_old_mtimes(env)
    untouched = env.read("fakepkg/beta.py")

    message = patching.apply_series(**env.kw())

    assert message.startswith(f"apache-airflow {VERSION}: applied 1 patch ")
    expected = b"# two lines the series never saw\nimport os\n" + ALPHA_PATCHED.replace(
        b"value_10 = 10\n", b""
    ).replace(b'TAIL = "added by 0002"\n', b"")
    assert env.read("fakepkg/alpha.py") == expected
    assert "applied and intact" in patching.check_series(**env.kw())
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == ALPHA_SHIFTED
    assert env.read("fakepkg/beta.py") == untouched


def _two_blocks(first: str, second: str) -> bytes:
    """A file with a repeated block: ``start``/``<first>``/``end``, blank, ``start``/``<second>``/``end``."""
    return lines("start", first, "end", "", "start", second, "end").encode()


def _retarget_patch(at: int) -> str:
    """Changes ``middle`` to ``changed`` in a start/middle/end block; its header says line *at*."""
    return lines(
        "---",
        "--- a/fakepkg/alpha.py",
        "+++ b/fakepkg/alpha.py",
        f"@@ -{at},3 +{at},3 @@",
        " start",
        "-middle",
        "+changed",
        " end",
    )


def test_hunk_at_its_stated_line_wins_over_the_same_content_elsewhere(tmp_path):
    env = _one_file_env(tmp_path, _two_blocks("middle", "middle"), _retarget_patch(5))
    patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == _two_blocks("middle", "changed")
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == _two_blocks("middle", "middle")


def test_hunk_whose_content_occurs_twice_elsewhere_is_refused_and_nothing_written(tmp_path):
    # Two lines in front: neither block is where the header (line 1) says.
    original = b"\n\n" + _two_blocks("middle", "middle")
    env = _one_file_env(tmp_path, original, _retarget_patch(1))
    set_old_mtimes(env)
    before = env.snapshot()
    with pytest.raises(PatchError) as err:
        patching.apply_series(**env.kw())
    message = str(err.value)
    assert "hunk #1 for fakepkg/alpha.py fails at line 1" in message
    assert "lines 3 and 7" in message and message.endswith("nothing changed")
    assert env.snapshot() == before


def test_hunk_found_once_away_from_its_line_is_applied_there(tmp_path):
    # The same two lines in front, but only the second block still says "middle".
    env = _one_file_env(tmp_path, b"\n\n" + _two_blocks("other", "middle"), _retarget_patch(1))
    patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == b"\n\n" + _two_blocks("other", "changed")


def test_next_hunk_is_looked_for_first_at_the_offset_of_the_one_before(tmp_path):
    # Hunk 2's block occurs at its stated line 9 and, two lines further, at 11: the file has two
    # extra lines in front, so hunk 1 is found at offset +2, and hunk 2 belongs at 11, not at 9.
    original = lines(
        "x", "y", "head", "a", "tail", "", "", "", "", "", "start", "middle", "end", "start", "middle", "end"
    ).encode()
    patch_text = lines(
        "---",
        "--- a/fakepkg/alpha.py",
        "+++ b/fakepkg/alpha.py",
        "@@ -1,3 +1,3 @@",
        " head",
        "-a",
        "+b",
        " tail",
        "@@ -9,3 +9,3 @@",
        " start",
        "-middle",
        "+changed",
        " end",
    )
    env = _one_file_env(tmp_path, original, patch_text)
    patching.apply_series(**env.kw())
    expected = original.replace(b"\na\n", b"\nb\n").replace(b"middle\nend\nstart", b"changed\nend\nstart", 1)
    assert env.read("fakepkg/alpha.py") == expected
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == original


def test_hunk_is_not_looked_for_before_the_previous_one(tmp_path):
    # Hunk 2's content occurs only above hunk 1: applying it there would reorder the patch.
    original = lines("start", "middle", "end", "head", "a", "tail", "x", "y", "z").encode()
    patch_text = lines(
        "---",
        "--- a/fakepkg/alpha.py",
        "+++ b/fakepkg/alpha.py",
        "@@ -4,3 +4,3 @@",
        " head",
        "-a",
        "+b",
        " tail",
        "@@ -7,3 +7,3 @@",
        " start",
        "-middle",
        "+changed",
        " end",
    )
    env = _one_file_env(tmp_path, original, patch_text)
    with pytest.raises(PatchError, match=r"hunk #2 for fakepkg/alpha\.py.*at no other line"):
        patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == original


# --- releases: which series covers the installed release ---------------------------------------


def _add_series(root: Path, name: str, series: str, files: dict[str, str] | None = None) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, text in (files or {}).items():
        (directory / file_name).write_text(text)
    (directory / "series").write_text(series)
    return directory


def test_series_covers_every_release_its_releases_file_lists(tmp_path):
    env = Env(tmp_path, version="9.9.7")
    (env.root / VERSION / "releases").write_text(lines("# the 9.9 line", "9.9.7", "9.9.9"))

    assert patching.available_versions(env.root) == ["9.9.7", "9.9.9"]
    assert patching.distributions_for("9.9.7", env.root) == [("apache-airflow", "9.9.7")]
    message = patching.apply_series(**env.kw())
    assert message.startswith("apache-airflow 9.9.7: applied 2 patches ")
    assert env.read("fakepkg/alpha.py") == ALPHA_PATCHED
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == ALPHA


def test_release_no_series_covers_is_refused_in_one_line_naming_the_supported_ones(tmp_path):
    env = Env(tmp_path, version="9.9.8")
    (env.root / VERSION / "releases").write_text(lines("9.9.10", "9.9.9", "9.9.7"))
    for action in ACTIONS:
        with pytest.raises(PatchError) as err:
            action(**env.kw())
        assert str(err.value) == (
            "no patch series for apache-airflow 9.9.8; this airflow-dingbot supports: 9.9.7, 9.9.9, 9.9.10"
        )


def test_per_release_series_shares_the_lines_patches_and_replaces_one(tmp_path):
    env = Env(tmp_path, version="9.9.7")
    (env.root / VERSION / "releases").write_text("9.9.8\n9.9.9\n")
    # 9.9.7's value_16 was 17: the line's 0001 does not apply, its own does; 0002 is shared.
    env.path("fakepkg/alpha.py").write_bytes(ALPHA.replace(b"value_16 = 16", b"value_16 = 17"))
    record = info_dir(env.site, "apache-airflow", "9.9.7") / "RECORD"
    record.write_text(
        record.read_text().replace(record_hash(ALPHA), record_hash(env.read("fakepkg/alpha.py")))
    )
    own = PATCH_1.replace("-value_16 = 16", "-value_16 = 17")
    _add_series(
        env.root,
        "9.9.7",
        lines("0001-alpha-two-hunks.patch", "../9.9.9/0002-beta-and-alpha-tail.patch"),
        {"0001-alpha-two-hunks.patch": own},
    )

    message = patching.apply_series(**env.kw())
    assert message.startswith("apache-airflow 9.9.7: applied 2 patches (0001-alpha-two-hunks.patch, ")
    assert "../9.9.9/0002-beta-and-alpha-tail.patch" in message
    assert env.read("fakepkg/alpha.py") == ALPHA_PATCHED
    assert env.read("fakepkg/beta.py") == BETA_PATCHED
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == ALPHA.replace(b"value_16 = 16", b"value_16 = 17")


@pytest.mark.parametrize(
    "name",
    ["../../9.9.9/0001-alpha-two-hunks.patch", "../9.9.9/sub/0001.patch", "../..", "9.9.9/../x.patch"],
)
def test_series_names_leave_the_patches_root_in_no_other_way(tmp_path, name):
    env = Env(tmp_path)
    _add_series(env.root, "9.9.7", lines(name))
    with pytest.raises(PatchError, match=f"invalid patch name '{re.escape(name)}'"):
        patching.series_for("9.9.7", env.root)


def test_release_claimed_by_two_series_is_refused(tmp_path):
    env = Env(tmp_path)
    _add_series(env.root, "9.9.x", lines("../9.9.9/0001-alpha-two-hunks.patch"))
    (env.root / "9.9.x" / "releases").write_text("9.9.9\n")
    with pytest.raises(
        PatchError, match=r"the patch series 9\.9\.9 and 9\.9\.x each claim apache-airflow 9\.9\.9"
    ):
        patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == ALPHA


def test_releases_file_names_each_releases_distributions(tmp_path):
    env = MultiEnv(tmp_path, distributions=None)
    (env.root / VERSION / "releases").write_text(
        lines("9.9.8 fake-core==9.9.8 fake-sdk==1.2.2", "9.9.9 Fake_Core==9.9.9 fake-sdk==1.2.3  # comment")
    )
    assert patching.distributions_for("9.9.8", env.root) == [("fake-core", "9.9.8"), ("fake-sdk", "1.2.2")]
    message = patching.apply_series(**env.kw())
    assert message.startswith(
        "apache-airflow 9.9.9: applied 2 patches in fake-core 9.9.9 and fake-sdk 1.2.3 "
    )
    assert env.read("fakepkg/sdk/beta.py") == BETA_PATCHED


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("9.9.9 fake-core>=9.9.9\n", "line 1: expected an exact pin"),
        ("9.9.*\n", "line 1: invalid apache-airflow release '9.9.*'"),
        ("9.9.9\n9.9.9\n", "line 2: 9.9.9 is listed twice"),
        ("9.9.9 fake-core==9.9.9 fake-core==9.9.8\n", "line 1: fake-core is listed twice"),
        ("# none yet\n", "names no release"),
    ],
    ids=["range", "wildcard", "release-twice", "pin-twice", "empty"],
)
def test_malformed_releases_file_is_refused_and_nothing_written(tmp_path, text, fragment):
    env = MultiEnv(tmp_path, distributions=None)
    (env.root / VERSION / "releases").write_text(text)
    before = env.snapshot()
    for action in ACTIONS:
        with pytest.raises(PatchError) as err:
            action(**env.kw())
        assert (
            f"the releases file of the patch series {VERSION}, " in str(err.value)
            or fragment == "names no release"
        )
        assert fragment in str(err.value) and str(err.value).endswith("nothing changed")
    assert env.snapshot() == before


def test_releases_and_distributions_files_together_are_refused(multi):
    (multi.root / VERSION / "releases").write_text("9.9.9 fake-core==9.9.9 fake-sdk==1.2.3\n")
    with pytest.raises(PatchError, match="has both a releases and a distributions file"):
        patching.apply_series(**multi.kw())


# --- the real series ----------------------------------------------------------------------------


def test_default_patches_root_is_the_repository_series():
    if (Path(patching.__file__).parents[1] / "_patches").is_dir():
        pytest.skip("running from an installed wheel with bundled patches")
    names = [p.name for p in patching.series_for("2.11.2")]
    listed = [
        line.strip()
        for line in (REPO_PATCHES / "2.11.2" / "series").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert names == listed and names and all((REPO_PATCHES / "2.11.2" / name).is_file() for name in names)


@pytest.mark.airflow2
def test_real_series_applies_to_copies_of_real_airflow_files(tmp_path):
    try:
        real = metadata.distribution("apache-airflow")
    except metadata.PackageNotFoundError:
        pytest.skip("apache-airflow is not installed in this interpreter")
    if real.version != "2.11.2":
        pytest.skip(f"installed apache-airflow is {real.version}, not 2.11.2")
    status = patching.series_status(dist=real, patches_root=REPO_PATCHES)  # reads only
    if status.state not in (patching.NOT_APPLIED, patching.APPLIED):
        pytest.fail(f"installed apache-airflow 2.11.2 is neither pristine nor patched ({status.state})")
    installed_state = status.state

    site = tmp_path / "site"
    originals = {}
    for f in status.files:
        copy = site / f.path
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f.location, copy)
        originals[f.path] = copy.read_bytes()
    info = site / "apache_airflow-2.11.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(real.read_text("METADATA"))
    (info / "RECORD").write_text(real.read_text("RECORD"))
    fake = metadata.PathDistribution(info)
    kw = {"dist": fake, "patches_root": REPO_PATCHES}
    if installed_state == patching.APPLIED:  # the test environment is patched: start from released files
        patching.revert_series(**kw)
        originals = {rel: (site / rel).read_bytes() for rel in originals}
        for original in originals.values():
            assert _sha256_record(original) in real.read_text("RECORD")

    message = patching.apply_series(**kw)
    assert "2.11.2" in message and "0003-taskinstance-ding-alert.patch" in message
    patching.check_series(**kw)
    for rel, original in originals.items():
        patched = (site / rel).read_bytes()
        assert patched != original
        compile(patched, rel, "exec")  # still valid Python
    assert b"ding_on_failure" in (site / "airflow/models/baseoperator.py").read_bytes()
    assert b"send_ding_alert" in (site / "airflow/models/taskinstance.py").read_bytes()

    patching.revert_series(**kw)
    assert {rel: (site / rel).read_bytes() for rel in originals} == originals
    # the real installation was only read
    assert patching.series_status(dist=real, patches_root=REPO_PATCHES).state == installed_state


def _sha256_record(data: bytes) -> str:
    """The sha256 field of a RECORD line for ``data``."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


REAL_3X_VERSION = "3.3.2"


def _installed_airflow() -> metadata.Distribution | None:
    """What chooses the series: apache-airflow, else apache-airflow-core (Airflow 3 without the meta)."""
    for name in ("apache-airflow", "apache-airflow-core"):
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _normalized(dist: metadata.Distribution) -> str:
    return dist.metadata["Name"].lower().replace("_", "-").replace(".", "-")


def _copy_dist_info(site: Path, dist: metadata.Distribution) -> metadata.PathDistribution:
    """*dist*'s METADATA and RECORD under *site*: its RECORD then vouches for the copies there."""
    info = info_dir(site, _normalized(dist), dist.version)
    info.mkdir(parents=True)
    for name in ("METADATA", "RECORD"):
        (info / name).write_text(dist.read_text(name))
    return metadata.PathDistribution(info)


@pytest.mark.airflow3
def test_real_3x_series_applies_to_copies_of_real_airflow_files(tmp_path):
    version = REAL_3X_VERSION
    if not (REPO_PATCHES / version / "series").is_file():
        pytest.skip(f"patches/{version}/series does not exist (yet)")
    real = _installed_airflow()
    if real is None:
        pytest.skip("neither apache-airflow nor apache-airflow-core is installed in this interpreter")
    if real.version != version:
        pytest.skip(f"installed Airflow is {real.version}, not {version}")
    status = patching.series_status(patches_root=REPO_PATCHES)  # reads only, from this environment
    if status.state not in (patching.NOT_APPLIED, patching.APPLIED):
        pytest.fail(f"installed Airflow {version} is neither pristine nor patched ({status.state})")
    installed_state = status.state
    pins = patching.distributions_for(version, REPO_PATCHES)
    assert {f.dist_name for f in status.files} == {name for name, _ in pins}, "every listed dist is patched"

    # A tmp site-packages with every patched file and the dist-info of each distribution involved.
    site = tmp_path / "site"
    copies: dict[str, metadata.PathDistribution] = {}
    for dist in [real, *(metadata.distribution(name) for name, _ in pins)]:
        if _normalized(dist) not in copies:
            copies[_normalized(dist)] = _copy_dist_info(site, dist)
    for f in status.files:
        (site / f.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f.location, site / f.path)
    kw = {"dist": copies[_normalized(real)], "dists": list(copies.values()), "patches_root": REPO_PATCHES}
    copied = patching.series_status(**kw)
    assert copied.state == installed_state and copied.distributions == status.distributions
    if installed_state == patching.APPLIED:  # the test environment is patched: start from released files
        patching.revert_series(**kw)
    originals = {f.path: (site / f.path).read_bytes() for f in copied.files}
    for f in copied.files:
        assert _sha256_record(originals[f.path]) in copies[f.dist_name].read_text("RECORD"), f.path

    message = patching.apply_series(**kw)
    assert version in message and all(p.name in message for p in status.patches)
    patching.check_series(**kw)
    for rel, original in originals.items():
        patched = (site / rel).read_bytes()
        assert patched != original, rel
        if rel.endswith(".py"):
            compile(patched, rel, "exec")  # still valid Python

    patching.revert_series(**kw)
    assert {rel: (site / rel).read_bytes() for rel in originals} == originals
    # the real installation was only read
    assert patching.series_status(patches_root=REPO_PATCHES).state == installed_state


def _series_names(directory: Path) -> list[str]:
    text = (directory / "series").read_text()
    return [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_per_release_series_keep_the_names_and_order_of_the_series_they_share():
    """A per-release series lists its line's patches, its own in place of the one that does not
    apply; a patch added to the line's series must be added (or made) for the release too."""
    shared_from = {}
    for directory in sorted(p.parent for p in REPO_PATCHES.glob("*/series")):
        names = _series_names(directory)
        lines_series = {name.split("/")[1] for name in names if name.startswith("../")}
        if not lines_series:
            continue
        assert len(lines_series) == 1, f"{directory.name} shares patches of several series"
        (line,) = lines_series
        shared_from[directory.name] = line
        assert [name.rsplit("/", 1)[-1] for name in names] == _series_names(REPO_PATCHES / line)
    assert shared_from.get("2.11.0") == "2.11.2"


def test_every_supported_release_has_a_lock_installing_exactly_the_patched_distributions():
    for release in patching.available_versions(REPO_PATCHES):
        lock = REPO_PATCHES.parent / "requirements" / f"lock-airflow-{release}-py3.11.txt"
        pinned = {line.split(" ")[0] for line in lock.read_text().splitlines() if "==" in line}
        wanted = {f"{name}=={version}" for name, version in patching.distributions_for(release, REPO_PATCHES)}
        assert {f"apache-airflow=={release}", *wanted} <= pinned, lock.name


def test_readme_names_the_supported_releases_as_the_refusal_does():
    with pytest.raises(PatchError) as err:
        patching.series_for("3.2.0", REPO_PATCHES)
    readme = " ".join((REPO_PATCHES.parent / "README.md").read_text().split())
    assert " ".join(str(err.value).split()) in readme
    for release in patching.available_versions(REPO_PATCHES):
        assert release in str(err.value)
