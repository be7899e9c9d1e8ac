"""Which series covers a release: ``series``, ``distributions`` and ``releases`` files, per-release
series sharing their line's patches (airflow_ext/patching/series.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_ext import patching
from airflow_ext.errors import DingbotError, PatchError
from tests.patching.synthetic import (
    ACTIONS,
    ALPHA,
    ALPHA_PATCHED,
    BETA_PATCHED,
    DISTRIBUTIONS,
    PATCH_1,
    VERSION,
    Env,
    MultiEnv,
    info_dir,
    lines,
    record_hash,
    set_old_mtimes,
)


def test_series_for_skips_comments_and_blank_lines(env):
    assert [p.name for p in patching.series_for(VERSION, env.root)] == [
        "0001-alpha-two-hunks.patch",
        "0002-beta-and-alpha-tail.patch",
    ]


def test_unknown_version_is_refused(tmp_path):
    env = Env(tmp_path, version="1.2.3")
    for action in (patching.apply_series, patching.check_series, patching.revert_series):
        with pytest.raises(PatchError) as err:
            action(**env.kw())
        assert "1.2.3" in str(err.value) and VERSION in str(err.value)
    assert isinstance(err.value, DingbotError)
    with pytest.raises(PatchError, match="9.9.9"):
        patching.series_for("0.0.1", env.root)


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
