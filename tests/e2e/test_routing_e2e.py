"""Three teams, four groups: each failure reaches the group its task, its DAG's tag, its owner or
the default chose, once, on every channel; `airflow-ext route` explains each choice.

The real patched Airflow runs the DAGs of dags/dingbot_teams.py (`airflow dags test`). The robots
are Airflow Connections: three from the environment (``AIRFLOW_CONN_<ID>`` JSON, as a secrets
backend hands them over) and one from the metadata database (`airflow connections add`). A
``[dingding]`` robot is configured too and must get nothing: every alert here is routed.
"""

from __future__ import annotations

import shutil

import pytest

from tests.airflow_db import copy_sqlite_home
from tests.conftest import BIN, E2E_DAGS, assert_no_secret, run
from tests.e2e.teams import (
    EXPECTED,
    SECRETS,
    add_database_connection,
    connection_env,
    tasks_seen,
    team_groups,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def module_groups():
    with team_groups() as robots:
        yield robots


@pytest.fixture
def groups(module_groups):
    """The module's groups, each emptied for the test."""
    for robot in module_groups.values():
        robot.reset()
    return module_groups


@pytest.fixture(scope="module")
def team_env(airflow_base_env, module_groups, tmp_path_factory):
    """The teams' configuration, on a metadata database of the module's own that holds ml_wecom."""
    home = tmp_path_factory.mktemp("routing") / "home"
    env = dict(airflow_base_env)
    env["AIRFLOW_HOME"] = str(home)
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{copy_sqlite_home(airflow_base_env, home)}"
    env.update(connection_env(module_groups))
    add_database_connection(env, module_groups)
    return env


def test_each_team_alerts_its_own_group_once(team_env, groups):
    outputs = []
    for dag_id in ("teampay", "mltrain", "teamops"):
        result = run([str(BIN / "airflow"), "dags", "test", dag_id], team_env)
        outputs += [result.stdout, result.stderr]

    seen = {name: tasks_seen(robot) for name, robot in groups.items()}
    assert {name: sorted(tasks) for name, tasks in seen.items()} == {
        name: sorted(tasks) for name, tasks in EXPECTED.items()
    }, outputs[-1][-3000:]
    assert groups["payments_dingtalk"].messages[0]["signed"]
    assert all(message["signed"] for message in groups["platform_feishu"].messages)
    for text in outputs:
        for secret in SECRETS:
            assert secret not in text
    assert_no_secret(*outputs)


@pytest.mark.parametrize("default_on, alerted", [("False", []), ("True", ["quietfail"])])
def test_default_ding_on_failure_opts_in_a_dag_without_flags(team_env, groups, default_on, alerted):
    env = {**team_env, "AIRFLOW__DINGBOT__DEFAULT_DING_ON_FAILURE": default_on}

    result = run([str(BIN / "airflow"), "dags", "test", "teamquiet"], env)

    assert tasks_seen(groups["platform_feishu"]) == alerted, result.stdout[-3000:]
    assert not any(tasks_seen(robot) for name, robot in groups.items() if name != "platform_feishu")


def test_route_explains_every_choice_without_a_secret(team_env, groups):
    result = run([str(BIN / "airflow-ext"), "route", "teamops"], team_env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    assert "teamops.opssweep (owner 'alice'; tags ops)" in out
    assert "chosen by [dingbot] routes rule 3 (owner 'alice')" in out
    assert "alice_slack: Slack at http://127.0.0.1:" in out
    assert "chosen by [dingbot] default_conn_id\n  -> platform_feishu: Feishu at http://127.0.0.1:" in out
    assert out.count("chosen by the task's ding_conn_id") == 2
    assert "-> ml_wecom: WeCom at http://127.0.0.1:" in out  # read from the metadata database
    assert "payments_dingtalk: DingTalk at http://127.0.0.1:" in out and "signed, keyword 'Airflow'" in out
    for secret in SECRETS:
        assert secret not in out + result.stderr

    single = run([str(BIN / "airflow-ext"), "route", "teampay", "payorders"], team_env)
    assert single.returncode == 0, single.stderr
    assert "chosen by [dingbot] routes rule 1 (tag 'team-payments')" in single.stdout
    assert single.stdout.count("\n  -> ") == 1


def test_route_names_an_unknown_dag_or_task(team_env):
    unknown = run([str(BIN / "airflow-ext"), "route", "nosuchdag"], team_env)
    assert unknown.returncode == 1 and "no DAG 'nosuchdag' in the DAGs folder" in unknown.stderr

    no_task = run([str(BIN / "airflow-ext"), "route", "teampay", "nosuchtask"], team_env)
    assert no_task.returncode == 1 and "DAG 'teampay' has no task 'nosuchtask'" in no_task.stderr


def test_check_and_send_test_reach_a_connection(team_env, groups):
    check = run([str(BIN / "airflow-ext"), "check"], team_env)
    assert check.returncode == 0, check.stderr
    assert "robots payments_dingtalk, ml_wecom, alice_slack, platform_feishu" in check.stdout

    sent = run([str(BIN / "airflow-ext"), "send-test", "--conn-id", "ml_wecom"], team_env)
    assert sent.returncode == 0, sent.stderr
    assert "sent to ml_wecom (WeCom)" in sent.stdout
    assert len(groups["ml_wecom"].messages) == 1
    for secret in SECRETS:
        assert secret not in check.stdout + check.stderr + sent.stdout + sent.stderr


#: A DAG file whose tasks name Connections that exist nowhere (one in default_args, one mapped).
ORPHANS_DAG = """
from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import START, fail

with DAG("orphans", schedule=None, start_date=START, default_args={"ding_conn_id": "gone_robot"}):
    PythonOperator(task_id="cleanup", python_callable=fail)
    PythonOperator(task_id="archive", python_callable=fail)
    PythonOperator.partial(task_id="fanout", python_callable=fail, ding_conn_id="typo_wecom").expand(
        op_args=[[1], [2]]
    )
"""


@pytest.fixture
def dags_folder(tmp_path):
    """A DAGs folder of its own: the teams' DAGs and their helper module."""
    folder = tmp_path / "dags"
    folder.mkdir()
    for name in ("dingbot_teams.py", "dingbot_e2e_common.py"):
        shutil.copy(E2E_DAGS / name, folder / name)
    return folder


def test_check_dags_covers_the_connections_tasks_name(team_env, dags_folder):
    env = {**team_env, "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder)}
    good = run([str(BIN / "airflow-ext"), "check", "--dags"], env)
    assert good.returncode == 0, good.stderr
    assert "DAGs parsed" in good.stdout

    (dags_folder / "orphans.py").write_text(ORPHANS_DAG)
    (dags_folder / "broken.py").write_text("from airflow import DAG\nthis is not python\n")
    # Without --dags the configuration alone is checked, and it is fine.
    assert run([str(BIN / "airflow-ext"), "check"], env).returncode == 0
    bad = run([str(BIN / "airflow-ext"), "check", "--dags"], env)
    assert bad.returncode == 1
    lines = [line for line in bad.stderr.splitlines() if "ding_conn_id" in line]
    gone = "(ding_conn_id of orphans.cleanup, orphans.archive)"
    assert any("'gone_robot'" in line and gone in line for line in lines), bad.stderr
    assert any("'typo_wecom'" in line and "(ding_conn_id of orphans.fanout)" in line for line in lines)
    assert any("broken.py failed to import" in line for line in lines), bad.stderr
    # The teams' own Connections are fine: nothing is said of them.
    assert not any(name in bad.stderr for name in ("payments_dingtalk", "ml_wecom", "platform_feishu"))
    assert "airflow-ext check: 3 configuration problems" in bad.stderr
    for secret in SECRETS:
        assert secret not in good.stdout + good.stderr + bad.stdout + bad.stderr
