"""The fault matrix: the real patched Airflow against each way a chat robot can misbehave.

Each row runs ``airflow dags test`` on a DAG whose one task fails, is retried once at once and fails
again, with ding_on_retry and ding_on_failure on, against a robot in one fault mode. The reference
is the same DAG with the flags off (plain Airflow), run in the same session. A row of the DingTalk
robot of ``[dingding]`` runs alone. The other rows' robots are Airflow Connections (WeCom, Feishu,
Slack, and DingTalk's ``dingding``) chosen by ``[dingbot] default_conn_id``: a channel's faults, and
the channels' deliveries, share a run whose alerts go to all its robots at once, and its line names
each robot's outcome (one Airflow 3 process costs about 10 s of CPU: a run per row would take
minutes). Per row:

(a) what the metadata database records of the task's tries is what it records for the reference;
(b) every alert ends within ``[dingbot] timeout`` (+ 0.2 s) and the tries (from the first try's
    failure handling to the run's end) take less than tries x (timeout + 1 s) longer than the
    reference's;
(c) each try logs exactly one line, after Airflow decided the try's state, naming what happened;
    our code logs no traceback; the robot saw as many requests per try as the retry policy allows;
    what it accepted is within the channel's limits and names the DAG and the task;
(d) no output holds the row's robot's token or secret.

Every run gets its own copy of the migrated database, so the rows run concurrently
(``DINGBOT_E2E_WORKERS`` processes at a time, default: the number of CPUs).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import os
import re
import socket
import sqlite3
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from airflow_ext.channels import dingtalk, feishu, slack, wecom
from airflow_ext.channels.base.robot import encode_body
from airflow_ext.channels.feishu import fake as fake_feishu
from airflow_ext.channels.slack import fake as fake_slack
from airflow_ext.channels.wecom import fake as fake_wecom
from airflow_ext.fake_robot import FakeRobot
from airflow_ext.render import unescape_markdown
from tests.airflow_db import copy_sqlite_home
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


@dataclass(frozen=True)
class Dag:
    file: Path
    task_id: str
    #: Text each alert about it must show.
    shows: str = ""


DAG_ID = "dingbot_fault_matrix"
REFERENCE_DAG_ID = "dingbot_fault_matrix_reference"
#: Fails with a 5000-line Chinese message raised 150 frames deep: every channel must cut it to fit.
CJK_DAG_ID = "dingbot_fault_matrix_cjk"
DAGS = {
    DAG_ID: Dag(E2E_DAGS / "dingbot_fault_matrix.py", "fails"),
    REFERENCE_DAG_ID: Dag(E2E_DAGS / "dingbot_fault_matrix.py", "fails"),
    CJK_DAG_ID: Dag(E2E_DAGS / "dingbot_fault_matrix_cjk.py", "raises_cjk", shows="第1行：数据同步任务失败"),
}

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


#: The robots' credentials of the rows with a Connection: (d) greps every output of a row for its robot's.
WECOM_KEY = "fm-wecom-5d1c9a7e-2b4f"
FEISHU_TOKEN = "fm-feishu-8e2d4c6a1b3f"
FEISHU_SECRET = "fm-feishu-secret-4b7e9d1c0a2f"
SLACK_TOKEN = "T0FAULTMX/B0MATRIX0/faultmatrixwebhooksecret0000"


def _body_bytes(record: dict[str, Any]) -> int:
    """The request body's size: the fake keeps the JSON it parsed, the senders encode it like this."""
    return len(encode_body(record["body"]))


@dataclass(frozen=True)
class Channel:
    """One chat channel as the matrix drives it: its fake, its robot's configuration and its words."""

    name: str
    fake: type[FakeRobot]
    token: str
    #: What the group sees of a message the fake accepted (its record).
    shown: Callable[[dict[str, Any]], str]
    #: The channel's (binding) limit, and the size of an accepted message measured against it.
    limit: int
    size: Callable[[dict[str, Any]], int] = _body_bytes
    secret: str | None = None
    keyword: str | None = None
    #: The Connection's conn type; None: the robot of the [dingding] section.
    conn_type: str | None = None
    #: What follows the fake's address in the Connection's host.
    host_path: str = ""
    #: How a refusal starts the cause (``{code}``, ``{msg}``), the channel's hints for permanent
    #: refusals (by code or by error string) and what the ids of its refusal rows call the code.
    refused: str = "the robot refused the message: errcode={code} errmsg={msg!r}"
    hints: dict = field(default_factory=dict)
    code_word: str = "errcode"

    @property
    def credentials(self) -> set[str]:
        """What must never be printed: the token (for Slack also its secret last part) and secret."""
        return {self.token, self.token.rsplit("/", 1)[-1], self.secret} - {None}

    def robot(self) -> FakeRobot:
        return _arriving(self.fake)(self.token, self.secret, self.keyword)

    def connection(self, robot: FakeRobot) -> str:
        """``robot`` as an ``AIRFLOW_CONN_<ID>`` value."""
        extra = {key: value for key, value in (("secret", self.secret), ("keyword", self.keyword)) if value}
        connection = {
            "conn_type": self.conn_type,
            "host": robot.base_url + self.host_path,
            "password": self.token,
        }
        return json.dumps({**connection, **({"extra": extra} if extra else {})})

    def row_id(self, name: str) -> str:
        return f"{self.name}-{name}" if self.conn_type else name  # the [dingding] robot's rows: no prefix

    def row(self, name: str, mode: str | None, *args, run: str = "", **kwargs) -> Row:
        """A row of this channel. A Connection's row runs with the channel's other faults by default."""
        run = run or (f"{self.name}-faults" if self.conn_type else "")
        return Row(self.row_id(name), mode, *args, channel=self, run=run, **kwargs)

    def refusal(self, name: str, code: int, msg: str, requests: tuple[int, int], hint: str = "", **kw) -> Row:
        """The robot refuses with its own ``code`` and ``msg`` (``kw``: more of the fake's errcode mode).

        ``hint``: a regex for the channel's words about it; by default its hint table's, exactly.
        """
        name = f"{self.code_word}-{name}"
        robot = f"Connection {_conn_id(self.row_id(name))!r}"
        hint = hint or re.escape((self.hints.get(code) or self.hints[msg]).format(name=robot))
        return self.row(
            name,
            "errcode",
            {"errcode": code, "errmsg": msg, **kw},
            cause=rf"{re.escape(self.refused.format(code=code, msg=msg))} \({hint}",
            requests=requests,
        )


def _conn_id(row_id: str) -> str:
    return row_id.replace("-", "_")


DINGTALK = Channel(
    "dingtalk",
    FakeRobot,
    ROBOT_TOKEN,
    shown=lambda record: unescape_markdown(record["body"]["markdown"]["text"]),
    limit=dingtalk.MAX_BODY_BYTES,
    secret=ROBOT_SECRET,
    keyword=ROBOT_KEYWORD,
    hints=dingtalk.PERMANENT_ERRCODE_HINTS,
)
WECOM = Channel(
    "wecom",
    fake_wecom.FakeWeComRobot,
    WECOM_KEY,
    shown=lambda record: record["body"]["markdown"]["content"].replace(wecom.WORD_JOINER, ""),
    # WeCom limits the markdown's content, not the body.
    limit=wecom.MAX_MARKDOWN_CONTENT_BYTES,
    size=lambda record: len(record["body"]["markdown"]["content"].encode("utf-8")),
    conn_type="wecom",
    hints=wecom.PERMANENT_ERRCODE_HINTS,
)
FEISHU = Channel(
    "feishu",
    fake_feishu.FakeFeishuRobot,
    FEISHU_TOKEN,
    shown=lambda record: record["rendered"],
    limit=feishu.MAX_BODY_BYTES,
    secret=FEISHU_SECRET,
    keyword=ROBOT_KEYWORD,
    conn_type="feishu",
    refused="the robot refused the message: code={code} msg={msg!r}",
    hints=feishu.PERMANENT_CODE_HINTS,
    code_word="code",
)
SLACK = Channel(
    "slack",
    fake_slack.FakeSlackWebhook,
    SLACK_TOKEN,
    shown=lambda record: record["shown"],
    limit=slack.MAX_BODY_BYTES,
    conn_type="slackwebhook",
    host_path="/services",
    refused="Slack refused the message: HTTP {code} {msg!r}",
    hints=slack.PERMANENT_ERROR_HINTS,
    code_word="http",
)
#: The DingTalk robot as a ``dingding`` Connection.
DINGDING = replace(DINGTALK, conn_type="dingding")


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
    channel: Channel = DINGTALK
    dag_id: str = DAG_ID
    #: The rows that run in one process, their robots all chosen by ``[dingbot] default_conn_id``
    #: (each alert goes to all of them at once); "": the row runs alone.
    run: str = ""

    @property
    def process(self) -> str:
        return self.run or self.id

    @property
    def conn_id(self) -> str:
        return _conn_id(self.id)


#: A permanent refusal is not tried again.
ONCE = (1, 1)
#: A retryable failure that comes back at once is tried again: the backoff before the 2nd and 3rd
#: attempts (at most 0.5 s and 1 s) fits the deadline.
RETRIED = (2, MAX_ATTEMPTS)
#: What the channels say of a throttled message and of a robot that does not answer in time (words
#: built in their code, not in their hint tables).
THROTTLED = "throttled"
NO_ANSWER = "the robot did not answer in time"
HANG = {"dingbot": {"READ_TIMEOUT": "30"}, "cause": NO_ANSWER}  # the deadline ends the only attempt


def _every_channel(channel: Channel) -> list[Row]:
    """Each channel delivers a plain failure, and a huge CJK one (cut to fit): each with the other
    channels' in one run."""
    return [
        channel.row("ok", "ok", delivered=True, messages=ONCE, run="every-channel-ok"),
        channel.row(
            "cjk-traceback", "ok", delivered=True, messages=ONCE, dag_id=CJK_DAG_ID, run="every-channel-cjk"
        ),
    ]


ROWS = [
    DINGTALK.row("ok", "ok", delivered=True, messages=ONCE),
    *_every_channel(DINGDING),
    DINGTALK.row(
        "connection-refused", None, cause=r"cannot reach the robot \(Connection refused\)", requests=(0, 0)
    ),
    DINGTALK.row("hang", "hang", **HANG),
    DINGTALK.row("slow-delivered", "slow", {"delay_s": 0.5}, delivered=True, messages=ONCE),
    # The robot still takes the first attempt's message once its delay is over; the msgUuid keeps
    # the retries of the same try from showing it twice.
    DINGTALK.row(
        "slow-beyond-read-timeout",
        "slow",
        {"delay_s": 1.0},
        dingbot={"READ_TIMEOUT": "0.3"},
        cause=NO_ANSWER,
        requests=RETRIED,
        messages=(0, 1),
    ),
    DINGTALK.row("http500", "http500", cause="the robot answered HTTP 500", requests=RETRIED),
    DINGTALK.row(
        "garbage", "garbage", cause="the robot answered HTTP 200 without a JSON errcode", requests=RETRIED
    ),
    DINGTALK.refusal("310000-security", 310000, "keywords not in content", ONCE),
    DINGTALK.refusal(
        "130101-throttled", 130101, "send too fast, exceed 20 times per minute", RETRIED, THROTTLED
    ),
    DINGTALK.refusal("410100-throttled", 410100, "发送速度太快而限流", RETRIED, THROTTLED),
    DINGTALK.refusal("400101-token", 400101, "access_token不存在", ONCE),
    DINGTALK.refusal("300001-token", 300001, "token is not exist", ONCE),
    DINGTALK.refusal("460101-too-long", 460101, "message too long", ONCE),
    DINGTALK.refusal("minus1-busy", -1, "系统繁忙", RETRIED, "DingTalk is busy"),
    # WeCom: HTTP 200 with an errcode, like DingTalk; no signing, no keyword.
    *_every_channel(WECOM),
    WECOM.refusal("45009-throttled", fake_wecom.ERR_TOO_FAST, fake_wecom.MSG_TOO_FAST, RETRIED, THROTTLED),
    WECOM.refusal("93000-key", fake_wecom.ERR_KEY, fake_wecom.MSG_KEY, ONCE),
    WECOM.refusal(
        "40058-too-long",
        fake_wecom.ERR_PARAM,
        f"markdown.content exceed max length {fake_wecom.MAX_MARKDOWN_CONTENT_BYTES}",
        ONCE,
    ),
    WECOM.refusal("minus1-busy", -1, "系统繁忙", RETRIED, "WeCom is busy"),
    WECOM.row("http500", "http500", cause="the robot answered HTTP 500", requests=RETRIED),
    WECOM.row("hang", "hang", **HANG),
    # Feishu: a code in the body, with HTTP 200 or 400; signed, with a keyword.
    *_every_channel(FEISHU),
    FEISHU.refusal("11232-throttled", fake_feishu.ERR_TOO_FAST, fake_feishu.MSG_TOO_FAST, RETRIED, THROTTLED),
    FEISHU.refusal("19021-signature", fake_feishu.ERR_SIGN, fake_feishu.MSG_SIGN, ONCE),
    FEISHU.refusal("19024-keyword", fake_feishu.ERR_KEYWORD, fake_feishu.MSG_KEYWORD, ONCE),
    FEISHU.refusal("19022-ip", 19022, "ip not allowed", ONCE),
    FEISHU.refusal(
        "9499-bad-request", fake_feishu.ERR_BAD_REQUEST, fake_feishu.MSG_BAD_REQUEST, ONCE, http_status=400
    ),
    # Under load Feishu answers "too many request" with its Bad Request code: that is throttling.
    FEISHU.refusal(
        "9499-too-many-requests",
        feishu.BAD_REQUEST_CODE,
        feishu.TOO_MANY_REQUESTS_MSG,
        RETRIED,
        THROTTLED,
        http_status=400,
    ),
    FEISHU.row(
        "http500", "http500", cause="the robot answered HTTP 500 without a JSON code", requests=RETRIED
    ),
    FEISHU.row(
        "garbage", "garbage", cause="the robot answered HTTP 200 without a JSON code", requests=RETRIED
    ),
    # Slack: an HTTP status and a short error string.
    *_every_channel(SLACK),
    # The Retry-After of the fake's forced 429 is past the deadline: not tried again, as Slack asked.
    SLACK.refusal(
        "429-retry-after",
        *fake_slack.TOO_FAST,
        ONCE,
        rf"{THROTTLED}: .*asked to wait {fake_slack.FORCED_RETRY_AFTER_S:g} s\)",
    ),
    SLACK.refusal("403-invalid-token", *fake_slack.INVALID_TOKEN, ONCE),
    SLACK.refusal("404-channel-not-found", 404, "channel_not_found", ONCE),
    SLACK.refusal("410-channel-is-archived", 410, "channel_is_archived", ONCE),
    SLACK.refusal("400-invalid-payload", *fake_slack.INVALID_PAYLOAD, ONCE),
    SLACK.refusal("500-rollup-error", 500, "rollup_error", RETRIED, "Slack had trouble on its side"),
]


class _Arrivals:
    """Notes when each send request arrives: a fake records a "slow" request only once it has
    answered, which can be after the run ended."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[float] = []

    def _handle_send(self, handler, path, query, body, received_at):
        with self._lock:
            self.arrivals.append(received_at)
        super()._handle_send(handler, path, query, body, received_at)


@functools.cache
def _arriving(fake: type[FakeRobot]) -> type[FakeRobot]:
    return type(f"Arriving{fake.__name__}", (_Arrivals, fake), {})


@dataclass
class Run:
    returncode: int
    #: Of the whole process; reported, not asserted: interpreter start and exit, the same for both
    #: DAGs, are most of it and almost all of its noise when other processes share the CPUs.
    wall_s: float
    #: The DagRun's span as Airflow recorded it: both tries with their failure handling.
    run_s: float
    #: From the first try's failure handling (see HANDLING_FROM) to the DagRun's end: every alert
    #: falls in it, and none of the start-up before it, which is most of run_s's noise on shared CPUs.
    tries_s: float
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


def _read_db(db: Path, dag_id: str) -> dict[str, Any]:
    """What the database records of the run: the Run's fields from ``run_s`` on, but ``outputs``."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        ((run_id, dag_run_state, started, ended),) = con.execute(
            "SELECT run_id, state, start_date, end_date FROM dag_run WHERE dag_id = ?", (dag_id,)
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
    failed_at: dict[int, float] = {}
    handling_from: dict[int, float] = {}
    for try_number, event, dttm in logged:
        if event in FAILURE_EVENTS:
            failed_at.setdefault(try_number, _epoch(dttm))
        if event in HANDLING_FROM:
            handling_from.setdefault(try_number, _epoch(dttm))
    return {
        "run_s": _epoch(ended) - _epoch(started),
        "tries_s": _epoch(ended) - min(handling_from.values(), default=_epoch(started)),
        "sequence": sequence,
        "events": [(try_number, event) for try_number, event, _ in logged],
        "dag_run_state": dag_run_state,
        "failed_at": failed_at,
        "handling_from": handling_from,
    }


def _dags_test(base_env: dict[str, str], home: Path, dag_id: str, env: dict) -> Run:
    db = copy_sqlite_home(base_env, home)
    full_env = {
        **base_env,
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}",
    }
    started = time.monotonic()
    command = [str(BIN / "airflow"), "dags", "test", dag_id, DAG_FILE_OPTION, str(DAGS[dag_id].file)]
    result = run(command, full_env, 300)
    wall_s = time.monotonic() - started

    outputs = {"stdout": result.stdout, "stderr": result.stderr}
    for log in sorted((home / "logs").rglob("*")):
        if log.is_file():
            outputs[str(log.relative_to(home))] = log.read_text(encoding="utf-8", errors="replace")
    return Run(result.returncode, wall_s, outputs=outputs, **_read_db(db, dag_id))


def _run_env(rows: list[Row], robots: list[FakeRobot]) -> dict[str, str]:
    """Airflow configuration that points alerts at the robots of ``rows``: the [dingding] robot, or
    each robot as a Connection, all of them ``[dingbot] default_conn_id``."""
    chosen: dict[str, str] = {}
    for row in rows:
        clash = [key for key, value in row.dingbot.items() if chosen.setdefault(key, value) != value]
        assert not clash, f"the rows of {row.process} set [dingbot] {clash} differently"
    options = {"TIMEOUT": str(TIMEOUT_S), "MAX_ATTEMPTS": str(MAX_ATTEMPTS), **chosen}
    if rows[0].channel.conn_type is None:
        (robot,) = robots  # the [dingding] section has one robot
        env = robot_env(robot)
    else:
        env = {
            f"AIRFLOW_CONN_{row.conn_id.upper()}": row.channel.connection(robot)
            for row, robot in zip(rows, robots)
        }
        env["AIRFLOW__DINGBOT__DEFAULT_CONN_ID"] = ",".join(row.conn_id for row in rows)
    return {**env, **{f"AIRFLOW__DINGBOT__{key}": value for key, value in options.items()}}


@contextlib.contextmanager
def _refusing(robot: FakeRobot):
    """Stop ``robot`` and hold its port with a socket that does not listen: connecting to it is
    refused, and no robot started later can be given the port (a freed port can be, and then it answers)."""
    address = (robot._host, robot.port)
    robot.stop()
    with socket.socket() as holder:  # no SO_REUSEADDR: no other socket may bind the port meanwhile
        holder.bind(address)
        yield


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

    Yields ((robot, future, robots in its run) of the reference, {row id: the same of the row}); each
    test waits for its row's run.
    """
    root = tmp_path_factory.mktemp("fault-matrix")
    workers = int(os.environ.get("DINGBOT_E2E_WORKERS") or os.cpu_count() or 2)

    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=workers))
        stack.callback(pool.shutdown, cancel_futures=True)  # after -x: drop the runs not started yet

        def start(
            process: str, rows: list[Row]
        ) -> dict[str, tuple[FakeRobot, concurrent.futures.Future, int]]:
            robots = [stack.enter_context(row.channel.robot()) for row in rows]
            env = _run_env(rows, robots)
            for row, robot in zip(rows, robots):
                if row.mode is None:
                    stack.enter_context(_refusing(robot))
                else:
                    robot.set_mode(row.mode, **row.mode_kw)
            (dag_id,) = {row.dag_id for row in rows}
            assert len({row.delivered for row in rows}) == 1, f"{process}: one line cannot say both"
            future = pool.submit(_dags_test, airflow_base_env, root / process, dag_id, env)
            return {row.id: (robot, future, len(rows)) for row, robot in zip(rows, robots)}

        (reference,) = start("reference", [Row("reference", "ok", dag_id=REFERENCE_DAG_ID)]).values()
        processes: dict[str, list[Row]] = {}
        for row in _selected_rows(request.session):
            processes.setdefault(row.process, []).append(row)
        yield (
            reference,
            {
                row_id: started
                for process, rows in processes.items()
                for row_id, started in start(process, rows).items()
            },
        )


@pytest.fixture(scope="module")
def reference(matrix) -> Run:
    robot, future, _ = matrix[0]
    ref = future.result()
    assert robot.arrivals == [], "with the flags off the patch sends nothing"
    # The bound in (b) and the lines in (c) count on the task really failing twice.
    assert sorted(ref.failed_at) == [1, 2], ref.events
    return ref


def _summary(row: Row, ran: Run, ref: Run, requests: list[int], messages: list[int], lines) -> str:
    said = " | ".join(match["said"][:300] for _, _, match in lines)
    return (
        f"{row.id}: tries {ran.tries_s:.2f} s (reference {ref.tries_s:.2f} s), run {ran.run_s:.2f} s "
        f"(reference {ref.run_s:.2f} s), process {ran.wall_s:.1f} s (reference {ref.wall_s:.1f} s), "
        f"requests per try {requests[1:]}, messages per try {messages[1:]}: {said}"
    )


def _says(row: Row, robots: int, cause: str) -> bool:
    """Whether ``cause`` says what happened at the row's robot: alone, the cause is its own; with
    others, it names each robot's (``not delivered to a, b (a: ...; b: ...)``)."""
    if robots == 1:
        return bool(re.match(row.cause, cause))
    own = re.search(rf"(?:\(|; ){re.escape(row.conn_id)}: {row.cause}", cause)
    return cause.startswith("not delivered to ") and bool(own)


def _assert_no_credential(row: Row, outputs: dict[str, str]) -> None:
    assert_no_secret(*outputs.values())
    for name, text in outputs.items():
        leaked = [secret for secret in row.channel.credentials if secret in text]
        assert not leaked, f"a credential of the {row.channel.name} robot leaked into {name}"


@pytest.mark.parametrize("row", [pytest.param(row, id=row.id) for row in ROWS])
def test_fault(row: Row, matrix, reference: Run):
    robot, future, robots = matrix[1][row.id]
    ran = future.result()
    requests = ran.per_try(robot.arrivals)
    accepted = robot.messages
    messages = ran.per_try([message["received_at"] for message in accepted])
    lines = [
        (name, index, match)
        for name, text in ran.outputs.items()
        for index, line in enumerate(text.splitlines())
        if (match := OUTCOME.search(line))
    ]
    print(_summary(row, ran, reference, requests, messages, lines))

    # (d) first: a failing assertion below may print an output.
    _assert_no_credential(row, ran.outputs)

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
            assert match["failed_s"] and _says(row, robots, match["cause"]), match.group(0)
    everything = "\n".join(ran.outputs.values())
    assert not re.search(r'File "[^"]*airflow_ext', everything), "a traceback through our code"
    assert "Failed to send DingTalk alert" not in everything
    assert everything.count(TRACEBACK) == "\n".join(reference.outputs.values()).count(TRACEBACK)

    # (b) Each alert within its deadline; the tries within tries x (deadline + slack) of plain Airflow.
    for _, _, match in lines:
        assert float(match["sent_s"] or match["failed_s"]) <= TIMEOUT_S + LINE_SLACK_S, match.group(0)
    assert ran.tries_s - reference.tries_s < ran.tries * (TIMEOUT_S + SLACK_PER_TRY_S), (
        ran.tries_s,
        reference.tries_s,
    )

    # The retry policy as the robot saw it; nothing reached it outside a try's failure handling.
    assert requests[0] == 0 and messages[0] == 0
    low, high = row.requests
    assert all(low <= n <= high for n in requests[1:]), requests
    low, high = row.messages
    assert all(low <= n <= high for n in messages[1:]), messages

    # What the group got: within the channel's limit, naming the DAG and the task.
    dag = DAGS[row.dag_id]
    for record in accepted:
        shown = row.channel.shown(record)
        assert row.dag_id in shown and dag.task_id in shown and dag.shows in shown, shown[:2000]
        assert row.channel.size(record) <= row.channel.limit, (row.channel.size(record), row.channel.limit)
