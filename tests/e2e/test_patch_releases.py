"""The smoke of each supported patch release other than the line's default: what a team on, say,
3.3.1 does. Its Airflow from its lock (requirements/lock-airflow-<release>-py3.11.txt) in a fresh
environment, this package, `airflow-ext patch apply`, then a `dags test` of one failing task with
one retry whose alerts reach the local robot (the retry and the final failure), and `airflow-ext
patch revert`, after which every patched file is byte for byte as its distribution's RECORD says.
The code a patch of the release's own patches (2.11.0's 0005) is called by a probe: `dags test` does
not reach it.

One environment per release, built by uv from its cache (seconds once the packages are cached),
one `db migrate` and one `dags test` each: the whole module costs about a minute per line."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_ext import patching
from tests.conftest import (
    AIRFLOW_VERSION,
    E2E_DAGS,
    REPO_ROOT,
    assert_no_secret,
    counting_robot,
    marked,
    robot_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.fresh_venv]

PATCHES = REPO_ROOT / "patches"
#: The releases of this environment's line (its major.minor) that are not the one installed here.
OTHER_RELEASES = [
    release
    for release in patching.available_versions(PATCHES)
    if AIRFLOW_VERSION
    and release != AIRFLOW_VERSION
    and release.split(".")[:2] == AIRFLOW_VERSION.split(".")[:2]
]
#: Patching, migrating and one `dags test` on a loaded machine; an install from an empty cache.
STEP_TIMEOUT_S = 600
#: The DAG the smoke runs, with the helpers it imports, alone in its DAGs folder (nothing else to parse).
DAG_FILES = ("dingbot_default_args.py", "dingbot_e2e_common.py")


#: For each patch a release has of its own (not its line's), Python run in the patched release that
#: calls the patched code and prints what the patch must make it do: `dags test` does not reach it.
#: 2.11.0's 0005: the scheduler fails a task stuck in queued past its retries; the patch must look
#: the task up and hand it to the adapter with Airflow's reason (here, a recording stand-in).
OWN_PATCH_PROBES = {
    ("2.11.0", "0005-scheduler-stuck-in-queued-ding-alert.patch"): (
        """
from unittest import mock

import airflow_ext.adapters.airflow2 as adapter
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

alerts = []
adapter.stuck_in_queued = lambda ti, task, error: alerts.append((task.task_id, error))
runner = SchedulerJobRunner.__new__(SchedulerJobRunner)  # no job, no database: only this method
runner._num_stuck_queued_retries = 2
runner._get_num_times_stuck_in_queued = lambda ti, session: 2
runner.dagbag = mock.Mock()
runner.dagbag.get_dag.return_value.get_task.return_value.task_id = "stuck"
ti = mock.Mock(dag_id="d", task_id="stuck")
runner._maybe_requeue_stuck_ti(ti=ti, session=mock.Mock())
print(alerts, ti.set_state.call_args.args[0].value)
""",
        "[('stuck', 'Task was requeued more than 2 times and will be failed.')] failed",
    ),
}


def sh(*cmd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="module", params=OTHER_RELEASES)
def release_venv(request, tmp_path_factory) -> tuple[str, Path]:
    """``(release, venv)``: the release installed from its lock, then this package, nothing patched."""
    release = request.param
    root = tmp_path_factory.mktemp(f"airflow-{release}") / "venv"
    uv = [sys.executable, "-m", "uv"]
    lock = REPO_ROOT / "requirements" / f"lock-airflow-{release}-py3.11.txt"
    ok(sh(*uv, "venv", "--quiet", "--python", sys.executable, root))
    python = root / "bin" / "python"
    ok(sh(*uv, "pip", "install", "--quiet", "--python", python, "-r", lock))
    ok(sh(*uv, "pip", "install", "--quiet", "--python", python, "--no-deps", REPO_ROOT))
    return release, root


def airflow_env(venv: Path, home: Path, dags: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_HOME", "VIRTUAL_ENV", "PYTHONPYCACHEPREFIX"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # Bytecode of this throw-away environment goes with it, not into the test environment's.
            "PYTHONPYCACHEPREFIX": str(venv / "pycache"),
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def patched_files(release: str) -> list[str]:
    """Every file the release's series patches, relative to site-packages."""
    files = []
    for patch in patching.series_for(release, PATCHES):
        for line in patch.read_text().splitlines():
            if line.startswith("+++ b/") and line[6:] not in files:
                files.append(line[6:])
    return files


def record_hashes(venv: Path, release: str) -> dict[str, str]:
    """``{path: "sha256=..."}`` from the RECORD of each distribution the release's series patches."""
    site = next((venv / "lib").glob("python3.*/site-packages"))
    hashes = {}
    for name, version in patching.distributions_for(release, PATCHES):
        record = site / f"{name.replace('-', '_')}-{version}.dist-info" / "RECORD"
        rows = csv.reader(io.StringIO(record.read_text()))
        hashes.update({row[0]: row[1] for row in rows if len(row) >= 2})
    return hashes


def sha256_field(path: Path) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def alerts(robot) -> list[tuple[str, str]]:
    """("will retry" / "final failure", "try N of M") for each message the robot accepted."""
    found = []
    for message in robot.messages:
        text = message["body"]["markdown"]["text"]
        attempt = re.search(r"\*\*Try:\*\* (\d+ of \d+) \((will retry|final failure)\)", text)
        found.append((attempt.group(2), attempt.group(1)))
    return sorted(found)


def test_patch_release_installs_patches_alerts_and_reverts_byte_for_byte(release_venv, tmp_path):
    release, venv = release_venv
    site = next((venv / "lib").glob("python3.*/site-packages"))
    files, record = patched_files(release), record_hashes(venv, release)
    assert files and all(sha256_field(site / f) == record[f] for f in files), "installed as released"
    dags = tmp_path / "dags"
    dags.mkdir()
    for name in DAG_FILES:
        shutil.copyfile(E2E_DAGS / name, dags / name)
    env = airflow_env(venv, tmp_path / "airflow-home", dags)
    airflow_ext, airflow = venv / "bin" / "airflow-ext", venv / "bin" / "airflow"

    applied = ok(sh(airflow_ext, "patch", "apply", env=env))
    assert applied.stdout.startswith(f"apache-airflow {release}: applied "), applied.stdout
    assert all(sha256_field(site / f) != record[f] for f in files), "every file was patched"
    ok(sh(airflow_ext, "patch", "check", env=env))
    for patch in patching.series_for(release, PATCHES):
        if patch.parent.name == release:  # the release's own, where its line's patch does not apply
            assert (release, patch.name) in OWN_PATCH_PROBES, f"no probe of {release}'s own {patch.name}"
            code, expected = OWN_PATCH_PROBES[(release, patch.name)]
            probe = ok(sh(venv / "bin" / "python", "-c", code, env=env))
            assert probe.stdout.strip().splitlines()[-1] == expected, probe.stdout + probe.stderr

    ok(sh(airflow, "db", "migrate", env=env))
    with counting_robot() as robot:
        result = sh(airflow, "dags", "test", "dingbot_default_args", env={**env, **robot_env(robot)})
        output = result.stdout + result.stderr
        assert marked(output, "up_for_retry") and marked(output, "failed"), output[-3000:]
        assert alerts(robot) == [("final failure", "2 of 2"), ("will retry", "1 of 2")], output[-3000:]
    assert_no_secret(output)

    reverted = ok(sh(airflow_ext, "patch", "revert", env=env))
    assert reverted.stdout.startswith(f"apache-airflow {release}: reverted "), reverted.stdout
    assert {f: sha256_field(site / f) for f in files} == {f: record[f] for f in files}, "as released"
    assert sh(airflow_ext, "patch", "check", env=env).returncode == 1, "check sees the series not applied"


def test_every_release_of_this_line_but_the_installed_one_has_a_smoke():
    """A release added to a series' releases file gets this module's smoke without more ado; this
    says which, so a line whose releases file lists only its default release shows up here."""
    line = AIRFLOW_VERSION.split(".")[0] if AIRFLOW_VERSION else None
    expected = {"2": ["2.11.0", "2.11.1"], "3": ["3.3.0", "3.3.1"]}.get(line)
    assert OTHER_RELEASES == expected
