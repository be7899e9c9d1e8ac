"""The DAG the Alerts page's browser tests explain routes for (tests/e2e/test_alerts_ui.py)."""

import os
import sys
from datetime import datetime

from airflow import DAG
from airflow.operators.python import PythonOperator

# Each process that parses this file says so: the UI server must never (it reads the database).
if os.environ.get("DINGBOT_UI_DAG_PARSES"):
    with open(os.environ["DINGBOT_UI_DAG_PARSES"], "a", encoding="utf-8") as parses:
        parses.write(f"{os.getpid()} {' '.join(sys.argv[:3])}\n")


def fail():
    raise RuntimeError("orders table is locked")


with DAG(
    "ui_orders",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    tags=["team-payments"],
    default_args={"retries": 1, "ding_on_failure": True, "ding_on_retry": True},
):
    PythonOperator(task_id="load_orders", python_callable=fail, ding_conn_id="ops_robot")
    PythonOperator(task_id="report", python_callable=fail)
