"""Airflow 3: the flags and ding_conn_id survive DAG serialization, and DAGs that do not use them
keep their hash.

The scheduler decides executor-reported failures on the deserialized task, so the flags and the
robots must come through serialization (mapped tasks too). [dingbot] default_ding_on_* is read
where the DAG is parsed: the serialized DAG carries it to the scheduler. And a DAG without the ding
arguments must serialize exactly as on unpatched Airflow: a changed hash gives every DAG of a
deployment a new DAG version on upgrade.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_ext import hooks
from airflow_ext.alert import AlertKind
from tests.conftest import E2E_DAGS
from tests.e2e.test_serialization import (
    CONFIGURED_DEFAULTS,
    CONN_ID_CASES,
    FLAG_CASES,
    FLAG_DEFAULT_CASES,
    FLAG_DEFAULTS_FILE,
    MAPPED_CONN_ID_CASES,
    assert_as_given,
    expected_flags,
    flag_defaults_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.airflow3]

FLAGLESS_DAGS = Path(__file__).resolve().parent / "serialization_dags"
HASHES = Path(__file__).resolve().parent / "serialized_hashes.py"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    sys.path.insert(0, str(E2E_DAGS))  # as Airflow puts the DAGs folder on sys.path
    try:
        bag = DagBag(dag_folder=str(E2E_DAGS / "dingbot_mapped.py"))
        for name in (
            "dingbot_default_args.py",
            "dingbot_explicit_kwargs.py",
            "dingbot_taskflow.py",
            "dingbot_conn_id.py",
        ):
            bag.process_file(str(E2E_DAGS / name))
    finally:
        sys.path.remove(str(E2E_DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag


def round_trip(dag):
    from airflow.serialization.serialized_objects import DagSerialization

    data = DagSerialization.to_dict(dag)
    DagSerialization.validate_schema(data)
    return DagSerialization.from_dict(data)


@pytest.mark.parametrize(
    "dag_id, task_id, on_failure, on_retry",
    [
        *FLAG_CASES,
        # Airflow 3's deserialized mapped operator answers for itself (no unmapping needed).
        ("dingbot_mapped", "classic_mapped", True, False),
        ("dingbot_mapped", "taskflow_mapped", True, False),
    ],
)
def test_flags_survive_round_trip(dagbag, dag_id, task_id, on_failure, on_retry):
    task = round_trip(dagbag.dags[dag_id]).get_task(task_id)

    assert (task.ding_on_failure, task.ding_on_retry) == (on_failure, on_retry)
    assert hooks.wants_alert(AlertKind.FAILURE, task) is on_failure
    assert hooks.wants_alert(AlertKind.RETRY, task) is on_retry


def test_a_dag_serialized_before_the_patch_loads_with_the_flags_off(dagbag):
    from airflow.serialization.serialized_objects import DagSerialization

    data = DagSerialization.to_dict(dagbag.dags["dingbot_default_args"])
    for task in data["dag"]["tasks"]:  # as unpatched Airflow wrote it: no such keys
        task["__var"].pop("ding_on_failure", None)
        task["__var"].pop("ding_on_retry", None)
    task = DagSerialization.from_dict(data).get_task("fails")
    assert (task.ding_on_failure, task.ding_on_retry) == (False, False)


def test_sdk_mapped_operator_and_partial_expose_the_flags():
    from airflow.sdk import BaseOperator

    partial = BaseOperator.partial(task_id="t", ding_on_retry=True)
    assert partial.kwargs["ding_on_retry"] is True and partial.kwargs["ding_on_failure"] is False
    mapped = partial.expand(doc=["a", "b"])
    assert (mapped.ding_on_failure, mapped.ding_on_retry) == (False, True)


def test_flags_are_type_checked_like_email_flags():
    from airflow.sdk import BaseOperator

    with pytest.raises(TypeError, match="ding_on_failure"):
        BaseOperator(task_id="t", ding_on_failure="yes")


def _serialize(python: Path, dags: Path, dump: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """Serialize the DAGs of ``dags`` with ``python``'s Airflow: their hashes; the DAGs go to ``dump``."""
    result = subprocess.run(
        [str(python), str(HASHES), str(dags), str(dump)],
        env=env if env is not None else flag_defaults_env(False, False),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def released(unpatched_bin, tmp_path_factory):
    """The flagless DAGs serialized by unpatched Airflow: ``(hashes, {dag_id: serialized DAG})``."""
    dump = tmp_path_factory.mktemp("released") / "dags.json"
    hashes = _serialize(unpatched_bin / "python", FLAGLESS_DAGS, dump)
    return hashes, json.loads(dump.read_text())


def test_flagless_dags_keep_their_hash(released, tmp_path):
    patched = _serialize(Path(sys.executable), FLAGLESS_DAGS, tmp_path / "dags.json")
    assert set(patched) == {
        "flagless_classic",
        "flagless_mapped_and_taskflow",
        "flagless_groups_and_defaults",
        "flagless_dag_default_args",
    }
    assert patched == released[0]


def test_dags_serialized_by_unpatched_airflow_load_with_no_robot_and_the_flags_off(released):
    from airflow.serialization.serialized_objects import DagSerialization

    tasks = [task for data in released[1].values() for task in DagSerialization.from_dict(data).tasks]

    assert any(task.is_mapped for task in tasks) and any(not task.is_mapped for task in tasks)
    for task in tasks:
        assert (task.ding_on_failure, task.ding_on_retry, task.ding_conn_id) == (False, False, None), task


@pytest.mark.parametrize(
    "dag_id, task_id, conn_id",
    # Airflow 3's deserialized mapped operator answers for itself (no unmapping needed).
    [*CONN_ID_CASES, *MAPPED_CONN_ID_CASES],
)
def test_conn_id_survives_round_trip(dagbag, dag_id, task_id, conn_id):
    assert_as_given(dagbag.dags[dag_id].get_task(task_id).ding_conn_id, conn_id)
    task = round_trip(dagbag.dags[dag_id]).get_task(task_id)

    assert_as_given(task.ding_conn_id, conn_id)
    assert_as_given(hooks.task_setting("ding_conn_id", task), conn_id)


def test_a_dag_serialized_before_the_patch_loads_without_conn_id(dagbag):
    from airflow.serialization.serialized_objects import DagSerialization

    data = DagSerialization.to_dict(dagbag.dags["dingbot_conn_id"])
    for task in data["dag"]["tasks"]:  # as unpatched Airflow wrote it: no such key
        fields = task["__var"]
        assert fields.pop("ding_conn_id", None) or fields["partial_kwargs"].pop("ding_conn_id")
    dag = DagSerialization.from_dict(data)

    assert dag.get_task("explicit_list").ding_conn_id is None
    assert dag.get_task("mapped_explicit").ding_conn_id is None


def test_sdk_mapped_operator_and_partial_expose_conn_id():
    from airflow.sdk import BaseOperator

    unset = BaseOperator.partial(task_id="unset")
    given = BaseOperator.partial(task_id="given", ding_conn_id=["a", "b"])

    assert "ding_conn_id" not in unset.kwargs and given.kwargs["ding_conn_id"] == ["a", "b"]
    assert unset.expand(doc=["x"]).ding_conn_id is None
    assert given.expand(doc=["x", "y"]).ding_conn_id == ["a", "b"]


@pytest.mark.parametrize("conn_id", ["robot", ["a", "b"], ("a",), None])
def test_conn_id_accepts_a_str_or_a_sequence_of_them(conn_id):
    from airflow.sdk import BaseOperator

    assert BaseOperator(task_id="t", ding_conn_id=conn_id).ding_conn_id is conn_id


@pytest.mark.parametrize("conn_id", [1, {"robot": 1}, {"a", "b"}])
def test_conn_id_is_type_checked_like_email(conn_id):
    from airflow.sdk import BaseOperator

    with pytest.raises(TypeError, match="ding_conn_id"):
        BaseOperator(task_id="t", ding_conn_id=conn_id)


@pytest.mark.parametrize("on_failure, on_retry", CONFIGURED_DEFAULTS)
def test_flags_default_to_the_configured_defaults_of_the_parsing_process(tmp_path, on_failure, on_retry):
    from airflow.serialization.definitions.baseoperator import SerializedBaseOperator
    from airflow.serialization.serialized_objects import DagSerialization

    dump = tmp_path / "dags.json"
    _serialize(Path(sys.executable), FLAG_DEFAULTS_FILE, dump, flag_defaults_env(on_failure, on_retry))
    serialized = json.loads(dump.read_text())

    # Decided where the DAG was parsed: the serialized task says so (client_defaults included).
    data = serialized["dingbot_conn_id_flag_defaults"]
    (task,) = (t["__var"] for t in data["dag"]["tasks"] if t["__var"]["task_id"] == "sets_nothing")
    stored = {**data.get("client_defaults", {}).get("tasks", {}), **task}
    assert (stored.get("ding_on_failure", False), stored.get("ding_on_retry", False)) == (
        on_failure,
        on_retry,
    )
    if not (on_failure or on_retry):  # left alone: nothing new is written
        assert not [key for key in stored if key.startswith("ding_")], stored
    # This process has the options unset: what the deserialized tasks say came with the DAG.
    assert (SerializedBaseOperator.ding_on_failure, SerializedBaseOperator.ding_on_retry) == (False, False)
    flags = {
        f"{dag_id}/{task.task_id}": [
            hooks.wants_alert(AlertKind.FAILURE, task),
            hooks.wants_alert(AlertKind.RETRY, task),
        ]
        for dag_id, dag_data in serialized.items()
        for task in DagSerialization.from_dict(dag_data).tasks
    }
    assert flags == {
        f"{dag_id}/{task_id}": expected_flags(on_failure, on_retry, sets_failure, sets_retry)
        for dag_id, task_id, sets_failure, sets_retry in FLAG_DEFAULT_CASES
    }
