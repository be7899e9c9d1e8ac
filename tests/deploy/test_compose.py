"""deploy/: the example CeleryExecutor deployments are valid Compose files with the layout of
Airflow's own docker-compose file, the patched image of their line, and two deliverers.

The layout is read from the YAML (anchors and merge keys resolved); the files are validated by
``docker-compose config``, which checks them against the Compose Specification without a Docker
engine. Outside CI a missing ``docker-compose`` skips that check with the reason; in CI it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import REPO_ROOT

COMPOSE_FILES = {
    "3.3.2": REPO_ROOT / "deploy" / "docker-compose.yml",
    "2.11.2": REPO_ROOT / "deploy" / "docker-compose.airflow2.yml",
}
AIRFLOW_SERVICES = {
    "3.3.2": {
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-worker",
        "airflow-triggerer",
        "airflow-init",
        "flower",
        "dingbot-deliverer",
    },
    "2.11.2": {
        "airflow-webserver",
        "airflow-scheduler",
        "airflow-worker",
        "airflow-triggerer",
        "airflow-init",
        "flower",
        "dingbot-deliverer",
    },
}
#: Set only where a service needs it (Celery's warm shutdown, the first start's migration).
SERVICE_OWN_ENV = {"DUMB_INIT_SETSID", "_AIRFLOW_DB_MIGRATE", "_AIRFLOW_WWW_USER_CREATE"}
BOT_URL = "https://oapi.dingtalk.com/robot/send?access_token=compose-test-token"

pytestmark = [pytest.mark.version_free, pytest.mark.parametrize("version", sorted(COMPOSE_FILES))]


def services(version: str) -> dict:
    return yaml.safe_load(COMPOSE_FILES[version].read_text())["services"]


def airflow_env(service: dict) -> dict:
    return {k: v for k, v in service["environment"].items() if k not in SERVICE_OWN_ENV and k[0] != "_"}


def test_the_layout_is_airflows_celery_one_plus_the_deliverer(version):
    found = services(version)
    assert set(found) == AIRFLOW_SERVICES[version] | {"postgres", "redis"}
    common = airflow_env(found["airflow-scheduler"])
    assert common["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    broker = urlsplit(common["AIRFLOW__CELERY__BROKER_URL"])
    assert (broker.scheme, broker.hostname) == ("redis", "redis")
    assert common["AIRFLOW__DINGBOT__DING_BOT_BACKEND"] == "airflow_ext.dingbot.outbox_sender"
    for name in AIRFLOW_SERVICES[version]:
        service = found[name]
        # One image, built with the patches of this file's line, and one configuration for all:
        # the deliverer reads the same database and robots as the services that record alerts.
        assert service["image"] == found["airflow-scheduler"]["image"], name
        assert service["build"]["args"]["AIRFLOW_VERSION"] == version, name
        assert airflow_env(service) == common, name
    assert (REPO_ROOT / "patches" / version / "series").is_file()
    deliverer = found["dingbot-deliverer"]
    assert deliverer["deploy"]["replicas"] == 2
    assert "exec airflow-ext deliver" in " ".join(deliverer["command"])
    assert "DUMB_INIT_SETSID" in found["airflow-worker"]["environment"]


def test_no_credential_is_written_into_the_file(version):
    common = airflow_env(services(version)["airflow-scheduler"])
    for key in ("AIRFLOW__DINGDING__BOT_URL", "AIRFLOW__DINGDING__SECRET"):
        assert common[key].startswith("${"), f"{key} must come from the environment, not the file"


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if not found:
        reason = "docker-compose (Debian's package) is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: the Compose files must be validated in CI")
        pytest.skip(reason)
    return found


def compose_config(version: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DINGTALK_", "AIRFLOW"))}
    environment.update(env)
    return subprocess.run(
        [docker_compose(), "--file", str(COMPOSE_FILES[version]), "config"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_compose_config_accepts_it(version):
    done = compose_config(version, DINGTALK_BOT_URL=BOT_URL)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)["services"]
    assert set(resolved) == set(services(version))
    assert resolved["dingbot-deliverer"]["deploy"]["replicas"] == 2
    for name in AIRFLOW_SERVICES[version]:
        assert resolved[name]["environment"]["AIRFLOW__DINGDING__BOT_URL"] == BOT_URL, name


def test_docker_compose_refuses_it_without_the_robot_naming_the_variable(version):
    done = compose_config(version)
    assert done.returncode != 0
    assert "DINGTALK_BOT_URL" in done.stderr


def test_docker_compose_refuses_a_broken_copy(version, tmp_path):
    """The check can fail: a misspelt service option is refused, naming it."""
    broken = tmp_path / COMPOSE_FILES[version].name
    text = COMPOSE_FILES[version].read_text()
    assert "    command: scheduler\n" in text
    broken.write_text(text.replace("    command: scheduler\n", "    comand: scheduler\n"))
    done = subprocess.run(
        [docker_compose(), "--file", str(broken), "config"],
        env=dict(os.environ, DINGTALK_BOT_URL=BOT_URL),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "comand" in done.stderr
