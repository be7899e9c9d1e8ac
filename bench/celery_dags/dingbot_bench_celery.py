"""The Celery benchmark's DAG (bench/bench_celery.py): a storm of task instances that fail at once.
Its size comes from DINGBOT_BENCH_STORM_SIZE, which every Airflow process of the run has."""

import os
from datetime import datetime

from airflow import DAG
from airflow.decorators import task

STORM_SIZE = int(os.environ.get("DINGBOT_BENCH_STORM_SIZE", "100"))

with DAG(
    "dingbot_bench_celery",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=STORM_SIZE,
    default_args={"retries": 0, "ding_on_failure": True},
):

    @task
    def storm(i):
        raise ValueError(f"bench failure {i}")

    storm.expand(i=list(range(STORM_SIZE)))
