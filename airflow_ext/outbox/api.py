"""The outbox's door on the api-server, for processes without a database (Airflow 3 workers).

A task's supervisor posts the alerts of its try here, with the token the Execution API gave that
try; the api-server, which has the metadata database, records them in the outbox. The identity is
the Execution API's: the token must be a valid *execution* token (the one a try receives when it
starts running; the long-lived *workload* token of a queued try is refused), its subject names the
task instance of that try, and the alert must be for exactly that try, which the database must
show as failed (a failure alert) or up for retry (a retry alert; once the next try has started,
Airflow keeps the retried one in its history as failed). Anything else is refused and nothing is
stored.

The same token also reads the try's alert settings (:data:`TRY_SETTINGS_ROUTE`): the ding flags and
routing facts of its task as the serialized DAG has them, which a worker that could not load the
DAG file needs to know whether to alert. Nothing else of the DAG is told.

One request carries one alert, at most :data:`MAX_REQUEST_BYTES`; a try has one outbox row per
robot whatever it sends, so a runaway task cannot flood the database.

The Airflow-specific parts (checking the token, finding the try) are the 3.x adapter's; this module
is the contract, :mod:`airflow_ext.outbox.api_app` the FastAPI app.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Callable

from airflow_ext.alert import Alert, AlertKind

log = logging.getLogger(__name__)

#: Where Airflow mounts the app (``fastapi_apps`` url_prefix), beside ``/execution``.
URL_PREFIX = "/dingbot"
ALERTS_ROUTE = "/outbox/alerts"
TRY_SETTINGS_ROUTE = "/outbox/try-settings"
#: One alert: the outbox keeps at most 4000 bytes of message and 8000 of traceback of it anyway.
MAX_REQUEST_BYTES = 64 * 1024
#: Longest value accepted per text field of an alert (characters); the request bound caps the sum.
MAX_ID_CHARS = 250
MAX_SHORT_TEXT_CHARS = 2000

#: The state the database must show for the try, per kind of alert.
STATE_FOR_KIND = {AlertKind.FAILURE: "failed", AlertKind.RETRY: "up_for_retry"}

_ID_FIELDS = ("dag_id", "task_id", "run_id")
_SHORT_TEXT_FIELDS = ("logical_date", "hostname", "log_url", "exception_type", "occurred_at", "owner")
_LONG_TEXT_FIELDS = ("exception_message", "traceback")
_INT_FIELDS = ("try_number", "max_tries", "map_index")
#: Lists of short strings: the DAG's tags, the task's ding_conn_id.
_LIST_FIELDS = ("tags", "conn_ids")
MAX_LIST_ITEMS = 100
_KNOWN_FIELDS = frozenset(
    ("kind", *_ID_FIELDS, *_SHORT_TEXT_FIELDS, *_LONG_TEXT_FIELDS, *_INT_FIELDS, *_LIST_FIELDS)
)


class Refused(Exception):
    """The request is refused: ``status`` is the HTTP status, ``detail`` says why (never a secret)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class TaskTry:
    """One try of one task instance, as the metadata database has it."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    state: str | None
    #: A try the task instance has moved on from (Airflow 3 keeps it in ``task_instance_history``,
    #: a retried try recorded as failed).
    archived: bool = False


@dataclass(frozen=True)
class OutboxDoor:
    """What the app needs from Airflow: each callable may raise :class:`Refused`.

    ``task_instance_id(token)`` checks an Execution API token and returns its task instance id;
    ``find_try(ti_id)`` returns that try from the database, or None; ``queue(alert)`` records the
    alert in the outbox and returns False when this try was recorded before; ``try_settings(ti_id)``
    returns the ding flags and routing facts of the task (``Handoff`` fields), or None.
    """

    task_instance_id: Callable[[str], Awaitable[str]]
    find_try: Callable[[str], TaskTry | None]
    queue: Callable[[Alert], bool]
    try_settings: Callable[[str], dict | None] = lambda ti_id: None


def parse_alert(body: bytes) -> Alert:
    """The alert a request carries (``{"alert": {...}}``), every field checked; Refused(422) if not."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise Refused(422, "the body is not JSON") from None
    if not isinstance(data, dict) or set(data) != {"alert"} or not isinstance(data["alert"], dict):
        raise Refused(422, 'the body must be {"alert": {...}}, one alert')
    fields = data["alert"]
    unknown = sorted(set(fields) - _KNOWN_FIELDS)
    if unknown:
        raise Refused(422, f"unknown alert fields: {', '.join(unknown)[:200]}")
    try:
        kind = AlertKind(fields.get("kind"))
    except ValueError:
        raise Refused(422, "alert.kind must be 'failure' or 'retry'") from None
    for name in _ID_FIELDS:
        _check_text(fields, name, MAX_ID_CHARS, required=True)
    for name in _SHORT_TEXT_FIELDS:
        _check_text(fields, name, MAX_SHORT_TEXT_CHARS, required=False)
    for name in _LONG_TEXT_FIELDS:
        _check_text(fields, name, MAX_REQUEST_BYTES, required=False)
    for name in _INT_FIELDS:
        value = fields.get(name)
        if name == "map_index" and value is None:
            continue
        if type(value) is not int or value < (-1 if name == "map_index" else 0):
            raise Refused(422, f"alert.{name} must be an integer")
    for name in _LIST_FIELDS:
        value = fields.get(name, [])
        if (
            not isinstance(value, list)
            or len(value) > MAX_LIST_ITEMS
            or not all(isinstance(item, str) and 0 < len(item) <= MAX_ID_CHARS for item in value)
        ):
            raise Refused(422, f"alert.{name} must be a list of at most {MAX_LIST_ITEMS} short strings")
    return Alert.from_dict({**fields, "kind": kind.value})


def _check_text(fields: dict[str, Any], name: str, max_chars: int, *, required: bool) -> None:
    value = fields.get(name)
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value):
        raise Refused(422, f"alert.{name} must be {'a non-empty' if required else 'a'} string")
    if len(value) > max_chars:
        raise Refused(422, f"alert.{name} is longer than {max_chars} characters")


def check_same_try(alert: Alert, task_try: TaskTry | None) -> None:
    """Refuse an alert that is not for the try the token belongs to, or for a try that did not fail."""
    if task_try is None:
        raise Refused(404, "the token's task instance is not in the database")
    named = (alert.dag_id, alert.task_id, alert.run_id, alert.map_index, alert.try_number)
    actual = (task_try.dag_id, task_try.task_id, task_try.run_id, task_try.map_index, task_try.try_number)
    if named != actual:
        raise Refused(403, "the alert is not for the try of the task instance this token belongs to")
    wanted = STATE_FOR_KIND[alert.kind]
    if task_try.archived and task_try.state == "failed":  # how Airflow archives a retried try, too
        return
    if task_try.state != wanted:
        raise Refused(
            409, f"a {alert.kind.value} alert needs the try to be {wanted}; it is {task_try.state or 'none'}"
        )


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(401, "an Execution API task token is required (Authorization: Bearer ...)")
    return token.strip()


async def read_bounded(request: Any) -> bytes:
    """The body, refused (413) as soon as it is known to pass :data:`MAX_REQUEST_BYTES`."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_REQUEST_BYTES):
        raise Refused(413, f"one alert is at most {MAX_REQUEST_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST_BYTES:
            raise Refused(413, f"one alert is at most {MAX_REQUEST_BYTES} bytes")
    return bytes(body)
