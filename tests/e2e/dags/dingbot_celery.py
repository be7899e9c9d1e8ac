"""The DAGs of the CeleryExecutor scale-out test (tests/e2e/test_celery_executor.py).

- ``dingbot_celery_storm``: 200 mapped task instances that fail at once, spread over two workers.
- ``dingbot_celery_lost``: tasks on the ``lost`` queue, which only the worker the test kills (and,
  afterwards, its replacement) listens on. Their first try sleeps until the worker is gone; the
  retried task's second try, on the replacement, fails on its own. (More lost tasks, alerting
  through the default backend, are in dingbot_celery_lost_direct.py.)
- ``dingbot_celery_stuck``: a task on a queue no worker listens on, which Airflow fails for staying
  queued too long.
"""

import time
from datetime import timedelta

from airflow import DAG
from airflow.decorators import task
from dingbot_e2e_common import START

#: The storm's size; the test expects exactly these task instances.
STORM_SIZE = 200
#: Longer than the test waits: a first try on the lost queue ends only when its worker is killed.
UNTIL_KILLED_S = 900
LOST_QUEUE, NOBODY_QUEUE = "lost", "nobody_listens"

with DAG(
    "dingbot_celery_storm",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_tasks=STORM_SIZE,
    default_args={"retries": 0, "ding_on_failure": True},
):

    @task
    def storm(i):
        raise ValueError(f"celery storm failure {i}")

    storm.expand(i=list(range(STORM_SIZE)))


with DAG(
    "dingbot_celery_lost",
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"queue": LOST_QUEUE, "ding_on_failure": True, "ding_on_retry": True},
):

    @task(retries=1, retry_delay=timedelta(seconds=1))
    def lost_retry(ti=None):
        if ti.try_number == 1:
            time.sleep(UNTIL_KILLED_S)
        raise ValueError("the second try fails on the replacement worker")

    lost_retry()


with DAG(
    "dingbot_celery_stuck",
    schedule=None,
    start_date=START,
    catchup=False,
    # Retries left do not matter: a task stuck in queued too often is failed for good.
    default_args={"queue": NOBODY_QUEUE, "retries": 2},
):

    @task(ding_on_failure=True)
    def stuck_flagged():
        return "never runs"

    stuck_flagged()
