"""A task that fails (once, then again on its retry) with a huge Chinese message raised deep in a call
chain: tests/e2e/test_fault_matrix.py checks that every channel still gets an alert within its limits.

The message is built when the task runs, not when the file is parsed: parsing stays cheap."""

from airflow import DAG
from airflow.operators.python import PythonOperator
from dingbot_e2e_common import RETRY_ONCE, START

#: Lines of the exception message, and frames between the task's callable and the raise.
MESSAGE_LINES = 5000
DEPTH = 150
LINE = "数据同步任务失败：上游接口返回异常，连接超时，请检查网络配置与账号权限。"


def _descend(depth: int) -> None:
    if depth > 0:
        _descend(depth - 1)
        return
    raise RuntimeError("\n".join(f"第{number}行：{LINE}" for number in range(1, MESSAGE_LINES + 1)))


def raise_cjk(*args, **kwargs):
    _descend(DEPTH)


with DAG("dingbot_fault_matrix_cjk", schedule=None, start_date=START, default_args=RETRY_ONCE) as dag:
    PythonOperator(task_id="raises_cjk", python_callable=raise_cjk, ding_on_retry=True, ding_on_failure=True)
