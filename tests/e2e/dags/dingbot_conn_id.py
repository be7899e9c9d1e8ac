"""ding_conn_id in every form a task can get it (tests/e2e/test_serialization*.py): the DAG's
default_args (a str here, a list in the second DAG), an explicit kwarg, @task, a TaskGroup's
default_args, and .partial().expand() (classic and TaskFlow)."""

from airflow import DAG
from airflow.decorators import task, task_group
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import START, fail

with DAG(
    "dingbot_conn_id",
    schedule=None,
    start_date=START,
    default_args={"retries": 0, "ding_on_failure": True, "ding_conn_id": "team_dingtalk"},
):
    PythonOperator(task_id="from_default_args", python_callable=fail)
    PythonOperator(task_id="explicit_str", python_callable=fail, ding_conn_id="ops_dingtalk")
    PythonOperator(task_id="explicit_list", python_callable=fail, ding_conn_id=["ops_dingtalk", "ml_wecom"])

    @task
    def taskflow_from_default_args():
        raise ValueError("taskflow failure")

    @task(ding_conn_id=["tf_feishu", "tf_slack"])
    def taskflow_explicit():
        raise ValueError("taskflow failure")

    @task_group(default_args={"ding_conn_id": ["group_wecom", "group_feishu"]})
    def group():
        PythonOperator(task_id="in_group", python_callable=fail)
        PythonOperator.partial(task_id="mapped_in_group", python_callable=fail).expand(op_args=[[1], [2]])

    @task
    def taskflow_mapped(x):
        raise ValueError(f"mapped failure {x}")

    @task(ding_conn_id="tf_mapped_dingtalk")
    def taskflow_mapped_explicit(x):
        raise ValueError(f"mapped failure {x}")

    taskflow_from_default_args()
    taskflow_explicit()
    group()
    PythonOperator.partial(task_id="mapped_from_default_args", python_callable=fail).expand(op_args=[[1]])
    PythonOperator.partial(
        task_id="mapped_explicit", python_callable=fail, ding_conn_id=["mapped_a", "mapped_b"]
    ).expand(op_args=[[1], [2]])
    taskflow_mapped.expand(x=[10, 20])
    taskflow_mapped_explicit.expand(x=[30])


with DAG(
    "dingbot_conn_id_listed",
    schedule=None,
    start_date=START,
    default_args={"retries": 0, "ding_conn_id": ["first_dingtalk", "second_wecom"]},
):
    PythonOperator(task_id="from_default_args", python_callable=fail)
    PythonOperator(task_id="no_robot", python_callable=fail, ding_conn_id=None)
    PythonOperator.partial(task_id="mapped_from_default_args", python_callable=fail).expand(op_args=[[1]])

    @task
    def taskflow_mapped(x):
        raise ValueError(f"mapped failure {x}")

    taskflow_mapped.expand(x=[1])
