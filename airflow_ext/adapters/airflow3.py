"""The Airflow 3.x adapter: the places the 3.3.2 series calls, each building an Alert.

Airflow 3 has no single failure choke point; a try ends in one of three kinds of process, each
with its own task object, and task processes have no database:

* the task runner's ``finalize`` (patch 0004): exceptions, ``execution_timeout``, sensor and
  deferral timeouts, failed triggers (the task resumes on a worker). The exception is here.
* the supervisor (patch 0005), when the task process ended without ``finalize`` (SIGKILL, OOM,
  segfault, ``os._exit``): Airflow itself reports nothing. The task runner leaves the task's
  flags in a :mod:`~airflow_ext.handoff` note at start-up (:func:`task_started`), which
  ``finalize`` removes once it has handled the try, so exactly one of the two alerts.
* the scheduler's executor-event path (patch 0006), for failures the task never recorded: killed
  externally, a worker that could not start it, and the heartbeat-timeout path (which Airflow
  3.3.2 runs twice for callbacks, but once through this path); and its stuck-in-queued path
  (patch 0007), which fails a task without any failure handling.

Every function here is called from Airflow's failure handling and never raises.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from typing import Any

from airflow_ext import handoff
from airflow_ext.alert import Alert, AlertKind, task_log_url
from airflow_ext.hooks import (
    FLAG_FOR_KIND,
    alert_if_wanted,
    alert_kind,
    deliver_alert,
    task_flag,
)

log = logging.getLogger(__name__)


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
            ),
        )
    except Exception:
        log.exception("DingTalk alerts for %s: could not leave the note for the supervisor", _name(ti))


def task_finalized(ti: Any, state: Any, error: BaseException | None) -> None:
    """Task runner's ``finalize``: alert per the task's flags, then tell the supervisor it is done."""
    try:
        alert_if_wanted(alert_kind(state), ti, ti.task, error, _runtime_logical_date(ti))
    except Exception:  # ti without a task: nothing to decide on
        log.exception("DingTalk alert for %s was not sent", _name(ti))
    finally:
        try:
            handoff.clear(ti.id, ti.try_number)
        except Exception:
            log.exception("DingTalk alerts: could not remove the supervisor's note")


def task_process_ended(ti: Any, exit_code: int | None, state: Any) -> None:
    """Supervisor, after reporting the state: alert for a try its task process never handled."""
    try:
        note = handoff.take(ti.id, ti.try_number)
        handoff.remove_stale()
        kind = alert_kind(state)
        if note is None or kind is None:
            return
        if not getattr(note, FLAG_FOR_KIND[kind]):
            return
        deliver_alert(_killed_process_alert(ti, exit_code, kind, note))
    except Exception:
        log.exception("DingTalk alert for %s was not sent", _name(ti))


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
        log.exception("DingTalk alert for %s was not sent", _name(ti))
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
    )


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
