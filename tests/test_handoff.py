"""The note a task process leaves its supervisor: written whole, taken once, private, cleaned up."""

from __future__ import annotations

import os
import stat
import time

import pytest

from airflow_ext import handoff
from airflow_ext.load_failure import LoadFailure

pytestmark = pytest.mark.version_free


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(handoff.tempfile, "gettempdir", lambda: str(tmp_path))
    return tmp_path


NOTE = handoff.Handoff(ding_on_failure=True, ding_on_retry=False, max_tries=2, log_url="http://x/log")


def test_left_note_is_taken_once():
    handoff.leave("0192-ti", 1, NOTE)
    assert handoff.take("0192-ti", 1) == NOTE
    assert handoff.take("0192-ti", 1) is None


def test_each_try_has_its_own_note():
    handoff.leave("ti", 1, NOTE)
    assert handoff.take("ti", 2) is None
    assert handoff.take("ti", 1) == NOTE


def test_cleared_note_is_gone():
    handoff.leave("ti", 1, NOTE)
    handoff.clear("ti", 1)
    handoff.clear("ti", 1)  # clearing twice is fine
    assert handoff.take("ti", 1) is None


def test_directory_is_private_and_holds_no_temp_file():
    handoff.leave("ti", 3, NOTE)
    folder = handoff.directory()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [p.name for p in folder.iterdir()] == ["ti.3.json"]


def test_stale_notes_are_removed_fresh_ones_kept():
    handoff.leave("old", 1, NOTE)
    handoff.leave("new", 1, NOTE)
    old = handoff.directory() / "old.1.json"
    past = time.time() - handoff.STALE_AFTER_S - 60
    os.utime(old, (past, past))
    assert handoff.remove_stale() == 1
    assert handoff.take("new", 1) == NOTE


def test_no_directory_yet_means_nothing_to_take():
    assert handoff.take("ti", 1) is None
    assert handoff.remove_stale() == 0


def test_a_relayed_alert_is_taken_once_and_apart_from_the_note():
    alert = {"kind": "failure", "dag_id": "d", "task_id": "t", "run_id": "r", "try_number": 1, "max_tries": 0}
    handoff.leave("ti", 1, NOTE)
    handoff.leave_alert("ti", 1, {**alert, "exception_message": "boom ✓"})
    handoff.clear("ti", 1)  # finalize clears its note; the alert stays for the supervisor
    assert handoff.take_alert("ti", 2) is None
    assert handoff.take_alert("ti", 1) == {**alert, "exception_message": "boom ✓"}
    assert handoff.take_alert("ti", 1) is None
    assert handoff.take("ti", 1) is None


def test_a_load_failure_is_taken_once_and_apart_from_the_note():
    failure = LoadFailure("ModuleNotFoundError", "No module named 'pandas' ✓", "Traceback ...")
    handoff.leave("ti", 1, NOTE)
    handoff.leave_load_failure("ti", 1, failure)
    assert handoff.take_load_failure("ti", 2) is None
    assert handoff.take_load_failure("ti", 1) == failure
    assert handoff.take_load_failure("ti", 1) is None
    assert handoff.take("ti", 1) == NOTE
