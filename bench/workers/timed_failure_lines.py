"""How each Airflow line fails one try, for ``failure_path_worker.py``:

* Airflow 2: ``ti.handle_failure(error=ValueError(...), session=session)`` on a TaskInstance of a
  real DagRun in the database, put back to RUNNING (committed, untimed) before each call;
* Airflow 3: the task runner's ``finalize(ti, FAILED, context, log, error)``, the function the
  worker's task process ends a failed try in, on a RuntimeTaskInstance (no database there).

Both build a one-task DAG in-process, with the ding flags passed through ``default_args`` (which
stock Airflow ignores) and ``retries=0``, so every call is a final failure.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from timed_failure import FailurePathBench, fail_deep


class HandleFailureBench(FailurePathBench):
    """Airflow 2: ``TaskInstance.handle_failure`` of a TaskInstance in the database."""

    hook_module, hook_name = "airflow_ext.adapters.airflow2", "send_ding_alert"
    patched_module = "airflow.models.taskinstance"

    def __init__(self) -> None:
        t0 = time.perf_counter()
        import airflow
        from airflow.models.dag import DAG
        from airflow.models.taskinstance import TaskInstance
        from airflow.operators.python import PythonOperator
        from airflow.utils.session import create_session
        from airflow.utils.state import DagRunState, TaskInstanceState
        from airflow.utils.types import DagRunType

        # The `airflow` CLI loads the auth manager, whose FAB models define the ab_user table that
        # task_instance_note refers to; without it SQLAlchemy cannot flush a TaskInstance.
        try:
            import airflow.providers.fab.auth_manager.models  # noqa: F401
        except ImportError:
            pass

        self.airflow_version = airflow.__version__
        self.TaskInstanceState = TaskInstanceState
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        dag_id = f"bench_handle_failure_{os.getpid()}"
        self.dag = DAG(
            dag_id,
            schedule=None,
            start_date=start,
            catchup=False,
            # Passed through default_args so the very same code runs on stock Airflow.
            default_args={"retries": 0, "ding_on_failure": True, "ding_on_retry": True},
        )
        self.task = PythonOperator(task_id="fails", python_callable=fail_deep, op_args=[3], dag=self.dag)
        self.dag.sync_to_db()
        self._session_cm = create_session()
        self.session = self._session_cm.__enter__()
        run_id = f"bench__{os.getpid()}"
        self.dagrun = self.dag.create_dagrun(
            run_id=run_id,
            state=DagRunState.RUNNING,
            execution_date=start,
            data_interval=(start, start),
            run_type=DagRunType.MANUAL,
            session=self.session,
        )
        self.session.commit()
        ti = self.dagrun.get_task_instance(self.task.task_id, session=self.session)
        assert isinstance(ti, TaskInstance), ti
        ti.refresh_from_task(self.task)
        self.ti = ti
        self.try_number = 0
        self.setup_s = time.perf_counter() - t0

    def reset(self) -> None:
        # A new try each time: every alert is a distinct message (its msgUuid changes with the try).
        self.try_number += 1
        self.ti.state = self.TaskInstanceState.RUNNING
        self.ti.try_number = self.try_number
        self.ti.end_date = None
        self.session.merge(self.ti)
        self.session.commit()

    def fail(self, error: BaseException) -> str:
        self.ti.handle_failure(error=error, session=self.session)
        state = getattr(self.ti.state, "value", self.ti.state)
        self.session.commit()
        return str(state)

    def call_hook(self, error: BaseException) -> None:
        from airflow_ext.adapters.airflow2 import send_ding_alert

        self.ti.state = self.TaskInstanceState.FAILED  # as _handle_failure leaves it before the hook
        send_ding_alert(task_instance=self.ti, task=self.task, error=error)

    def close(self) -> None:
        self._session_cm.__exit__(None, None, None)


class FinalizeBench(FailurePathBench):
    """Airflow 3: the task runner's ``finalize`` of a RuntimeTaskInstance, as a failed try ends."""

    hook_module, hook_name = "airflow_ext.adapters.airflow3", "task_finalized"
    patched_module = "airflow.sdk.execution_time.task_runner"

    def __init__(self) -> None:
        t0 = time.perf_counter()
        import uuid

        import airflow
        import structlog
        from airflow.providers.standard.operators.python import PythonOperator
        from airflow.sdk import DAG
        from airflow.sdk.api.datamodels._generated import TaskInstanceState
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance, finalize

        self.airflow_version = airflow.__version__
        self.FAILED = TaskInstanceState.FAILED
        self.finalize = finalize
        self.log = structlog.get_logger(logger_name="task")
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.dag = DAG(
            f"bench_finalize_{os.getpid()}",
            schedule=None,
            start_date=start,
            catchup=False,
            # Passed through default_args so the very same code runs on stock Airflow.
            default_args={"retries": 0, "ding_on_failure": True, "ding_on_retry": True},
        )
        self.task = PythonOperator(task_id="fails", python_callable=fail_deep, op_args=[3], dag=self.dag)
        self.ti = RuntimeTaskInstance.model_construct(
            id=uuid.uuid4(),
            task_id=self.task.task_id,
            dag_id=self.dag.dag_id,
            run_id=f"bench__{os.getpid()}",
            try_number=0,
            dag_version_id=uuid.uuid4(),
            map_index=-1,
            hostname="bench-worker",
            task=self.task,
            max_tries=0,
            start_date=datetime.now(timezone.utc),
            state=TaskInstanceState.RUNNING,
        )
        self.setup_s = time.perf_counter() - t0

    def reset(self) -> None:
        # A new try each time: every alert is a distinct message (its msgUuid changes with the try).
        self.ti.try_number += 1
        self.ti.end_date = None

    def fail(self, error: BaseException) -> str:
        self.ti.end_date = datetime.now(timezone.utc)
        self.finalize(self.ti, self.FAILED, {"ti": self.ti}, self.log, error)
        return self.FAILED.value

    def call_hook(self, error: BaseException) -> None:
        from airflow_ext.adapters.airflow3 import task_finalized

        task_finalized(self.ti, self.FAILED, error)


def make_bench() -> FailurePathBench:
    from airflow import __version__

    return FinalizeBench() if __version__.startswith("3.") else HandleFailureBench()
