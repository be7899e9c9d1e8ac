"""Shared fixtures: a local DingTalk-compatible robot and a real, patched Airflow to run against it."""

from __future__ import annotations

import importlib.abc
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from airflow_ext.fake_robot import FakeRobot
from tests.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
E2E_DAGS = Path(__file__).resolve().parent / "e2e" / "dags"
BIN = Path(sys.executable).parent


pytest_plugins = ["tests.suite_cost"]


def _installed_airflow_version() -> str | None:
    """The version of the Airflow in this environment, read without importing it."""
    for name in ("apache-airflow", "apache-airflow-core"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


AIRFLOW_VERSION = _installed_airflow_version()
#: Tests marked ``airflow2`` or ``airflow3`` run only on that line; everything else runs on both.
AIRFLOW_LINE = AIRFLOW_VERSION.split(".", 1)[0] if AIRFLOW_VERSION else None

#: Credentials of the local robot. Tests grep every output for them: they must never be printed.
ROBOT_TOKEN = "tok-3f9a1c77e2b54d0b"
ROBOT_SECRET = "SEC8c1d0f4e6a2b9d7e5f3a1c0b9e8d7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0"
ROBOT_KEYWORD = "Airflow"
#: The session's SQLite metadata database as `airflow db migrate` left it, in its Airflow home.
MIGRATED_SQLITE = "airflow-migrated.db"


def pytest_configure(config):
    expected = os.environ.get("DINGBOT_AIRFLOW_LINE")
    if expected and expected != AIRFLOW_LINE:
        raise pytest.UsageError(
            f"this environment is for Airflow {expected}.x but apache-airflow {AIRFLOW_LINE}.x is installed"
        )


#: The line that runs the version-free modules (marked ``version_free``): they never touch Airflow,
#: and the libraries they use are the same in both lock files, so one line is enough; 2.11.2's
#: run has more idle time to give them.
VERSION_FREE_LINE = "2"


def _elsewhere(item, other_line_marker: str | None) -> bool:
    """Whether ``item`` runs on the other line only."""
    if other_line_marker and item.get_closest_marker(other_line_marker):
        return True
    return (
        AIRFLOW_LINE is not None
        and AIRFLOW_LINE != VERSION_FREE_LINE
        and bool(item.get_closest_marker("version_free"))
    )


def pytest_collection_modifyitems(config, items):
    """Deselect (not skip) the tests of the other line, and the version-free ones where they do not
    run: the summary counts them as deselected. Then put the modules that run Airflow's services
    first and the other end-to-end modules next: with pytest-xdist (``--dist loadfile``, one module
    per worker at a time), the longest modules start first, and the quick ones fill in at the end."""
    other = {"2": "airflow3", "3": "airflow2"}.get(AIRFLOW_LINE or "")
    keep, dropped = [], []
    for item in items:
        (dropped if _elsewhere(item, other) else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    rank: dict[str, int] = {}
    for item in items:
        own = 0 if item.get_closest_marker("services") else 1 if item.get_closest_marker("e2e") else 2
        rank[item.path] = min(rank.get(item.path, own), own)  # a module is never split
    items.sort(key=lambda item: rank[item.path])


class _NoAirflow(importlib.abc.MetaPathFinder):
    """Refuses every import of Airflow: what a version-free module's tests must never need."""

    def find_spec(self, name, path, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ImportError(f"{name}: a version_free test module must not use Airflow")
        return None


@pytest.fixture(scope="module", autouse=True)
def _version_free_without_airflow(request):
    """While a ``version_free`` module runs, Airflow cannot be imported (what earlier modules of this
    process imported is put away and back) and the core's Airflow port is one without Airflow
    (tests/no_airflow_port.py), so such a module really runs the same on both lines. Every other
    module gets the port of the environment's Airflow line, as the CLI and the plugin choose it."""
    from airflow_ext import airflow_port

    if not request.node.get_closest_marker("version_free"):
        if AIRFLOW_LINE is not None:
            from airflow_ext import lines

            lines.choose()
        yield
        return
    from tests import no_airflow_port

    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "airflow"}
    blocker = _NoAirflow()
    sys.meta_path.insert(0, blocker)
    before = airflow_port.installed()
    airflow_port.install(no_airflow_port)
    try:
        yield
    finally:
        airflow_port.install(before)
        sys.meta_path.remove(blocker)
        sys.modules.update(hidden)


def counting_robot(robot_class: type[FakeRobot] = FakeRobot) -> FakeRobot:
    """The local robot with the test credentials, keeping every message it accepts, a repeated
    msgUuid too: exactly-once is counted at the robot, so what the tests count is what was sent,
    not what DingTalk would keep. Use it as a context manager."""
    return robot_class(
        access_token=ROBOT_TOKEN, secret=ROBOT_SECRET, keyword=ROBOT_KEYWORD, dedup_msg_uuid=False
    )


@pytest.fixture
def robot():
    with counting_robot() as fake:
        yield fake


@pytest.fixture
def claims_database(monkeypatch, tmp_path):
    """Alerts sent in this test process claim their tries in a database of the test's own (a fresh
    SQLite file), not in the environment's Airflow database: each test starts with no try claimed.
    Returns the engine."""
    from sqlalchemy import create_engine

    from airflow_ext.airflow_port import airflow

    engine = create_engine(f"sqlite:///{tmp_path / 'claims.db'}", future=True)
    monkeypatch.setattr(airflow(), "metadata_engine", lambda: engine)
    yield engine
    engine.dispose()


def robot_env(fake: FakeRobot, **extra: str) -> dict[str, str]:
    """Airflow configuration, as environment variables, that points alerts at ``fake``."""
    env = {
        "AIRFLOW__DINGDING__BOT_URL": fake.url,
        "AIRFLOW__DINGDING__SECRET": ROBOT_SECRET,
        "AIRFLOW__DINGDING__KEYWORD": ROBOT_KEYWORD,
        "AIRFLOW__DINGBOT__TIMEOUT": "3",
    }
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def unpatched_bin(tmp_path_factory) -> Path:
    """The bin folder of a fresh environment with this line's pinned, released (unpatched) Airflow:
    what the tests compare the patched Airflow with."""
    version = {"2": "2.11.2", "3": "3.3.2"}[AIRFLOW_LINE or "2"]
    lock = REPO_ROOT / "requirements" / f"lock-airflow-{version}-py3.11.txt"
    root = tmp_path_factory.mktemp("unpatched") / "venv"
    uv = [sys.executable, "-m", "uv"]
    for cmd in (
        [*uv, "venv", "--quiet", "--python", sys.executable, str(root)],
        [*uv, "pip", "install", "--quiet", "--python", str(root / "bin" / "python"), "-r", str(lock)],
    ):
        subprocess.run(cmd, check=True, capture_output=True, timeout=900)
    return root / "bin"


def local_executor_env(base_env: dict[str, str], home, metadata_url: str, **overrides: str) -> dict[str, str]:
    """A real scheduler's environment: LocalExecutor on ``metadata_url``, heartbeats every second,
    one parsing process. The tests serialize the DAGs before it starts, so it need not parse soon."""
    env = dict(base_env)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_FOLDER": str(E2E_DAGS),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "60",
            "AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL": "60",
            # The log servers of the scheduler (LocalExecutor) and the triggerer: ports of their own,
            # so that two stacks can run at once.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
    )
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def airflow_base_env(tmp_path_factory) -> dict[str, str]:
    """A migrated SQLite Airflow home shared by the end-to-end tests (each run has its own run id)."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__DINGDING__", "AIRFLOW__DINGBOT__"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(E2E_DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    check = run([str(BIN / "airflow-ext"), "patch", "check"], env)
    if check.returncode != 0:
        pytest.fail(
            "the Airflow in this environment is not patched: run the suite through tox "
            f"(which runs `airflow-ext patch apply`).\n{check.stdout}{check.stderr}"
        )
    migrate = run([str(BIN / "airflow"), "db", "migrate"], env)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    # Kept as migrated, before any test writes to it: what tests/airflow_db.copy_sqlite_home copies.
    shutil.copyfile(home / "airflow.db", home / MIGRATED_SQLITE)
    return env


@pytest.fixture
def airflow(airflow_base_env):
    """Run the real ``airflow`` CLI: ``airflow(["dags", "test", "x"], extra_env)``."""

    def _run(args: list[str], extra_env: dict[str, str] | None = None, timeout: float = 240):
        env = dict(airflow_base_env)
        env.update(extra_env or {})
        return run([str(BIN / "airflow"), *args], env, timeout=timeout)

    return _run


def marked(output: str, state: str) -> bool:
    """Whether Airflow's output says a try ended in ``state`` ("failed", "up_for_retry"): Airflow 2
    logs "Marking task as FAILED", Airflow 3's execution API "Task instance state updated ...
    new_state=failed"."""
    return f"Marking task as {state.upper()}" in output or f"new_state={state}" in output


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert ROBOT_TOKEN not in text, "the access_token leaked into output"
        assert ROBOT_SECRET not in text, "the signing secret leaked into output"
