"""A task that fails once the test has stopped the api-server (tests/e2e/test_api_server_stopped_airflow3.py).

``fails_when_released`` waits for the file named by DINGBOT_E2E_RELEASE (the test creates it
after stopping the api-server), then raises. Without the variable it fails at once.
"""

import os
import time

from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import START

WAIT_S = 120


def fails_when_released(**context):
    release = os.environ.get("DINGBOT_E2E_RELEASE")
    deadline = time.monotonic() + WAIT_S
    while release and not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.2)
    raise ValueError("e2e: failed while the api-server was down")


with DAG(
    "dingbot_api_server_stopped",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retries": 0, "ding_on_failure": True},
):
    PythonOperator(task_id="fails_when_released", python_callable=fails_when_released)
