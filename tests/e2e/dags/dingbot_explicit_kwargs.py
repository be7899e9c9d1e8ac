from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import RETRY_ONCE, START, fail

with DAG("dingbot_explicit_kwargs", schedule=None, start_date=START, default_args=RETRY_ONCE):
    PythonOperator(task_id="failure_only", python_callable=fail, ding_on_failure=True)
    PythonOperator(task_id="retry_only", python_callable=fail, ding_on_retry=True)
    PythonOperator(task_id="no_flags", python_callable=fail)
