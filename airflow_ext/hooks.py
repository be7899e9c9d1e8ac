"""What every line's failure path shares: which outcome alerts, and the bounded, logged send.

The patches call their line's adapter (``airflow_ext.adapters.airflow2`` / ``airflow3``), which
builds the :class:`Alert` and hands it to :func:`deliver_alert`. Nothing here raises into Airflow's
failure handling or outlasts ``[dingbot] timeout``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from airflow_ext.alert import Alert, AlertKind, masked
from airflow_ext.errors import ConfigError, DeliveryError
from airflow_ext.problems import report_once

log = logging.getLogger(__name__)

#: Logged, with the traceback, when sending fails inside Airflow's failure handling. "DingTalk" for
#: every channel, like the other log lines: alerting rules and dashboards match them (README).
NOT_SENT_LOG = "DingTalk alert for %s was not sent (the task's state is not affected)"

#: Which operator flag asks for an alert in which outcome of a failed try.
FLAG_FOR_KIND = {AlertKind.RETRY: "ding_on_retry", AlertKind.FAILURE: "ding_on_failure"}


def alert_kind(state: Any) -> AlertKind | None:
    """The failure handling outcome, from the state Airflow has just given the task instance."""
    value = getattr(state, "value", state)
    if value == "up_for_retry":
        return AlertKind.RETRY
    if value == "failed":
        return AlertKind.FAILURE
    return None


def task_setting(name: str, task: Any, mapped_task: Any = None, default: Any = None) -> Any:
    """An operator argument of ``task`` (the unmapped task failure handling works on).

    For a mapped task it is read from the mapped operator's ``partial_kwargs``: unmapping a
    *deserialized* mapped operator (the scheduler's case) yields a SerializedBaseOperator without
    the partial() arguments (Airflow 2.x), so its own attribute would give the default.
    """
    partial_kwargs = getattr(mapped_task, "partial_kwargs", None)
    if isinstance(partial_kwargs, dict) and name in partial_kwargs:
        return partial_kwargs[name]
    return getattr(task, name, default)


def task_flag(name: str, task: Any, mapped_task: Any = None) -> bool:
    """A ding flag of ``task`` (see :func:`task_setting`)."""
    return bool(task_setting(name, task, mapped_task, False))


def routing_facts(task: Any, mapped_task: Any = None) -> dict[str, Any]:
    """What routing matches on, read from the task: ``owner``, its DAG's ``tags``, its ``ding_conn_id``.

    A ding_conn_id that is not a conn id or a list of them (the patches type-check it at parse
    time, so only a hand-made task has one) is left out: the alert goes where routes send it.
    """
    from airflow_ext.config import conn_ids_of

    try:
        conn_ids = conn_ids_of(task_setting("ding_conn_id", task, mapped_task), "ding_conn_id")
    except ConfigError as err:
        report_once(log, "A task's ding_conn_id is ignored", str(err))
        conn_ids = ()
    dag = getattr(task, "dag", None) if task is not None else None
    tags = getattr(dag, "tags", None) or ()
    owner = task_setting("owner", task, mapped_task)
    return {
        "owner": owner if isinstance(owner, str) else None,
        "tags": tuple(sorted(str(tag) for tag in tags)),
        "conn_ids": conn_ids,
    }


def alert_for(
    kind: AlertKind, task_instance: Any, task: Any, error: None | str | BaseException, logical_date: Any
) -> Alert:
    """The Alert of a failed try, with what routing needs from the task."""
    mapped = getattr(task_instance, "task", None) if task is None else task
    return Alert.from_task_instance(
        task_instance, error, kind, logical_date=logical_date, **routing_facts(task, mapped)
    )


def wants_alert(kind: AlertKind | None, task: Any, mapped_task: Any = None) -> bool:
    return task is not None and kind is not None and task_flag(FLAG_FOR_KIND[kind], task, mapped_task)


def alert_if_wanted(
    kind: AlertKind | None,
    task_instance: Any,
    task: Any,
    error: None | str | BaseException,
    logical_date: Any,
) -> None:
    """Send ``kind`` for ``task_instance`` if ``task`` (mapped or not) asks for it; ``None``: not a
    failed or retried try. Never raises."""
    try:
        if wants_alert(kind, task, task):  # a mapped task answers from its partial kwargs
            deliver_alert(alert_for(kind, task_instance, task, error, logical_date))
    except Exception:  # the contract with the patches: Airflow's failure handling goes on unchanged
        log.exception(NOT_SENT_LOG, task_instance)


def deliver_alert(alert: Alert) -> None:
    """Hand ``alert`` to ``[dingbot] ding_bot_backend`` within ``[dingbot] timeout``; log the outcome once."""
    from airflow_ext import config
    from airflow_ext.airflow_port import airflow
    from airflow_ext.delivery import run_within

    stats = airflow().stats()
    mapped = f" [map index {alert.map_index}]" if alert.map_index >= 0 else ""
    what = (
        f"DingTalk {alert.kind.value} alert for {alert.dag_id}.{alert.task_id}{mapped} "
        f"run {alert.run_id} try {alert.try_number}"
    )
    started = time.monotonic()
    try:
        backend = config.load_backend()
        deadline_s = config.load_retry_policy().deadline_s
        result = run_within(lambda: _send_once(alert, backend, deadline_s, what), deadline_s)
    except ConfigError as err:  # the same for every failure in this process: one line is enough
        stats.incr("dingbot.alert.failed")
        report_once(log, "DingTalk alerts are not sent", str(err))
    except DeliveryError as err:
        stats.incr("dingbot.alert.throttled" if err.throttled else "dingbot.alert.failed")
        log.error("%s not delivered after %.1f s: %s", what, time.monotonic() - started, err)
    except Exception:  # a custom backend's bug: its traceback is what its author needs
        stats.incr("dingbot.alert.failed")
        log.exception("%s not sent: the backend %s raised", what, config.backend_path())
    else:
        outcome, words = _outcome(result)
        stats.incr(f"dingbot.alert.{outcome}")
        stats.timing("dingbot.alert.duration", (time.monotonic() - started) * 1000)
        log.info("%s %s in %.2f s", what, words, time.monotonic() - started)


class AlreadyAlerted:
    """What :func:`_send_once` returns when another report of the try claimed it first."""

    def __init__(self, claim) -> None:
        self.claim = claim


def _send_once(alert: Alert, backend: Any, deadline_s: float, what: str) -> Any:
    """``backend(alert)``, unless another report of this try claimed it (airflow_ext.claims).

    A backend that records each try itself (``records_each_try``: the outbox, whose row is unique
    per try) needs no claim; nor can a process without the metadata database make one. If the
    claim cannot be made (the database is down), the alert is sent anyway: a possible repeat is
    better than a lost alert.
    """
    from airflow_ext import claims
    from airflow_ext.airflow_port import airflow

    engine = None if getattr(backend, "records_each_try", False) else airflow().metadata_engine()
    won = None
    if engine is not None:
        try:
            won = claims.claim(engine, alert, lease_s=deadline_s)
        except Exception as err:  # noqa: BLE001 - any database error: send without a claim
            said = str(err).strip()
            problem = masked(f"{type(err).__name__}: {said.splitlines()[0][:300] if said else ''}")
            report_once(log, "DingTalk alerts are sent without claiming the try", problem)
        else:
            if not won.won:
                return AlreadyAlerted(won)
    result = backend(alert)
    if won is not None:
        try:
            claims.mark_sent(engine, won)
        except Exception:  # the alert went out; at worst a late repeat report may send it again
            log.warning("%s: sent, but not recorded as sent", what, exc_info=True)
    return result


def _outcome(result: Any) -> tuple[str, str]:
    """``(metric suffix, words)`` of what a backend's answer says happened: the outbox backend queues
    (or, from an Airflow 3 task process, hands the alert to the supervisor), others deliver."""
    if isinstance(result, AlreadyAlerted):
        done = "sent" if result.claim.sent else "being sent"
        holder = result.claim.holder
        return "duplicate", f"not sent again: this try was reported twice and is already {done} by {holder}"
    if isinstance(result, dict) and "queued" in result:
        via = result.get("via", "database")
        if via == "supervisor":
            return "relayed", "handed to the supervisor for the outbox"
        through = " through the api-server" if via == "api-server" else ""
        if result["queued"]:
            return "queued", f"queued in the outbox{through}"
        return "duplicate", f"already in the outbox{through}"
    return "sent", "delivered"
