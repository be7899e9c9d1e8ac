"""What differs between the two Airflow lines the benchmarks measure."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
WORKERS = BENCH / "workers"


@dataclass(frozen=True)
class Line:
    version: str
    #: What the patch series hooks the alert into, and the hook it calls there.
    failure_path: str
    hook: str
    #: The module a task process starts from: its import is what the patch may slow down.
    import_module: str
    #: The operator module of the generated DAG, and how the DAG file imports it.
    operator_module: str
    dag_imports: str

    @property
    def lock(self) -> Path:
        return REPO / "requirements" / f"lock-airflow-{self.version}-py3.11.txt"

    @property
    def is_airflow3(self) -> bool:
        return self.version.startswith("3.")


LINES = {
    "2": Line(
        "2.11.2",
        "handle_failure",
        "send_ding_alert",
        "airflow",
        "airflow.operators.empty",
        "from airflow import DAG\nfrom airflow.operators.empty import EmptyOperator",
    ),
    "3": Line(
        "3.3.2",
        "finalize",
        "task_finalized",
        "airflow.sdk.execution_time.task_runner",
        "airflow.providers.standard.operators.empty",
        "from airflow.providers.standard.operators.empty import EmptyOperator\nfrom airflow.sdk import DAG",
    ),
}


def default_line() -> str:
    """--airflow-line's default: DINGBOT_AIRFLOW_LINE (the tox environments set it), else 3."""
    return os.environ.get("DINGBOT_AIRFLOW_LINE") or "3"
