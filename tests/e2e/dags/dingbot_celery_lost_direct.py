"""The lost tasks of tests/e2e/test_celery_executor.py that alert through the default (direct)
backend: they alert the ``lost_direct`` robot (celery_backend.py), from whichever process reports
their try. Like ``dingbot_celery_lost`` they run on the ``lost`` queue until their worker is killed.

Once the test creates the marker file (when it loses the worker), parsing this file takes longer
than two of the scheduler's heartbeat checks, like a DAG processor behind on a large DAGs folder:
Airflow 2.11's check then reports each lost try again, and the DAG processor runs the failure
handling of the same try once per report. The tasks have no retries, so each report is of the try
that was lost (a retried task's next try could be failed by a stale report: Airflow's, not ours).
"""

import os
import time

from airflow import DAG
from airflow.decorators import task
from dingbot_e2e_common import START

UNTIL_KILLED_S = 900
SLOW_PARSE_MARKER = os.environ.get("DINGBOT_E2E_SLOW_PARSE_MARKER")
SLOW_PARSE_S = 7

if SLOW_PARSE_MARKER and os.path.exists(SLOW_PARSE_MARKER):
    time.sleep(SLOW_PARSE_S)

with DAG(
    "dingbot_celery_lost_direct",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={
        "queue": "lost",
        "retries": 0,
        "ding_on_failure": True,
        "ding_on_retry": True,
        "ding_conn_id": "lost_direct",
    },
):

    @task
    def lost_plain():
        time.sleep(UNTIL_KILLED_S)

    @task
    def lost_mapped(i):
        time.sleep(UNTIL_KILLED_S)

    lost_plain()
    lost_mapped.expand(i=[0, 1])
