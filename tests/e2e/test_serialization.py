"""The flags survive DAG serialization: the scheduler handles executor-reported failures with the
deserialized task, so that is the task the alert decision is made on."""

from __future__ import annotations

import sys

import pytest

from airflow_ext import hooks
from airflow_ext.alert import AlertKind
from tests.conftest import E2E_DAGS

pytestmark = [pytest.mark.e2e, pytest.mark.airflow2]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.models.dagbag import DagBag

    sys.path.insert(0, str(E2E_DAGS))  # as Airflow puts the DAGs folder on sys.path
    try:
        bag = DagBag(dag_folder=str(E2E_DAGS), include_examples=False)
    finally:
        sys.path.remove(str(E2E_DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag


def round_trip(dag):
    from airflow.serialization.serialized_objects import SerializedDAG

    return SerializedDAG.from_dict(SerializedDAG.to_dict(dag))


#: (dag_id, task_id, ding_on_failure, ding_on_retry) the e2e DAGs give their unmapped tasks.
FLAG_CASES = [
    ("dingbot_default_args", "fails", True, True),
    ("dingbot_explicit_kwargs", "failure_only", True, False),
    ("dingbot_explicit_kwargs", "retry_only", False, True),
    ("dingbot_explicit_kwargs", "no_flags", False, False),
    ("dingbot_taskflow", "from_default_args", True, False),
    ("dingbot_taskflow", "group.in_group", True, True),
]


@pytest.mark.parametrize("dag_id, task_id, on_failure, on_retry", FLAG_CASES)
def test_flags_survive_round_trip(dagbag, dag_id, task_id, on_failure, on_retry):
    task = round_trip(dagbag.dags[dag_id]).get_task(task_id)

    assert (task.ding_on_failure, task.ding_on_retry) == (on_failure, on_retry)
    assert hooks.wants_alert(AlertKind.FAILURE, task) is on_failure
    assert hooks.wants_alert(AlertKind.RETRY, task) is on_retry


@pytest.mark.parametrize("task_id", ["classic_mapped", "taskflow_mapped"])
def test_mapped_flags_survive_round_trip_and_unmapping(dagbag, task_id):
    original = dagbag.dags["dingbot_mapped"].get_task(task_id)
    mapped = round_trip(dagbag.dags["dingbot_mapped"]).get_task(task_id)

    assert original.partial_kwargs["ding_on_failure"] is True
    assert mapped.partial_kwargs["ding_on_failure"] is True
    # What the scheduler decides on: the deserialized mapped task, unmapped.
    unmapped = mapped.unmap(None)
    assert hooks.wants_alert(AlertKind.FAILURE, unmapped, mapped) is True
    assert hooks.wants_alert(AlertKind.RETRY, unmapped, mapped) is False


def test_partial_takes_flags_as_keywords():
    from airflow.models.baseoperator import BaseOperator

    partial = BaseOperator.partial(task_id="t", ding_on_retry=True)

    assert partial.kwargs["ding_on_retry"] is True and partial.kwargs["ding_on_failure"] is False


def test_flags_are_type_checked_like_email_flags():
    from airflow.exceptions import AirflowException
    from airflow.models.baseoperator import BaseOperator

    with pytest.raises((TypeError, AirflowException), match="ding_on_failure"):
        BaseOperator(task_id="t", ding_on_failure="yes")
