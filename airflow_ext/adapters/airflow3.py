"""The Airflow 3.x adapter: the places the 3.3.2 series calls, each building an Alert.

Airflow 3 has no single failure choke point; a try ends in one of three kinds of process, each
with its own task object, and task processes have no database:

* the task runner's ``finalize`` (patch 0004): exceptions, ``execution_timeout``, sensor and
  deferral timeouts, failed triggers (the task resumes on a worker). The exception is here.
* the supervisor (patch 0005), when the task process ended without ``finalize`` (SIGKILL, OOM,
  segfault, ``os._exit``): Airflow itself reports nothing. The task runner leaves the task's
  flags in a :mod:`~airflow_ext.handoff` note at start-up (:func:`task_started`), which
  ``finalize`` removes once it has handled the try, so exactly one of the two alerts.
* the supervisor too when the worker could not load the DAG or task at start-up (patch 0011:
  an import error on this worker): the task runner leaves why (:func:`task_could_not_load`), and
  the supervisor asks the api-server for the task's flags as its serialized DAG has them
  (:func:`alert_settings_of_try`), since the worker never learnt them.
* the scheduler's executor-event path (patch 0006), for failures the task never recorded: killed
  externally, a worker that could not start it, and the heartbeat-timeout path (which Airflow
  3.3.2 runs twice for callbacks, but once through this path); and its stuck-in-queued path
  (patch 0007), which fails a task without any failure handling.

With the outbox backend (:func:`queue_in_outbox`), a process that has the metadata database (the
scheduler, ``dags test``) records the alert itself. A task process has none: ``finalize`` hands its
alert to the supervisor (a :mod:`~airflow_ext.handoff` file), and the supervisor, which holds the
try's Execution API token, posts it and its own alerts to the outbox route the package's plugin adds
to the api-server (:func:`fastapi_apps`, :mod:`airflow_ext.outbox.api`).

Every function called from Airflow's failure handling here never raises.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
import signal
import sys
import uuid
from typing import Any, Callable

from airflow_ext import airflow_port, handoff, load_failure
from airflow_ext.alert import Alert, AlertKind, task_log_url
from airflow_ext.errors import DeliveryError
from airflow_ext.hooks import (
    FLAG_FOR_KIND,
    NOT_SENT_LOG,
    alert_if_wanted,
    alert_kind,
    deliver_alert,
    routing_facts,
    task_flag,
)

log = logging.getLogger(__name__)

#: Task processes have no database: outbox alerts go through the api-server (see the module doc).
OUTBOX_THROUGH_API_SERVER = True

#: While ``finalize`` alerts: the try (task instance id, try number) a process without the
#: database hands its outbox alert to the supervisor for.
_RELAY_FOR: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "dingbot_relay_for", default=None
)
#: While the supervisor alerts: the Execution API's URL and the try's token, to reach the outbox.
_EXECUTION_API: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "dingbot_execution_api", default=None
)
#: While the supervisor alerts: its Execution API client, to read robot Connections the try may read.
_SUPERVISOR_CLIENT: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "dingbot_supervisor_client", default=None
)


def task_started(ti: Any) -> None:
    """Task runner, after start-up: leave the flags of a task that wants alerts for its supervisor."""
    try:
        on_failure = task_flag(FLAG_FOR_KIND[AlertKind.FAILURE], ti.task)
        on_retry = task_flag(FLAG_FOR_KIND[AlertKind.RETRY], ti.task)
        if not (on_failure or on_retry):
            return
        handoff.leave(
            ti.id,
            ti.try_number,
            handoff.Handoff(
                ding_on_failure=on_failure,
                ding_on_retry=on_retry,
                max_tries=int(ti.max_tries or 0),
                logical_date=_isoformat(_runtime_logical_date(ti)),
                log_url=task_log_url(ti),
                **routing_facts(ti.task),
            ),
        )
    except Exception:
        log.exception("DingTalk alerts for %s: could not leave the note for the supervisor", _name(ti))


def task_could_not_load(startup: Any, import_errors: dict | None, dag: Any = None) -> None:
    """Task runner's start-up, about to fail the try: this worker could not load the DAG (``dag``
    None: the file did not import here, or has no such DAG) or the task. Leave why for the
    supervisor, which alerts per the flags the metadata database has for the task."""
    ti = getattr(startup, "ti", None)
    try:
        failure = load_failure.describe(
            getattr(ti, "dag_id", "?"),
            getattr(ti, "task_id", "?"),
            str(getattr(startup, "dag_rel_path", "") or ""),
            import_errors or {},
            dag_loaded=dag is not None,
        )
        handoff.leave_load_failure(ti.id, ti.try_number, failure)
    except Exception:
        log.exception("DingTalk alerts for %s: could not leave the start-up failure", _name(ti))


def task_finalized(ti: Any, state: Any, error: BaseException | None) -> None:
    """Task runner's ``finalize``: alert per the task's flags, then tell the supervisor it is done."""
    relay = _RELAY_FOR.set((str(ti.id), int(ti.try_number)))
    try:
        alert_if_wanted(alert_kind(state), ti, ti.task, error, _runtime_logical_date(ti))
    except Exception:  # ti without a task: nothing to decide on
        log.exception(NOT_SENT_LOG, _name(ti))
    finally:
        _RELAY_FOR.reset(relay)
        try:
            handoff.clear(ti.id, ti.try_number)
        except Exception:
            log.exception("DingTalk alerts: could not remove the supervisor's note")


def task_process_ended(ti: Any, exit_code: int | None, state: Any, client: Any = None) -> None:
    """Supervisor, after reporting the state: queue the alert ``finalize`` handed over, or alert for
    a try its task process never handled. ``client`` is the supervisor's Execution API client."""
    try:
        relayed = handoff.take_alert(ti.id, ti.try_number)
        note = handoff.take(ti.id, ti.try_number)
        could_not_load = handoff.take_load_failure(ti.id, ti.try_number)
        handoff.remove_stale()
        kind = alert_kind(state)
        if relayed is None and (kind is None or (note is None and could_not_load is None)):
            return  # most tries: nothing to send, and nothing to set up for it
        with _execution_api_of(client):
            if relayed is not None:
                alert = Alert.from_dict(relayed)
            elif note is not None:
                if not getattr(note, FLAG_FOR_KIND[kind]):
                    return
                alert = _killed_process_alert(ti, exit_code, kind, note)
            else:
                note = _settings_from_api_server(ti)
                if note is None or not getattr(note, FLAG_FOR_KIND[kind]):
                    return
                alert = _load_failure_alert(ti, kind, note, could_not_load)
            deliver_alert(alert)
    except Exception:
        log.exception(NOT_SENT_LOG, _name(ti))


def _settings_from_api_server(ti: Any) -> handoff.Handoff | None:
    """The task's ding flags and routing facts as the metadata database has them; None (logged)
    when the api-server cannot tell."""
    from airflow_ext import config
    from airflow_ext.outbox.api_client import fetch_try_settings, try_settings_url

    api = _EXECUTION_API.get()
    if api is None:
        log.error(
            "%s: the worker could not load the task, and without the try's Execution API token the "
            "api-server cannot be asked whether it wants alerts",
            NOT_SENT_LOG % _name(ti),
        )
        return None
    url, token = api
    try:
        settings = fetch_try_settings(try_settings_url(url), token, config.load_retry_policy())
    except Exception as err:  # noqa: BLE001 - one line: the reason, never the token
        log.error(
            "%s: the worker could not load the task, and the api-server could not say whether it "
            "wants alerts: %s",
            NOT_SENT_LOG % _name(ti),
            err,
        )
        return None
    return handoff.handoff_from_dict(settings)


@contextlib.contextmanager
def _execution_api_of(client: Any):
    """Let the outbox backend use the supervisor's Execution API identity while it alerts."""
    token = getattr(getattr(client, "auth", None), "token", None)
    url = str(getattr(client, "base_url", "") or "")
    if token and url.startswith(("http://", "https://")):
        # The Task SDK's masker only: the supervisor resets it for every workload. Core's masker
        # is never reset in a worker, and rebuilds one regex of every secret it holds per secret
        # added, so a token a try masked there made every later try's alert slower (Celery and
        # LocalExecutor workers run many supervisors in one long-lived process).
        from airflow.sdk.log import mask_secret as mask_in_task_sdk

        mask_in_task_sdk(token)
        reset = _EXECUTION_API.set((url, token))
    else:  # a dry-run client, or none: the outbox is reached some other way, or not at all
        reset = _EXECUTION_API.set(None)
    reset_client = _SUPERVISOR_CLIENT.set(client)
    try:
        yield
    finally:
        _SUPERVISOR_CLIENT.reset(reset_client)
        _EXECUTION_API.reset(reset)


def queue_in_outbox(alert: Alert) -> tuple[bool, str]:
    """The outbox backend's way in from this process: ``(queued, via)``; raises DeliveryError.

    The supervisor posts through the api-server with its try's token; a process with the metadata
    database writes to it; a task process hands the alert to its supervisor.
    """
    from airflow_ext import config
    from airflow_ext.delivery import current_deadline

    api = _EXECUTION_API.get()
    if api is not None:
        from airflow_ext.outbox.api_client import outbox_url, post_alert

        url, token = api
        policy = config.load_retry_policy()
        return post_alert(alert, outbox_url(url), token, policy, deadline_at=current_deadline()), "api-server"
    if _has_database():
        from airflow_ext.dingbot import queue_in_database

        return queue_in_database(alert), "database"
    relay = _RELAY_FOR.get()
    if relay is not None:
        handoff.leave_alert(*relay, alert.to_dict())
        return True, "supervisor"
    raise DeliveryError(
        "the outbox cannot be reached from this process: it has neither the metadata database nor a "
        "task's Execution API token",
        retryable=False,
    )


def get_connection(conn_id: str):
    """A robot Connection, read the way this process may read it.

    With the metadata database (scheduler, api-server, ``dags test``, ``airflow-ext deliver``): core's
    lookup, every secrets backend. In a task process: the Task SDK's, through the supervisor. In the
    supervisor: environment and external secrets backends, then the Execution API with its client.
    """
    from airflow_ext.config import robot_connection
    from airflow_ext.errors import ConfigError

    try:
        if _has_database():
            from airflow.models.connection import Connection

            return robot_connection(conn_id, Connection.get_connection_from_secrets(conn_id))
        from airflow.sdk.definitions.connection import Connection as SdkConnection

        try:
            return robot_connection(conn_id, SdkConnection.get(conn_id))
        except Exception:
            client = _SUPERVISOR_CLIENT.get()
            if client is None:
                raise
        answer = client.connections.get(conn_id)
        if getattr(answer, "conn_type", None) is None:  # an ErrorResponse: not found or not allowed
            raise LookupError(conn_id)
        return robot_connection(conn_id, SdkConnection(**_connection_fields(answer)))
    except ConfigError:
        raise
    except Exception as err:
        if type(err).__name__ in ("AirflowNotFoundException", "LookupError"):
            raise ConfigError(
                f"Connection {conn_id!r} is not defined (robot Connections: airflow connections add)"
            ) from None
        raise ConfigError(f"Connection {conn_id!r} cannot be read ({type(err).__name__})") from None


def _connection_fields(answer: Any) -> dict[str, Any]:
    return {
        "conn_id": answer.conn_id,
        "conn_type": answer.conn_type,
        "host": answer.host,
        "password": answer.password,
        "extra": answer.extra,
    }


def load_dags() -> tuple[dict, dict]:
    """Every DAG parsed from the DAGs folder, by id, and the files that failed to import (what
    ``airflow-ext route`` explains and ``airflow-ext check --dags`` checks)."""
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    if settings.DAGS_FOLDER not in sys.path:  # as the DAG processor has it: DAG files import their helpers
        sys.path.append(settings.DAGS_FOLDER)
    bag = DagBag(dag_folder=settings.DAGS_FOLDER)
    return bag.dags, bag.import_errors


def metadata_engine():
    """The metadata database's engine where this process may use it (the scheduler, the api-server,
    ``airflow dags test``); None in task processes, their supervisors and the DAG processor's
    callback processes, which Airflow forks without one."""
    if not _has_database():
        return None
    from airflow import settings

    return settings.engine


def _has_database() -> bool:
    """Whether this process may use the metadata database: task processes have it blocked."""
    settings = sys.modules.get("airflow.settings")
    return settings is not None and getattr(settings, "engine", None) is not None


# -- the api-server side: the outbox route (see airflow_ext.outbox.api) ---------------------------


def fastapi_apps() -> list[dict]:
    """The apps the package's plugin mounts on the api-server: the outbox door, beside the
    Execution API, and the Alerts page."""
    from airflow_ext.dingbot import queue_in_database
    from airflow_ext.outbox.api import URL_PREFIX, OutboxDoor
    from airflow_ext.outbox.api_app import create_app
    from airflow_ext.ui.fastapi_app import fastapi_apps as alerts_apps

    door = OutboxDoor(
        task_instance_id=task_instance_of_token,
        find_try=find_try,
        queue=queue_in_database,
        try_settings=alert_settings_of_try,
    )
    return [
        {"app": create_app(door), "url_prefix": URL_PREFIX, "name": "airflow-dingbot outbox"},
        *alerts_apps(),
    ]


def external_views() -> list[dict]:
    """The Alerts page in the UI's navigation (Browse), shown from the api-server's app."""
    from airflow_ext.ui.fastapi_app import external_views as alerts_views

    return alerts_views()


def appbuilder_views() -> list[dict]:
    """Airflow 3's UI takes no Flask-AppBuilder views from us: the Alerts page is an external view."""
    return []


@functools.cache
def _execution_token_validator():
    # The Execution API's own validator, built from the same configuration (keys, audience,
    # issuer): a token is valid here exactly when it is valid there.
    from airflow.api_fastapi.execution_api.app import _jwt_validator

    return _jwt_validator()


async def task_instance_of_token(token: str) -> str:
    """The task instance id of a running try's Execution API token; Refused otherwise."""
    from airflow_ext.outbox.api import Refused

    try:
        claims = await _execution_token_validator().avalidated_claims(token, {})
    except Exception:  # expired, wrong key, wrong audience, not a JWT: the reason stays in our log
        log.info("Outbox alert refused: the task token did not validate", exc_info=True)
        raise Refused(403, "invalid task token") from None
    if claims.get("scope", "execution") != "execution":
        raise Refused(403, "only a running try's execution token can queue alerts (this is a workload token)")
    try:
        return str(uuid.UUID(str(claims.get("sub"))))
    except ValueError:
        raise Refused(403, "the task token does not name a task instance") from None


def _select_try(session: Any, ti_id: str, what: Callable[[Any], tuple]) -> tuple[Any, bool]:
    """``what(model)`` of the try a task instance id names, and whether it is archived: the current
    try, or a retried one in the history table; ``(None, True)`` if neither has it."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from sqlalchemy import select

    key = uuid.UUID(ti_id)
    row = session.execute(select(*what(TaskInstance)).where(TaskInstance.id == key)).first()
    if row is not None:
        return row, False
    # Retried since: Airflow 3 gives each try its own id and keeps the old one in the history table.
    row = session.execute(
        select(*what(TaskInstanceHistory))
        .where(TaskInstanceHistory.task_instance_id == key)
        .order_by(TaskInstanceHistory.try_number.desc())
        .limit(1)
    ).first()
    return row, True


def find_try(ti_id: str):
    """The try a task instance id names: the current try, or a retried one in the history table."""
    from airflow.utils.session import create_session

    from airflow_ext.outbox.api import TaskTry

    def columns(model):
        return model.dag_id, model.task_id, model.run_id, model.map_index, model.try_number, model.state

    with create_session() as session:
        row, archived = _select_try(session, ti_id, columns)
    if row is None:
        return None
    dag_id, task_id, run_id, map_index, try_number, state = row
    state = getattr(state, "value", state)
    return TaskTry(dag_id, task_id, run_id, int(map_index), int(try_number), state, archived=archived)


def alert_settings_of_try(ti_id: str) -> dict | None:
    """The ding flags and routing facts of a try's task as its serialized DAG has them (the DAG
    version the try runs), as :class:`~airflow_ext.handoff.Handoff` fields; None for no such try."""
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    with create_session() as session:
        row, _ = _select_try(session, ti_id, lambda model: (model,))
        if row is None:
            return None
        (ti,) = row
        dag = DBDagBag().get_dag(ti.dag_version_id, session=session) if ti.dag_version_id else None
        task = dag.task_dict.get(ti.task_id) if dag is not None else None
        logical_date = _server_logical_date(ti)
        settings = handoff.Handoff(
            ding_on_failure=task_flag(FLAG_FOR_KIND[AlertKind.FAILURE], task) if task is not None else False,
            ding_on_retry=task_flag(FLAG_FOR_KIND[AlertKind.RETRY], task) if task is not None else False,
            max_tries=int(ti.max_tries or 0),
            logical_date=_isoformat(logical_date),
            log_url=task_log_url(ti),
            **(routing_facts(task) if task is not None else {}),
        )
    return dataclasses.asdict(settings)


def executor_reported_failure(ti: Any, executor_state: Any, error: None | str) -> None:
    """Scheduler's ``process_executor_events``, right before ``TaskInstance.handle_failure``.

    The outcome is decided as ``handle_failure`` decides it. One report is skipped: the executor
    says the workload *succeeded* while the task instance is still running. That is a worker whose
    supervisor survived the task process (SIGKILL with retries left: Airflow 3.3.2's supervisor
    leaves UP_FOR_RETRY to the scheduler) and has already sent the alert, naming the signal.
    """
    try:
        if getattr(executor_state, "value", executor_state) == "success" and _state(ti) == "running":
            return
        kind = AlertKind.RETRY if ti.is_eligible_to_retry() else AlertKind.FAILURE
    except Exception:
        log.exception(NOT_SENT_LOG, _name(ti))
        return
    alert_if_wanted(kind, ti, getattr(ti, "task", None), error, _server_logical_date(ti))


def stuck_in_queued(ti: Any, task: Any, error: str) -> None:
    """Scheduler, failing a task stuck in queued (patch 0007): Airflow runs no failure handling."""
    alert_if_wanted(AlertKind.FAILURE, ti, task, error, _server_logical_date(ti))


def _server_logical_date(ti: Any):
    try:
        return ti.dag_run.logical_date
    except Exception:  # a detached task instance: the alert goes out without it
        return None


def _name(ti: Any) -> str:
    """``dag.task`` for log lines, whatever ``ti`` turned out to be: the log line must not raise."""
    return f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')}"


def _state(ti: Any) -> str | None:
    state = getattr(ti, "state", None)
    return getattr(state, "value", state)


def _killed_process_alert(ti: Any, exit_code: int | None, kind: AlertKind, note: handoff.Handoff) -> Alert:
    """The supervisor's alert: the ids from its task instance, the rest from the task's note."""
    how, why = describe_exit(exit_code)
    alert = Alert.from_task_instance(ti, why, kind)
    return dataclasses.replace(
        alert,
        max_tries=note.max_tries,
        logical_date=note.logical_date,
        log_url=note.log_url,
        exception_type=how,
        owner=note.owner,
        tags=note.tags,
        conn_ids=note.conn_ids,
    )


def _load_failure_alert(
    ti: Any, kind: AlertKind, note: handoff.Handoff, failure: load_failure.LoadFailure
) -> Alert:
    """The supervisor's alert for a try whose worker could not load the task: the import error."""
    return load_failure.with_failure(_killed_process_alert(ti, None, kind, note), failure)


def describe_exit(exit_code: int | None) -> tuple[str, str]:
    """``(what, explanation)`` of how a task process ended without its failure handling."""
    before = "before Airflow's failure handling could run: no callback or email ran for this try"
    if exit_code is not None and exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        hint = " (the out-of-memory killer sends SIGKILL)" if -exit_code == signal.SIGKILL else ""
        return name, f"The task process was killed by {name}{hint} {before}."
    return f"exit code {exit_code}", f"The task process exited with code {exit_code} {before}."


def _runtime_logical_date(ti: Any):
    context = getattr(ti, "_ti_context_from_server", None)
    return getattr(getattr(context, "dag_run", None), "logical_date", None)


def _isoformat(value) -> str | None:
    return value.isoformat() if value else None


def redact(text: str) -> str:
    """``text`` with the secrets of both maskers replaced: the Task SDK's (a task process's
    Connections and Variables) and core's (the scheduler's, the DAG processor's); neither raises."""
    from airflow.sdk._shared.secrets_masker import redact as sdk_redact

    text = sdk_redact(text)
    try:
        from airflow._shared.secrets_masker import redact as core_redact
    except ImportError:  # a worker with the Task SDK alone
        return text
    return core_redact(text)


def mask_secret(value: str) -> None:
    """Mask in the task-process masker (which tells the supervisor) and in the core processes' one."""
    from airflow.sdk.log import mask_secret as sdk_mask_secret

    sdk_mask_secret(value)
    try:
        from airflow._shared.secrets_masker import mask_secret as core_mask_secret
    except ImportError:  # a worker with the Task SDK alone
        return
    core_mask_secret(value)


def stats():
    from airflow.sdk.observability.stats import Stats

    return Stats


# Importing this adapter makes it the core's Airflow (airflow_ext.airflow_port): the patches
# import it, and only they, the CLI and the plugin choose the line.
airflow_port.install(sys.modules[__name__])
