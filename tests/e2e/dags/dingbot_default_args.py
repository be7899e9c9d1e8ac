from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import RETRY_ONCE, START, fail

with DAG(
    "dingbot_default_args",
    schedule=None,
    start_date=START,
    default_args={**RETRY_ONCE, "ding_on_retry": True, "ding_on_failure": True},
):
    PythonOperator(task_id="fails", python_callable=fail)
