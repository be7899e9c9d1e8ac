"""The hook the patch calls: flags decide, nothing raises, nothing outlasts the deadline, no secret leaks."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest

from airflow_ext import hooks
from airflow_ext.alert import Alert, AlertKind
from tests.conftest import ROBOT_SECRET, ROBOT_TOKEN, robot_env

pytestmark = pytest.mark.usefixtures("claims_database")

RECEIVED: list[Alert] = []


def recording_backend(alert: Alert) -> str:
    """A custom backend, importable by path like any ``[dingbot] ding_bot_backend``."""
    RECEIVED.append(alert)
    return "recorded"


def exploding_backend(alert: Alert) -> None:
    raise RuntimeError("backend bug")


def exiting_backend(alert: Alert) -> None:
    raise SystemExit(3)


not_callable_backend = "just a string"


@pytest.fixture
def configure(monkeypatch):
    def _configure(env: dict[str, str]) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    RECEIVED.clear()
    return _configure


def failing_ti(state: str, *, try_number: int = 1, max_tries: int = 1):
    return SimpleNamespace(
        state=state,
        dag_id="dag",
        task_id="task",
        run_id="manual__1",
        map_index=-1,
        try_number=try_number,
        max_tries=max_tries,
        execution_date=None,
        hostname="worker-1",
        log_url="http://airflow.example/log",
    )


def report_failure(*, task_instance, task, error) -> None:
    """What each line's failure handling hands the core: the outcome Airflow decided, the task."""
    hooks.alert_if_wanted(hooks.alert_kind(task_instance.state), task_instance, task, error, None)


def task(**flags):
    return SimpleNamespace(**{"ding_on_failure": False, "ding_on_retry": False, **flags})


@pytest.mark.parametrize(
    "state, flags, expected",
    [
        ("up_for_retry", {"ding_on_retry": True}, [AlertKind.RETRY]),
        ("up_for_retry", {"ding_on_failure": True}, []),
        ("failed", {"ding_on_failure": True}, [AlertKind.FAILURE]),
        ("failed", {"ding_on_retry": True}, []),
        ("failed", {}, []),
        ("success", {"ding_on_failure": True, "ding_on_retry": True}, []),
    ],
)
def test_flags_decide_per_outcome(configure, state, flags, expected):
    configure({"AIRFLOW__DINGBOT__DING_BOT_BACKEND": f"{__name__}.recording_backend"})

    report_failure(task_instance=failing_ti(state), task=task(**flags), error=ValueError("x"))

    assert [alert.kind for alert in RECEIVED] == expected


def test_no_task_no_alert(configure):
    configure({"AIRFLOW__DINGBOT__DING_BOT_BACKEND": f"{__name__}.recording_backend"})

    report_failure(task_instance=failing_ti("failed"), task=None, error="zombie")

    assert RECEIVED == []


def test_custom_backend_receives_the_alert_model(configure):
    configure({"AIRFLOW__DINGBOT__DING_BOT_BACKEND": f"{__name__}.recording_backend"})

    report_failure(
        task_instance=failing_ti("failed", try_number=2, max_tries=1),
        task=task(ding_on_failure=True),
        error=ValueError("disk full"),
    )

    (alert,) = RECEIVED
    assert (alert.dag_id, alert.try_number, alert.attempts_allowed) == ("dag", 2, 2)
    assert (alert.exception_type, alert.exception_message) == ("ValueError", "disk full")


@pytest.mark.parametrize(
    "backend, expected_log",
    [
        (f"{__name__}.exploding_backend", "not sent: the backend tests.test_hooks.exploding_backend raised"),
        (f"{__name__}.exiting_backend", "the alert backend raised SystemExit"),
        (f"{__name__}.not_callable_backend", "[dingbot] ding_bot_backend: "),
        ("no.such.module.sender", "[dingbot] ding_bot_backend: cannot import 'no.such.module.sender'"),
    ],
)
def test_backend_problems_are_logged_never_raised(configure, caplog, backend, expected_log):
    configure({"AIRFLOW__DINGBOT__DING_BOT_BACKEND": backend})

    with caplog.at_level(logging.INFO, logger="airflow_ext"):
        report_failure(task_instance=failing_ti("failed"), task=task(ding_on_failure=True), error="x")

    assert expected_log in caplog.text
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_missing_bot_url_is_a_clear_error(configure, caplog, monkeypatch):
    monkeypatch.delenv("AIRFLOW__DINGDING__BOT_URL", raising=False)

    with caplog.at_level(logging.ERROR, logger="airflow_ext"):
        report_failure(task_instance=failing_ti("failed"), task=task(ding_on_failure=True), error="x")

    assert "[dingding] bot_url is not set" in caplog.text


@pytest.mark.parametrize("mode", ["hang", "http500", "garbage"])
def test_unhealthy_robot_is_bounded_by_the_deadline(configure, caplog, robot, mode):
    robot.set_mode(mode)
    configure(robot_env(robot, AIRFLOW__DINGBOT__TIMEOUT="1.5", AIRFLOW__DINGBOT__READ_TIMEOUT="60"))

    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        report_failure(task_instance=failing_ti("failed"), task=task(ding_on_failure=True), error="x")
    elapsed = time.monotonic() - started

    assert elapsed < 1.5 + 0.2, elapsed
    assert "not delivered" in caplog.text
    assert ROBOT_TOKEN not in caplog.text and ROBOT_SECRET not in caplog.text


def test_delivered_alert_and_its_logs_hold_no_secret(configure, caplog, robot):
    configure(robot_env(robot))

    with caplog.at_level(logging.DEBUG):  # urllib3 logs request lines at DEBUG
        report_failure(task_instance=failing_ti("failed"), task=task(ding_on_failure=True), error="x")

    assert len(robot.messages) == 1 and "delivered" in caplog.text
    for record in caplog.records:
        rendered = record.getMessage() + str(record.args)
        assert ROBOT_TOKEN not in rendered and ROBOT_SECRET not in rendered


def _report_twice(**ti_fields):
    for _ in range(2):
        report_failure(
            task_instance=failing_ti("failed", **ti_fields), task=task(ding_on_failure=True), error="x"
        )


def test_a_try_reported_twice_is_sent_once(configure, caplog, robot):
    configure(robot_env(robot))

    with caplog.at_level(logging.INFO, logger="airflow_ext"):
        _report_twice()
        _report_twice(try_number=2, max_tries=2)

    assert len(robot.messages) == 2, "one message per try"
    assert len({m["body"]["msgUuid"] for m in robot.messages}) == 2, robot.messages
    repeats = [r.getMessage() for r in caplog.records if "not sent again" in r.getMessage()]
    assert len(repeats) == 2 and all("already sent by " in line for line in repeats), repeats


def test_a_backend_that_records_each_try_is_not_claimed_for(configure, monkeypatch):
    monkeypatch.setattr(recording_backend, "records_each_try", True, raising=False)
    configure({"AIRFLOW__DINGBOT__DING_BOT_BACKEND": f"{__name__}.recording_backend"})

    _report_twice()

    assert len(RECEIVED) == 2, "its own record decides, as the outbox's unique row does"


def test_without_a_database_every_report_is_sent(configure, monkeypatch):
    from airflow_ext.airflow_port import airflow

    monkeypatch.setattr(airflow(), "metadata_engine", lambda: None)  # an Airflow 3 task process
    configure({"AIRFLOW__DINGBOT__DING_BOT_BACKEND": f"{__name__}.recording_backend"})

    _report_twice()

    assert len(RECEIVED) == 2


def test_a_database_that_cannot_claim_is_one_line_and_the_alert_still_goes(configure, caplog, monkeypatch):
    from sqlalchemy import create_engine

    from airflow_ext import problems
    from airflow_ext.airflow_port import airflow

    unreachable = create_engine("postgresql+psycopg2://nobody:pw-5e1f@127.0.0.1:1/none", future=True)
    monkeypatch.setattr(airflow(), "metadata_engine", lambda: unreachable)
    problems.forget()
    configure({"AIRFLOW__DINGBOT__DING_BOT_BACKEND": f"{__name__}.recording_backend"})

    with caplog.at_level(logging.DEBUG, logger="airflow_ext"):
        _report_twice()

    assert len(RECEIVED) == 2, "a possible repeat, never a lost alert"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "sent without claiming the try: OperationalError" in errors[0], errors
    assert "pw-5e1f" not in caplog.text


class _UnreadableFlags:
    """A task whose flags cannot be read: the worst a broken operator can do to the hook."""

    def __getattr__(self, name):
        raise RuntimeError(f"{name} is broken")


def test_alert_if_wanted_logs_and_never_raises_when_the_task_is_broken(caplog):
    task_instance = SimpleNamespace(dag_id="d", task_id="t", run_id="r", try_number=1, map_index=-1)
    with caplog.at_level(logging.ERROR, logger="airflow_ext"):
        hooks.alert_if_wanted(AlertKind.FAILURE, task_instance, _UnreadableFlags(), "boom", None)
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage().startswith("DingTalk alert for ") and "not affected" in record.getMessage()
    assert record.exc_info and " is broken" in str(record.exc_info[1])
