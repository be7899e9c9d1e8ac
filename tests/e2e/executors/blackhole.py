"""An executor whose tasks never start: each task it is given stays queued, as on a Celery queue
that no worker listens on. Loaded by the scheduler as ``[core] executor = blackhole.BlackHoleExecutor``
(tests/e2e/test_stuck_in_queued.py puts this folder on PYTHONPATH). Works on Airflow 2 and 3."""

from airflow.executors.base_executor import BaseExecutor


class BlackHoleExecutor(BaseExecutor):
    def execute_async(self, key, command, queue=None, executor_config=None):  # Airflow 2: taken, never run
        return None

    def _process_workloads(self, workloads):  # Airflow 3: taken, never run
        for workload in workloads:
            self.queued_tasks.pop(workload.key, None)
            self.running.add(workload.key)

    def sync(self):
        pass

    def revoke_task(self, *, ti):
        """What the scheduler calls before it requeues (or fails) a task stuck in queued."""
        self.queued_tasks.pop(ti.key, None)
        self.running.discard(ti.key)

    def end(self):
        pass

    def terminate(self):
        pass
