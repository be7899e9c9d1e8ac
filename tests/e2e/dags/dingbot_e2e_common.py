"""Helpers shared by the end-to-end DAGs (not a DAG file)."""

from datetime import datetime, timedelta

START = datetime(2026, 1, 1)
#: One retry, immediately, so `airflow dags test` runs both tries without waiting.
RETRY_ONCE = {"retries": 1, "retry_delay": timedelta(seconds=0)}


def fail(*args, **kwargs):
    raise ValueError(f"e2e failure with args={args!r}")


def succeed(*args, **kwargs):
    return "ok"
