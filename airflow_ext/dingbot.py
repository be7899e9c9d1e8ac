"""The default ``[dingbot] ding_bot_backend`` and the send-test command.

A backend is any importable callable ``backend(alert: airflow_ext.alert.Alert) -> object``. It is
called from Airflow's task failure handling (in the task's process, the scheduler or the DAG
processor) inside a thread bounded by ``[dingbot] timeout``. It reports failure by raising, best a
:class:`airflow_ext.errors.DeliveryError`; what it returns is shown by ``airflow-ext send-test``.
"""

from __future__ import annotations

from typing import Any, Callable

from airflow_ext import config, routing
from airflow_ext.alert import Alert, AlertKind
from airflow_ext.delivery import current_deadline, deliver, run_within
from airflow_ext.errors import ConfigError, DeliveryError


def dingbot_msg_sender(alert: Alert) -> Any:
    """Send ``alert`` to each robot routing chose: signed, within each channel's limits, retried
    within the deadline, the robots at the same time (a slow one does not hold up the others).

    Returns the robot's answer (``{"errcode": 0, "errmsg": "ok"}``), or with several robots a dict
    of their answers by name; raises DeliveryError (naming the robots it failed for) otherwise.
    """
    choice = routing.choose_for_alert(alert)
    policy = config.load_retry_policy()
    deadline_at = current_deadline()

    def send(name: str) -> Any:
        robot = robot_named(name)
        body = robot.body_for(alert)
        return deliver(
            lambda timeouts: robot.post(
                body, connect_timeout_s=timeouts.connect_s, read_timeout_s=timeouts.read_s
            ),
            policy,
            deadline_at=deadline_at,
        )

    if len(choice.robots) == 1:
        return send(choice.robots[0])
    return _all_or_error(fan_out(choice.robots, send))


def robot_named(name: str):
    """The channel robot of a Connection id (or ``[dingding]``); ConfigError naming it if unusable."""
    from airflow_ext.channels import robot_for

    return robot_for(config.load_robot_settings(name))


def fan_out(names: tuple[str, ...], send: Callable[[str], Any]) -> dict[str, Any]:
    """``send(name)`` for every robot at once, each in its own thread with the caller's context
    (deadline, Execution API); returns each answer or the exception it raised."""
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="dingbot-robot") as pool:
        futures = {name: pool.submit(contextvars.copy_context().run, send, name) for name in names}
    outcomes: dict[str, Any] = {}
    for name, future in futures.items():
        error = future.exception()
        outcomes[name] = error if error is not None else future.result()
    return outcomes


def _all_or_error(outcomes: dict[str, Any]) -> dict[str, Any]:
    failed = {name: err for name, err in outcomes.items() if isinstance(err, BaseException)}
    if not failed:
        return outcomes
    if len(failed) == len(outcomes) and all(isinstance(err, ConfigError) for err in failed.values()):
        raise ConfigError("; ".join(str(err) for err in failed.values()))
    delivered = [name for name in outcomes if name not in failed]
    reasons = "; ".join(f"{name}: {err}" for name, err in failed.items())
    raise DeliveryError(
        f"not delivered to {', '.join(failed)} ({reasons})"
        + (f"; delivered to {', '.join(delivered)}" if delivered else ""),
        retryable=all(getattr(err, "retryable", False) for err in failed.values()),
        throttled=any(getattr(err, "throttled", False) for err in failed.values()),
    )


def sample_alert() -> Alert:
    return Alert(
        kind=AlertKind.FAILURE,
        dag_id="airflow_ext_send_test",
        task_id="send_test",
        run_id="manual__send_test",
        try_number=1,
        max_tries=0,
        hostname=_hostname(),
        exception_type="AirflowExtTestAlert",
        exception_message="This is a test alert from `airflow-ext send-test`: the robot is reachable.",
    )


def _hostname() -> str:
    from airflow.utils.net import get_hostname

    return get_hostname()


def send_test_to_robot(name: str) -> tuple[Any, Any]:
    """Send a sample alert straight to the robot ``name`` (a Connection id or ``[dingding]``),
    within the deadline; returns the robot and its answer, raises DingbotError otherwise."""
    policy = config.load_retry_policy()
    robot = robot_named(name)
    body = robot.body_for(sample_alert())

    def send() -> Any:
        return deliver(
            lambda t: robot.post(body, connect_timeout_s=t.connect_s, read_timeout_s=t.read_s),
            policy,
            deadline_at=current_deadline(),
        )

    return robot, run_within(send, policy.deadline_s)


def send_test_alert(conn_id: str | None = None) -> str:
    """Send a sample alert through the configured backend, or straight to the robot ``conn_id``
    (a Connection id or ``[dingding]``); return the robot's answer as text."""
    if conn_id:
        robot, answer = send_test_to_robot(conn_id)
        return f"sent to {conn_id} ({robot.DISPLAY_NAME}); the robot answered: {answer!r}"
    policy = config.load_retry_policy()
    backend = config.load_backend()
    answer = run_within(lambda: backend(sample_alert()), policy.deadline_s)
    return f"sent through {config.backend_path()}; the robot answered: {answer!r}"


_outbox_store = None


def outbox_store():
    """The outbox in the Airflow metadata database, its schema checked once per process."""
    global _outbox_store
    if _outbox_store is None:
        from airflow import settings

        from airflow_ext.outbox.store import OutboxStore

        store = OutboxStore(settings.engine)
        store.ensure_schema()
        _outbox_store = store
    return _outbox_store


def queue_in_database(alert: Alert) -> bool:
    """Record ``alert`` once for each robot routing chose; False if this try was recorded before.

    A robot whose Connection cannot be read now is still recorded, under its name: the deliverer
    keeps it as a dead letter with the reason, to send once the Connection is fixed.
    """
    robots = []
    for name in routing.choose_for_alert(alert).robots:
        try:
            key = robot_named(name).key
        except ConfigError:
            key = unresolved_robot_key(name)
        robots.append((key, name))
    return outbox_store().enqueue_for_robots(alert, robots) > 0


def unresolved_robot_key(name: str) -> str:
    """The robot key of rows for a robot whose Connection could not be read when they were queued."""
    import hashlib

    return hashlib.sha256(f"unresolved:{name}".encode()).hexdigest()[:32]


def outbox_sender(alert: Alert) -> dict[str, Any]:
    """The outbox backend: record ``alert`` in the metadata database and return, no robot call.

    ``airflow-ext deliver`` sends it, sharing the robot's rate limit with every other deliverer and
    coalescing storms into digests. The same try of the same task instance is recorded once.
    Where the process has no database (an Airflow 3 task process or its supervisor), the line's
    adapter takes the alert there: through the api-server, with the try's own Execution API token.
    """
    from airflow_ext.airflow_port import airflow

    queued, via = airflow().queue_in_outbox(alert)
    return {"queued": queued, "duplicate": not queued, "via": via}


#: The outbox's row is unique per try and robot: it is the try's shared record (airflow_ext.claims).
outbox_sender.records_each_try = True
