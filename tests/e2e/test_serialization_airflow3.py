"""Airflow 3: the flags survive DAG serialization, and DAGs that do not use them keep their hash.

The scheduler decides executor-reported failures on the deserialized task, so the flags must come
through serialization (mapped tasks too). And a DAG without the flags must serialize exactly as on
unpatched Airflow: a changed hash gives every DAG of a deployment a new DAG version on upgrade.
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
from tests.e2e.test_serialization import FLAG_CASES

pytestmark = [pytest.mark.e2e, pytest.mark.airflow3]

FLAGLESS_DAGS = Path(__file__).resolve().parent / "serialization_dags"
HASHES = Path(__file__).resolve().parent / "serialized_hashes.py"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    sys.path.insert(0, str(E2E_DAGS))  # as Airflow puts the DAGs folder on sys.path
    try:
        bag = DagBag(dag_folder=str(E2E_DAGS / "dingbot_mapped.py"))
        for name in ("dingbot_default_args.py", "dingbot_explicit_kwargs.py", "dingbot_taskflow.py"):
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


def _hashes(python: Path) -> dict[str, str]:
    result = subprocess.run(
        [str(python), str(HASHES), str(FLAGLESS_DAGS)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_flagless_dags_keep_their_hash(unpatched_bin):
    patched, released = _hashes(Path(sys.executable)), _hashes(unpatched_bin / "python")
    assert set(patched) == {"flagless_classic", "flagless_mapped_and_taskflow"}
    assert patched == released
