"""How a try can end, one DAG per case, for tests/e2e/test_failure_kinds.py.

The ``dingbot_kinds_*`` DAGs run under ``airflow dags test``. ``dingbot_kinds_scheduled`` needs the
scheduler and the triggerer: under ``dags test`` an execution timeout (a BaseException) aborts the
command before the retry, a failing trigger never reaches failure handling, and a deferral's
timeout is not enforced. Every task asks for both alerts, so a missing or an extra alert is the
failure handling's doing, not a flag's.
"""

import time
from datetime import timedelta

from airflow import DAG
from airflow.exceptions import AirflowFailException, AirflowSkipException
from airflow.models.baseoperator import BaseOperator
from airflow.operators.python import PythonOperator
from airflow.sensors.python import PythonSensor
from airflow.triggers.testing import FailureTrigger, SuccessTrigger
from dingbot_e2e_common import RETRY_ONCE, START, succeed

try:  # Airflow 3
    from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
except ImportError:  # Airflow 2
    from airflow.triggers.temporal import TimeDeltaTrigger

DING = {"ding_on_retry": True, "ding_on_failure": True}
#: Retries left that a retried failure would use: sensor timeouts and AirflowFailException must not.
RETRY_TWICE = {"retries": 2, "retry_delay": timedelta(seconds=0)}
#: A sensor that is never satisfied: it times out after 3 s, poking every second.
SENSOR = {"python_callable": lambda: False, "poke_interval": 1, "timeout": 3}


def sleep_past_timeout():
    time.sleep(120)  # interrupted by execution_timeout


def fail_without_retry():
    raise AirflowFailException("e2e: no use retrying")


def skip():
    raise AirflowSkipException("e2e: nothing to do")


class DeferringOperator(BaseOperator):
    """Defers once; ``trigger_kind`` picks how the deferral ends.

    ``fails``: the trigger raises (the triggerer fails the task instance); ``fires_then_fails``:
    the trigger fires and the resumed method raises; ``never_fires``: the deferral times out;
    ``fires``: the trigger fires and the task succeeds.
    """

    def __init__(self, *, trigger_kind: str, **kwargs):
        super().__init__(**kwargs)
        self.trigger_kind = trigger_kind

    def execute(self, context):
        if self.trigger_kind == "fails":
            self.defer(trigger=FailureTrigger(), method_name="resume")
        elif self.trigger_kind == "never_fires":
            self.defer(
                trigger=TimeDeltaTrigger(timedelta(hours=1)),
                method_name="resume",
                timeout=timedelta(seconds=2),
            )
        else:
            self.defer(trigger=SuccessTrigger(), method_name="resume")

    def resume(self, context, event=None):
        if self.trigger_kind == "fires_then_fails":
            raise ValueError(f"e2e: the remote job reported an error ({event!r})")
        return "resumed"


with DAG("dingbot_kinds_poke_timeout", schedule=None, start_date=START, default_args=DING):
    PythonSensor(task_id="poke_sensor", mode="poke", **SENSOR, **RETRY_TWICE)

with DAG("dingbot_kinds_reschedule_timeout", schedule=None, start_date=START, default_args=DING):
    PythonSensor(task_id="reschedule_sensor", mode="reschedule", **SENSOR, **RETRY_TWICE)

with DAG("dingbot_kinds_fail_exception", schedule=None, start_date=START, default_args=DING):
    PythonOperator(task_id="fail_now", python_callable=fail_without_retry, **RETRY_TWICE)

with DAG("dingbot_kinds_quiet", schedule=None, start_date=START, default_args={**DING, **RETRY_TWICE}):
    PythonOperator(task_id="skips", python_callable=skip)
    PythonOperator(task_id="succeeds", python_callable=succeed)
    # A sensor timeout turned into a skip: no failure handling at all.
    PythonSensor(task_id="soft_fail_sensor", mode="poke", soft_fail=True, **SENSOR)

with DAG("dingbot_kinds_scheduled", schedule=None, start_date=START, default_args=DING):
    PythonOperator(
        task_id="too_slow",
        python_callable=sleep_past_timeout,
        execution_timeout=timedelta(seconds=2),
        **RETRY_ONCE,
    )
    PythonSensor(task_id="reschedule_sensor", mode="reschedule", **SENSOR, **RETRY_TWICE)
    # A failed deferral is an ordinary (retryable) failure in Airflow 2: no retries, one try.
    for kind in ("fails", "fires_then_fails", "never_fires"):
        DeferringOperator(task_id=f"trigger_{kind}", trigger_kind=kind, retries=0)
    DeferringOperator(task_id="trigger_fires", trigger_kind="fires", **RETRY_TWICE)
    PythonOperator(task_id="skips", python_callable=skip, **RETRY_TWICE)
