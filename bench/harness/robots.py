"""The local robots the alerts go to: the project's fakes (standard library only, so the driver
can run them without Airflow), each with a fresh access token kept out of every output."""

from __future__ import annotations

import importlib
import json
import secrets
import sys

from .lines import REPO
from .redaction import keep_secret

ROBOT_KEYWORD = "Airflow"
#: Never refuses a benchmark alert for its rate: for the figures that are not about the limit.
UNLIMITED = 10**9

#: (conn id, conn type, the fake's module and class, whether the channel signs and has a keyword)
FAN_OUT_ROBOTS = (
    ("bench_dingtalk", "dingding", "airflow_ext.fake_robot", "FakeRobot", True),
    ("bench_wecom", "wecom", "airflow_ext.channels.wecom.fake", "FakeWeComRobot", False),
    ("bench_feishu", "feishu", "airflow_ext.channels.feishu.fake", "FakeFeishuRobot", True),
)
#: What turns the fan-out off again in a worker (its os.environ keeps what earlier calls set):
#: no default_conn_id, so the alert goes to the [dingding] robot alone.
ONE_ROBOT_ENV = {"AIRFLOW__DINGBOT__DEFAULT_CONN_ID": ""}


def _fake(module: str, class_name: str):
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return getattr(importlib.import_module(module), class_name)


def dingtalk_robot(prefix: str, secret: str, **options):
    """A started local DingTalk robot with signature and keyword security (FakeRobot's limits:
    DingTalk's 20 messages a minute unless ``rate_limit`` says otherwise)."""
    token = f"{prefix}-{secrets.token_hex(12)}"
    robot = _fake("airflow_ext.fake_robot", "FakeRobot")(
        access_token=token, secret=secret, keyword=ROBOT_KEYWORD, **options
    ).start()
    keep_secret(token, robot.url)
    return robot


def dingding_env(robot, secret: str) -> dict[str, str]:
    """The [dingding] settings that send alerts to ``robot``."""
    return {
        "AIRFLOW__DINGDING__BOT_URL": robot.url,
        "AIRFLOW__DINGDING__SECRET": secret,
        "AIRFLOW__DINGDING__KEYWORD": ROBOT_KEYWORD,
    }


def accepted(robot) -> int:
    """The messages a fake robot accepted so far."""
    return sum(1 for r in robot.requests if r["errcode"] == 0)


def requests_at(robots) -> int:
    """The requests the fake robots received so far, together."""
    return sum(len(robot.requests) for robot in robots)


class FanOutRobots:
    """Three healthy local robots of three channels, each an ``AIRFLOW_CONN_<ID>`` Connection, all
    chosen by ``[dingbot] default_conn_id`` (``env``): DingTalk and Feishu sign and check the keyword,
    WeCom (which has neither) does not. No rate limit of theirs ever refuses a benchmark alert."""

    def __init__(self, secret: str) -> None:
        self.robots: dict = {}
        self.env = {"AIRFLOW__DINGBOT__DEFAULT_CONN_ID": ",".join(robot[0] for robot in FAN_OUT_ROBOTS)}
        try:
            for conn_id, conn_type, module, class_name, signed in FAN_OUT_ROBOTS:
                token = f"{conn_type}-{secrets.token_hex(12)}"
                keep_secret(token)
                limits = {"per_second": 0} if conn_type == "feishu" else {}
                robot = _fake(module, class_name)(
                    token,
                    secret if signed else None,
                    ROBOT_KEYWORD if signed else None,
                    rate_limit=UNLIMITED,
                    **limits,
                )
                self.robots[conn_id] = robot.start()
                keep_secret(robot.url)
                conn: dict = {"conn_type": conn_type, "host": robot.base_url, "password": token}
                if signed:
                    conn["extra"] = {"secret": secret, "keyword": ROBOT_KEYWORD}
                self.env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
        except BaseException:
            self.stop()
            raise

    @property
    def channels(self) -> str:
        return ", ".join(robot.CHANNEL_NAME for robot in self.robots.values())

    def accepted(self) -> dict[str, int]:
        return {conn_id: accepted(robot) for conn_id, robot in self.robots.items()}

    def stop(self) -> None:
        for robot in self.robots.values():
            robot.stop()
