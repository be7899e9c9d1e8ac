"""A [dingbot] ding_bot_backend for tests/e2e/test_killed_tasks.py: sends like the default backend,
records each send, and SIGKILLs its own process right after one chosen send.

The kill imitates a process that dies between sending an alert and committing the task instance's
new state, so that Airflow reports the same try again from elsewhere. It happens once: when the
file named by DINGBOT_E2E_KILL_MARKER exists and holds "<dag_id>.<task_id>" of the alert, the
sender removes it first (only one process can), sends, then kills itself.
"""

import json
import os
import signal

from setproctitle import getproctitle

from airflow_ext.channels.dingtalk import DingTalkRobot
from airflow_ext.dingbot import dingbot_msg_sender


def _claim_kill(alert) -> bool:
    marker = os.environ.get("DINGBOT_E2E_KILL_MARKER")
    if not marker:
        return False
    try:
        with open(marker, encoding="utf-8") as file:
            target = file.read().strip()
        if target != f"{alert.dag_id}.{alert.task_id}":
            return False
        os.remove(marker)
    except FileNotFoundError:  # no marker, or another process claimed it first
        return False
    return True


def _record(alert, **outcome) -> None:
    sink = os.environ.get("DINGBOT_E2E_SENDS")
    if not sink:
        return
    record = {
        "msg_uuid": DingTalkRobot.msg_uuid_for(alert),
        "dag_id": alert.dag_id,
        "task_id": alert.task_id,
        "map_index": alert.map_index,
        "try_number": alert.try_number,
        "kind": alert.kind.value,
        "pid": os.getpid(),
        # Names the Airflow process that handled the failure (task runner, DAG processor, scheduler).
        "process": getproctitle(),
        **outcome,
    }
    with open(sink, "a", encoding="utf-8") as file:  # one short append: whole lines across processes
        file.write(json.dumps(record) + "\n")


def send(alert):
    kill = _claim_kill(alert)
    try:
        answer = dingbot_msg_sender(alert)
    except Exception as err:
        _record(alert, answer=None, error=type(err).__name__, killed=False)
        raise
    _record(alert, answer=answer, killed=kill)
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)
    return answer
