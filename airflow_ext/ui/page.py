"""What the Alerts page shows and does, the same on every Airflow line.

The line's web framework (Flask-AppBuilder on 2.x, the api-server's FastAPI on 3.x) only checks the
user, calls these functions and renders :mod:`airflow_ext.ui.templates`. Nothing here returns a
token, a secret or a webhook URL: robots are shown by their names, their channel and host, and the
hash that keys them in the outbox.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from airflow_ext.outbox.store import DEAD, PENDING, SENT, OutboxEntry, OutboxStore, RobotStatus

log = logging.getLogger(__name__)

#: The outcomes the recent alerts can be filtered by (an alert being sent counts as pending).
OUTCOMES = (PENDING, SENT, DEAD)
#: Rows of recent alerts on one page.
RECENT_LIMIT = 50
#: The window "sent" counts over on the page.
SENT_WINDOW_S = 24 * 3600.0
#: The page's Jinja templates: ``dingbot/alerts_content.html`` and each line's frame around it.
TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


@functools.cache
def page_css() -> str:
    """The page's own style and the chat messages' (the 3.x page gets no Airflow CSS in its iframe)."""
    from airflow_ext.channels.base.preview import MESSAGE_CSS

    with open(os.path.join(TEMPLATES, "dingbot", "alerts.css"), encoding="utf-8") as fh:
        return fh.read() + "\n" + MESSAGE_CSS


class ActionRefused(Exception):
    """An action the page cannot carry out as asked; the message says why (never a secret)."""


#: What a user is told when an action failed in an unexpected way (the server log says why).
ACTION_FAILED = "the action failed on the server; its log says why"


@dataclass(frozen=True)
class RobotView:
    status: RobotStatus
    #: One line per name: channel, host and security, or why the robot cannot be used.
    described: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.status.robot_key

    @property
    def short_key(self) -> str:
        return self.status.robot_key[:12]

    @property
    def names(self) -> tuple[str, ...]:
        return robot_names(self.status)

    @property
    def pending(self) -> int:
        return self.status.pending + self.status.claimed

    def paused_until(self, at_ms: int) -> str | None:
        """When the robot's pause after a throttle ends, if it is paused now."""
        if self.status.paused_until_ms > at_ms:
            return format_ms(self.status.paused_until_ms)
        return None


@dataclass(frozen=True)
class AlertView:
    entry: OutboxEntry
    #: The message as the group sees it (safe HTML), and the channel it was rendered for.
    message_html: str
    channel: str
    task_instance_url: str
    log_url: str
    #: Sent inside a digest of several alerts (the group saw those lines in one message).
    in_digest: bool = False


@dataclass(frozen=True)
class Links:
    """How the line's UI addresses a task instance and its log: ``(entry) -> URL path``."""

    task_instance: Callable[[OutboxEntry], str]
    log: Callable[[OutboxEntry], str]


@dataclass
class PageData:
    robots: list[RobotView]
    alerts: list[AlertView]
    dag_ids: list[str]
    dag_filter: str | None
    outcome_filter: str | None
    at_ms: int
    route: str | None = None
    route_dag_id: str | None = None
    route_task_id: str | None = None
    can_act: bool = False
    notices: list[str] = field(default_factory=list)


def format_ms(at_ms: int | None) -> str:
    if not at_ms:
        return "-"
    return datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _describe(name: str) -> str:
    from airflow_ext.route_explain import describe_robot

    try:
        return describe_robot(name)
    except Exception as err:  # a page must render whatever a Connection holds
        return f"{name}: cannot be described ({type(err).__name__})"


def robot_names(status: RobotStatus) -> tuple[str, ...]:
    """The names a robot's alerts were queued under; rows of schema 1 are the ``[dingding]`` robot's."""
    from airflow_ext.config import DINGDING_ROBOT

    return status.names or (DINGDING_ROBOT,)


def robots_overview(store: OutboxStore, *, at_ms: int) -> list[RobotView]:
    return [
        RobotView(status=status, described=tuple(_describe(name) for name in robot_names(status)))
        for status in store.status(at_ms=at_ms, day_s=SENT_WINDOW_S)
    ]


def render_entry(entry: OutboxEntry) -> tuple[str, str, bool]:
    """The entry's message as its robot's group sees it: ``(html, channel, sent in a digest)``.

    Rendered with the robot's current settings (keyword, mentions, template); a robot that cannot be
    loaded now is shown with DingTalk's defaults.
    """
    from airflow_ext.channels.base.preview import render_payload_html
    from airflow_ext.channels.base.robot import encode_body

    robot = _robot_or_default(entry.robot_name)
    try:
        msg_uuid = robot.msg_uuid_for(entry.alert)
        payload = robot.payload(robot.render(entry.alert), msg_uuid)
        encode_body(payload)  # the same checks as a real send
    except Exception as err:  # a template that fails for this alert: say so, never break the page
        log.warning("Could not render outbox alert %s: %s", entry.id, type(err).__name__)
        return f"<p>(cannot be rendered: {type(err).__name__})</p>", robot.CHANNEL, False
    in_digest = entry.status == SENT and bool(entry.message_uuid) and entry.message_uuid != msg_uuid
    return render_payload_html(robot.CHANNEL, payload), robot.CHANNEL, in_digest


def _robot_or_default(name: str):
    from airflow_ext.channels import robot_for
    from airflow_ext.config import RobotSettings
    from airflow_ext.dingbot import robot_named
    from airflow_ext.errors import ConfigError

    try:
        return robot_named(name)
    except ConfigError:
        return robot_for(
            RobotSettings(channel="dingtalk", url="https://oapi.dingtalk.com/robot/send", name=name)
        )


def recent_alerts(
    store: OutboxStore,
    links: Links,
    *,
    dag_id: str | None = None,
    outcome: str | None = None,
    readable_dag_ids: Iterable[str] | None = None,
    limit: int = RECENT_LIMIT,
) -> list[AlertView]:
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r} (one of: {', '.join(OUTCOMES)})")
    views = []
    for entry in store.recent(limit=limit, dag_id=dag_id, status=outcome, dag_ids=readable_dag_ids):
        html, channel, in_digest = render_entry(entry)
        views.append(
            AlertView(
                entry=entry,
                message_html=html,
                channel=channel,
                task_instance_url=links.task_instance(entry),
                log_url=links.log(entry),
                in_digest=in_digest,
            )
        )
    return views


def explain_route(dag_id: str, task_id: str | None) -> str:
    """``airflow-ext route DAG_ID [TASK_ID]``, or why it cannot be answered."""
    from airflow_ext.errors import DingbotError
    from airflow_ext.route_explain import explain

    try:
        return explain(dag_id, task_id or None, from_database=True)
    except DingbotError as err:
        return f"cannot explain: {err}"
    except Exception as err:  # a DAG that fails to deserialize must not break the page
        log.warning("Explaining the route of %s failed", dag_id, exc_info=True)
        return f"cannot explain: {type(err).__name__}"


def build_page(
    store: OutboxStore,
    links: Links,
    *,
    at_ms: int,
    dag_id: str | None = None,
    outcome: str | None = None,
    readable_dag_ids: Sequence[str] | None = None,
    route_dag_id: str | None = None,
    route_task_id: str | None = None,
    can_act: bool = False,
) -> PageData:
    dag_id, outcome = dag_id or None, outcome or None
    notices = []
    if outcome is not None and outcome not in OUTCOMES:
        notices.append(f"unknown outcome {outcome!r} (one of: {', '.join(OUTCOMES)})")
        outcome = None
    alerts = recent_alerts(store, links, dag_id=dag_id, outcome=outcome, readable_dag_ids=readable_dag_ids)
    dag_ids = store.dag_ids()
    if readable_dag_ids is not None:
        allowed = set(readable_dag_ids)
        dag_ids = [d for d in dag_ids if d in allowed]
    route = None
    if route_dag_id:
        if readable_dag_ids is not None and route_dag_id not in set(readable_dag_ids):
            route = f"cannot explain: you may not read the DAG {route_dag_id!r}"
        else:
            route = explain_route(route_dag_id, route_task_id)
    return PageData(
        robots=robots_overview(store, at_ms=at_ms),
        alerts=alerts,
        dag_ids=dag_ids,
        dag_filter=dag_id,
        outcome_filter=outcome,
        at_ms=at_ms,
        route=route,
        route_dag_id=route_dag_id,
        route_task_id=route_task_id,
        can_act=can_act,
        notices=notices,
    )


# -- actions ---------------------------------------------------------------------------------------


def _robot_status(store: OutboxStore, robot_key: str) -> RobotStatus:
    for status in store.status():
        if status.robot_key == robot_key:
            return status
    raise ActionRefused(f"no robot {robot_key[:12]!r} in the outbox")


#: The largest id an outbox row can have (a signed 64-bit integer column on every database).
MAX_ALERT_ID = 2**63 - 1


def parse_alert_id(value: Any) -> int:
    """An alert id from a form or a JSON body: a whole number (or its digits) from 1 to
    MAX_ALERT_ID; never a bool, a float or a string like "1e3" that ``int()`` would also take."""
    digits = value.strip() if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif digits is not None and digits.isascii() and digits.isdigit():
        number = int(digits)
    else:
        raise ActionRefused(f"alert id must be a whole number, not {str(value)[:40]!r}")
    if not 1 <= number <= MAX_ALERT_ID:
        raise ActionRefused(f"alert id must be from 1 to {MAX_ALERT_ID}, not {str(number)[:40]}")
    return number


def retry_dead(store: OutboxStore, robot_key: str, alert_id: Any = None) -> str:
    """Queue one dead letter (``alert_id``) or all of a robot's again; what happened, in words."""
    status = _robot_status(store, robot_key)
    ids = None if alert_id in (None, "") else [parse_alert_id(alert_id)]
    queued = store.retry_dead(robot_key, ids=ids)
    names = ", ".join(robot_names(status))
    if ids is not None and not queued:
        raise ActionRefused(f"alert {ids[0]} of {names} is not a dead letter (any more)")
    return f"{queued} dead {'letter' if queued == 1 else 'letters'} of {names} queued again"


def send_test(store: OutboxStore, robot_name: str) -> str:
    """Send a test alert to the robot ``robot_name`` now, counted in its rate-limit window."""
    from airflow_ext import config
    from airflow_ext.dingbot import robot_named, send_test_to_robot
    from airflow_ext.errors import DingbotError
    from airflow_ext.outbox.deliverer import answer_text, schedule_for

    try:
        robot = robot_named(robot_name)
    except DingbotError as err:
        raise ActionRefused(str(err)) from None
    # The deliverers' own pace for this robot: the test message shares their window.
    schedule = schedule_for(robot, config.load_delivery_schedule())
    reservation = store.reserve_send(
        robot.key, rate_limit=schedule.rate_limit, window_s=schedule.window_s + schedule.window_margin_s
    )
    if not reservation.reserved:
        raise ActionRefused(
            f"not sent to {robot_name}: {reservation.reason}; try again in {reservation.wait_s:.0f} s"
        )
    try:
        _, answer = send_test_to_robot(robot_name)
    except DingbotError as err:
        store.record_answer(robot.key, str(err))
        raise ActionRefused(f"test alert to {robot_name} failed: {err}") from None
    store.record_answer(robot.key, answer_text(answer))
    return (
        f"test alert sent to {robot_name} ({robot.DISPLAY_NAME}); the robot answered: {answer_text(answer)}"
    )
