"""The failing tasks of tests/e2e/test_debug_logs.py: a pair on each path by which an alert is sent.
One task of the pair alerts the robot of the ``[dingding]`` section (in airflow.cfg), the other the
robot Connections (metadata database and AIRFLOW_CONN_, every channel), so that each process that
sends alerts handles each kind of credential:

* ``dingbot_debug``, run by the scheduler on CeleryExecutor:
  - ``worker_*``: fail on a Celery worker, which sends;
  - ``outbox_*``: fail on a worker; the alert goes through the outbox (on Airflow 3 through the
    api-server's outbox route) and ``airflow-ext deliver`` sends;
  - ``trigger_*``: defer; the trigger fails in the triggerer and the resumed task fails on a worker;
  - ``stuck_*``: on a queue no worker listens on: the scheduler fails them as stuck in queued, and
    sends;
  - Airflow 3 only, ``killed_*``: the task process SIGKILLs itself, as the OOM killer would: its
    supervisor, in the worker, sends;
  - Airflow 2 only, ``unparsed_*``: this file does not parse in the worker for them, so the executor
    reports their failure while they are queued: the scheduler sends for ``unparsed_*``, the
    standalone DAG processor for ``unparsed_cb_*`` (they have a failure callback).
* ``dingbot_debug_cli``: the same two kinds of robot, plus the outbox, under `airflow dags test` and
  `airflow tasks test`.
"""

import os
import signal
from datetime import datetime

import airflow
from airflow import DAG
from airflow.models.baseoperator import BaseOperator
from airflow.operators.python import PythonOperator
from airflow.triggers.testing import FailureTrigger

START = datetime(2026, 1, 1)
AIRFLOW_2 = airflow.__version__.startswith("2.")
#: Every robot Connection: DingTalk in the metadata database, WeCom, Feishu and Slack from
#: AIRFLOW_CONN_ variables. Outbox alerts go to OUTBOX_CONN_ID's robot (debug_backend.py).
CONNECTIONS = ["db_dingtalk", "env_wecom", "env_feishu", "env_slack"]
OUTBOX_CONN_ID = "outbox_dingtalk"
NOBODY_QUEUE = "nobody_listens"
UNPARSED = ("unparsed_cfg", "unparsed_conns", "unparsed_cb_cfg", "unparsed_cb_conns")

# The worker parses this file with the parsing context naming the task it runs; the scheduler and
# the DAG processor without: these tasks fail in their workers before they start.
if AIRFLOW_2:
    from airflow.utils.dag_parsing_context import get_parsing_context

    _context = get_parsing_context()
    if _context.dag_id == "dingbot_debug" and _context.task_id in UNPARSED:
        raise RuntimeError(f"dingbot_debug does not parse for {_context.task_id} (an intended e2e fault)")


def fail():
    raise ValueError("e2e failure at DEBUG")


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)


def callback_does_nothing(context):
    """Its presence alone makes the scheduler hand an executor-reported failure to the DAG processor."""


class TriggerFails(BaseOperator):
    """Defers to a trigger that raises in the triggerer; the task then fails on a worker."""

    def execute(self, context):
        self.defer(trigger=FailureTrigger(), method_name="resume")

    def resume(self, context, event=None):
        raise ValueError("e2e: resumed after a failed trigger")


ALERT = {"retries": 0, "ding_on_failure": True}

with DAG("dingbot_debug", schedule=None, start_date=START, catchup=False, default_args=ALERT):
    PythonOperator(task_id="worker_cfg", python_callable=fail)
    PythonOperator(task_id="worker_conns", python_callable=fail, ding_conn_id=CONNECTIONS)
    PythonOperator(task_id="outbox_conn", python_callable=fail, ding_conn_id=OUTBOX_CONN_ID)
    TriggerFails(task_id="trigger_cfg")
    TriggerFails(task_id="trigger_conns", ding_conn_id=CONNECTIONS)
    PythonOperator(task_id="stuck_cfg", python_callable=fail, queue=NOBODY_QUEUE)
    PythonOperator(task_id="stuck_conns", python_callable=fail, queue=NOBODY_QUEUE, ding_conn_id=CONNECTIONS)
    if not AIRFLOW_2:
        PythonOperator(task_id="killed_cfg", python_callable=kill_myself)
        PythonOperator(task_id="killed_conns", python_callable=kill_myself, ding_conn_id=CONNECTIONS)
    if AIRFLOW_2:
        PythonOperator(task_id="unparsed_cfg", python_callable=fail)
        PythonOperator(task_id="unparsed_conns", python_callable=fail, ding_conn_id=CONNECTIONS)
        PythonOperator(
            task_id="unparsed_cb_cfg", python_callable=fail, on_failure_callback=callback_does_nothing
        )
        PythonOperator(
            task_id="unparsed_cb_conns",
            python_callable=fail,
            on_failure_callback=callback_does_nothing,
            ding_conn_id=CONNECTIONS,
        )

with DAG("dingbot_debug_cli", schedule=None, start_date=START, catchup=False, default_args=ALERT):
    PythonOperator(task_id="cli_cfg", python_callable=fail)
    PythonOperator(task_id="cli_conns", python_callable=fail, ding_conn_id=CONNECTIONS)
    PythonOperator(task_id="cli_outbox", python_callable=fail, ding_conn_id=OUTBOX_CONN_ID)
