"""A DAG that fails on purpose: its task retries once, then fails, and each try reaches DingTalk."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.decorators import task

default_args = {
    "owner": "data-platform",
    "retries": 1,
    "retry_delay": timedelta(seconds=0),
    "ding_on_retry": True,
    "ding_on_failure": True,
}

with DAG(
    dag_id="dingbot_demo",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args=default_args,
    tags=["dingbot"],
) as dag:

    @task
    def load_orders():
        raise RuntimeError("upstream table orders_2026 is missing: 0 rows loaded")

    load_orders()
