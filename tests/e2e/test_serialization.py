"""The flags survive DAG serialization: the scheduler handles executor-reported failures with the
deserialized task, so that is the task the alert decision is made on."""

from __future__ import annotations

import json
import os
import subprocess
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


#: (dag_id, task_id, ding_conn_id) of unmapped tasks: as the DAG file gives it, a str or a list.
CONN_ID_CASES = [
    ("dingbot_conn_id", "from_default_args", "team_dingtalk"),
    ("dingbot_conn_id", "explicit_str", "ops_dingtalk"),
    ("dingbot_conn_id", "explicit_list", ["ops_dingtalk", "ml_wecom"]),
    ("dingbot_conn_id", "taskflow_from_default_args", "team_dingtalk"),
    ("dingbot_conn_id", "taskflow_explicit", ["tf_feishu", "tf_slack"]),
    ("dingbot_conn_id", "group.in_group", ["group_wecom", "group_feishu"]),
    ("dingbot_conn_id_listed", "from_default_args", ["first_dingtalk", "second_wecom"]),
    ("dingbot_conn_id_listed", "no_robot", None),
    ("dingbot_default_args", "fails", None),
]

#: The same for mapped tasks (.partial().expand(), classic and TaskFlow).
MAPPED_CONN_ID_CASES = [
    ("dingbot_conn_id", "mapped_from_default_args", "team_dingtalk"),
    ("dingbot_conn_id", "mapped_explicit", ["mapped_a", "mapped_b"]),
    ("dingbot_conn_id", "group.mapped_in_group", ["group_wecom", "group_feishu"]),
    ("dingbot_conn_id", "taskflow_mapped", "team_dingtalk"),
    ("dingbot_conn_id", "taskflow_mapped_explicit", "tf_mapped_dingtalk"),
    ("dingbot_conn_id_listed", "mapped_from_default_args", ["first_dingtalk", "second_wecom"]),
    ("dingbot_conn_id_listed", "taskflow_mapped", ["first_dingtalk", "second_wecom"]),
    ("dingbot_mapped", "classic_mapped", None),
]


def assert_as_given(value, expected):
    """The value as the user wrote it: a str stays a str, a list a list (nothing normalizes it)."""
    assert value == expected and type(value) is type(expected), (value, expected)


@pytest.mark.parametrize("dag_id, task_id, conn_id", CONN_ID_CASES)
def test_conn_id_survives_round_trip(dagbag, dag_id, task_id, conn_id):
    assert_as_given(dagbag.dags[dag_id].get_task(task_id).ding_conn_id, conn_id)
    task = round_trip(dagbag.dags[dag_id]).get_task(task_id)

    assert_as_given(task.ding_conn_id, conn_id)
    assert_as_given(hooks.task_setting("ding_conn_id", task), conn_id)


@pytest.mark.parametrize("dag_id, task_id, conn_id", MAPPED_CONN_ID_CASES)
def test_mapped_conn_id_survives_round_trip_and_unmapping(dagbag, dag_id, task_id, conn_id):
    original = dagbag.dags[dag_id].get_task(task_id)
    mapped = round_trip(dagbag.dags[dag_id]).get_task(task_id)

    assert_as_given(original.partial_kwargs["ding_conn_id"], conn_id)
    assert_as_given(original.ding_conn_id, conn_id)
    assert_as_given(mapped.ding_conn_id, conn_id)
    # What the scheduler decides on: the deserialized mapped task, unmapped.
    assert_as_given(hooks.task_setting("ding_conn_id", mapped.unmap(None), mapped), conn_id)


def test_partial_takes_conn_id_as_keyword():
    from airflow.operators.python import PythonOperator

    unset = PythonOperator.partial(task_id="unset", python_callable=print)
    given = PythonOperator.partial(task_id="given", python_callable=print, ding_conn_id=["a", "b"])

    assert unset.kwargs["ding_conn_id"] is None and given.kwargs["ding_conn_id"] == ["a", "b"]
    assert unset.expand(op_args=[[1]]).ding_conn_id is None
    assert given.expand(op_args=[[1]]).ding_conn_id == ["a", "b"]


@pytest.mark.parametrize("conn_id", ["robot", ["a", "b"], ("a",), None])
def test_conn_id_accepts_a_str_or_a_sequence_of_them(conn_id):
    from airflow.models.baseoperator import BaseOperator

    assert BaseOperator(task_id="t", ding_conn_id=conn_id).ding_conn_id is conn_id


@pytest.mark.parametrize("conn_id", [1, {"robot": 1}, {"a", "b"}])
def test_conn_id_is_type_checked_like_email(conn_id):
    from airflow.exceptions import AirflowException
    from airflow.models.baseoperator import BaseOperator

    with pytest.raises((TypeError, AirflowException), match="ding_conn_id"):
        BaseOperator(task_id="t", ding_conn_id=conn_id)


def test_a_dag_serialized_before_the_patch_loads_without_conn_id(dagbag):
    from airflow.serialization.serialized_objects import SerializedDAG

    data = SerializedDAG.to_dict(dagbag.dags["dingbot_conn_id"])
    for task in data["dag"]["tasks"]:  # as unpatched Airflow wrote it: no such key
        fields = task["__var"]
        assert fields.pop("ding_conn_id", None) or fields["partial_kwargs"].pop("ding_conn_id")
    dag = SerializedDAG.from_dict(data)

    assert dag.get_task("explicit_list").ding_conn_id is None
    mapped = dag.get_task("mapped_explicit")
    assert mapped.ding_conn_id is None
    assert hooks.task_setting("ding_conn_id", mapped.unmap(None), mapped) is None


#: (dag_id, task_id, ding_on_failure, ding_on_retry) the task itself (or its TaskGroup's or DAG's
#: default_args) sets; None: nothing sets it, [dingbot] default_ding_on_* decides.
FLAG_DEFAULT_CASES = [
    ("dingbot_conn_id_flag_defaults", "sets_nothing", None, None),
    ("dingbot_conn_id_flag_defaults", "failure_off", False, None),
    ("dingbot_conn_id_flag_defaults", "retry_off", None, False),
    ("dingbot_conn_id_flag_defaults", "both_on", True, True),
    ("dingbot_conn_id_flag_defaults", "taskflow_sets_nothing", None, None),
    ("dingbot_conn_id_flag_defaults", "taskflow_failure_off", False, None),
    ("dingbot_conn_id_flag_defaults", "group.off", False, False),
    ("dingbot_conn_id_flag_defaults", "group.mapped_off", False, False),
    ("dingbot_conn_id_flag_defaults", "mapped_sets_nothing", None, None),
    ("dingbot_conn_id_flag_defaults", "mapped_failure_off", False, None),
    ("dingbot_conn_id_flag_defaults", "taskflow_mapped", None, None),
    ("dingbot_conn_id_flag_defaults_dag_off", "dag_off", False, False),
    ("dingbot_conn_id_flag_defaults_dag_off", "mapped_dag_off", False, False),
]

#: [dingbot] default_ding_on_failure / default_ding_on_retry of the parsing process; (False, False)
#: is the options left alone.
CONFIGURED_DEFAULTS = [(False, False), (True, False), (False, True), (True, True)]
FLAG_DEFAULTS_FILE = E2E_DAGS / "dingbot_conn_id_flag_defaults.py"


def flag_defaults_env(on_failure: bool, on_retry: bool) -> dict[str, str]:
    """This process's environment with the options set as given (unset when False)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__DINGBOT__DEFAULT_DING_")}
    if on_failure:
        env["AIRFLOW__DINGBOT__DEFAULT_DING_ON_FAILURE"] = "True"
    if on_retry:
        env["AIRFLOW__DINGBOT__DEFAULT_DING_ON_RETRY"] = "True"
    return env


def expected_flags(on_failure, on_retry, sets_failure, sets_retry) -> list[bool]:
    return [
        on_failure if sets_failure is None else sets_failure,
        on_retry if sets_retry is None else sets_retry,
    ]


#: Airflow 2 reads the defaults at import, in the parsing process and in the scheduler alike (both
#: read the same configuration): the whole round trip runs in one process with the options set.
ROUND_TRIP_FLAGS_2 = """
import json, sys
from airflow.models.dagbag import DagBag
from airflow.models.mappedoperator import MappedOperator
from airflow.serialization.serialized_objects import SerializedDAG
from airflow_ext import hooks
from airflow_ext.alert import AlertKind

folder, path = sys.argv[1:]
sys.path.insert(0, folder)
bag = DagBag(dag_folder=path, include_examples=False)
assert not bag.import_errors, bag.import_errors
flags = {}
for dag_id, dag in bag.dags.items():
    for task in SerializedDAG.from_dict(json.loads(json.dumps(SerializedDAG.to_dict(dag)))).tasks:
        mapped = task if isinstance(task, MappedOperator) else None
        unmapped = task.unmap(None) if mapped else task
        flags[f"{dag_id}/{task.task_id}"] = [
            hooks.wants_alert(AlertKind.FAILURE, unmapped, mapped),
            hooks.wants_alert(AlertKind.RETRY, unmapped, mapped),
        ]
print(json.dumps(flags))
"""


@pytest.mark.parametrize("on_failure, on_retry", CONFIGURED_DEFAULTS)
def test_flags_default_to_the_configured_defaults(on_failure, on_retry):
    result = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP_FLAGS_2, str(E2E_DAGS), str(FLAG_DEFAULTS_FILE)],
        env=flag_defaults_env(on_failure, on_retry),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    flags = json.loads(result.stdout.strip().splitlines()[-1])

    assert flags == {
        f"{dag_id}/{task_id}": expected_flags(on_failure, on_retry, sets_failure, sets_retry)
        for dag_id, task_id, sets_failure, sets_retry in FLAG_DEFAULT_CASES
    }
