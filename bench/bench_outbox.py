#!/usr/bin/env python3
"""The outbox mode under load: an alert storm at one rate-limited robot, the failure path, one alert.

    python bench/bench_outbox.py [--airflow-line 2|3] [--quick] [--only storm|failure-path|latency]
                                 [--json FILE] [--keep-logs DIR] [--postgres-url URL]
    tox -e bench / tox -e bench-airflow2     (after bench_failure_path.py, on that line)

The line is ``--airflow-line``, else ``DINGBOT_AIRFLOW_LINE`` (the tox environments set it), else 3.

With ``[dingbot] ding_bot_backend = airflow_ext.dingbot.outbox_sender`` failure handling only
records the alert in the Airflow metadata database; ``airflow-ext deliver`` sends it. This script
uses the patched and unpatched environments ``bench_failure_path.py`` builds (``.bench/envs/``,
same code, imported from it) and measures, with the real ``airflow-ext deliver`` command, on
**Airflow 2.11.2**:

1. **Storm**: 8 producer processes record 1000 alerts (distinct tasks of 40 DAGs) through
   ``outbox_sender`` within 10 s while 2 ``airflow-ext deliver`` replicas with the default schedule
   deliver them to one local robot that enforces DingTalk's rule (20 messages per rolling 60 s,
   then 10 minutes of refusals). Figures: failures named in accepted messages within 75 s of the
   storm's start, throttled answers, the most messages in any 60 s, when the last failure was named.
   On PostgreSQL, and in the full profile on SQLite too.
2. **Failure path**: ``TaskInstance.handle_failure`` with the outbox backend against stock Airflow
   (``bench/_failure_path_worker.py``, alternating A B / B A), with a healthy robot configured, with
   ``[dingbot] default_conn_id`` naming three healthy robots (DingTalk, WeCom, Feishu Connections:
   one outbox row each) and with one that never answers; on SQLite and on PostgreSQL as the
   metadata database.
3. **One alert**: record one alert at a time (3-5 s apart, no faster than the deliverer paces a
   DingTalk robot) with one deliverer running and time failure (the backend call) to the robot's
   acceptance.

**Airflow 3.3.2.** A task process has no database: ``finalize`` hands its alert to the
supervisor in a file, and the supervisor posts it with its try's Execution API token to the route
the package's plugin adds to the api-server (``POST /dingbot/outbox/alerts``), which checks the
token against the task instance and queues it. So on this line the script sets up, in one
PostgreSQL database: ``airflow db migrate``; the 40 DAGs x 25 tasks of ``bench/_outbox_dags3.py``
(``airflow dags reserialize``); three runs of every DAG (``trigger_dag``, which on 3.3.2 creates the
task instances with the run), one per part, with every task instance set to ``failed``, try 1, by
SQL (``_outbox_worker.py task-instances``). Each alert is then for one genuine failed try and is
posted with a token signed with the api-server's ``[api_auth] jwt_secret`` for that task instance,
as the Execution API issues them. ``airflow api-server -w 1`` is started per part with that part's
robot in ``[dingding]`` (the api-server decides the robots of what it queues); no scheduler runs.

1. **Storm**: 8 processes POST 1000 alerts (``api_client.post_alert``, the supervisor's client)
   within 10 s while 2 ``airflow-ext deliver`` replicas with the default schedule deliver to the
   rate-limited robot; "within 75 s" counts from the last POST.
2. **Failure path**: the task runner's ``finalize`` with the outbox backend in a process that has
   called the Task SDK's ``block_orm_access()``, as a task process has (``_outbox_worker.py
   finalize``), patched against stock, alternating; the alert goes to the handoff file. Beside it,
   the supervisor's ``task_process_ended`` (with a client with ``.auth.token`` and ``.base_url``)
   taking that file and posting it to the api-server: after the task process has ended, so not on
   the task's path; alternately, to a second api-server whose ``default_conn_id`` names the three
   robots (it records one row for each). Routing happens in the api-server, so ``finalize`` is the
   same call whatever the robots: the fan-out is not timed there.
3. **One alert**: POST one alert every 3-5 s with one deliverer running; from the POST's start to
   the robot's acceptance.

PostgreSQL is at ``DINGBOT_BENCH_POSTGRES_URL`` or ``--postgres-url`` (default: user postgres on
127.0.0.1:5432); the script creates a database ``dingbot_bench_<random>`` and drops it at the end.
Without a reachable server the PostgreSQL figures are left out, with a note (Airflow 3.3.2: the
benchmark does not run, it needs the task instances in the database). Everything printed is
a figure with its target; nothing asserts on time, and the exit status is 0 unless the benchmark
itself could not run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_failure_path as fp  # noqa: E402 - the environments, the worker protocol, tables
from bench_failure_path import PATCHED, UNPATCHED, BenchError, progress  # noqa: E402

OUTBOX_WORKER = Path(__file__).resolve().parent / "_outbox_worker.py"
OUTBOX_BACKEND = "airflow_ext.dingbot.outbox_sender"
ROBOT_KEYWORD = "Airflow"
POSTGRES_ADMIN_URL = os.environ.get(
    "DINGBOT_BENCH_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
#: The alerts the storm's producers record are tasks load_partition_0000 ... 0999 (_outbox_worker.py).
TASK_NAME = re.compile(r"\bload_partition_(\d{4})\b")
THROTTLED_ERRCODES = (130101, 410100)
#: What `airflow-ext deliver` logs once it polls the outbox (each robot's own thread starts later,
#: when the service first finds alerts for it).
READY_LINE = re.compile(r"Outbox delivery service \S+ started")

# The storm, as the issue states it.
STORM_ALERTS = 1000
STORM_PRODUCERS = 8
STORM_SPREAD_S = 10.0
STORM_DELIVERERS = 2
ROBOT_RATE_LIMIT, ROBOT_WINDOW_S = 20, 60.0  # FakeRobot's defaults: DingTalk's rule

# Targets (informational).
STORM_WITHIN_S = 75.0
FAILURE_PATH_P99_MAX_MS = 20.0
LATENCY_P50_MAX_S = 2.0
#: Part 3: one alert every 3-5 s (a random phase against the deliverer's 0.5 s poll), to a robot
#: with DingTalk's own limit and no [dingbot] rate_limit (the channel's 20 a minute). The deliverer
#: paces a robot's sends 60 / 20 = 3 s apart, so alerts this far apart never wait for the budget:
#: the figure is the outbox's own latency, not the rate limit's.
LATENCY_SPACING_S = (3.0, 5.0)
SPACING = f"{LATENCY_SPACING_S[0]:g}-{LATENCY_SPACING_S[1]:g} s apart (random)"
SILENT_DEADLINE_S = 2.0
#: What "within 75 s" counts from: Airflow 2's storm from its start (its figures of 2026-11-21),
#: Airflow 3's from the last POST, as the issue for 3.3.2 states it.
SINCE2 = "the storm's start"


@dataclass(frozen=True)
class Profile:
    name: str
    storm_dbs: tuple[str, ...]
    storm_observe_s: float  # watch the robot this long after the storm's start (or until all named)
    fp_rounds: int  # A B / B A rounds per robot and database
    fp_per_round: int
    fp_warmup: int
    fp_dbs: tuple[str, ...]
    latency_samples: int


FULL = Profile("full", ("postgresql", "sqlite"), 90.0, 4, 60, 5, ("sqlite", "postgresql"), 20)
QUICK = Profile("quick", ("postgresql",), 90.0, 2, 25, 3, ("sqlite",), 10)


# ----------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------


class Producer(fp.Worker):
    """A ``_outbox_worker.py serve`` process; the handle_failure worker's JSON-lines protocol."""

    def __init__(self, index: int, venv: Path, env: dict[str, str], log_file: Path) -> None:
        self.name = f"producer {index}"
        self.log_file = log_file
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(fp.venv_python(venv)),
                    str(OUTBOX_WORKER),
                    "serve",
                    "--index",
                    str(index),
                    "--log-file",
                    str(log_file),
                ],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self._buffer = b""
        self.info: dict = {}

    def ready(self, timeout: float = 300) -> Producer:
        self.info = self._read(timeout, what="start-up")
        return self

    def send(self, **cmd) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def receive(self, timeout: float, what: str) -> dict:
        return self._read(timeout, what=what)


class Deliverer:
    """One ``airflow-ext deliver`` process of the patched environment, its output in a log file."""

    def __init__(self, name: str, venv: Path, env: dict[str, str], log_file: Path) -> None:
        self.name, self.log_file = name, log_file
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [str(venv / "bin" / "airflow-ext"), "deliver"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not READY_LINE.search(self.log()):
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited (code {self.proc.returncode}):\n{fp.tail(self.log())}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not start within {timeout:.0f} s:\n{fp.tail(self.log())}")
            time.sleep(0.1)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def make_home(home: Path, db_url: str) -> Path:
    """An AIRFLOW_HOME whose airflow.cfg names the metadata database (written before any process
    imports Airflow, so that concurrent processes never race to write a default one)."""
    (home / "dags").mkdir(parents=True)
    (home / "airflow.cfg").write_text(
        f"[core]\nload_examples = False\n\n[database]\nsql_alchemy_conn = {db_url}\n", encoding="utf-8"
    )
    return home


def database_url(kind: str, home: Path, pg_database: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{home / 'airflow.db'}"
    assert pg_database is not None
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{pg_database}"


def robot_env(robot, secret: str, **extra: str) -> dict[str, str]:
    return {
        "AIRFLOW__DINGDING__BOT_URL": robot.url,
        "AIRFLOW__DINGDING__SECRET": secret,
        "AIRFLOW__DINGDING__KEYWORD": ROBOT_KEYWORD,
        "AIRFLOW__DINGBOT__DING_BOT_BACKEND": OUTBOX_BACKEND,
        **extra,
    }


def _database(envs, action: str, name: str) -> subprocess.CompletedProcess:
    """Create or drop a PostgreSQL database through the worker (the driver has no driver library)."""
    return subprocess.run(
        [
            str(fp.venv_python(envs[PATCHED])),
            str(OUTBOX_WORKER),
            "database",
            action,
            "--admin-url",
            POSTGRES_ADMIN_URL,
            "--name",
            name,
        ],
        env=fp.airflow_env(envs[PATCHED], home=None),
        capture_output=True,
        text=True,
    )


def postgres_database(envs) -> str | None:
    name = f"dingbot_bench_{secrets.token_hex(6)}"
    result = _database(envs, "create", name)
    if result.returncode != 0:
        progress(f"PostgreSQL is not usable, its figures are left out:\n{fp.tail(result.stderr, 3)}")
        return None
    progress(f"created the PostgreSQL database {name}")
    return name


def drop_postgres_database(envs, name: str) -> None:
    result = _database(envs, "drop", name)
    if result.returncode != 0:
        progress(f"could not drop the PostgreSQL database {name}:\n{fp.tail(result.stderr, 3)}")
    else:
        progress(f"dropped the PostgreSQL database {name}")


def diff_ci(a: list[float], b: list[float], q: float, resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of percentile(a, q) - percentile(b, q): how far noise alone moves it."""
    return fp.bootstrap_ci(lambda x, y: fp.percentile(x, q) - fp.percentile(y, q), a, b, resamples=resamples)


def requests_at(robots) -> int:
    """The requests the fake robots received so far, together."""
    return sum(len(robot.requests) for robot in robots)


def named_in(message: dict) -> set[int]:
    return {int(n) for n in TASK_NAME.findall(message["body"]["markdown"]["text"])}


def tightest_margin(requests: list[dict], limit: int, window_s: float) -> float | None:
    """How close a request came to being one too many for the robot's rolling window: the least
    ``t - (time of the limit-th accepted message before it) - window_s`` over the requests up to
    the first throttled one (negative: the robot still counted ``limit`` messages then, and
    refused it). None if there never were ``limit`` accepted messages before a request."""
    accepted: list[float] = []
    margins = []
    for r in sorted(requests, key=lambda r: r["received_at"]):
        if r["errcode"] not in (0, *THROTTLED_ERRCODES):
            continue
        if len(accepted) >= limit:
            margins.append(r["received_at"] - accepted[-limit] - window_s)
        if r["errcode"] != 0:
            break
        accepted.append(r["received_at"])
    return min(margins) if margins else None


def max_in_window(times: list[float], window_s: float) -> int:
    """The most of ``times`` in any half-open window [t, t + window_s), as the robot counts."""
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + window_s) for t in times), default=0)


# ----------------------------------------------------------------------------------------------
# 1. The storm
# ----------------------------------------------------------------------------------------------


def storm_plan(seed: int) -> list[list[tuple[int, float]]]:
    """Alert n goes to producer n % 8 at a uniformly random moment of the 10 s; each producer's
    share in time order."""
    rng = random.Random(seed)
    plans: list[list[tuple[int, float]]] = [[] for _ in range(STORM_PRODUCERS)]
    for n in range(STORM_ALERTS):
        plans[n % STORM_PRODUCERS].append((n, rng.uniform(0, STORM_SPREAD_S)))
    return [sorted(plan, key=lambda item: item[1]) for plan in plans]


def bench_storm(envs, tmp: Path, kind: str, pg_database: str | None, profile: Profile, secret: str) -> dict:
    from airflow_ext.fake_robot import FakeRobot

    token = f"storm-{secrets.token_hex(12)}"
    fp._SECRETS.append(token)
    robot = FakeRobot(access_token=token, secret=secret, keyword=ROBOT_KEYWORD).start()  # 20 / 60 s / 600 s
    fp._SECRETS.append(robot.url)
    home = tmp / f"storm-{kind}"
    make_home(home, database_url(kind, home, pg_database))
    venv = envs[PATCHED]
    env = fp.airflow_env(venv, home, **robot_env(robot, secret))
    producers: list[Producer] = []
    deliverers: list[Deliverer] = []
    try:
        progress(f"storm on {kind}: starting {STORM_PRODUCERS} producers and {STORM_DELIVERERS} deliverers")
        # The first producer creates the outbox tables; the others start together.
        producers.append(Producer(0, venv, env, tmp / f"storm-{kind}-producer-0.log").ready())
        producers += [
            Producer(i, venv, env, tmp / f"storm-{kind}-producer-{i}.log") for i in range(1, STORM_PRODUCERS)
        ]
        for producer in producers[1:]:
            producer.ready()
        deliverers = [
            Deliverer(f"deliverer {i}", venv, env, tmp / f"storm-{kind}-deliverer-{i}.log")
            for i in range(STORM_DELIVERERS)
        ]
        for deliverer in deliverers:
            deliverer.wait_ready()
        time.sleep(1.0)  # both are polling: an empty outbox

        plans = storm_plan(seed=20261121)
        start_at = time.time() + 1.0
        progress(
            f"storm on {kind}: {STORM_ALERTS} alerts in {STORM_SPREAD_S:g} s; watching the robot for up to "
            f"{profile.storm_observe_s:g} s"
        )
        for producer, plan in zip(producers, plans):
            producer.send(op="storm", start_at=start_at, plan=plan)
        first_named: dict[int, float] = {}
        seen = 0
        while time.time() < start_at + profile.storm_observe_s and len(first_named) < STORM_ALERTS:
            time.sleep(0.25)
            messages = robot.messages
            for message in messages[seen:]:
                for n in named_in(message):
                    first_named.setdefault(n, message["received_at"])
            seen = len(messages)
        watched_s = time.time() - start_at
        records = [r for p in producers for r in p.receive(60, "storm")["records"]]
        for deliverer in deliverers:
            deliverer.stop()
        counts = producers[0].call(60, op="counts")
        status = outbox_status(venv, env)
        messages, requests = robot.messages, robot.requests
        logs = [d.log() for d in deliverers]
    finally:
        for deliverer in deliverers:
            deliverer.stop()
        for producer in producers:
            producer.close()
        robot.stop()
    return storm_figures(
        kind,
        STORM_ALERTS,
        start_at,
        records,
        first_named,
        messages,
        requests,
        counts,
        status,
        logs,
        watched_s,
    )


# ----------------------------------------------------------------------------------------------
# 2. The failure path with the outbox backend
# ----------------------------------------------------------------------------------------------


def bench_failure_path(envs, tmp: Path, kind: str, pg_database: str | None, profile: Profile, secret: str):
    from airflow_ext.fake_robot import FakeRobot

    token = f"fp-{secrets.token_hex(12)}"
    fp._SECRETS.append(token)
    fan_out = fp.FanOutRobots(secret)
    healthy = FakeRobot(access_token=token, secret=secret, keyword=ROBOT_KEYWORD, rate_limit=10**9).start()
    silent = FakeRobot(access_token=token, secret=secret, keyword=ROBOT_KEYWORD, rate_limit=10**9).start()
    silent.set_mode("hang")
    fp._SECRETS.extend([healthy.url, silent.url])
    homes = {name: tmp / f"fp-{kind}-{name}" for name in fp.ENV_NAMES}
    if kind == "sqlite":
        fp.migrate(envs, homes)
    else:
        for home in homes.values():
            make_home(home, database_url(kind, home, pg_database))
        progress("airflow db migrate (PostgreSQL, one database for both environments)")
        fp.run(
            [str(envs[UNPATCHED] / "bin" / "airflow"), "db", "migrate"],
            "airflow db migrate (PostgreSQL)",
            env=fp.airflow_env(envs[UNPATCHED], homes[UNPATCHED]),
        )
    workers: dict[str, fp.Worker] = {}
    counter: Producer | None = None
    out: dict = {"db": kind}
    try:
        progress(f"failure path on {kind}: starting one handle_failure worker per environment")
        for name in fp.ENV_NAMES:
            workers[name] = fp.Worker(name, envs[name], homes[name], tmp / f"fp-{kind}-{name}.log")
        for name, worker in workers.items():
            wants = name == PATCHED
            if worker.info["failure_path_calls_hook"] != wants or worker.info["ding_on_failure"] != wants:
                raise BenchError(f"the {name} environment does not look {name}: {worker.info}")
        counter = Producer(
            0,
            envs[PATCHED],
            fp.airflow_env(envs[PATCHED], homes[PATCHED], **robot_env(healthy, secret)),
            tmp / f"fp-{kind}-counter.log",
        ).ready()
        one_robot = fp.ONE_ROBOT_ENV
        # (label, the robots it goes to, the [dingding] robot and the other settings, rows per alert)
        for label, robots, robot, settings, rows in (
            ("healthy robot", [healthy], healthy, {"AIRFLOW__DINGBOT__TIMEOUT": "10", **one_robot}, 1),
            (
                f"3 robots (default_conn_id: {fan_out.channels})",
                list(fan_out.robots.values()),
                healthy,
                {"AIRFLOW__DINGBOT__TIMEOUT": "10", **fan_out.env},
                len(fan_out.robots),
            ),
            (
                f"never-answering robot ({SILENT_DEADLINE_S:g} s deadline)",
                [silent],
                silent,
                {"AIRFLOW__DINGBOT__TIMEOUT": f"{SILENT_DEADLINE_S:g}", **one_robot},
                1,
            ),
        ):
            env = robot_env(robot, secret, **settings)
            before_rows = counter.call(60, op="counts")["pending"]
            before_requests = requests_at(robots)
            samples: dict[str, list[float]] = {name: [] for name in fp.ENV_NAMES}
            calls = 0
            progress(
                f"failure path on {kind}, {label}: "
                f"{profile.fp_rounds * profile.fp_per_round} timed calls per environment"
            )
            for order in fp.alternating(profile.fp_rounds):
                for name in order:
                    answer = workers[name].call(
                        600, op="time", n=profile.fp_per_round, warmup=profile.fp_warmup, env=env
                    )
                    if answer["states"] != ["failed"]:
                        raise BenchError(f"{name}: handle_failure left the task in {answer['states']}")
                    samples[name] += answer["samples_ms"]
                    if name == PATCHED:
                        calls += answer["calls"]
            recorded = counter.call(60, op="counts")["pending"] - before_rows
            requests = requests_at(robots) - before_requests
            if recorded != rows * calls:
                raise BenchError(
                    f"failure path on {kind}, {label}: the outbox recorded {recorded} rows for {calls} "
                    f"patched calls, not {rows} per call"
                )
            # The hook's own time inside handle_failure, and flags on - flags off, in one process.
            hook = workers[PATCHED].call(600, op="in_situ", n=profile.fp_per_round, env=env)["parts"]
            out[label] = {
                **{name: fp.stats(samples[name]) for name in fp.ENV_NAMES},
                "added_p99_ci": diff_ci(samples[PATCHED], samples[UNPATCHED], 0.99),
                "in_situ": hook,
                "patched_calls": calls,
                "rows_per_call": rows,
                "recorded": recorded,
                "robot_requests": requests,
                "robot_requests_incl_in_situ": requests_at(robots) - before_requests,
            }
        counter.call(60, op="settle")  # the next part may share this database
    finally:
        for worker in workers.values():
            worker.close()
        if counter is not None:
            counter.close()
        healthy.stop()
        silent.stop()
        fan_out.stop()
    return out


# ----------------------------------------------------------------------------------------------
# 3. One alert at a time
# ----------------------------------------------------------------------------------------------


def bench_latency(envs, tmp: Path, kind: str, pg_database: str | None, profile: Profile, secret: str) -> dict:
    from airflow_ext.fake_robot import FakeRobot

    token = f"calm-{secrets.token_hex(12)}"
    fp._SECRETS.append(token)
    robot = FakeRobot(access_token=token, secret=secret, keyword=ROBOT_KEYWORD).start()
    fp._SECRETS.append(robot.url)
    home = tmp / f"latency-{kind}"
    make_home(home, database_url(kind, home, pg_database))
    venv = envs[PATCHED]
    env = fp.airflow_env(venv, home, **robot_env(robot, secret))
    producer: Producer | None = None
    deliverer: Deliverer | None = None
    latencies: list[float] = []
    try:
        progress(f"one alert at a time on {kind}: {profile.latency_samples} alerts, one deliverer")
        producer = Producer(0, venv, env, tmp / f"latency-{kind}-producer.log").ready()
        deliverer = Deliverer("deliverer", venv, env, tmp / f"latency-{kind}-deliverer.log")
        deliverer.wait_ready()
        rng = random.Random(7)
        for k in range(profile.latency_samples):
            time.sleep(rng.uniform(*LATENCY_SPACING_S))
            record = producer.call(60, op="one", n=k)
            messages = robot.wait_for_messages(k + 1, timeout=30)
            accepted = [m["received_at"] for m in messages if k in named_in(m)]
            if not accepted:
                raise BenchError(
                    f"alert {k} did not reach the robot within 30 s:\n{fp.tail(deliverer.log())}"
                )
            latencies.append(accepted[0] - record["at"])
        requests = robot.requests
    finally:
        if deliverer is not None:
            deliverer.stop()
        if producer is not None:
            producer.close()
        robot.stop()
    return {
        "db": kind,
        "n": len(latencies),
        "latency_s": latencies,
        "messages": len(requests),
        "refused": sum(1 for r in requests if r["errcode"] != 0),
    }


# ----------------------------------------------------------------------------------------------
# Airflow 3.3.2: alerts reach the outbox through the api-server
# ----------------------------------------------------------------------------------------------

DAGS3_FILE = Path(__file__).resolve().parent / "_outbox_dags3.py"
#: The DAG runs whose failed tries the three parts post alerts for (each try once: the outbox keeps
#: one row per try and robot, so a second post would only measure the duplicate answer).
RUN_STORM, RUN_LATENCY, RUN_SUPERVISOR = "bench_storm", "bench_latency", "bench_supervisor"
SINCE3 = "the last POST"


@dataclass
class Airflow3:
    """One metadata database (PostgreSQL) with 40 DAGs x 25 tasks serialized and, per run id, a
    failed first try of each; the api-server is started per part with that part's robot."""

    envs: dict
    home: Path
    db_url: str
    jwt_secret: str
    tries: dict[str, dict[str, dict]]
    tmp: Path

    def env(self, robot, secret: str, **extra: str) -> dict[str, str]:
        return fp.airflow_env(
            self.envs[PATCHED],
            self.home,
            AIRFLOW__API_AUTH__JWT_SECRET=self.jwt_secret,
            DINGBOT_BENCH_JWT_SECRET=self.jwt_secret,
            **robot_env(robot, secret, **extra),
        )

    def try_of(self, run_id: str, n: int) -> dict:
        return self.tries[run_id][str(n)]


def setup_airflow3(envs, tmp: Path, pg_database: str) -> Airflow3:
    home = make_home(tmp / "airflow3-home", database_url("postgresql", tmp, pg_database))
    shutil.copy(DAGS3_FILE, home / "dags" / DAGS3_FILE.name)
    jwt_secret = secrets.token_urlsafe(48)
    fp._SECRETS.append(jwt_secret)
    env = fp.airflow_env(envs[PATCHED], home)
    airflow = str(envs[PATCHED] / "bin" / "airflow")
    progress("Airflow 3: airflow db migrate, dags reserialize (PostgreSQL)")
    fp.run([airflow, "db", "migrate"], "airflow db migrate (PostgreSQL)", env=env)
    fp.run([airflow, "dags", "reserialize"], "airflow dags reserialize", env=env)
    progress("Airflow 3: triggering every DAG per part, failing every first try")
    result = fp.run(
        [
            str(fp.venv_python(envs[PATCHED])),
            str(OUTBOX_WORKER),
            "task-instances",
            *[a for run_id in (RUN_STORM, RUN_LATENCY, RUN_SUPERVISOR) for a in ("--run-id", run_id)],
        ],
        "creating the failed tries",
        env=env,
    )
    tries = json.loads(result.stdout.strip().splitlines()[-1])["tries"]
    for run_id in (RUN_STORM, RUN_LATENCY, RUN_SUPERVISOR):
        if len(tries.get(run_id, {})) != STORM_ALERTS:
            raise BenchError(
                f"expected {STORM_ALERTS} failed tries in run {run_id}, got {len(tries.get(run_id, {}))}"
            )
    return Airflow3(envs, home, database_url("postgresql", tmp, pg_database), jwt_secret, tries, tmp)


class ApiServer:
    """``airflow api-server -w 1`` of the patched environment, in its own process group."""

    def __init__(self, af: Airflow3, env: dict[str, str], log_file: Path) -> None:
        self.port = fp_free_port()
        self.log_file = log_file
        env = {**env, "AIRFLOW__API__PORT": str(self.port), "AIRFLOW__API__BASE_URL": self.base}
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(af.envs[PATCHED] / "bin" / "airflow"),
                    "api-server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-w",
                    "1",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"the api-server exited (code {self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base}/api/v2/version", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(f"the api-server did not answer within 120 s:\n{self.log()}") from None
                time.sleep(0.5)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def outbox_url(self) -> str:
        return f"{self.base}/dingbot/outbox/alerts"

    @property
    def execution_url(self) -> str:
        return f"{self.base}/execution/"

    def log(self) -> str:
        try:
            return fp.tail(self.log_file.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def fp_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Poster(Producer):
    """A ``_outbox_worker.py serve3`` process: posts alerts to the outbox route on command."""

    def __init__(self, index: int, venv: Path, env: dict[str, str], log_file: Path) -> None:
        self.name = f"poster {index}"
        self.log_file = log_file
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [str(fp.venv_python(venv)), str(OUTBOX_WORKER), "serve3", "--log-file", str(log_file)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self._buffer = b""
        self.info = {}


class FinalizeWorker(fp.Worker):
    """``_outbox_worker.py finalize``: the 3.x finalize worker with the ORM blocked."""

    def __init__(self, name: str, venv: Path, home: Path, log_file: Path) -> None:
        self.name = name
        self.log_file = log_file
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [str(fp.venv_python(venv)), str(OUTBOX_WORKER), "finalize", "--log-file", str(log_file)],
                env=fp.airflow_env(venv, home),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self._buffer = b""
        self.info = self._read(timeout=300, what="start-up")


def bench_storm3(af: Airflow3, profile: Profile, secret: str) -> dict:
    from airflow_ext.fake_robot import FakeRobot

    token = f"storm-{secrets.token_hex(12)}"
    fp._SECRETS.append(token)
    robot = FakeRobot(access_token=token, secret=secret, keyword=ROBOT_KEYWORD).start()  # 20 / 60 s / 600 s
    fp._SECRETS.append(robot.url)
    venv, tmp = af.envs[PATCHED], af.tmp
    env = af.env(robot, secret)
    api: ApiServer | None = None
    posters: list[Poster] = []
    deliverers: list[Deliverer] = []
    try:
        progress("storm on 3.3.2: starting the api-server")
        api = ApiServer(af, env, tmp / "storm3-api-server.log")
        progress(f"storm on 3.3.2: starting {STORM_PRODUCERS} posters and {STORM_DELIVERERS} deliverers")
        posters = [Poster(i, venv, env, tmp / f"storm3-poster-{i}.log") for i in range(STORM_PRODUCERS)]
        for poster in posters:
            poster.ready()
        for poster in posters:  # untimed: each poster's imports, the api-server's first requests
            warm_up(poster, api)
        deliverers = [
            Deliverer(f"deliverer {i}", venv, env, tmp / f"storm3-deliverer-{i}.log")
            for i in range(STORM_DELIVERERS)
        ]
        for deliverer in deliverers:
            deliverer.wait_ready()
        time.sleep(1.0)  # both are polling: an empty outbox
        alerts = STORM_ALERTS
        plans = [
            [(n, offset, af.try_of(RUN_STORM, n)) for n, offset in plan] for plan in storm_plan(seed=20261121)
        ]
        start_at = time.time() + 1.0
        progress(
            f"storm on 3.3.2: {alerts} alerts POSTed in {STORM_SPREAD_S:g} s; watching the robot until "
            f"{STORM_WITHIN_S:g} s after the last POST"
        )
        for poster, plan in zip(posters, plans):
            poster.send(op="storm", url=api.outbox_url, start_at=start_at, plan=plan)
        first_named: dict[int, float] = {}
        seen = 0
        records: list[dict] = []
        pending = list(posters)
        last_post_at = None
        hard_stop = start_at + profile.storm_observe_s + STORM_WITHIN_S
        while time.time() < hard_stop and len(first_named) < alerts:
            time.sleep(0.25)
            messages = robot.messages
            for message in messages[seen:]:
                for n in named_in(message):
                    first_named.setdefault(n, message["received_at"])
            seen = len(messages)
            if pending:
                for poster in list(pending):
                    if select.select([poster.proc.stdout.fileno()], [], [], 0)[0]:
                        records += poster.receive(60, "storm")["records"]
                        pending.remove(poster)
                if not pending:
                    last_post_at = max(r["at"] for r in records)
                    hard_stop = min(hard_stop, last_post_at + STORM_WITHIN_S + 5.0)
        for poster in pending:
            records += poster.receive(120, "storm")["records"]
        if last_post_at is None:
            last_post_at = max(r["at"] for r in records)
        watched_s = time.time() - start_at
        for deliverer in deliverers:
            deliverer.stop()
        counts = posters[0].call(60, op="counts")
        status = outbox_status(venv, env)
        messages, requests = robot.messages, robot.requests
        logs = [d.log() for d in deliverers]
        api_log = api.log_file.read_text(encoding="utf-8", errors="replace")
    finally:
        for deliverer in deliverers:
            deliverer.stop()
        for poster in posters:
            poster.close()
        if api is not None:
            api.stop()
        robot.stop()
    out = storm_figures(
        "PostgreSQL",
        alerts,
        start_at,
        records,
        first_named,
        messages,
        requests,
        counts,
        status,
        logs,
        watched_s,
    )
    within = sum(1 for t in first_named.values() if t - last_post_at <= STORM_WITHIN_S)
    out.update(
        {
            "how": ", through the api-server's outbox route",
            "since": SINCE3,
            "named_within": within,
            "last_post_s": last_post_at - start_at,
            "last_named_since_s": (max(first_named.values()) - last_post_at) if first_named else None,
            "post_errors": sorted({r["error"] for r in records if r["error"]})[:5],
            "post_failed": sum(1 for r in records if r["error"]),
            "api_refusals": api_log.count("Refused an outbox alert"),
            "recorded_label": "POSTs answered queued (201); the last POST started at",
            "record_label": "POST to the outbox route during the storm: median / p99 / max",
        }
    )
    return out


def warm_up(poster: Poster, api: ApiServer, requests: int = 3) -> None:
    """Untimed requests that store nothing: a valid token for a task instance that does not exist
    (the api-server answers 404 after checking the token and looking the try up)."""
    for _ in range(requests):
        ghost = {
            "id": str(uuid.uuid4()),
            "dag_id": "warm_up",
            "task_id": "load_partition_0000",
            "run_id": "warm_up",
        }
        answer = poster.call(120, op="one", url=api.outbox_url, n=0, ti=ghost)
        if answer["queued"] or "HTTP 404" not in (answer["error"] or ""):
            raise BenchError(f"the warm-up request was not refused as unknown: {answer}\n{api.log()}")


def outbox_status(venv: Path, env: dict[str, str]) -> str:
    """What `airflow-ext outbox status` prints for this environment's outbox."""
    return subprocess.run(
        [str(venv / "bin" / "airflow-ext"), "outbox", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()


def storm_figures(
    kind, alerts, start_at, records, first_named, messages, requests, counts, status, logs, watched_s
) -> dict:
    """The storm's figures from what the robot saw and the producers recorded (both lines)."""
    times = [m["received_at"] - start_at for m in messages]
    names = [named_in(m) for m in messages]
    times_named: dict[int, int] = {}
    for group in names:
        for n in group:
            times_named[n] = times_named.get(n, 0) + 1
    enqueued = {r["n"]: r for r in records}
    latency = [first_named[n] - enqueued[n]["at"] for n in first_named if n in enqueued]
    return {
        "db": kind,
        "alerts": alerts,
        "recorded": sum(1 for r in records if r["queued"]),
        "last_recorded_s": max(r["at"] for r in records) - start_at,
        "record_ms": [r["ms"] for r in records],
        "watched_s": watched_s,
        "named_within": sum(1 for t in first_named.values() if t - start_at <= STORM_WITHIN_S),
        "named_total": len(first_named),
        "last_named_s": max(first_named.values()) - start_at if first_named else None,
        "named_twice": sum(1 for c in times_named.values() if c > 1),
        "latency_s": latency,
        "requests": len(requests),
        "accepted": sum(1 for r in requests if r["errcode"] == 0),
        "throttled": sum(1 for r in requests if r["errcode"] in THROTTLED_ERRCODES),
        "other_errors": sum(1 for r in requests if r["errcode"] not in (0, *THROTTLED_ERRCODES)),
        "messages": len(messages),
        "singles": sum(1 for g in names if len(g) == 1),
        "digests": sum(1 for g in names if len(g) > 1),
        "largest_digest": max((len(g) for g in names), default=0),
        "max_in_60s": max_in_window([m["received_at"] for m in messages], ROBOT_WINDOW_S),
        "margin_s": tightest_margin(requests, ROBOT_RATE_LIMIT, ROBOT_WINDOW_S),
        "timeline": sorted(
            [[round(t, 3), len(g)] for t, g in zip(times, names)]
            + [
                [round(r["received_at"] - start_at, 3), f"errcode {r['errcode']}"]
                for r in requests
                if r["errcode"] != 0
            ],
            key=lambda item: item[0],
        ),
        "request_log": [[round(r["received_at"] - start_at, 3), r["errcode"]] for r in requests],
        "outbox_counts": {k: v for k, v in counts.items() if k != "ok"},
        "outbox_status": fp.redact(status),
        "deliverer_errors": sum(log.count(" ERROR - ") + log.count("[error") for log in logs),
        "deliverer_throttled_lines": sum(log.count("throttled") for log in logs),
    }


def bench_failure_path3(af: Airflow3, profile: Profile, secret: str) -> dict:
    """finalize with the outbox backend in a process with the ORM blocked (patched vs stock), then
    the supervisor's post of the relayed alert against two running api-servers, alternately: one
    routing to the [dingding] robot alone, one with default_conn_id naming the 3 fan-out robots.

    A task process only hands its alert to the supervisor, whatever the routing: there the fan-out
    has nothing to add, so only the api-server's side (one outbox row per robot) is measured."""
    from airflow_ext.fake_robot import FakeRobot

    token = f"fp-{secrets.token_hex(12)}"
    fp._SECRETS.append(token)
    fan_out = fp.FanOutRobots(secret)
    robot = FakeRobot(access_token=token, secret=secret, keyword=ROBOT_KEYWORD, rate_limit=10**9).start()
    fp._SECRETS.append(robot.url)
    env = robot_env(robot, secret)
    tmp = af.tmp
    homes = {
        name: make_home(tmp / f"fp3-{name}", "sqlite:///" + str(tmp / f"fp3-{name}" / "unused.db"))
        for name in fp.ENV_NAMES
    }
    workers: dict[str, fp.Worker] = {}
    apis: dict[str, ApiServer] = {}
    poster: Poster | None = None
    out: dict = {}
    try:
        progress("failure path on 3.3.2: one finalize worker per environment, ORM blocked")
        for name in fp.ENV_NAMES:
            workers[name] = FinalizeWorker(name, af.envs[name], homes[name], tmp / f"fp3-{name}.log")
        for name, worker in workers.items():
            wants = name == PATCHED
            info = worker.info
            if (
                info["failure_path_calls_hook"] != wants
                or info["ding_on_failure"] != wants
                or not info["orm_blocked"]
            ):
                raise BenchError(f"the {name} environment does not look {name} with the ORM blocked: {info}")
        samples: dict[str, list[float]] = {name: [] for name in fp.ENV_NAMES}
        relayed = {name: 0 for name in fp.ENV_NAMES}
        calls = {name: 0 for name in fp.ENV_NAMES}
        progress(
            f"failure path on 3.3.2: {profile.fp_rounds * profile.fp_per_round} timed finalize calls "
            "per environment"
        )
        for order in fp.alternating(profile.fp_rounds):
            for name in order:
                answer = workers[name].call(
                    600, op="time", n=profile.fp_per_round, warmup=profile.fp_warmup, env=env
                )
                if answer["states"] != ["failed"]:
                    raise BenchError(f"{name}: finalize left the task in {answer['states']}")
                samples[name] += answer["samples_ms"]
                relayed[name] += answer["relayed"]
                calls[name] += answer["calls"]
        for worker in workers.values():
            worker.close()
        out["finalize"] = {
            **{name: fp.stats(samples[name]) for name in fp.ENV_NAMES},
            "added_p99_ci": diff_ci(samples[PATCHED], samples[UNPATCHED], 0.99),
            "relayed": relayed,
            "calls": calls,
            "robot_requests": len(robot.requests),
        }

        progress("failure path on 3.3.2: the supervisor's post against the api-server, 1 and 3 robots")
        # arm: (what the api-server routes the alert to, outbox rows per alert)
        arms = {"1 robot": (fp.ONE_ROBOT_ENV, 1), "3 robots": (fan_out.env, len(fan_out.robots))}
        for arm, (routing, _) in arms.items():
            apis[arm] = ApiServer(
                af, af.env(robot, secret, **routing), tmp / f"fp3-api-server-{arm.replace(' ', '-')}.log"
            )
        poster = Poster(0, af.envs[PATCHED], af.env(robot, secret), tmp / "fp3-supervisor.log").ready()
        per_call = profile.fp_per_round + profile.fp_warmup
        tries = iter(range(STORM_ALERTS))
        post: dict[str, list[float]] = {arm: [] for arm in arms}
        posted = dict.fromkeys(arms, 0)
        queued = dict.fromkeys(arms, 0)
        for order in fp.alternating(profile.fp_rounds, tuple(arms)):
            for arm in order:
                batch = [[n, af.try_of(RUN_SUPERVISOR, n)] for n in itertools.islice(tries, per_call)]
                before = poster.call(60, op="counts")
                answer = poster.call(
                    600,
                    op="supervisor",
                    base_url=apis[arm].execution_url,
                    tries=batch,
                    warmup=profile.fp_warmup,
                )
                after = poster.call(60, op="counts")
                post[arm] += answer["samples_ms"]
                posted[arm] += answer["calls"]
                queued[arm] += sum(after[k] - before[k] for k in ("pending", "claimed", "sent", "dead"))
        for arm, (_, rows) in arms.items():
            if queued[arm] != rows * posted[arm]:
                raise BenchError(
                    f"the api-server routing to {arm} queued {queued[arm]} rows for {posted[arm]} "
                    f"alerts, not {rows} per alert\n{apis[arm].log()}"
                )
        out["supervisor_post"] = {
            **fp.stats(post["1 robot"]),
            "queued": queued["1 robot"],
            "calls": posted["1 robot"],
        }
        out["supervisor_post_fan_out"] = {
            **fp.stats(post["3 robots"]),
            "robots": fan_out.channels,
            "rows_per_call": arms["3 robots"][1],
            "queued": queued["3 robots"],
            "calls": posted["3 robots"],
            "added_p99_ci": diff_ci(post["3 robots"], post["1 robot"], 0.99),
            "robot_requests": requests_at(fan_out.robots.values()),
        }
        poster.call(60, op="settle")  # the next part's deliverer must not send these
    finally:
        for worker in workers.values():
            worker.close()
        if poster is not None:
            poster.close()
        for api in apis.values():
            api.stop()
        robot.stop()
        fan_out.stop()
    return out


def bench_latency3(af: Airflow3, profile: Profile, secret: str) -> dict:
    from airflow_ext.fake_robot import FakeRobot

    token = f"calm-{secrets.token_hex(12)}"
    fp._SECRETS.append(token)
    robot = FakeRobot(access_token=token, secret=secret, keyword=ROBOT_KEYWORD).start()
    fp._SECRETS.append(robot.url)
    tmp = af.tmp
    env = af.env(robot, secret)
    api: ApiServer | None = None
    poster: Poster | None = None
    deliverer: Deliverer | None = None
    latencies: list[float] = []
    post_ms: list[float] = []
    try:
        progress(f"one alert at a time on 3.3.2: {profile.latency_samples} alerts, one deliverer")
        api = ApiServer(af, env, tmp / "latency3-api-server.log")
        poster = Poster(0, af.envs[PATCHED], env, tmp / "latency3-poster.log").ready()
        deliverer = Deliverer("deliverer", af.envs[PATCHED], env, tmp / "latency3-deliverer.log")
        deliverer.wait_ready()
        warm_up(poster, api)
        rng = random.Random(7)
        for k in range(profile.latency_samples):
            time.sleep(rng.uniform(*LATENCY_SPACING_S))
            record = poster.call(60, op="one", url=api.outbox_url, n=k, ti=af.try_of(RUN_LATENCY, k))
            if not record["queued"]:
                raise BenchError(f"alert {k} was not queued: {record['error']}\n{api.log()}")
            post_ms.append(record["ms"])
            deadline = time.monotonic() + 30
            accepted: list[float] = []
            while not accepted:
                accepted = [m["received_at"] for m in robot.messages if k in named_in(m)]
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"alert {k} did not reach the robot within 30 s:\n{fp.tail(deliverer.log())}"
                    )
                time.sleep(0.02)
            latencies.append(accepted[0] - record["at"])
        requests = robot.requests
    finally:
        if deliverer is not None:
            deliverer.stop()
        if poster is not None:
            poster.close()
        if api is not None:
            api.stop()
        robot.stop()
    return {
        "db": "PostgreSQL, through the api-server",
        "n": len(latencies),
        "latency_s": latencies,
        "post_ms": post_ms,
        "messages": len(requests),
        "refused": sum(1 for r in requests if r["errcode"] != 0),
        "from": "POST to the outbox route",
    }


def failure_path3_report(r: dict) -> list[str]:
    f, sup, fan = r["finalize"], r["supervisor_post"], r.get("supervisor_post_fan_out")
    u, p = f[UNPATCHED], f[PATCHED]
    added_p99 = p["p99_ms"] - u["p99_ms"]
    low, high = f["added_p99_ci"]
    text = verdict(added_p99 <= FAILURE_PATH_P99_MAX_MS)
    if low <= FAILURE_PATH_P99_MAX_MS < high:
        text += " (within noise)"
    rows = [
        [
            "finalize, outbox backend, ORM blocked",
            f"{fp._ms(u['median_ms'])} / {fp._ms(u['p99_ms'])}",
            f"{fp._ms(p['median_ms'])} / {fp._ms(p['p99_ms'])}",
            f"{p['median_ms'] - u['median_ms']:+.1f} ms",
            f"{added_p99:+.1f} ms",
            f"{low:+.1f} to {high:+.1f}",
            f"<= {FAILURE_PATH_P99_MAX_MS:g} ms",
            text,
        ],
        [
            "  with 3 robots (default_conn_id)",
            "the same call",
            "the same call",
            "none, by design",
            "none, by design",
            "",
            "",
            "(see below)",
        ],
    ]
    table = fp._table(
        [
            "task process (on the task's path)",
            "unpatched p50 / p99",
            "patched p50 / p99",
            "added p50",
            "added p99",
            "added p99 95% CI",
            "target",
            "result",
        ],
        rows,
    )

    def post_row(what: str, figures: dict) -> list[str]:
        return [what, *(fp._ms(figures[k]) for k in ("median_ms", "p99_ms", "max_ms"))]

    sup_rows = [post_row("task_process_ended: take the relayed alert, POST it to the api-server", sup)]
    if fan:
        low3, high3 = fan["added_p99_ci"]
        sup_rows += [
            post_row(f"  the same, the api-server routing it to 3 robots ({fan['robots']})", fan),
            [
                "  3 robots - 1 robot (p99 95% CI)",
                f"{fan['median_ms'] - sup['median_ms']:+.1f} ms",
                f"{fan['p99_ms'] - sup['p99_ms']:+.1f} ms ({low3:+.1f} to {high3:+.1f})",
                "",
            ],
        ]
    sup_table = fp._table(
        ["supervisor, after the task process ended (off the task's path)", "p50", "p99", "max"], sup_rows
    )
    fan_note = (
        f" With 3 robots: {fan['n']} timed posts, alternating A B / B A with the 1-robot ones (each "
        f"api-server its own routing); rows that api-server queued {fan['queued']} = "
        f"{fan['rows_per_call']} per alert x {fan['calls']}; requests the 3 robots received "
        f"{fan['robot_requests']}."
        if fan
        else ""
    )
    return [
        "2. Failure path on 3.3.2: the task runner's finalize with ding_bot_backend = outbox_sender in a "
        "process with the ORM blocked (block_orm_access), against stock Airflow",
        "",
        table,
        "",
        sup_table,
        "",
        textwrap.fill(
            f"finalize: {p['n']} + {u['n']} timed calls (patched + unpatched), alternating A B / B A; "
            f"alerts handed to the supervisor (handoff files): patched {f['relayed'][PATCHED]}/"
            f"{f['calls'][PATCHED]} calls, unpatched {f['relayed'][UNPATCHED]}; requests the robot "
            f"received {f['robot_requests']}. Supervisor: {sup['n']} timed posts (after "
            f"{sup['calls'] - sup['n']} warm-ups), one genuine failed try each with its own execution "
            f"token; rows the api-server queued {sup['queued']}/{sup['calls']}." + fan_note,
            100,
        ),
        textwrap.fill(
            "3 robots on the task's path: finalize hands the alert to its supervisor as it is, whatever "
            "the routing (the robots are chosen, one outbox row each, in the api-server), so the fan-out "
            "adds nothing there; its cost is the api-server's, in the supervisor's post above.",
            100,
        ),
    ]


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def load() -> str:
    """The 1-minute load average: how busy the (shared) machine was."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def storm_report(s: dict) -> list[str]:
    pct = 100 * s["named_within"] / s["alerts"]
    rec = sorted(s["record_ms"])
    lat = sorted(s["latency_s"])
    last = s["last_named_s"] if s["named_total"] == s["alerts"] else None
    if last is not None and "last_named_since_s" in s:
        last = s["last_named_since_s"]
    rows = [
        [
            f"failures named in accepted messages within {STORM_WITHIN_S:g} s of {s.get('since', SINCE2)}",
            f"{s['named_within']}/{s['alerts']} ({pct:.1f} %)",
            "100 %",
            verdict(s["named_within"] == s["alerts"]),
        ],
        ["throttled answers (errcode 130101/410100)", str(s["throttled"]), "0", verdict(s["throttled"] == 0)],
        [
            f"most accepted messages in any {ROBOT_WINDOW_S:g} s",
            str(s["max_in_60s"]),
            f"<= {ROBOT_RATE_LIMIT}",
            verdict(s["max_in_60s"] <= ROBOT_RATE_LIMIT),
        ],
        [
            f"last failure named, after {s.get('since', SINCE2)}",
            _s(last) if last is not None else f"not all by {s['watched_s']:.0f} s",
            f"<= {STORM_WITHIN_S:g} s",
            verdict(last is not None and last <= STORM_WITHIN_S),
        ],
        [
            f"failures named by the end of watching ({s['watched_s']:.0f} s)",
            f"{s['named_total']}/{s['alerts']}",
            "",
            "",
        ],
        [
            f"window-edge margin: min t - t(accepted {ROBOT_RATE_LIMIT} before) - {ROBOT_WINDOW_S:g} s",
            f"never {ROBOT_RATE_LIMIT + 1} requests"
            if s["margin_s"] is None
            else f"{s['margin_s'] * 1000:+.0f} ms",
            "> 0",
            "" if s["margin_s"] is None else verdict(s["margin_s"] > 0),
        ],
        ["failures named in more than one message", str(s["named_twice"]), "", ""],
        [
            "messages accepted (singles + digests; largest digest)",
            f"{s['messages']} ({s['singles']} + {s['digests']}; {s['largest_digest']})",
            "",
            "",
        ],
        ["other refusals by the robot", str(s["other_errors"]), "", ""],
        [
            "failure -> named in a message: median / max",
            f"{_s(statistics.median(lat)) if lat else '-'} / {_s(lat[-1]) if lat else '-'}",
            "",
            "",
        ],
        [
            s.get("recorded_label", "alerts recorded (outbox_sender said queued); last one at"),
            f"{s['recorded']}/{s['alerts']}; {_s(s['last_recorded_s'])}",
            "",
            "",
        ],
        [
            s.get("record_label", "outbox_sender during the storm: median / p99 / max"),
            f"{fp._ms(statistics.median(rec))} / {fp._ms(fp.percentile(rec, 0.99))} / {fp._ms(rec[-1])}",
            "",
            "",
        ],
    ]
    counts = s["outbox_counts"]
    timeline = ", ".join(f"{t:.1f}:{n}" for t, n in s["timeline"])
    refused = (
        [
            "After a throttled answer the robot refuses everything for 10 minutes and the deliverers pause "
            "the robot for [dingbot]'s 600 s: what was not named by then waits that long."
        ]
        if s["throttled"]
        else []
    )
    return [
        f"1. Storm on {s['db']}{s.get('how', '')}: {s['alerts']} alerts from {STORM_PRODUCERS} processes "
        f"within {STORM_SPREAD_S:g} s, {STORM_DELIVERERS} x `airflow-ext deliver` (default schedule), "
        f"one robot limited to {ROBOT_RATE_LIMIT} messages per {ROBOT_WINDOW_S:g} s",
        "",
        fp._table(["figure", "value", "target", "result"], rows),
        "",
        textwrap.fill(
            "requests the robot received (seconds after the storm's start: failures named, or the "
            "refusal): " + timeline,
            100,
            subsequent_indent="  ",
        ),
        f"outbox afterwards: pending {counts['pending']}, claimed {counts['claimed']}, "
        f"sent {counts['sent']}, dead {counts['dead']}; "
        f"deliverer log lines at ERROR: {s['deliverer_errors']}",
        "`airflow-ext outbox status`: " + (s["outbox_status"] or "(no output)"),
        *[textwrap.fill(line, 100) for line in refused],
    ]


def failure_path_report(results: list[dict]) -> list[str]:
    rows, hook_rows, notes = [], [], []
    for res in results:
        for label in (k for k in res if k != "db"):
            r = res[label]
            u, p = r[UNPATCHED], r[PATCHED]
            added_p99 = p["p99_ms"] - u["p99_ms"]
            low, high = r["added_p99_ci"]
            text = verdict(added_p99 <= FAILURE_PATH_P99_MAX_MS)
            if low <= FAILURE_PATH_P99_MAX_MS < high:
                text += " (within noise)"
            rows.append(
                [
                    f"{res['db']}, {label}",
                    f"{fp._ms(u['median_ms'])} / {fp._ms(u['p99_ms'])}",
                    f"{fp._ms(p['median_ms'])} / {fp._ms(p['p99_ms'])}",
                    f"{p['median_ms'] - u['median_ms']:+.1f} ms",
                    f"{added_p99:+.1f} ms",
                    f"{low:+.1f} to {high:+.1f}",
                    f"<= {FAILURE_PATH_P99_MAX_MS:g} ms",
                    text,
                ]
            )
            hook = r["in_situ"]["hook_in_failure_path"]
            on, off = r["in_situ"]["failure_path_flags_on"], r["in_situ"]["failure_path_flags_off"]
            hook_rows.append(
                [
                    f"{res['db']}, {label}",
                    f"{fp._ms(hook['median_ms'])} / {fp._ms(hook['p99_ms'])} / {fp._ms(hook['max_ms'])}",
                    f"{fp._ms(on['median_ms'])} / {fp._ms(on['p99_ms'])}",
                    f"{fp._ms(off['median_ms'])} / {fp._ms(off['p99_ms'])}",
                ]
            )
            rows_per_call = r.get("rows_per_call", 1)
            recorded = (
                f"alerts recorded in the outbox {r['recorded']}/{r['patched_calls']}"
                if rows_per_call == 1
                else f"outbox rows recorded {r['recorded']} = {rows_per_call} per call x {r['patched_calls']}"
            )
            notes.append(
                f"{res['db']}, {label}: {p['n']} + {u['n']} timed calls (patched + unpatched), "
                f"{profile_note(r)}; {recorded} patched calls (warm-ups included); requests the "
                f"robot{'s' if rows_per_call > 1 else ''} received {r['robot_requests_incl_in_situ']}."
            )
    table = fp._table(
        [
            "handle_failure, outbox backend",
            "unpatched p50 / p99",
            "patched p50 / p99",
            "added p50",
            "added p99",
            "added p99 95% CI",
            "target",
            "result",
        ],
        rows,
    )
    hook_table = fp._table(
        [
            "same process (patched worker)",
            "hook: p50 / p99 / max",
            "flags on: p50 / p99",
            "flags off: p50 / p99",
        ],
        hook_rows,
    )
    return [
        "2. Failure path: TaskInstance.handle_failure with ding_bot_backend = outbox_sender, against "
        "stock Airflow",
        "",
        table,
        "",
        hook_table,
        "",
        *[textwrap.fill(n, 100) for n in notes],
        textwrap.fill(
            "added p50/p99: patched percentile - unpatched percentile, both environments measured "
            "alternately (A B / B A) in the same run; its 95% CI is a bootstrap interval (how far "
            "noise alone moves it). hook: the time inside handle_failure spent in send_ding_alert "
            "(building the Alert, reading the config, outbox_sender's INSERT, in the run_within "
            "thread); flags on/off: handle_failure with ding_on_failure switched on and off in the "
            "same process.",
            100,
        ),
    ]


def profile_note(r: dict) -> str:
    n = r["in_situ"]["hook_in_failure_path"]["n"]
    return f"then {n} calls each with the flags on and off in the patched process"


def latency_report(r: dict) -> list[str]:
    lat = sorted(r["latency_s"])
    p50 = statistics.median(lat)
    rows = [
        [
            f"failure ({r.get('from', 'outbox_sender call')}) -> accepted by the robot: median",
            f"{p50 * 1000:.0f} ms",
            f"<= {LATENCY_P50_MAX_S:g} s",
            verdict(p50 <= LATENCY_P50_MAX_S),
        ],
        ["  p90", f"{fp.percentile(lat, 0.9) * 1000:.0f} ms", "", ""],
        ["  min / max", f"{lat[0] * 1000:.0f} ms / {lat[-1] * 1000:.0f} ms", "", ""],
    ]
    return [
        f"3. One alert at a time on {r['db']}: one `airflow-ext deliver`, poll interval 0.5 s (default); "
        "robot limited to 20 per 60 s (DingTalk's), [dingbot] rate_limit unset (the channel's own); "
        "alerts no closer than the deliverer's pace (60 / 20 s), so none waits for the budget",
        "",
        fp._table(["figure", "value", "target", "result"], rows),
        "",
        f"{r['n']} alerts, {SPACING}; messages sent {r['messages']}, "
        f"refused {r['refused']}."
        + (
            f" POST to the outbox route: median {fp._ms(statistics.median(r['post_ms']))}."
            if r.get("post_ms")
            else ""
        ),
    ]


def report(results: dict, profile: Profile, elapsed_s: float) -> str:
    lines = [
        f"airflow-dingbot outbox benchmark ({profile.name} profile): apache-airflow {fp.LINE.version}, "
        f"Python {results['python']}, "
        f"{results['cpus']} CPUs, {elapsed_s:.0f} s; load average at start {results['load'][0]}, "
        f"at end {results['load'][1]}",
        "",
    ]
    for storm in results["storm"]:
        lines += [*storm_report(storm), ""]
    if results["failure_path"]:
        lines += [*failure_path_report(results["failure_path"]), ""]
    if results.get("failure_path3"):
        lines += [*failure_path3_report(results["failure_path3"]), ""]
    if results.get("latency"):
        lines += [*latency_report(results["latency"]), ""]
    for note in results["notes"]:
        lines.append(textwrap.fill(note, 100))
    lines.append(
        textwrap.fill(
            "Targets are informational; timings on a shared machine vary from run to run.",
            100,
        )
    )
    return "\n".join(lines).rstrip()


# ----------------------------------------------------------------------------------------------


def run_airflow2(envs, tmp: Path, pg_database, parts, profile: Profile, secret: str, results: dict) -> None:
    """Airflow 2.11.2: failure handling inserts into the outbox in-process (SQLite or PostgreSQL)."""
    if pg_database is None:
        results["notes"].append(
            "PostgreSQL was not reachable: the storm and the single-alert latency ran on SQLite, "
            "and the PostgreSQL failure-path figures are missing."
        )

    def usable(kinds: tuple[str, ...]) -> list[str]:
        picked = [k for k in kinds if k != "postgresql" or pg_database]
        return picked or ["sqlite"]

    results["storm"] = [
        bench_storm(envs, tmp, kind, pg_database, profile, secret)
        for kind in (usable(profile.storm_dbs) if "storm" in parts else [])
    ]
    results["failure_path"] = [
        bench_failure_path(envs, tmp, kind, pg_database, profile, secret)
        for kind in (profile.fp_dbs if "failure-path" in parts else [])
        if kind != "postgresql" or pg_database
    ]
    if "latency" in parts:
        results["latency"] = bench_latency(
            envs, tmp, "postgresql" if pg_database else "sqlite", pg_database, profile, secret
        )


def run_airflow3(envs, tmp: Path, pg_database, parts, profile: Profile, secret: str, results: dict) -> None:
    """Airflow 3.3.2: the api-server queues what supervisors post; it needs the metadata database
    (PostgreSQL here) for the tokens' task instances."""
    if pg_database is None:
        raise BenchError("the Airflow 3 outbox benchmark needs PostgreSQL (--postgres-url)")
    af = setup_airflow3(envs, tmp, pg_database)
    results["storm"] = [bench_storm3(af, profile, secret)] if "storm" in parts else []
    results["failure_path"] = []
    if "failure-path" in parts:
        results["failure_path3"] = bench_failure_path3(af, profile, secret)
    if "latency" in parts:
        results["latency"] = bench_latency3(af, profile, secret)


def main(argv: list[str] | None = None) -> int:
    global POSTGRES_ADMIN_URL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--airflow-line",
        choices=sorted(fp.LINES),
        default=os.environ.get("DINGBOT_AIRFLOW_LINE") or "3",
        help="which Airflow line to measure (default: DINGBOT_AIRFLOW_LINE, else 3)",
    )
    parser.add_argument("--quick", action="store_true", help="one storm (PostgreSQL), fewer calls")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_ADMIN_URL,
        help="a PostgreSQL database URL whose user may create databases (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        choices=["storm", "failure-path", "latency"],
        action="append",
        help="run only this part (repeatable); the default is all three",
    )
    parser.add_argument("--keep-logs", metavar="DIR", help="copy every process's log to DIR")
    args = parser.parse_args(argv)
    parts = set(args.only or ["storm", "failure-path", "latency"])
    fp.LINE = fp.LINES[args.airflow_line]
    POSTGRES_ADMIN_URL = args.postgres_url
    profile = QUICK if args.quick else FULL
    started = time.monotonic()
    sys.path.insert(0, str(fp.REPO))  # the fake robot is standard library only

    secret = f"SEC{secrets.token_hex(32)}"
    fp._SECRETS.append(secret)
    tmp = Path(tempfile.mkdtemp(prefix="dingbot-bench-outbox-"))
    envs = None
    pg_database = None
    results: dict = {"profile": profile.name, "cpus": os.cpu_count(), "notes": [], "load": [load(), None]}
    try:
        envs = fp.ensure_envs()
        results["python"] = subprocess.run(
            [str(fp.venv_python(envs[PATCHED])), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        pg_database = postgres_database(envs)
        if fp.LINE.version.startswith("3."):
            run_airflow3(envs, tmp, pg_database, parts, profile, secret, results)
        else:
            run_airflow2(envs, tmp, pg_database, parts, profile, secret, results)
        results["load"][1] = load()
        text = report(results, profile, time.monotonic() - started)
    except BenchError as err:
        print(f"benchmark could not run: {fp.redact(str(err))}", file=sys.stderr)
        return 1
    finally:
        if envs is not None and pg_database is not None:
            drop_postgres_database(envs, pg_database)
        if args.keep_logs:
            keep = Path(args.keep_logs)
            keep.mkdir(parents=True, exist_ok=True)
            for log in tmp.glob("*.log"):
                (keep / log.name).write_text(fp.redact(log.read_text(errors="replace")), encoding="utf-8")
        shutil.rmtree(tmp, ignore_errors=True)

    print(fp.redact(text), flush=True)
    if args.json:
        Path(args.json).write_text(
            fp.redact(json.dumps(results, indent=2, sort_keys=True)) + "\n", encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
