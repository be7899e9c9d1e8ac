"""Which installed distributions a series patches: each pinned one installed at exactly its version,
each patched file owned by exactly one RECORD (airflow_ext/patching/distributions.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_ext import patching
from airflow_ext.errors import PatchError
from tests.patching.synthetic import (
    ACTIONS,
    ALPHA,
    BETA,
    SDK_VERSION,
    STRAY,
    VERSION,
    Env,
    MultiEnv,
    lines,
    record_hash,
    set_old_mtimes,
)


def test_synthetic_dist_locates_files_relative_to_site(env):
    assert env.dist.version == VERSION
    assert Path(str(env.dist.locate_file("fakepkg/alpha.py"))) == env.path("fakepkg/alpha.py")


def test_patched_file_not_in_record_is_refused(tmp_path):
    stray = lines("---", "--- a/fakepkg/stray.py", "+++ b/fakepkg/stray.py", "@@ -1 +1 @@", "-a", "+b")
    env = Env(tmp_path, patches={"0001-stray.patch": stray})
    with pytest.raises(PatchError, match=r"fakepkg/stray\.py.*RECORD"):
        patching.apply_series(**env.kw())


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
