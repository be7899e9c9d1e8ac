from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import RETRY_ONCE, START, fail, succeed

with DAG("dingbot_flags_off", schedule=None, start_date=START, default_args=RETRY_ONCE):
    PythonOperator(task_id="fails_silently", python_callable=fail)
    PythonOperator(task_id="succeeds", python_callable=succeed, ding_on_failure=True, ding_on_retry=True)
