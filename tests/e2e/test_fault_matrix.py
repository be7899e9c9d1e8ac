"""The fault matrix: the real patched Airflow against each way a DingTalk robot can misbehave.

Each row runs ``airflow dags test`` on a DAG whose one task fails, is retried once at once and fails
again, with ding_on_retry and ding_on_failure on, against a robot in one fault mode. The reference is
the same DAG with the flags off (plain Airflow), run in the same session. Per row:

(a) what the metadata database records of the task's tries is what it records for the reference;
(b) every alert ends within ``[dingbot] timeout`` (+ 0.2 s) and the run takes less than
    tries x (timeout + 1 s) longer than the reference;
(c) each try logs exactly one line, after Airflow decided the try's state, naming what happened;
    our code logs no traceback; the robot saw as many requests per try as the retry policy allows;
(d) no output holds the access_token or the secret.

Every run gets its own copy of the migrated database, so the rows run concurrently
(``DINGBOT_E2E_WORKERS`` processes at a time, default: the number of CPUs).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from airflow_ext.fake_robot import FakeRobot
from tests.conftest import (
    AIRFLOW_LINE,
    BIN,
    E2E_DAGS,
    ROBOT_KEYWORD,
    ROBOT_SECRET,
    ROBOT_TOKEN,
    assert_no_secret,
    robot_env,
    run,
)

pytestmark = pytest.mark.e2e

DAG_FILE = E2E_DAGS / "dingbot_fault_matrix.py"
DAG_ID = "dingbot_fault_matrix"
REFERENCE_DAG_ID = "dingbot_fault_matrix_reference"

TIMEOUT_S = 2.0
MAX_ATTEMPTS = 3
#: What the failure path may cost per try on top of the deadline.
SLACK_PER_TRY_S = 1.0
#: The hard stop waits this long past the deadline; rounding adds the rest.
LINE_SLACK_S = 0.2

#: The outcome line of airflow_ext.hooks.deliver_alert, one per alert.
OUTCOME = re.compile(
    r"DingTalk (?P<kind>retry|failure) alert for \S+ run \S+ (?P<said>try (?P<try>\d+) "
    r"(?:delivered in (?P<sent_s>\d+\.\d+) s|not delivered after (?P<failed_s>\d+\.\d+) s: (?P<cause>.+?)))"
    # Airflow 3's log format ends a line with the logger's name and key=value pairs.
    r"(?:\s+\[[\w.]+\](?:\s+\w+=\S+)*)?$"
)
#: Airflow's line for a failed try, once per try; our alert comes after it. Airflow 2 logs the state
#: it gave the try; Airflow 3's task runner logs the failure it is about to finalize (the server
#: records FAILED only after finalize, where the alert is sent).
MARKED = {"2": "Marking task as ", "3": "Task failed with exception"}[AIRFLOW_LINE]
#: Event-log entries of a failed try: Airflow 2 writes "failed" for every one, Airflow 3 the state.
FAILURE_EVENTS = {"failed", "up_for_retry"}
#: The event-log entries after which a try's alert may reach the robot. Airflow 2 records the
#: failure before its failure handling alerts; Airflow 3 records FAILED only after finalize, so there
#: a try's alerts are counted from the try's start.
HANDLING_FROM = {"2": FAILURE_EVENTS, "3": {"running"}}[AIRFLOW_LINE]
#: How `airflow dags test` is told which file holds the DAG.
DAG_FILE_OPTION = {"2": "--subdir", "3": "--dagfile-path"}[AIRFLOW_LINE]
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Row:
    id: str
    #: None: nothing listens on the robot's port.
    mode: str | None
    mode_kw: dict = field(default_factory=dict)
    #: Extra [dingbot] options, as AIRFLOW__DINGBOT__<KEY>.
    dingbot: dict = field(default_factory=dict)
    delivered: bool = False
    #: A regex for what the line says after "not delivered after N s: ".
    cause: str = ""
    #: Requests the robot may receive per try: (at least, at most).
    requests: tuple[int, int] = (1, 1)
    #: Messages the robot may accept per try: (at least, at most).
    messages: tuple[int, int] = (0, 0)


#: A permanent refusal is not tried again.
ONCE = (1, 1)
#: A retryable failure that comes back at once is tried again: the backoff before the 2nd and 3rd
#: attempts (at most 0.5 s and 1 s) fits the deadline.
RETRIED = (2, MAX_ATTEMPTS)


def _errcode_row(errcode: int, name: str, errmsg: str, hint: str, requests: tuple[int, int]) -> Row:
    return Row(
        id=f"errcode-{name}",
        mode="errcode",
        mode_kw={"errcode": errcode, "errmsg": errmsg},
        cause=rf"the robot refused the message: errcode={errcode} errmsg={re.escape(repr(errmsg))} \({hint}",
        requests=requests,
    )


ROWS = [
    Row("ok", "ok", delivered=True, messages=(1, 1)),
    Row("connection-refused", None, cause=r"cannot reach the robot \(Connection refused\)", requests=(0, 0)),
    # The deadline, not the 30 s read timeout, ends the only attempt.
    Row("hang", "hang", dingbot={"READ_TIMEOUT": "30"}, cause="the robot did not answer in time"),
    Row("slow-delivered", "slow", {"delay_s": 0.5}, delivered=True, messages=(1, 1)),
    # The robot still takes the first attempt's message once its delay is over; the msgUuid keeps
    # the retries of the same try from showing it twice.
    Row(
        "slow-beyond-read-timeout",
        "slow",
        {"delay_s": 1.0},
        dingbot={"READ_TIMEOUT": "0.3"},
        cause="the robot did not answer in time",
        requests=RETRIED,
        messages=(0, 1),
    ),
    Row("http500", "http500", cause="the robot answered HTTP 500", requests=RETRIED),
    Row("garbage", "garbage", cause="the robot answered HTTP 200 without a JSON errcode", requests=RETRIED),
    _errcode_row(310000, "310000-security", "keywords not in content", "security settings", ONCE),
    _errcode_row(
        130101, "130101-throttled", "send too fast, exceed 20 times per minute", "throttled", RETRIED
    ),
    _errcode_row(410100, "410100-throttled", "发送速度太快而限流", "throttled", RETRIED),
    _errcode_row(400101, "400101-token", "access_token不存在", "the access_token", ONCE),
    _errcode_row(300001, "300001-token", "token is not exist", "the access_token", ONCE),
    _errcode_row(460101, "460101-too-long", "message too long", "the message is too long", ONCE),
    _errcode_row(-1, "minus1-busy", "系统繁忙", "DingTalk is busy", RETRIED),
]


class ArrivalRobot(FakeRobot):
    """Notes when each send request arrives: FakeRobot records a "slow" request only once it has
    answered, which can be after the run ended."""

    def __init__(self) -> None:
        super().__init__(access_token=ROBOT_TOKEN, secret=ROBOT_SECRET, keyword=ROBOT_KEYWORD)
        self.arrivals: list[float] = []

    def _handle_send(self, handler, path, query, body, received_at):
        with self._lock:
            self.arrivals.append(received_at)
        super()._handle_send(handler, path, query, body, received_at)


@dataclass
class Run:
    returncode: int
    #: Of the whole process; reported, not asserted: interpreter start and exit, the same for both
    #: DAGs, are most of it and almost all of its noise when other processes share the CPUs.
    wall_s: float
    #: The DagRun's span as Airflow recorded it: both tries with their failure handling.
    run_s: float
    #: Every output of the run: stdout, stderr and any log file, by name.
    outputs: dict[str, str]
    #: [(try_number, state)]: task_instance_history, then task_instance.
    sequence: list[tuple[int, str]]
    #: [(try_number, event)] of the task in the event log, one of FAILURE_EVENTS per failed try.
    #: Airflow 2's `dags test` runs the tries in-process without the RUNNING state, so it writes no
    #: task_instance_history row for try 1: this is where the database keeps it.
    events: list[tuple[int, str]]
    dag_run_state: str
    #: When Airflow recorded each try's failure (epoch seconds).
    failed_at: dict[int, float]
    #: From when each try's alert may arrive (epoch seconds): see HANDLING_FROM.
    handling_from: dict[int, float]

    @property
    def tries(self) -> int:
        return len(self.failed_at)

    def per_try(self, moments: list[float]) -> list[int]:
        """How many of ``moments`` fall in each try's failure handling; index 0: before any."""
        counts = [0] * (self.tries + 1)
        for moment in moments:
            counts[max((n for n, at in self.handling_from.items() if at <= moment), default=0)] += 1
        return counts


def _epoch(db_time: str) -> float:
    moment = datetime.fromisoformat(db_time)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _last_dag_run_id(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT coalesce(max(id), 0) FROM dag_run").fetchone()[0]


def _read_db(db: Path, dag_id: str, after_id: int):
    with contextlib.closing(sqlite3.connect(db)) as con:
        ((run_id, dag_run_state, started, ended),) = con.execute(
            "SELECT run_id, state, start_date, end_date FROM dag_run WHERE dag_id = ? AND id > ?",
            (dag_id, after_id),
        ).fetchall()
        sequence = []
        for table in ("task_instance_history", "task_instance"):
            sequence += con.execute(
                f"SELECT try_number, state FROM {table} WHERE dag_id = ? AND run_id = ? ORDER BY try_number",
                (dag_id, run_id),
            ).fetchall()
        logged = con.execute(
            "SELECT try_number, event, dttm FROM log WHERE dag_id = ? AND run_id = ? AND task_id IS NOT NULL "
            "ORDER BY id",
            (dag_id, run_id),
        ).fetchall()
    events = [(try_number, event) for try_number, event, _ in logged]
    failed_at: dict[int, float] = {}
    handling_from: dict[int, float] = {}
    for try_number, event, dttm in logged:
        if event in FAILURE_EVENTS:
            failed_at.setdefault(try_number, _epoch(dttm))
        if event in HANDLING_FROM:
            handling_from.setdefault(try_number, _epoch(dttm))
    return sequence, events, dag_run_state, _epoch(ended) - _epoch(started), failed_at, handling_from


def _dags_test(base_env: dict[str, str], template_db: Path, home: Path, dag_id: str, env: dict) -> Run:
    home.mkdir()
    db = home / "airflow.db"
    with (
        contextlib.closing(sqlite3.connect(template_db)) as src,
        contextlib.closing(sqlite3.connect(db)) as dst,
    ):
        src.backup(dst)
    earlier = _last_dag_run_id(db)  # the copy holds the runs of tests before this module
    full_env = {
        **base_env,
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}",
    }
    started = time.monotonic()
    command = [str(BIN / "airflow"), "dags", "test", dag_id, DAG_FILE_OPTION, str(DAG_FILE)]
    result = run(command, full_env, 300)
    wall_s = time.monotonic() - started

    outputs = {"stdout": result.stdout, "stderr": result.stderr}
    for log in sorted((home / "logs").rglob("*")):
        if log.is_file():
            outputs[str(log.relative_to(home))] = log.read_text(encoding="utf-8", errors="replace")
    sequence, events, dag_run_state, run_s, failed_at, handling_from = _read_db(db, dag_id, earlier)
    return Run(
        result.returncode, wall_s, run_s, outputs, sequence, events, dag_run_state, failed_at, handling_from
    )


def _dingbot_env(robot: FakeRobot, row: Row) -> dict[str, str]:
    options = {"TIMEOUT": str(TIMEOUT_S), "MAX_ATTEMPTS": str(MAX_ATTEMPTS), **row.dingbot}
    return robot_env(robot, **{f"AIRFLOW__DINGBOT__{key}": value for key, value in options.items()})


def _selected_rows(session) -> list[Row]:
    """The rows this session runs (all, unless -k or node ids picked some): only those are started."""
    module = sys.modules[__name__]
    return [
        item.callspec.params["row"]
        for item in session.items
        if getattr(item, "module", None) is module and hasattr(item, "callspec")
    ]


@pytest.fixture(scope="module")
def matrix(request, airflow_base_env, tmp_path_factory):
    """Start the reference and every selected row at once, a few processes at a time.

    Yields ((robot, future) of the reference, {row id: (robot, future)}); each test waits for its row.
    """
    template_db = Path(airflow_base_env["AIRFLOW_HOME"]) / "airflow.db"
    assert template_db.is_file(), "the session's Airflow home has no SQLite database to copy"
    root = tmp_path_factory.mktemp("fault-matrix")
    workers = int(os.environ.get("DINGBOT_E2E_WORKERS") or os.cpu_count() or 2)

    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=workers))
        stack.callback(pool.shutdown, cancel_futures=True)  # after -x: drop the runs not started yet

        def start(dag_id: str, row: Row):
            robot = stack.enter_context(ArrivalRobot())
            env = _dingbot_env(robot, row)
            if row.mode is None:
                robot.stop()  # its port is free now: connecting to it is refused
            else:
                robot.set_mode(row.mode, **row.mode_kw)
            return robot, pool.submit(_dags_test, airflow_base_env, template_db, root / row.id, dag_id, env)

        reference = start(REFERENCE_DAG_ID, Row("reference", "ok"))
        yield reference, {row.id: start(DAG_ID, row) for row in _selected_rows(request.session)}


@pytest.fixture(scope="module")
def reference(matrix) -> Run:
    robot, future = matrix[0]
    ref = future.result()
    assert robot.arrivals == [], "with the flags off the patch sends nothing"
    # The bound in (b) and the lines in (c) count on the task really failing twice.
    assert sorted(ref.failed_at) == [1, 2], ref.events
    return ref


def _summary(row: Row, ran: Run, ref: Run, requests: list[int], messages: list[int], lines) -> str:
    said = " | ".join(match["said"] for _, _, match in lines)
    return (
        f"{row.id}: run {ran.run_s:.2f} s (reference {ref.run_s:.2f} s), process {ran.wall_s:.1f} s "
        f"(reference {ref.wall_s:.1f} s), requests per try {requests[1:]}, messages per try "
        f"{messages[1:]}: {said}"
    )


@pytest.mark.parametrize("row", [pytest.param(row, id=row.id) for row in ROWS])
def test_fault(row: Row, matrix, reference: Run):
    robot, future = matrix[1][row.id]
    ran = future.result()
    requests = ran.per_try(robot.arrivals)
    messages = ran.per_try([message["received_at"] for message in robot.messages])
    lines = [
        (name, index, match)
        for name, text in ran.outputs.items()
        for index, line in enumerate(text.splitlines())
        if (match := OUTCOME.search(line))
    ]
    print(_summary(row, ran, reference, requests, messages, lines))

    # (d) first: a failing assertion below may print an output.
    assert_no_secret(*ran.outputs.values())

    # (a) What Airflow records does not depend on the robot.
    assert (ran.sequence, ran.events) == (reference.sequence, reference.events)
    assert (ran.dag_run_state, ran.returncode) == (reference.dag_run_state, reference.returncode)

    # (c) Exactly one line per try, after Airflow gave the try its state, saying what happened.
    said = [match.group(0) for _, _, match in lines]
    assert sorted(int(match["try"]) for _, _, match in lines) == list(range(1, ran.tries + 1)), said
    stdout = ran.outputs["stdout"].splitlines()
    marked = [index for index, line in enumerate(stdout) if MARKED in line]
    assert len(marked) == ran.tries, marked
    for name, index, match in lines:
        number = int(match["try"])
        assert name == "stdout" and marked[number - 1] < index, match.group(0)
        assert number == ran.tries or index < marked[number], match.group(0)
        assert match["kind"] == ("failure" if number == ran.tries else "retry"), match.group(0)
        if row.delivered:
            assert match["sent_s"], match.group(0)
        else:
            assert match["failed_s"] and re.match(row.cause, match["cause"]), match.group(0)
    everything = "\n".join(ran.outputs.values())
    assert not re.search(r'File "[^"]*airflow_ext', everything), "a traceback through our code"
    assert "Failed to send DingTalk alert" not in everything
    assert everything.count(TRACEBACK) == "\n".join(reference.outputs.values()).count(TRACEBACK)

    # (b) Each alert within its deadline; the run within tries x (deadline + slack) of plain Airflow.
    for _, _, match in lines:
        assert float(match["sent_s"] or match["failed_s"]) <= TIMEOUT_S + LINE_SLACK_S, match.group(0)
    assert ran.run_s - reference.run_s < ran.tries * (TIMEOUT_S + SLACK_PER_TRY_S), (
        ran.run_s,
        reference.run_s,
    )

    # The retry policy as the robot saw it; nothing reached it outside a try's failure handling.
    assert requests[0] == 0 and messages[0] == 0
    low, high = row.requests
    assert all(low <= n <= high for n in requests[1:]), requests
    low, high = row.messages
    assert all(low <= n <= high for n in messages[1:]), messages
