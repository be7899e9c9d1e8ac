"""40 DAGs x 25 plain tasks for ``bench_outbox.py --airflow-line 3``: the task instances whose
Execution API tokens the benchmark's alerts are posted with.

Task ``load_partition_NNNN`` (NNNN = 0000 ... 0999) is in DAG number NNNN // 25; the DAGs are named
``<domain>_<region>`` like the alerts of the Airflow 2 storm. The benchmark copies this file into
its ``AIRFLOW_HOME``'s DAG folder, serializes it with ``airflow dags reserialize`` and triggers
runs of every DAG; no task ever runs (no scheduler is started).
"""

from datetime import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

DOMAINS = ("orders_etl", "billing_sync", "clickstream_ingest", "inventory_snapshot", "ml_features")
REGIONS = (
    "cn_hangzhou",
    "cn_shanghai",
    "cn_beijing",
    "cn_shenzhen",
    "ap_singapore",
    "eu_frankfurt",
    "us_virginia",
    "cn_chengdu",
)
DAGS, TASKS_PER_DAG = 40, 25

for i in range(DAGS):
    with DAG(
        f"{DOMAINS[i % len(DOMAINS)]}_{REGIONS[i // len(DOMAINS)]}",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        default_args={"owner": "bench", "retries": 0, "ding_on_failure": True},
    ) as dag:
        for n in range(i * TASKS_PER_DAG, (i + 1) * TASKS_PER_DAG):
            EmptyOperator(task_id=f"load_partition_{n:04d}")
    globals()[dag.dag_id] = dag
