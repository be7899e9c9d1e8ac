"""The default ``[dingbot] ding_bot_backend`` and the send-test command.

A backend is any importable callable ``backend(alert: airflow_ext.alert.Alert) -> object``. It is
called from Airflow's task failure handling (in the task's process, the scheduler or the DAG
processor) inside a thread bounded by ``[dingbot] timeout``. It reports failure by raising, best a
:class:`airflow_ext.errors.DeliveryError`; what it returns is shown by ``airflow-ext send-test``.
"""

from __future__ import annotations

from typing import Any

from airflow_ext import config
from airflow_ext.alert import Alert, AlertKind
from airflow_ext.channels.dingtalk import DingTalkRobot
from airflow_ext.delivery import current_deadline, deliver, run_within


def dingbot_msg_sender(alert: Alert) -> dict[str, Any]:
    """Send ``alert`` to the ``[dingding]`` robot: signed, at most 20000 bytes, retried within the deadline.

    Returns the robot's answer (``{"errcode": 0, "errmsg": "ok"}``); raises DeliveryError otherwise.
    """
    robot = DingTalkRobot(config.load_dingtalk_settings())
    policy = config.load_retry_policy()
    body = robot.body_for(alert)
    return deliver(
        lambda timeouts: robot.post(
            body, connect_timeout_s=timeouts.connect_s, read_timeout_s=timeouts.read_s
        ),
        policy,
        deadline_at=current_deadline(),
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


def send_test_alert() -> str:
    """Send a sample alert through the configured backend; return the robot's answer as text."""
    backend = config.load_backend()
    timeout_s = config.load_retry_policy().deadline_s
    answer = run_within(lambda: backend(sample_alert()), timeout_s)
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
    """Record ``alert`` for the ``[dingding]`` robot; False if this try was recorded before."""
    robot = DingTalkRobot(config.load_dingtalk_settings())
    return outbox_store().enqueue(alert, robot.key)


def outbox_sender(alert: Alert) -> dict[str, Any]:
    """The outbox backend: record ``alert`` in the metadata database and return, no robot call.

    ``airflow-ext deliver`` sends it, sharing the robot's rate limit with every other deliverer and
    coalescing storms into digests. The same try of the same task instance is recorded once.
    Where the process has no database (an Airflow 3 task process or its supervisor), the line's
    adapter takes the alert there: through the api-server, with the try's own Execution API token.
    """
    from airflow_ext.adapters import current

    queued, via = current().queue_in_outbox(alert)
    return {"queued": queued, "duplicate": not queued, "via": via}
