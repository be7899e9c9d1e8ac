"""The Airflow 2.x adapter: ``TaskInstance._handle_failure`` (patch 0003 of the 2.11.2 series).

Failure handling runs in the task's own process, in the scheduler (executor-reported failures,
with the deserialized task) and in the DAG processor (zombies), always through ``_handle_failure``
with the database at hand: one hook covers them all. The one exception is a task the scheduler
fails for staying queued too long (patch 0005), which Airflow fails without failure handling.

A worker that cannot import the DAG file fails the try before it knows the task; the scheduler then
fails it on the executor's report, which knows nothing of why. So the worker's ``airflow tasks run``
alerts first, with its import error, per the task's flags as the serialized DAG has them (patch
0007); the scheduler's report of the same try is then not sent again (claims).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from airflow_ext import airflow_port, load_failure
from airflow_ext.alert import Alert, AlertKind
from airflow_ext.config import robot_connection
from airflow_ext.hooks import (
    NOT_SENT_LOG,
    alert_if_wanted,
    alert_kind,
    deliver_alert,
    routing_facts,
    wants_alert,
)

log = logging.getLogger(__name__)

#: Every 2.x process that handles failures has the metadata database: the outbox needs no route.
OUTBOX_THROUGH_API_SERVER = False


def send_ding_alert(*, task_instance: Any, task: Any, error: None | str | BaseException) -> None:
    """Called from ``_handle_failure`` after the state is decided, beside the email alert. Never raises."""
    kind = alert_kind(task_instance.state)
    if not wants_alert(kind, task, getattr(task_instance, "task", None)):
        return
    try:
        logical_date = getattr(task_instance, "execution_date", None)
        mapped = getattr(task_instance, "task", None)
        deliver_alert(
            Alert.from_task_instance(
                task_instance, error, kind, logical_date=logical_date, **routing_facts(task, mapped)
            )
        )
    except Exception:  # the contract with the patch: failure handling goes on unchanged, whatever happens
        log.exception(NOT_SENT_LOG, task_instance)


def task_could_not_load(args: Any) -> None:
    """``airflow tasks run`` on a worker, about to fail: the DAG file did not give it the DAG.
    Alert for the queued try with the import error, deciding retry or failure as the scheduler's
    ``handle_failure`` will. Never raises."""
    try:
        ti, task = _queued_try(args)
        if ti is None or task is None:
            return  # not a try the scheduler queued (a manual run), or a DAG it never serialized
        ti.task = task
        kind = AlertKind.RETRY if ti.is_eligible_to_retry() else AlertKind.FAILURE
        if not wants_alert(kind, task, task):
            return
        failure = load_failure.describe(
            ti.dag_id, ti.task_id, *_dag_file_import_errors(args), dag_loaded=False
        )
        alert = Alert.from_task_instance(
            ti, None, kind, logical_date=getattr(ti, "execution_date", None), **routing_facts(task, task)
        )
        deliver_alert(load_failure.with_failure(alert, failure))
    except Exception:
        log.exception(NOT_SENT_LOG, f"{getattr(args, 'dag_id', '?')}.{getattr(args, 'task_id', '?')}")


def _queued_try(args: Any) -> tuple[Any, Any]:
    """The task instance ``args`` names and its task from the serialized DAG (either may be None)."""
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalar(
            select(TaskInstance).where(
                TaskInstance.dag_id == args.dag_id,
                TaskInstance.task_id == args.task_id,
                TaskInstance.run_id == args.execution_date_or_run_id,
                TaskInstance.map_index == int(getattr(args, "map_index", -1)),
            )
        )
        if ti is None:
            return None, None
        session.expunge(ti)
    dag = SerializedDagModel.get_dag(args.dag_id)
    return ti, (dag.task_dict.get(args.task_id) if dag is not None else None)


def _dag_file_import_errors(args: Any) -> tuple[str, dict]:
    """The DAG file ``args`` names (relative to the DAGs folder) and this worker's import errors of
    it, from parsing it again: only done when it failed, and Airflow's DagBag keeps them no further."""
    from airflow import settings
    from airflow.models.dagbag import DagBag
    from airflow.utils.cli import process_subdir

    dag_file = process_subdir(args.subdir)
    path = str(dag_file or "")
    folder = str(settings.DAGS_FOLDER).rstrip("/") + "/"
    rel_path = path[len(folder) :] if path.startswith(folder) else path
    return rel_path, DagBag(dag_file, include_examples=False).import_errors


def stuck_in_queued(task_instance: Any, task: Any, error: str) -> None:
    """The scheduler fails a task stuck in queued (patch 0005): no ``_handle_failure`` runs."""
    logical_date = getattr(task_instance, "execution_date", None)
    alert_if_wanted(AlertKind.FAILURE, task_instance, task, error, logical_date)


def queue_in_outbox(alert: Alert) -> tuple[bool, str]:
    """The outbox backend's way in: every 2.x process that handles failures has the database."""
    from airflow_ext.dingbot import queue_in_database

    return queue_in_database(alert), "database"


def fastapi_apps() -> list[dict]:
    """Airflow 2 has no api-server: its task processes write to the outbox themselves."""
    return []


def appbuilder_views() -> list[dict]:
    """The Alerts page: a Flask-AppBuilder view under Browse in the webserver."""
    from airflow_ext.ui.fab_view import appbuilder_views as alerts_views

    return alerts_views()


def external_views() -> list[dict]:
    """Airflow 2's UI has no external views: the Alerts page is an appbuilder view."""
    return []


def get_connection(conn_id: str):
    """A robot Connection from any of Airflow's secrets backends (environment, database, vault...)."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.hooks.base import BaseHook

    from airflow_ext.errors import ConfigError

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ConfigError(
            f"Connection {conn_id!r} is not defined (robot Connections: airflow connections add)"
        ) from None
    except Exception as err:
        raise ConfigError(f"Connection {conn_id!r} cannot be read ({type(err).__name__})") from None
    return robot_connection(conn_id, conn)


def load_dags() -> tuple[dict, dict]:
    """Every DAG parsed from the DAGs folder, by id, and the files that failed to import (what
    ``airflow-ext route`` explains and ``airflow-ext check --dags`` checks)."""
    from airflow.models.dagbag import DagBag

    bag = DagBag(include_examples=False, read_dags_from_db=False)
    return bag.dags, bag.import_errors


def metadata_engine():
    """The metadata database's engine: every 2.11 process that runs failure handling has one
    (None where it is not configured)."""
    from airflow import settings

    return getattr(settings, "engine", None)


def redact(text: str) -> str:
    """``text`` with the secrets of Airflow's masker (Connections' passwords, sensitive Variables)
    replaced. Raises RuntimeError where the logging config has no masker (``alert.masked`` then
    keeps the text as it is, as Airflow's own logs do)."""
    from airflow.utils.log.secrets_masker import redact as airflow_redact

    return airflow_redact(text)


def mask_secret(value: str) -> None:
    from airflow.utils.log.secrets_masker import mask_secret as airflow_mask_secret

    airflow_mask_secret(value)


def stats():
    from airflow.stats import Stats

    return Stats


# Importing this adapter makes it the core's Airflow (airflow_ext.airflow_port): the patches
# import it, and only they, the CLI and the plugin choose the line.
airflow_port.install(sys.modules[__name__])
