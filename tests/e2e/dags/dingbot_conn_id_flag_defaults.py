"""Tasks for [dingbot] default_ding_on_failure / default_ding_on_retry (tests/e2e/test_serialization*.py):
some set no flag (they take the configured default), some turn a flag off themselves, through a
TaskGroup's default_args or, in the second DAG, the DAG's default_args: those stay off."""

from airflow import DAG
from airflow.decorators import task, task_group
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import START, fail

with DAG("dingbot_conn_id_flag_defaults", schedule=None, start_date=START, default_args={"retries": 0}):
    PythonOperator(task_id="sets_nothing", python_callable=fail)
    PythonOperator(task_id="failure_off", python_callable=fail, ding_on_failure=False)
    PythonOperator(task_id="retry_off", python_callable=fail, ding_on_retry=False)
    PythonOperator(task_id="both_on", python_callable=fail, ding_on_failure=True, ding_on_retry=True)

    @task
    def taskflow_sets_nothing():
        raise ValueError("taskflow failure")

    @task(ding_on_failure=False)
    def taskflow_failure_off():
        raise ValueError("taskflow failure")

    @task_group(default_args={"ding_on_failure": False, "ding_on_retry": False})
    def group():
        PythonOperator(task_id="off", python_callable=fail)
        PythonOperator.partial(task_id="mapped_off", python_callable=fail).expand(op_args=[[1]])

    @task
    def taskflow_mapped(x):
        raise ValueError(f"mapped failure {x}")

    taskflow_sets_nothing()
    taskflow_failure_off()
    group()
    PythonOperator.partial(task_id="mapped_sets_nothing", python_callable=fail).expand(op_args=[[1]])
    PythonOperator.partial(task_id="mapped_failure_off", python_callable=fail, ding_on_failure=False).expand(
        op_args=[[1]]
    )
    taskflow_mapped.expand(x=[1])


with DAG(
    "dingbot_conn_id_flag_defaults_dag_off",
    schedule=None,
    start_date=START,
    default_args={"retries": 0, "ding_on_failure": False, "ding_on_retry": False},
):
    PythonOperator(task_id="dag_off", python_callable=fail)
    PythonOperator.partial(task_id="mapped_dag_off", python_callable=fail).expand(op_args=[[1]])
