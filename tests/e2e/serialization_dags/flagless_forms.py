"""DAGs that do not use the ding flags, in every form a task can take: their serialized hash must be
the same on patched and unpatched Airflow (otherwise every DAG gets a new version on upgrade)."""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.decorators import task, task_group
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import PythonOperator
from airflow.sensors.python import PythonSensor

START = datetime(2026, 1, 1)


def noop(*args, **kwargs):
    return None


with DAG(
    "flagless_classic",
    schedule="@daily",
    start_date=START,
    catchup=False,
    tags=["team-a"],
    default_args={"owner": "data", "retries": 2, "retry_delay": timedelta(minutes=1)},
):
    first = EmptyOperator(task_id="first")
    python = PythonOperator(task_id="python", python_callable=noop, email_on_failure=False)
    sensor = PythonSensor(task_id="sensor", python_callable=lambda: True, mode="reschedule", timeout=60)
    first >> python >> sensor


with DAG("flagless_mapped_and_taskflow", schedule=None, start_date=START):

    @task
    def produce():
        return [1, 2, 3]

    @task(retries=1)
    def consume(x):
        return x

    @task_group
    def group():
        EmptyOperator(task_id="inside")

    consume.expand(x=produce())
    PythonOperator.partial(task_id="classic_mapped", python_callable=noop).expand(op_args=[[1], [2]])
    group()
