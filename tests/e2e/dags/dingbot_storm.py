"""An alert storm: 104 task instances that fail, no retries, for 70 seconds.

The 4 plain tasks and the first mapped instances fail as soon as the executor runs them; mapped
instance ``i`` fails ``i * STORM_INTERVAL_S`` seconds after the run started (or at once, if the
executor is late). That is about 1.4 failures a second, four times a DingTalk robot's 20 messages a
minute, for 70 seconds, on any machine: longer than the 60-second window, so more than 20 messages
(singles, then a digest every 3 s) are needed and the deliverer has to wait for its oldest sends to
roll out of the window.
"""

import time

from airflow import DAG
from airflow.decorators import task
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import START, fail

#: The storm's size; tests/e2e/test_storm_localexecutor.py expects exactly these task instances.
MAPPED = 100
PLAIN = 4
STORM_INTERVAL_S = 0.7

with DAG(
    "dingbot_storm",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_tasks=MAPPED + PLAIN,
    default_args={"retries": 0, "ding_on_failure": True},
):

    @task
    def storm(i, dag_run=None):
        due = dag_run.start_date.timestamp() + i * STORM_INTERVAL_S
        time.sleep(max(0.0, due - time.time()))
        raise ValueError(f"storm failure {i}")

    storm.expand(i=list(range(MAPPED)))

    for n in range(PLAIN):
        PythonOperator(task_id=f"plain_{n}", python_callable=fail)
