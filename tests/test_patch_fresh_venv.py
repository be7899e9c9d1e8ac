"""The image-build steps in a fresh virtual environment: install the package with the pinned
Airflow, `airflow-ext patch apply` / `check` / `revert`, idempotence, and refusal of a mismatching file."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.fresh_venv, pytest.mark.airflow2]

LOCK = REPO_ROOT / "requirements" / "lock-airflow-2.11.2-py3.11.txt"
TARGETS = ("airflow/configuration.py", "airflow/models/baseoperator.py", "airflow/models/taskinstance.py")


def sh(*cmd, check=True, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A new environment built like the Dockerfile does: pinned Airflow, then this package."""
    root = tmp_path_factory.mktemp("fresh") / "venv"
    uv = [sys.executable, "-m", "uv"]
    sh(*uv, "venv", "--quiet", "--python", sys.executable, root)
    python = root / "bin" / "python"
    sh(*uv, "pip", "install", "--quiet", "--python", python, "-r", LOCK)
    sh(*uv, "pip", "install", "--quiet", "--python", python, "--no-deps", REPO_ROOT)
    return root


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3.*/site-packages"))


def record_hashes(venv: Path) -> dict[str, str]:
    record = next(site_packages(venv).glob("apache_airflow-2.11.2.dist-info")) / "RECORD"
    return {row[0]: row[1] for row in csv.reader(io.StringIO(record.read_text())) if len(row) >= 2}


def sha256_field(path: Path) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def cli(venv: Path, *args, check=False):
    return sh(venv / "bin" / "airflow-ext", *args, check=check)


def test_apply_check_idempotence_revert(venv, tmp_path):
    site, record = site_packages(venv), record_hashes(venv)
    assert all(sha256_field(site / t) == record[t] for t in TARGETS), "fresh install is pristine"
    assert cli(venv, "patch", "check").returncode == 1

    applied = cli(venv, "patch", "apply")
    assert applied.returncode == 0, applied.stderr
    assert all(sha256_field(site / t) != record[t] for t in TARGETS)
    assert cli(venv, "patch", "check").returncode == 0

    again = cli(venv, "patch", "apply")
    assert again.returncode == 0 and "already applied" in again.stdout

    # The patched Airflow works: the flags exist and the sections are known.
    probe = sh(
        venv / "bin" / "python",
        "-c",
        "from airflow.models.baseoperator import BaseOperator;"
        "from airflow.configuration import conf;"
        "t = BaseOperator(task_id='t', ding_on_failure=True);"
        "print(t.ding_on_failure, t.ding_on_retry, conf.get('dingbot', 'ding_bot_backend'))",
        check=False,
    )
    assert probe.stdout.strip().splitlines()[-1] == "True False airflow_ext.dingbot.dingbot_msg_sender", (
        probe.stderr
    )

    reverted = cli(venv, "patch", "revert")
    assert reverted.returncode == 0, reverted.stderr
    assert all(sha256_field(site / t) == record[t] for t in TARGETS), "byte-for-byte the released files"
    assert cli(venv, "patch", "check").returncode == 1
    assert "nothing to revert" in cli(venv, "patch", "revert").stdout


def test_mismatching_file_is_refused_and_nothing_is_written(venv):
    site = site_packages(venv)
    assert cli(venv, "patch", "check").returncode == 1, "starts from released files"
    taskinstance = site / "airflow/models/taskinstance.py"
    original = taskinstance.read_bytes()
    taskinstance.write_bytes(original + b"# local hotfix\n")
    before = {t: (site / t).read_bytes() for t in TARGETS}
    try:
        refused = cli(venv, "patch", "apply")

        assert refused.returncode != 0
        assert "airflow/models/taskinstance.py" in refused.stderr
        assert {t: (site / t).read_bytes() for t in TARGETS} == before, "all or nothing"
    finally:
        taskinstance.write_bytes(original)
