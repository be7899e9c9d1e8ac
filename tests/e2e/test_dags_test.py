"""The real patched Airflow (`airflow dags test`, `airflow tasks test`) against the local robot."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime

import pytest

from airflow_ext.render import unescape_markdown
from tests.conftest import AIRFLOW_LINE, E2E_DAGS, ROBOT_KEYWORD, assert_no_secret, marked, robot_env

pytestmark = pytest.mark.e2e


def _alerts(robot) -> list[tuple[str, str, str]]:
    """(task id incl. map index, outcome, "try N of M") for each message the robot accepted."""
    found = []
    for message in robot.messages:
        text = message["body"]["markdown"]["text"]
        task = re.search(r"\*\*Task:\*\* (.+?)  \n", text).group(1)
        attempt = re.search(r"\*\*Try:\*\* (\d+ of \d+) \((will retry|final failure)\)", text)
        found.append((task, attempt.group(2), attempt.group(1)))
    return sorted(found)


def _dags_test(airflow, robot, dag_id: str, **env: str):
    result = airflow(["dags", "test", dag_id], robot_env(robot, **env))
    assert_no_secret(result.stdout, result.stderr)
    return result


def test_default_args_alert_on_retry_and_on_final_failure(airflow, robot):
    _dags_test(airflow, robot, "dingbot_default_args")

    assert _alerts(robot) == [
        ("fails", "final failure", "2 of 2"),
        ("fails", "will retry", "1 of 2"),
    ]
    for message in robot.messages:
        assert message["signed"], "every request carries a fresh signature"
        body = message["body"]
        assert ROBOT_KEYWORD in body["markdown"]["title"] and ROBOT_KEYWORD in body["markdown"]["text"]
        assert "dingbot_default_args" in body["markdown"]["text"]
        assert "ValueError" in body["markdown"]["text"]
        # The task log in each line's UI: 2.x's grid view, 3.x's task instance page.
        link = {"2": "/dags/dingbot_default_args/grid?dag_run_id=", "3": "/dags/dingbot_default_args/runs/"}
        assert link[AIRFLOW_LINE] in body["markdown"]["text"]


def test_explicit_kwargs_choose_which_outcome_alerts(airflow, robot):
    _dags_test(airflow, robot, "dingbot_explicit_kwargs")

    assert _alerts(robot) == [
        ("failure_only", "final failure", "2 of 2"),
        ("retry_only", "will retry", "1 of 2"),
    ]


def test_taskflow_and_task_group_default_args(airflow, robot):
    _dags_test(airflow, robot, "dingbot_taskflow")

    # from_default_args: ding_on_failure from the DAG; the group adds ding_on_retry, retries=0 on the task.
    assert _alerts(robot) == [
        ("from_default_args", "final failure", "2 of 2"),
        ("group.in_group", "final failure", "1 of 1"),
    ]


def test_mapped_tasks_alert_per_map_index(airflow, robot):
    _dags_test(airflow, robot, "dingbot_mapped")

    assert _alerts(robot) == [
        ("classic_mapped [map index 0]", "final failure", "1 of 1"),
        ("classic_mapped [map index 1]", "final failure", "1 of 1"),
        ("taskflow_mapped [map index 0]", "final failure", "1 of 1"),
        ("taskflow_mapped [map index 1]", "final failure", "1 of 1"),
        ("taskflow_mapped [map index 2]", "final failure", "1 of 1"),
    ]


def test_no_alert_when_flags_are_off_or_task_succeeds(airflow, robot):
    result = _dags_test(airflow, robot, "dingbot_flags_off")

    assert marked(result.stdout + result.stderr, "failed")  # the DAG did run and fail
    assert robot.requests == []


def test_tasks_test_sends_the_retry_alert_of_its_single_try(airflow, robot):
    result = airflow(["tasks", "test", "dingbot_default_args", "fails"], robot_env(robot))
    assert_no_secret(result.stdout, result.stderr)

    assert _alerts(robot) == [("fails", "will retry", "1 of 2")]


def test_refused_alert_is_logged_once_and_changes_nothing(airflow, robot):
    robot.set_mode("errcode", errcode=310000, errmsg="keywords not in content")
    result = _dags_test(airflow, robot, "dingbot_default_args")
    output = result.stdout + result.stderr

    assert len(robot.requests) == 2, "a permanent refusal is not retried"
    refusals = [line for line in output.splitlines() if "errcode=310000" in line]
    assert len(refusals) == 2, refusals  # one line per alert (retry, then final failure)
    assert marked(output, "up_for_retry") and marked(output, "failed")


#: A log line's own time, as Airflow 2 (``[2026-12-07T17:52:00.143+0000] ...``) and Airflow 3
#: (``2026-12-07T17:51:23.806919Z [info ...``) print it.
LOGGED_AT = re.compile(r"^\[?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)")


def _logged_at(line: str) -> datetime | None:
    match = LOGGED_AT.match(line)
    return datetime.fromisoformat(match.group(1)) if match else None


def test_silent_robot_costs_at_most_the_deadline(airflow, robot):
    robot.set_mode("hang")
    read_timeout_s = 30
    result = airflow(
        ["tasks", "test", "dingbot_default_args", "fails"],
        robot_env(robot, AIRFLOW__DINGBOT__TIMEOUT="2", AIRFLOW__DINGBOT__READ_TIMEOUT=str(read_timeout_s)),
    )
    output = result.stdout + result.stderr

    assert marked(output, "up_for_retry")
    lines = result.stdout.splitlines()
    (said,) = [i for i, line in enumerate(lines) if re.search(r"not delivered after 2\.\d s", line)]
    # What the alert cost the task, by Airflow's own clock: from the last line Airflow logged before
    # the alert's outcome (the try's new state) to the first after it. The deadline ended the wait:
    # the 30 s read timeout would show here (the whole process is no measure: it starts Airflow).
    before = next(t for line in reversed(lines[:said]) if (t := _logged_at(line)))
    after = next(t for line in lines[said + 1 :] if (t := _logged_at(line)))
    assert (after - before).total_seconds() < read_timeout_s, lines[said - 1 : said + 2]
    assert_no_secret(output)


def test_debug_logging_of_a_failing_robot_prints_no_secret(airflow, robot):
    robot.set_mode("http500")
    result = airflow(
        ["tasks", "test", "dingbot_default_args", "fails"],
        robot_env(robot, AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG", AIRFLOW__DINGBOT__TIMEOUT="1"),
    )
    output = result.stdout + result.stderr

    assert "urllib3.connectionpool" in output or "connectionpool.py" in output, (
        "DEBUG request lines were logged"
    )
    assert "access_token=***" in output
    assert "HTTP 500" in output
    assert_no_secret(output)


def test_dags_test_at_debug_prints_no_credential(airflow, robot):
    """`dags test` runs the task in its own process; at DEBUG, Airflow 3's in-process comms log each
    request the task makes, the MaskSecret requests that register the robot's credentials with the
    masker among them (patch 0010 logs those by type only)."""
    result = _dags_test(airflow, robot, "dingbot_default_args", AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG")
    output = result.stdout + result.stderr

    assert len(robot.messages) == 2, output[-3000:]
    assert " DEBUG " in output or "[debug" in output, "DEBUG lines were logged"
    if AIRFLOW_LINE == "3":
        assert "Sending request (body omitted)" in output, "the credentials were registered in-process"
    assert robot.url.split("?", 1)[1] not in output  # the webhook's query: token, timestamp, sign


def test_a_connections_password_in_the_failure_is_masked_as_in_the_log(airflow, robot):
    password = "warehouse-pass-6d5c4b"
    connection = {"conn_type": "postgres", "host": "db.internal", "login": "etl", "password": password}
    # (`dags test` itself prints the traceback unmasked on the console: Airflow's output, not the alert.)
    _dags_test(airflow, robot, "dingbot_masked", AIRFLOW_CONN_DINGBOT_WAREHOUSE=json.dumps(connection))

    (message,) = robot.messages
    text = message["body"]["markdown"]["text"]
    assert "PermissionError" in text and "db.internal" in text, text
    assert password not in text and "etl:***" in unescape_markdown(text), text


def test_hostile_failure_text_is_shown_as_written_and_takes_no_effect(airflow, robot):
    sys.path.insert(0, str(E2E_DAGS))
    try:
        from dingbot_hostile import HOSTILE
    finally:
        sys.path.remove(str(E2E_DAGS))
    _dags_test(airflow, robot, "dingbot_hostile", AIRFLOW__DINGDING__AT_MOBILES="13900000000")

    (message,) = robot.messages
    text = message["body"]["markdown"]["text"]
    assert "[here](" not in text and "<b>" not in text and "\n# Fake" not in text, text
    assert "1337" not in text, "nothing from the task is evaluated as a template"
    # Shown as written: unescaped, the text holds the message (markdown line breaks aside).
    assert " ".join(HOSTILE.split()) in " ".join(unescape_markdown(text).split()), text
    # Only the configured mobile is pinged, however the text spells one.
    assert message["pinged"] == ["13900000000"] and not message["at_all"]
