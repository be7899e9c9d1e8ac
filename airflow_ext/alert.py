"""What happened: one failed or retried try of one task instance, as plain data.

An :class:`Alert` holds only strings and numbers, so it can be rendered for any channel, serialized
to JSON (an outbox row, or a request from an Airflow 3 worker to the API server) and rebuilt.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import traceback as tb_module
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

#: Lines of traceback kept in an alert: the tail, where the exception was raised.
TRACEBACK_TAIL_LINES = 20
_SURROGATE = re.compile("[\ud800-\udfff]")
_CARETS = re.compile(r"^\s*[\^~]+\s*$")


class AlertKind(str, Enum):
    RETRY = "retry"
    FAILURE = "failure"


def clean_text(value: Any) -> str:
    """Text that always encodes as UTF-8: lone surrogates and undecodable bytes become U+FFFD."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return _SURROGATE.sub("\ufffd", value if isinstance(value, str) else str(value))


def _format_traceback(error: BaseException, tb: TracebackType | None) -> str | None:
    """The traceback's tail without caret lines (noise on a phone screen)."""
    if tb is None:
        return None
    lines = [
        line
        for line in "".join(tb_module.format_exception(type(error), error, tb)).splitlines()
        if not _CARETS.match(line)
    ]
    if len(lines) > TRACEBACK_TAIL_LINES:
        lines = ["…", *lines[-TRACEBACK_TAIL_LINES:]]
    return "\n".join(lines)


def _user_traceback(error: BaseException) -> TracebackType | None:
    """Start the traceback at the first frame outside Airflow's own package: the task's code.

    The frames above it (task runner, operator wrappers) are the same for every failure and would
    fill a phone screen. A failure raised inside Airflow's own operators keeps the whole traceback.
    """
    airflow = sys.modules.get("airflow")
    airflow_dir = os.path.dirname(getattr(airflow, "__file__", "") or "") + os.sep if airflow else None
    tb = error.__traceback__
    if not airflow_dir:
        return tb
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename.startswith(airflow_dir):
        first = first.tb_next
    return first or tb


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    max_tries: int
    map_index: int = -1
    logical_date: str | None = None
    hostname: str | None = None
    log_url: str | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    traceback: str | None = None
    occurred_at: str = dataclasses.field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    #: What routing matches on (:mod:`airflow_ext.routing`): the task's owner, its DAG's tags, and the
    #: robots the task itself names (``ding_conn_id``).
    owner: str | None = None
    tags: tuple[str, ...] = ()
    conn_ids: tuple[str, ...] = ()

    @property
    def attempts_allowed(self) -> int:
        """The M in "try N of M"."""
        return self.max_tries + 1

    @property
    def dedup_key(self) -> str:
        """One try of one task instance: the same failure reported twice has the same key."""
        return f"{self.dag_id}|{self.task_id}|{self.run_id}|{self.map_index}|{self.try_number}"

    @property
    def is_retry(self) -> bool:
        return self.kind is AlertKind.RETRY

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["kind"] = self.kind.value
        data["tags"], data["conn_ids"] = list(self.tags), list(self.conn_ids)  # as JSON has them
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        fields["kind"] = AlertKind(fields["kind"])
        for name in ("tags", "conn_ids"):  # lists in JSON
            if name in fields:
                fields[name] = tuple(fields[name] or ())
        return cls(**fields)

    @classmethod
    def from_task_instance(
        cls,
        ti: Any,
        error: None | str | BaseException,
        kind: AlertKind,
        *,
        logical_date: datetime | None = None,
        owner: str | None = None,
        tags: tuple[str, ...] = (),
        conn_ids: tuple[str, ...] = (),
    ) -> Alert:
        """Build from a task instance in failure handling (its state already decided).

        Works on any object with a task instance's ids (``dag_id``, ``task_id``, ``run_id``,
        ``map_index``, ``try_number``, ``max_tries``) and, where it has them, ``hostname`` and
        ``log_url``; each line's adapter passes what differs (the logical date) and what routing
        matches on, read from the task.
        """
        exception_type, exception_message, traceback = exception_fields(error)
        return cls(
            kind=kind,
            dag_id=clean_text(ti.dag_id),
            task_id=clean_text(ti.task_id),
            run_id=clean_text(ti.run_id),
            map_index=int(getattr(ti, "map_index", -1) if getattr(ti, "map_index", None) is not None else -1),
            # `airflow tasks test` runs a try without counting it: try_number stays 0 there.
            try_number=max(int(ti.try_number or 0), 1),
            max_tries=int(getattr(ti, "max_tries", 0) or 0),
            logical_date=logical_date.isoformat() if logical_date else None,
            hostname=clean_text(getattr(ti, "hostname", None) or local_hostname()),
            log_url=task_log_url(ti),
            exception_type=exception_type,
            exception_message=exception_message,
            traceback=traceback,
            owner=clean_text(owner) if owner else None,
            tags=tuple(clean_text(tag) for tag in tags),
            conn_ids=tuple(conn_ids),
        )


def exception_fields(error: None | str | BaseException) -> tuple[str | None, str | None, str | None]:
    """``(exception_type, exception_message, traceback)`` of what failure handling was given."""
    if isinstance(error, BaseException):
        traceback = _format_traceback(error, _user_traceback(error))
        return (
            type(error).__name__,
            masked(clean_text(error)),
            masked(clean_text(traceback)) if traceback else None,
        )
    if error:
        return None, masked(clean_text(error)), None
    return None, None, None


def masked(text: str) -> str:
    """``text`` with each secret Airflow's secrets masker knows in this process shown as ``***``,
    as the task's log shows it: an exception may hold a Connection's password, and an alert reaches
    a whole group (and the Alerts page)."""
    from airflow_ext.airflow_port import airflow

    try:
        return airflow().redact(text)
    except Exception as err:  # 2.x without a masker in its logging config: Airflow masks nothing either
        from airflow_ext.problems import report_once

        report_once(
            log, "An alert's failure text is sent unmasked", f"the secrets masker raised {type(err).__name__}"
        )
        return text


def local_hostname() -> str:
    try:
        from airflow.utils.net import get_hostname

        return get_hostname()
    except Exception:
        import socket

        return socket.gethostname()


def task_log_url(ti: Any) -> str | None:
    try:
        return ti.log_url
    except Exception:  # no [webserver] base_url, or a TI without a run: the alert goes out without a link
        return None
