"""More DAGs that use no ding argument (no flag, no ding_conn_id): TaskGroup default_args, nested
groups, partial() arguments, email (a str and a list, like ding_conn_id), setup / teardown. Their
serialized hash must be the same on patched and unpatched Airflow."""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.decorators import setup, task, task_group, teardown
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import PythonOperator

START = datetime(2026, 1, 1)


def noop(*args, **kwargs):
    return None


with DAG(
    "flagless_groups_and_defaults",
    schedule=None,
    start_date=START,
    tags=["team-b"],
    default_args={
        "owner": "ops",
        "email": ["ops@example.com", "oncall@example.com"],
        "email_on_retry": False,
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
    },
):

    @task_group(default_args={"retries": 0, "email": "group@example.com", "queue": "other"})
    def outer():
        EmptyOperator(task_id="in_outer")

        @task_group
        def inner():
            PythonOperator.partial(
                task_id="mapped_in_inner", python_callable=noop, email=["mapped@example.com"]
            ).expand(op_args=[[1], [2]])

        inner()

    @task(email="taskflow@example.com", retries=3)
    def taskflow_with_email():
        return None

    @task
    def mapped_with_partial(x, y):
        return x + y

    @setup
    def create():
        return None

    @teardown
    def delete():
        return None

    with create() >> delete():
        outer()
        taskflow_with_email()
        mapped_with_partial.partial(y=1).expand(x=[1, 2])


with DAG(
    "flagless_dag_default_args",
    schedule="@hourly",
    start_date=START,
    catchup=False,
    default_args={"depends_on_past": True, "email_on_failure": False, "trigger_rule": "all_done"},
):
    PythonOperator(task_id="python", python_callable=noop, email="one@example.com")
    PythonOperator.partial(task_id="mapped", python_callable=noop, retries=4).expand(op_args=[[1]])
