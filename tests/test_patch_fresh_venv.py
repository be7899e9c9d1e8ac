"""The image-build steps in a fresh virtual environment: install the package with the pinned
Airflow, `airflow-ext patch apply` / `check` / `revert`, idempotence, and refusal of a mismatching file."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import AIRFLOW_LINE, REPO_ROOT

pytestmark = pytest.mark.fresh_venv


@dataclass(frozen=True)
class Line:
    """What the image build of one Airflow line installs, patches and can be probed with."""

    version: str
    #: dist-info folders whose RECORDs hold the patched files' hashes.
    dist_infos: tuple[str, ...]
    #: Some of the files the series patches, across every patched distribution.
    targets: tuple[str, ...]
    #: Python that makes a task with the flags and reads the backend option.
    probe: str

    @property
    def lock(self) -> Path:
        return REPO_ROOT / "requirements" / f"lock-airflow-{self.version}-py3.11.txt"


LINES = {
    "2": Line(
        "2.11.2",
        ("apache_airflow-2.11.2.dist-info",),
        ("airflow/configuration.py", "airflow/models/baseoperator.py", "airflow/models/taskinstance.py"),
        "from airflow.models.baseoperator import BaseOperator; from airflow.configuration import conf",
    ),
    "3": Line(
        "3.3.2",
        ("apache_airflow_core-3.3.2.dist-info", "apache_airflow_task_sdk-1.3.2.dist-info"),
        (
            "airflow/configuration.py",
            "airflow/jobs/scheduler_job_runner.py",
            "airflow/sdk/bases/operator.py",
            "airflow/sdk/execution_time/task_runner.py",
            "airflow/sdk/execution_time/supervisor.py",
        ),
        "from airflow.sdk import BaseOperator; from airflow.sdk.configuration import conf",
    ),
}
LINE = LINES[AIRFLOW_LINE or "2"]
LOCK = LINE.lock
TARGETS = LINE.targets


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
    hashes = {}
    for dist_info in LINE.dist_infos:
        record = site_packages(venv) / dist_info / "RECORD"
        hashes.update(
            {row[0]: row[1] for row in csv.reader(io.StringIO(record.read_text())) if len(row) >= 2}
        )
    return hashes


def sha256_field(path: Path) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def write_replacing(path: Path, data: bytes) -> None:
    """Give ``path`` new bytes through a new file renamed over it, never writing through a hardlink."""
    tmp = path.with_name(f".{path.name}.test-tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


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
        f"{LINE.probe};"
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
    # The last target: on 3.x a Task SDK file, so the refusal covers the second distribution.
    hotfixed = site / TARGETS[-1]
    original = hotfixed.read_bytes()
    # Replaced, not written through: uv may hardlink the file to its cache.
    write_replacing(hotfixed, original + b"# local hotfix\n")
    before = {t: (site / t).read_bytes() for t in TARGETS}
    try:
        refused = cli(venv, "patch", "apply")

        assert refused.returncode != 0
        assert TARGETS[-1] in refused.stderr
        assert {t: (site / t).read_bytes() for t in TARGETS} == before, "all or nothing"
    finally:
        write_replacing(hotfixed, original)
