"""Tests for airflow_ext.patching against a synthetic installed apache-airflow distribution.

No real Airflow is needed (and none is modified): each test builds ``site/fakepkg/*.py`` plus an
``apache_airflow-9.9.9.dist-info`` with real sha256 RECORD entries in tmp_path, and a patch series
for 9.9.9. One test dry-runs the repository's real 2.11.2 series on copies of the real files.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
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


class Env:
    """A synthetic site-packages with apache-airflow <version> installed, and a patch series."""

    def __init__(self, tmp_path: Path, version: str = VERSION, patches: dict[str, str] | None = None):
        self.site = tmp_path / "site"
        self.root = tmp_path / "patches"
        self.originals = {"fakepkg/alpha.py": ALPHA, "fakepkg/beta.py": BETA, "fakepkg/other.py": OTHER}
        record = []
        for rel, data in self.originals.items():
            path = self.site / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            record.append(f"{rel},{record_hash(data)},{len(data)}")
        info = self.site / f"apache_airflow-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: apache-airflow\nVersion: {version}\n")
        record.append("fakepkg/__pycache__/alpha.cpython-311.pyc,,")
        record.append(f"{info.name}/RECORD,,")
        (info / "RECORD").write_text("\n".join(record) + "\n")
        self.dist = metadata.PathDistribution(info)

        series_dir = self.root / VERSION
        series_dir.mkdir(parents=True)
        patches = patches or {
            "0001-alpha-two-hunks.patch": PATCH_1,
            "0002-beta-and-alpha-tail.patch": PATCH_2,
        }
        for name, text in patches.items():
            (series_dir / name).write_text(text)
        (series_dir / "series").write_text(SERIES if set(patches) == _DEFAULT_NAMES else lines(*patches))

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
        # Right content, wrong line (no offset search): alpha's hunk claims line 18 instead of 19.
        (
            PATCH_2.replace("@@ -19,3 +19,4 @@", "@@ -18,3 +18,4 @@"),
            ("hunk #1", "fakepkg/alpha.py", "line 18"),
        ),
        # Missing "\ No newline" marker: "BETA = 1\n" is not what the file ends with.
        (
            PATCH_2.replace("-BETA = 1\n\\ No newline at end of file\n", "-BETA = 1\n"),
            ("hunk #1", "fakepkg/beta.py", "line 4"),
        ),
    ],
    ids=["context-differs", "wrong-line", "newline-at-eof"],
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


# --- the real series ----------------------------------------------------------------------------


def test_default_patches_root_is_the_repository_series():
    if (Path(patching.__file__).parent / "_patches").is_dir():
        pytest.skip("running from an installed wheel with bundled patches")
    names = [p.name for p in patching.series_for("2.11.2")]
    listed = [
        line.strip()
        for line in (REPO_PATCHES / "2.11.2" / "series").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert names == listed and len(names) == 4


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
