"""A failing task whose failure and retry callbacks record that they ran."""

import os

from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import RETRY_ONCE, START, fail


def record(context):
    with open(os.environ["DINGBOT_TEST_CALLBACKS"], "a", encoding="utf-8") as sink:
        ti = context["ti"]
        state = getattr(ti.state, "value", ti.state)  # a plain str on Airflow 2, an enum on Airflow 3
        sink.write(f"{ti.task_id} try {ti.try_number} {state}\n")


with DAG(
    "dingbot_callbacks",
    schedule=None,
    start_date=START,
    default_args={
        **RETRY_ONCE,
        "ding_on_retry": True,
        "ding_on_failure": True,
        "on_retry_callback": record,
        "on_failure_callback": record,
    },
):
    PythonOperator(task_id="fails", python_callable=fail)
