from airflow import DAG
from airflow.decorators import task
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import START, fail

with DAG(
    "dingbot_mapped",
    schedule=None,
    start_date=START,
    default_args={"retries": 0, "ding_on_failure": True},
):
    PythonOperator.partial(task_id="classic_mapped", python_callable=fail).expand(op_args=[[1], [2]])

    @task
    def taskflow_mapped(x):
        raise ValueError(f"mapped failure {x}")

    taskflow_mapped.expand(x=[10, 20, 30])
