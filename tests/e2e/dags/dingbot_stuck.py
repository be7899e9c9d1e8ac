"""Tasks that never leave the queue (tests/e2e/test_stuck_in_queued.py runs them on an executor
whose workers never take a task): the scheduler requeues them, then fails them."""

from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import START, succeed

with DAG("dingbot_stuck", schedule=None, start_date=START, catchup=False):
    # Retries left do not matter: a task stuck in queued too often is failed for good.
    PythonOperator(task_id="stuck_flagged", python_callable=succeed, retries=2, ding_on_failure=True)
    PythonOperator(task_id="stuck_unflagged", python_callable=succeed, retries=2)
