"""The teams of dags/dingbot_teams.py: their groups (local fakes of four channels), their robots as
Airflow Connections, and what each group must see (shared by the routing end-to-end tests)."""

from __future__ import annotations

import contextlib
import json
import re

from airflow_ext.channels.feishu.fake import FakeFeishuRobot
from airflow_ext.channels.slack.fake import FakeSlackWebhook
from airflow_ext.channels.wecom.fake import FakeWeComRobot
from airflow_ext.fake_robot import FakeRobot
from tests.conftest import BIN, ROBOT_KEYWORD, ROBOT_SECRET, ROBOT_TOKEN, robot_env, run

#: Each robot's credentials: the tests grep every output for them.
DING_TOKEN = "payments-ding-7c1f0e"
DING_SECRET = "SECpayments0c9d8e7f6a5b4c3d2e1f0"
WECOM_KEY = "ml-wecom-3b2a1f0e"
FEISHU_TOKEN = "platform-feishu-9d8c7b"
FEISHU_SECRET = "platform-feishu-secret-5e4d3c"
SLACK_TOKEN = "T0TEAMOPS/B0ALICE00/alicewebhooksecret0000000"
SECRETS = (DING_TOKEN, DING_SECRET, WECOM_KEY, FEISHU_TOKEN, FEISHU_SECRET, SLACK_TOKEN)

ROUTES = [
    {"tag": "team-payments", "conn_id": "payments_dingtalk"},
    {"dag_id": "ml*", "conn_id": "ml_wecom"},
    {"owner": "alice", "conn_id": "alice_slack"},
]

#: Which tasks' failures each group must see, once each.
EXPECTED = {
    "payments_dingtalk": {"payorders", "opsrotate"},
    "ml_wecom": {"mlfit", "opsfanout"},
    "platform_feishu": {"opsvacuum", "opsfanout"},
    "alice_slack": {"opssweep"},
    "legacy": set(),
}
TASKS = {"payorders", "mlfit", "opssweep", "opsvacuum", "opsrotate", "opsfanout", "quietfail"}


@contextlib.contextmanager
def team_groups():
    """Every team's group, and the legacy [dingding] robot, listening."""
    robots = {
        "payments_dingtalk": FakeRobot(DING_TOKEN, DING_SECRET, ROBOT_KEYWORD, dedup_msg_uuid=False),
        "ml_wecom": FakeWeComRobot(WECOM_KEY),
        "platform_feishu": FakeFeishuRobot(FEISHU_TOKEN, FEISHU_SECRET, ROBOT_KEYWORD),
        "alice_slack": FakeSlackWebhook(SLACK_TOKEN),
        "legacy": FakeRobot(ROBOT_TOKEN, ROBOT_SECRET, ROBOT_KEYWORD, dedup_msg_uuid=False),
    }
    for robot in robots.values():
        robot.start()
    try:
        yield robots
    finally:
        for robot in robots.values():
            robot.stop()


def connection_env(groups) -> dict[str, str]:
    """Three robots as AIRFLOW_CONN_ JSON, routes and default; ml_wecom is in the database."""
    connections = {
        "payments_dingtalk": {
            "conn_type": "dingding",
            "host": groups["payments_dingtalk"].base_url,
            "password": DING_TOKEN,
            "extra": {"secret": DING_SECRET, "keyword": ROBOT_KEYWORD},
        },
        "platform_feishu": {
            "conn_type": "feishu",
            "host": groups["platform_feishu"].base_url,
            "password": FEISHU_TOKEN,
            "extra": {"secret": FEISHU_SECRET, "keyword": ROBOT_KEYWORD},
        },
        "alice_slack": {
            "conn_type": "slackwebhook",
            "host": f"{groups['alice_slack'].base_url}/services",
            "password": SLACK_TOKEN,
        },
    }
    env = robot_env(groups["legacy"])
    env.update({f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in connections.items()})
    env["AIRFLOW__DINGBOT__ROUTES"] = json.dumps(ROUTES)
    env["AIRFLOW__DINGBOT__DEFAULT_CONN_ID"] = "platform_feishu"
    return env


def add_database_connection(env: dict[str, str], groups) -> None:
    """ml_wecom into the (new) metadata database of ``env``, with `airflow connections add`."""
    airflow = str(BIN / "airflow")
    wecom = {"conn_type": "wecom", "host": groups["ml_wecom"].base_url, "password": WECOM_KEY}
    added = run([airflow, "connections", "add", "ml_wecom", "--conn-json", json.dumps(wecom)], env)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "AIRFLOW_CONN_ML_WECOM" not in env  # this one really comes from the metadata database


def tasks_seen(robot) -> list[str]:
    """The task ids each message names, in order (the body as JSON: every channel shows them)."""
    found = []
    for message in robot.messages:
        body = json.dumps(message["body"], ensure_ascii=False)
        found += [task for task in sorted(TASKS) if re.search(rf"\b{task}\b", body)]
    return found
