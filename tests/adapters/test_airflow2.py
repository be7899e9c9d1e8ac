"""The Airflow 2 adapter's stuck-in-queued entry: the scheduler fails the task without failure handling."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_ext import hooks
from airflow_ext.adapters import airflow2
from airflow_ext.alert import AlertKind

pytestmark = pytest.mark.airflow2


@pytest.fixture
def sent(monkeypatch):
    alerts = []
    monkeypatch.setattr(hooks, "deliver_alert", alerts.append)
    return alerts


def queued_ti():
    return SimpleNamespace(
        dag_id="d",
        task_id="t",
        run_id="r",
        map_index=-1,
        try_number=1,
        max_tries=2,
        hostname=None,
        log_url=None,
        state="queued",
        execution_date=None,
    )


@pytest.mark.parametrize(
    "task, expected",
    [
        (SimpleNamespace(ding_on_failure=True, ding_on_retry=False), [AlertKind.FAILURE]),
        (SimpleNamespace(ding_on_failure=False, ding_on_retry=True), []),
        # A mapped task: its flags are in partial_kwargs (Airflow 2 drops them when unmapping).
        (SimpleNamespace(partial_kwargs={"ding_on_failure": True}), [AlertKind.FAILURE]),
        (SimpleNamespace(partial_kwargs={}), []),
    ],
)
def test_stuck_in_queued_alerts_a_final_failure_per_the_flag(sent, task, expected):
    airflow2.stuck_in_queued(queued_ti(), task, "Task was requeued more than 2 times and will be failed.")
    assert [a.kind for a in sent] == expected
    assert all(a.exception_message.startswith("Task was requeued") and a.max_tries == 2 for a in sent)


def test_stuck_in_queued_never_raises(monkeypatch):
    monkeypatch.setattr(hooks, "deliver_alert", lambda alert: 1 / 0)
    airflow2.stuck_in_queued(queued_ti(), SimpleNamespace(ding_on_failure=True), "x")
    airflow2.stuck_in_queued(None, SimpleNamespace(ding_on_failure=True), "x")
