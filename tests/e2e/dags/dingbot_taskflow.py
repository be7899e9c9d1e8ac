from airflow.decorators import dag, task, task_group
from dingbot_e2e_common import RETRY_ONCE, START


@dag(schedule=None, start_date=START, default_args={**RETRY_ONCE, "ding_on_failure": True})
def dingbot_taskflow():
    @task
    def from_default_args():
        raise ValueError("taskflow failure")

    @task_group(default_args={"ding_on_retry": True})
    def group():
        @task(retries=0)
        def in_group():
            raise ValueError("task group failure")

        in_group()

    from_default_args()
    group()


dingbot_taskflow()
