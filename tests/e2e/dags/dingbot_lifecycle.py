"""Every way a try can end badly, for the real services of Airflow 3 (tests/e2e/test_lifecycle_airflow3.py).

* ``raises`` / ``times_out`` / ``sensor_times_out`` / ``deferral_times_out`` /
  ``trigger_fails`` / ``trigger_fires_then_fails``: handled by the task runner's ``finalize`` on
  the worker (a failed or timed-out deferral resumes there and raises);
* ``oom_killed`` (both tries) and ``mapped_killed`` [map index 1] SIGKILL their own task process,
  as the OOM killer would: only the supervisor sees it;
* ``supervisor_killed`` SIGKILLs its supervisor and then itself: the scheduler finds it by its
  missing heartbeat;
* ``worker_cannot_start`` runs on a queue whose coordinator does not exist, so the worker fails it
  while it is still queued and the scheduler handles the executor's report;
* ``worker_cannot_import`` (both tries) and ``worker_cannot_import_flags_off``: this file does not
  import in their workers (as with a package missing there), so the try fails before the worker
  knows the task; the supervisor alerts per the flags of the serialized DAG, with the import error;
* ``flags_off`` fails without asking for alerts.

Without DINGBOT_E2E_KILLS=1 in the environment nothing kills anything: those tasks just fail.
The flags come only through ``default_args`` (the DAG's and a task's own), which stock Airflow
ignores, so the same file runs on unpatched Airflow for the reference states.
"""

import os
import signal
import time
from datetime import timedelta

from airflow import DAG
from airflow.decorators import task
from airflow.models.baseoperator import BaseOperator
from airflow.operators.python import PythonOperator
from airflow.sensors.python import PythonSensor
from airflow.triggers.testing import FailureTrigger, SuccessTrigger
from dingbot_e2e_common import START, fail, succeed

try:  # Airflow 3
    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
    from airflow.sdk import get_parsing_context
except ImportError:  # Airflow 2 (other tests parse this file too)
    from airflow.triggers.temporal import TimeDeltaTrigger
    from airflow.utils.dag_parsing_context import get_parsing_context

DAG_ID = "dingbot_lifecycle"
#: A task's own default_args that add the retry alert.
RETRY_ALERT = {"ding_on_retry": True}
NOWHERE_QUEUE = "dingbot-nowhere"
WORKER_CANNOT_IMPORT = ("worker_cannot_import", "worker_cannot_import_flags_off")

# A worker runs a task after parsing this file with the parsing context naming the task; the DAG
# processor parses it without. So these tasks' workers fail to import it, as a worker lacking a
# package would, while the DAG processor serializes the DAG as usual.
_context = get_parsing_context()
if _context.dag_id == DAG_ID and _context.task_id in WORKER_CANNOT_IMPORT:
    missing = f"dingbot_e2e_missing_{_context.task_id}"
    raise ModuleNotFoundError(f"No module named '{missing}' (an intended e2e fault)")


def _kill(*pids: int) -> None:
    if os.environ.get("DINGBOT_E2E_KILLS") != "1":
        raise RuntimeError("DINGBOT_E2E_KILLS is not set: only the lifecycle e2e test kills tasks")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def oom(**context):
    _kill(os.getpid())


def supervisor_and_task_die(**context):
    _kill(os.getppid(), os.getpid())


def sleep_long(**context):
    time.sleep(60)


class Defers(BaseOperator):
    """Defers once; ``ends``: ``timeout`` (a one-hour trigger with a 2 s timeout), ``trigger_fails``
    (the trigger raises) or ``fires_then_fails`` (the trigger fires, the resumed method raises)."""

    def __init__(self, *, ends: str, **kwargs):
        super().__init__(**kwargs)
        self.ends = ends

    def execute(self, context):
        if self.ends == "timeout":
            self.defer(
                trigger=TimeDeltaTrigger(timedelta(hours=1)),
                method_name="resume",
                timeout=timedelta(seconds=2),
            )
        trigger = FailureTrigger() if self.ends == "trigger_fails" else SuccessTrigger()
        self.defer(trigger=trigger, method_name="resume")

    def resume(self, context, event=None):
        if self.ends == "fires_then_fails":
            raise ValueError(f"e2e: the remote job reported an error ({event!r})")
        return "resumed"


with DAG(
    DAG_ID,
    schedule=None,
    start_date=START,
    catchup=False,
    default_args={"retries": 0, "retry_delay": timedelta(seconds=1), "ding_on_failure": True},
):
    PythonOperator(task_id="raises", python_callable=fail, retries=1, default_args=RETRY_ALERT)
    PythonOperator(
        task_id="times_out",
        python_callable=sleep_long,
        execution_timeout=timedelta(seconds=2),
        retries=1,
        default_args=RETRY_ALERT,
    )
    PythonSensor(
        task_id="sensor_times_out", python_callable=lambda: False, poke_interval=1, timeout=3, mode="poke"
    )
    Defers(task_id="deferral_times_out", ends="timeout")
    Defers(task_id="trigger_fails", ends="trigger_fails")
    Defers(task_id="trigger_fires_then_fails", ends="fires_then_fails")
    PythonOperator(task_id="oom_killed", python_callable=oom, retries=1, default_args=RETRY_ALERT)
    PythonOperator(task_id="supervisor_killed", python_callable=supervisor_and_task_die)
    PythonOperator(task_id="worker_cannot_start", python_callable=succeed, queue=NOWHERE_QUEUE)
    PythonOperator(task_id="flags_off", python_callable=fail, default_args={"ding_on_failure": False})
    PythonOperator(
        task_id="worker_cannot_import", python_callable=succeed, retries=1, default_args=RETRY_ALERT
    )
    PythonOperator(
        task_id="worker_cannot_import_flags_off",
        python_callable=succeed,
        default_args={"ding_on_failure": False},
    )

    @task
    def mapped_killed(i):
        if i == 1:
            _kill(os.getpid())
        if i == 2:
            raise ValueError("map index 2 fails on its own")
        return i

    mapped_killed.expand(i=[0, 1, 2])
