"""One task that fails once and is retried at once, with the ding flags on and, as the reference
for plain Airflow's behaviour, off. tests/e2e/test_fault_matrix.py runs it against each robot fault."""

from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import RETRY_ONCE, START, fail


def _dag(dag_id: str, ding: bool) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START, default_args=RETRY_ONCE) as dag:
        PythonOperator(task_id="fails", python_callable=fail, ding_on_retry=ding, ding_on_failure=ding)
    return dag


dingbot_fault_matrix = _dag("dingbot_fault_matrix", ding=True)
dingbot_fault_matrix_reference = _dag("dingbot_fault_matrix_reference", ding=False)
