"""The outbox on Airflow 3 (tests/e2e/test_outbox_airflow3.py): a try of each way to end badly.

* ``raises`` fails twice (a retry, then the final failure): ``finalize`` hands each alert, with its
  traceback, to the supervisor, which posts it to the api-server;
* ``oom_killed`` SIGKILLs its own task process, as the OOM killer would: the supervisor's own alert
  goes the same way;
* ``succeeds`` succeeds: a try whose token must not queue a failure alert.

Without DINGBOT_E2E_KILLS=1 in the environment nothing kills anything.
"""

import os
import signal

from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import RETRY_ONCE, START, fail, succeed


def oom(**context):
    if os.environ.get("DINGBOT_E2E_KILLS") != "1":
        raise RuntimeError("DINGBOT_E2E_KILLS is not set: only the outbox e2e test kills tasks")
    os.kill(os.getpid(), signal.SIGKILL)


with DAG(
    "dingbot_outbox3",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retries": 0, "ding_on_failure": True},
):
    PythonOperator(task_id="raises", python_callable=fail, default_args={**RETRY_ONCE, "ding_on_retry": True})
    PythonOperator(task_id="oom_killed", python_callable=oom)
    PythonOperator(task_id="succeeds", python_callable=succeed)
