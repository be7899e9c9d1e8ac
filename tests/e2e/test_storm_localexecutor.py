"""An alert storm in production shape: the scheduler with LocalExecutor on PostgreSQL runs a DAG
whose 104 task instances fail, about 1.4 a second for 70 seconds (dags/dingbot_storm.py); the
outbox backend records the failures and `airflow-ext deliver` sends them to a robot that enforces
DingTalk's 20 messages a minute and its 10-minute block. Every failure must reach the group, named
exactly once, without one throttled answer.

On Airflow 3 the api-server and the dag-processor run too: task processes have no database, so each
failure reaches the outbox from its supervisor through the api-server's outbox route, with the
try's own Execution API token.
"""

from __future__ import annotations

import bisect
import collections
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.airflow_db import postgres_airflow_database
from tests.conftest import (
    AIRFLOW_LINE,
    BIN,
    ROBOT_SECRET,
    ROBOT_TOKEN,
    assert_no_secret,
    local_executor_env,
    robot_env,
    run,
)
from tests.e2e.scheduled import airflow3_services_env, start, start_services, stop_all, tail

pytestmark = [pytest.mark.e2e, pytest.mark.services]

DAG_ID = "dingbot_storm"
RUN_ID = "e2e_storm"
MAPPED, PLAIN = 100, 4  # as in dags/dingbot_storm.py
EXPECTED = {("storm", i) for i in range(MAPPED)} | {(f"plain_{n}", -1) for n in range(PLAIN)}
RATE_LIMIT, WINDOW_S = 20, 60.0  # the FakeRobot defaults: DingTalk's rule

#: From the scheduler's start until the last failure is in the group: the storm lasts 70 s (longer
#: where the executor cannot keep up), the deliverer needs at most a window more to catch up.
DELIVERY_TIMEOUT_S = 180
#: The last task's state (and the run's) is committed right after its alert was recorded.
SETTLE_TIMEOUT_S = 30


# -- reading what the group saw --------------------------------------------------------------------

SINGLE_FIELD = re.compile(r"^\*\*(DAG|Task|Run|Try|Host):\*\* (.+?)\s*$", re.M)
SINGLE_TRY = re.compile(r"^(\d+) of (\d+) \((final failure|will retry)\)$")
DIGEST_HEADING = re.compile(r"^#### 🔴 (\d+) Airflow task failures?\b")
DIGEST_GROUP = re.compile(r"^\*\*(.+?)\*\* · run (.+)$")
DIGEST_ENTRY = re.compile(
    r"^- (?P<task>.+?)(?: \[map index (?P<index>\d+)\])? · try (?P<try>\d+) of (?P<of>\d+)"
    r" · (?P<outcome>failed|will retry)(?: · |$)"
)
DIGEST_HOST = re.compile(r" · on (?P<host>.+?)(?: · \[log\]\(|$)")
#: A JSON Web Token (header.payload.signature, base64url), as Airflow 3 gives each try.
JWT = re.compile(r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}")
TASK_WITH_INDEX = re.compile(r"^(?P<task>.+?)(?: \[map index (?P<index>\d+)\])?$")

Named = collections.namedtuple("Named", "dag run task map_index try_number attempts outcome host")


def named_in(message_text: str) -> list[Named]:
    """The failures a message names: one for a single alert, every entry of a digest."""
    if "**Task:** " in message_text:
        fields = dict(SINGLE_FIELD.findall(message_text))
        task = TASK_WITH_INDEX.match(fields["Task"])
        tried = SINGLE_TRY.match(fields["Try"])
        assert task and tried, message_text
        outcome = "failed" if tried[3] == "final failure" else "will retry"
        index = int(task["index"]) if task["index"] else -1
        return [
            Named(
                fields["DAG"],
                fields["Run"],
                task["task"],
                index,
                int(tried[1]),
                int(tried[2]),
                outcome,
                fields.get("Host"),
            )
        ]

    heading = DIGEST_HEADING.match(message_text)
    assert heading, f"neither a single alert nor a digest:\n{message_text}"
    named, group = [], None
    for line in message_text.splitlines():
        if match := DIGEST_GROUP.match(line):
            group = match.groups()
        elif match := DIGEST_ENTRY.match(line):
            assert group, f"an entry outside of a run's group:\n{message_text}"
            index = int(match["index"]) if match["index"] else -1
            host = DIGEST_HOST.search(line)
            named.append(
                Named(
                    *group,
                    match["task"],
                    index,
                    int(match["try"]),
                    int(match["of"]),
                    match["outcome"],
                    host["host"] if host else None,
                )
            )
    assert len(named) == int(heading[1]), f"the heading's count is not the entries':\n{message_text}"
    return named


def all_named(messages) -> list[Named]:
    return [n for m in messages for n in named_in(m["body"]["markdown"]["text"])]


def refused(requests) -> list[dict]:
    """Requests the robot answered with a non-zero errcode (or not at all)."""
    return [r for r in requests if r["errcode"] != 0]


def timeline(requests) -> list[tuple[float, int | None]]:
    start = min((r["received_at"] for r in requests), default=0.0)
    return [(round(r["received_at"] - start, 3), r["errcode"]) for r in requests]


def busiest_window(times: list[float], window_s: float) -> int:
    """Most messages received within any ``window_s`` (the robot's rolling window)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window_s) - i for i, t in enumerate(times)), default=0)


# -- the test --------------------------------------------------------------------------------------


@pytest.fixture
def postgres_metadata_url():
    """A migrated PostgreSQL database for Airflow's metadata, dropped (WITH (FORCE)) afterwards."""
    with postgres_airflow_database() as url:
        yield url


#: The Airflow services of a scheduled run on each line (Airflow 3's workers call the api-server).
SERVICES = {"2": ("scheduler",), "3": ("api-server", "scheduler", "dag-processor")}


@pytest.fixture
def storm_env(airflow_base_env, postgres_metadata_url, robot, tmp_path):
    environment = airflow3_services_env if AIRFLOW_LINE == "3" else local_executor_env
    env = environment(
        airflow_base_env,
        tmp_path / "home",
        postgres_metadata_url,
        **robot_env(robot, AIRFLOW__DINGBOT__DING_BOT_BACKEND="airflow_ext.dingbot.outbox_sender"),
        AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=str(len(EXPECTED)),
        AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY="64",
    )
    return env


def test_storm_of_failures_reaches_the_robot_unthrottled(storm_env, postgres_metadata_url, robot, tmp_path):
    airflow, airflow_ext = str(BIN / "airflow"), str(BIN / "airflow-ext")
    reserialize = run([airflow, "dags", "reserialize"], storm_env)
    assert reserialize.returncode == 0, reserialize.stdout + reserialize.stderr
    trigger = run([airflow, "dags", "trigger", DAG_ID, "--run-id", RUN_ID], storm_env)
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr

    metadata = create_engine(postgres_metadata_url, poolclass=NullPool)

    def states() -> tuple[collections.Counter, str | None]:
        with metadata.connect() as conn:
            tis = conn.execute(
                text("SELECT state FROM task_instance WHERE dag_id = :dag AND run_id = :run"),
                {"dag": DAG_ID, "run": RUN_ID},
            ).all()
            run_state = conn.execute(
                text("SELECT state FROM dag_run WHERE dag_id = :dag AND run_id = :run"),
                {"dag": DAG_ID, "run": RUN_ID},
            ).scalar()
        return collections.Counter(state for (state,) in tis), run_state

    deliverer_log = tmp_path / "deliver.log"
    processes, service_logs = start_services(storm_env, tmp_path, SERVICES[AIRFLOW_LINE])
    scheduler_log = service_logs["scheduler"]
    started = time.monotonic()
    try:
        processes.append(start([airflow_ext, "deliver"], storm_env, deliverer_log))
        service_logs["deliver"] = deliverer_log
        deadline = started + DELIVERY_TIMEOUT_S
        named: set[tuple[str, int]] = set()
        while time.monotonic() < deadline:
            named = {(n.task, n.map_index) for n in all_named(robot.messages)}
            if EXPECTED <= named or refused(robot.requests):
                break  # a throttled robot refuses everything for 10 minutes: no use waiting
            for process, log in zip(processes, service_logs.values()):
                assert process.poll() is None, f"{log.name} exited early:\n{tail(log)}"
            time.sleep(0.5)
        delivered_s = time.monotonic() - started

        ti_states, run_state = states()
        assert not refused(robot.requests), (
            f"the robot refused requests: {refused(robot.requests)}\n"
            f"requests (s after the first, errcode): {timeline(robot.requests)}\n"
            f"--- deliverer:\n{tail(deliverer_log)}"
        )
        assert EXPECTED <= named, (
            f"after {DELIVERY_TIMEOUT_S} s, {len(EXPECTED - named)} failures never reached the robot "
            f"(e.g. {sorted(EXPECTED - named)[:5]}); task states {dict(ti_states)}, run {run_state}, "
            f"{len(robot.messages)} messages"
            f"\n--- deliverer:\n{tail(deliverer_log)}\n--- scheduler:\n{tail(scheduler_log, 1500)}"
        )
        settle_deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while (ti_states, run_state) != ({"failed": len(EXPECTED)}, "failed"):
            if time.monotonic() > settle_deadline:
                break
            time.sleep(0.5)
            ti_states, run_state = states()
        status = run([airflow_ext, "outbox", "status"], storm_env)
    finally:
        stop_all(processes)
        metadata.dispose()

    messages, requests = robot.messages, robot.requests
    named_list = all_named(messages)
    # Every failure reached the group, each named exactly once, as the final failure of its only try.
    duplicates = [
        key for key, n in collections.Counter((n.task, n.map_index) for n in named_list).items() if n > 1
    ]
    assert not duplicates, f"named more than once: {duplicates}"
    assert {(n.task, n.map_index) for n in named_list} == EXPECTED
    assert {(n.dag, n.run, n.try_number, n.attempts, n.outcome) for n in named_list} == {
        (DAG_ID, RUN_ID, 1, 1, "failed")
    }
    # ... without a single refusal: the robot never throttled (or refused) a request.
    assert not refused(requests), timeline(requests)
    assert all(m["signed"] for m in messages)
    times = [m["received_at"] for m in messages]
    assert busiest_window(times, WINDOW_S) <= RATE_LIMIT, sorted(t - min(times) for t in times)
    assert len(messages) < len(EXPECTED), "a storm is coalesced into digests"
    # More than a window's worth of messages: the limit was really in play, the deliverer had to
    # wait for its oldest sends to leave the window (with 20 or fewer, no robot could throttle).
    assert len(messages) > RATE_LIMIT, len(messages)

    # Airflow's own record of the run: every task instance failed.
    assert ti_states == {"failed": len(EXPECTED)}, ti_states
    assert run_state == "failed"
    # The outbox recorded each failure once and sent all of it.
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(rf"pending 0 \(oldest -\), sent {len(EXPECTED)}, dead 0\b", status.stdout), status.stdout

    # No credential in anything the run printed or logged: every service, every task's log.
    logs = [*service_logs.values(), *Path(storm_env["AIRFLOW_HOME"], "logs").rglob("*")]
    task_logs = [p for p in logs if p.is_file() and "attempt=" in p.name]
    assert len(task_logs) == len(EXPECTED), len(task_logs)
    for path in logs:
        if path.is_file():
            content = path.read_text(errors="replace")
            assert ROBOT_TOKEN not in content and ROBOT_SECRET not in content, path
            assert not JWT.search(content), f"a token in {path}"
    if AIRFLOW_LINE == "3":  # each failure went from its task process to its supervisor to the api-server
        said = "\n".join(p.read_text(errors="replace") for p in task_logs)
        assert said.count("handed to the supervisor for the outbox") == len(EXPECTED)
        # LocalExecutor's supervisors log to the scheduler's output once the task's log is closed.
        queued = scheduler_log.read_text(errors="replace").count(
            "queued in the outbox through the api-server"
        )
        assert queued == len(EXPECTED), queued
    assert_no_secret(status.stdout, status.stderr, reserialize.stdout, reserialize.stderr, trigger.stdout)
    print(f"{len(EXPECTED)} failures in {len(messages)} messages, {delivered_s:.0f} s after the start")
