"""apply, check and revert end to end on synthetic installations: what each writes and says, and
what each refuses with nothing written (airflow_ext/patching/commands.py)."""

from __future__ import annotations

import pytest

from airflow_ext import patching
from airflow_ext.errors import PatchError
from tests.patching.synthetic import (
    ALPHA,
    ALPHA_PATCHED,
    BETA,
    BETA_PATCHED,
    OTHER,
    VERSION,
    no_temp_files,
    record_hash,
    set_old_mtimes,
)


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


PATCHED_MULTI = {
    "fakepkg/alpha.py": ALPHA_PATCHED,
    "fakepkg/other.py": OTHER,
    "fakepkg/sdk/beta.py": BETA_PATCHED,
}


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
