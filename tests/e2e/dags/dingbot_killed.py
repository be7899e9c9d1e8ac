"""Task instances whose failure is handled outside of their own process (tests/e2e/test_killed_tasks.py).

* ``oom_killed`` / ``group_killed`` write their PIDs to DINGBOT_E2E_PIDS and wait for the test to
  SIGKILL the task process (or it and its ``airflow tasks run`` supervisor);
* ``mapped_killed`` [map index 1] SIGKILLs itself; index 0 succeeds, index 2 fails;
* ``worker_parse_fails*`` never start: this file fails to parse in their workers only (one plain,
  one mapped, one with failure callbacks, which Airflow hands to the DAG processor);
* ``kill_after_send`` fails; the test's backend dies right after sending its alert.

Without DINGBOT_E2E_PIDS (any other run of this DAG) nothing is killed: those tasks just fail.
"""

import json
import os
import signal
import time
from datetime import timedelta

from airflow import DAG
from airflow.decorators import task
from airflow.operators.python import PythonOperator
from airflow.utils.dag_parsing_context import get_parsing_context
from dingbot_e2e_common import START, fail, succeed

DAG_ID = "dingbot_killed"
WORKER_PARSE_FAILS = "worker_parse_fails"
WORKER_PARSE_FAILS_MAPPED = "worker_parse_fails_mapped"
WORKER_PARSE_FAILS_CALLBACK = "worker_parse_fails_callback"
#: A task nobody killed gives up after this long (the test kills it within seconds).
KILL_WAIT_S = 300

# `airflow tasks run` parses this file with the parsing context naming the task it runs; the
# scheduler and the DAG processor parse it without. So these tasks fail in their workers before
# they start, and the executor reports the failure while the task instance is still queued.
_context = get_parsing_context()
if _context.dag_id == DAG_ID and _context.task_id in (
    WORKER_PARSE_FAILS,
    WORKER_PARSE_FAILS_MAPPED,
    WORKER_PARSE_FAILS_CALLBACK,
):
    raise RuntimeError(f"{DAG_ID} does not parse for {_context.task_id} (an intended e2e fault)")


def _pid_folder() -> str:
    folder = os.environ.get("DINGBOT_E2E_PIDS")
    if not folder:
        raise RuntimeError("DINGBOT_E2E_PIDS is not set: only tests/e2e/test_killed_tasks.py kills tasks")
    return folder


def wait_to_be_killed(**context):
    """Publish this task process's PID and its parent's (the supervisor), then wait for SIGKILL."""
    ti = context["ti"]
    path = os.path.join(_pid_folder(), f"{ti.task_id}.{ti.map_index}.{ti.try_number}.json")
    with open(f"{path}.tmp", "w", encoding="utf-8") as file:
        json.dump({"pid": os.getpid(), "ppid": os.getppid()}, file)
    os.replace(f"{path}.tmp", path)  # the test never reads half a file
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(1)
    raise RuntimeError(f"nobody killed {ti.task_id} within {KILL_WAIT_S} s")


def callback_does_nothing(context):
    """Its presence alone makes the scheduler hand an executor-reported failure to the DAG processor."""


with DAG(
    DAG_ID,
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retries": 0, "retry_delay": timedelta(seconds=0), "ding_on_failure": True},
):
    # Airflow reports a zombie at each look until the DAG processor has handled it; the retry delay
    # keeps a late repeat of try 1 from failing try 2 before it runs (it re-handles try 1 instead).
    PythonOperator(
        task_id="oom_killed",
        python_callable=wait_to_be_killed,
        retries=1,
        retry_delay=timedelta(seconds=10),
        ding_on_retry=True,
    )
    PythonOperator(task_id="group_killed", python_callable=wait_to_be_killed)

    @task
    def mapped_killed(i):
        if i == 1:
            _pid_folder()  # raises outside of the test: nothing is killed there
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        if i == 2:
            raise ValueError("map index 2 fails on its own")
        return i

    mapped_killed.expand(i=[0, 1, 2])

    PythonOperator(task_id=WORKER_PARSE_FAILS, python_callable=succeed, retries=1, ding_on_retry=True)
    PythonOperator.partial(task_id=WORKER_PARSE_FAILS_MAPPED, python_callable=succeed).expand(
        op_args=[[0], [1]]
    )
    PythonOperator(
        task_id=WORKER_PARSE_FAILS_CALLBACK,
        python_callable=succeed,
        on_failure_callback=callback_does_nothing,
        on_retry_callback=callback_does_nothing,
    )
    PythonOperator(task_id="kill_after_send", python_callable=fail)
