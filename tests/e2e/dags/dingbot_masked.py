"""A task whose exception holds a Connection's password (tests/e2e/test_dags_test.py): its alert
shows the password as ``***``, as the task's log does, since an alert reaches a whole group."""

from airflow import DAG
from airflow.hooks.base import BaseHook
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import START


def log_in():
    conn = BaseHook.get_connection("dingbot_warehouse")
    raise PermissionError(f"{conn.login}:{conn.password} refused by {conn.host}")


with DAG("dingbot_masked", schedule=None, start_date=START, default_args={"ding_on_failure": True}):
    PythonOperator(task_id="log_in", python_callable=log_in, retries=0)
