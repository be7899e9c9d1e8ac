"""Writing the results: modes kept, no temp file left, stale bytecode dropped, and a failing write or
rename in one distribution leaving every file of every distribution as it was
(airflow_ext/patching/file_writing.py)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from airflow_ext import patching
from airflow_ext.errors import PatchError
from tests.patching.synthetic import no_temp_files, set_old_mtimes


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
