"""Killed tasks alert exactly once per try: the real scheduler with LocalExecutor on PostgreSQL runs
dags/dingbot_killed.py, and task processes die by a real SIGKILL.

A killed task cannot report its own failure. Airflow 2.11 handles it elsewhere, and that is where
the alert must come from, once:

* task process SIGKILLed: its supervisor exits without failure handling; the scheduler finds the
  finished LocalTaskJob of a running task instance (a zombie) and asks the DAG processor to run
  ``handle_failure``;
* supervisor and task process SIGKILLed: the same, once the job's heartbeat is too old;
* a worker that cannot import the DAG file: its ``airflow tasks run`` alerts with the import error
  (patch 0007) per the serialized task's flags; the scheduler, which then runs ``handle_failure``
  on the executor's report of the still-queued task (or, if the task has failure callbacks, asks
  the DAG processor to), finds the try claimed and sends nothing;
* a process killed after sending its alert but before committing the new state: the zombie path
  reports the same try again, and its msgUuid makes the robot drop the repeat.

One scheduler and one DAG run serve every case (the tasks run side by side); each test waits for
its task instances to settle, when no further failure handling of them can happen.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from airflow_ext.fake_robot import FakeRobot
from tests.airflow_db import postgres_airflow_database
from tests.conftest import (
    BIN,
    assert_no_secret,
    counting_robot,
    local_executor_env,
    robot_env,
    run,
)
from tests.e2e.scheduled import start, stop_all, tail
from tests.e2e.test_storm_localexecutor import named_in

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.airflow2]

DAG_ID = "dingbot_killed"  # as in dags/dingbot_killed.py
RUN_ID = "e2e_killed"
KILL_AFTER_SEND = "kill_after_send"
#: The worker's ``airflow tasks run`` (LocalExecutor titles it so), which alerts for a DAG it cannot import.
WORKER = "task supervisor"

#: A running task whose LocalTaskJob has not heartbeaten for this long is a zombie. Its supervisor
#: heartbeats every second (JOB_HEARTBEAT_SEC): far below, even on a busy machine.
ZOMBIE_THRESHOLD_S = 15
#: The longest wait for one awaited condition (a task starting, a zombie being handled).
STEP_TIMEOUT_S = 150
TERMINAL = {"success", "failed", "skipped", "upstream_failed", "removed"}

#: Every alert the run may produce: (task, map index, try, outcome), each accepted exactly once.
EXPECTED_ALERTS = {
    ("oom_killed", -1, 1, "will retry"),
    ("oom_killed", -1, 2, "failed"),
    ("group_killed", -1, 1, "failed"),
    ("mapped_killed", 1, 1, "failed"),
    ("mapped_killed", 2, 1, "failed"),
    ("worker_parse_fails", -1, 1, "will retry"),
    ("worker_parse_fails", -1, 2, "failed"),
    ("worker_parse_fails_mapped", 0, 1, "failed"),
    ("worker_parse_fails_mapped", 1, 1, "failed"),
    ("worker_parse_fails_callback", -1, 1, "failed"),
    (KILL_AFTER_SEND, -1, 1, "failed"),
}
#: (state, try_number) of each task instance at the end, as plain Airflow gives them.
EXPECTED_STATES = {
    ("oom_killed", -1): ("failed", 2),
    ("group_killed", -1): ("failed", 1),
    ("mapped_killed", 0): ("success", 1),
    ("mapped_killed", 1): ("failed", 1),
    ("mapped_killed", 2): ("failed", 1),
    ("worker_parse_fails", -1): ("failed", 2),
    ("worker_parse_fails_mapped", 0): ("failed", 1),
    ("worker_parse_fails_mapped", 1): ("failed", 1),
    ("worker_parse_fails_callback", -1): ("failed", 1),
    (KILL_AFTER_SEND, -1): ("failed", 1),
}


class UuidRobot(FakeRobot):
    """The fake robot whose ``requests`` also name the msgUuid each carried, to count repeats."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._uuid_at: dict[float, str | None] = {}

    def _handle_send(self, handler, path, query, body, received_at):
        try:
            self._uuid_at[received_at] = json.loads(body).get("msgUuid")
        except (ValueError, AttributeError):
            self._uuid_at[received_at] = None
        super()._handle_send(handler, path, query, body, received_at)

    @property
    def requests(self):
        return [{**r, "msg_uuid": self._uuid_at.get(r["received_at"])} for r in super().requests]


def airflow_process(title: str) -> str:
    """Which Airflow process a process title names."""
    for marker, name in (
        ("airflow task runner", "task process"),
        ("airflow task supervisor", "task supervisor"),
        ("DagFileProcessorManager", "DAG processor manager"),
        ("DagFileProcessor", "DAG processor"),
        ("airflow worker", "executor worker"),
        ("scheduler", "scheduler"),
    ):
        if marker in title:
            return name
    return title


def process_title(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())


class KilledRun:
    """The scheduler's run of dingbot_killed, and what the test can observe of it."""

    def __init__(self, env: dict[str, str], scheduler, scheduler_log: Path, metadata, robot: UuidRobot):
        self.env, self.scheduler, self.scheduler_log = env, scheduler, scheduler_log
        self.metadata, self.robot = metadata, robot
        self.pids = Path(env["DINGBOT_E2E_PIDS"])
        self.sends_file = Path(env["DINGBOT_E2E_SENDS"])
        self.kill_marker = Path(env["DINGBOT_E2E_KILL_MARKER"])

    # -- Airflow's record

    def _query(self, sql: str, **params):
        with self.metadata.connect() as conn:
            return conn.execute(text(sql), {"dag": DAG_ID, "run": RUN_ID, **params}).all()

    def states(self) -> dict[tuple[str, int], tuple[str | None, int]]:
        rows = self._query(
            "SELECT task_id, map_index, state, try_number FROM task_instance"
            " WHERE dag_id = :dag AND run_id = :run"
        )
        return {(task, index): (state, tries) for task, index, state, tries in rows}

    def run_state(self) -> str | None:
        return self._query("SELECT state FROM dag_run WHERE dag_id = :dag AND run_id = :run")[0][0]

    def job_state(self, task_id: str, map_index: int = -1) -> str:
        """The state of the LocalTaskJob (``airflow tasks run``) of the task instance's last try."""
        return self._query(
            "SELECT job.state FROM job JOIN task_instance ti ON ti.job_id = job.id WHERE ti.dag_id = :dag"
            " AND ti.run_id = :run AND ti.task_id = :task AND ti.map_index = :index",
            task=task_id,
            index=map_index,
        )[0][0]

    def events(self, event: str, task_id: str, map_index: int = -1) -> int:
        """How often the scheduler logged ``event`` for the task instance in Airflow's audit log."""
        return self._query(
            "SELECT count(*) FROM log WHERE event = :event AND dag_id = :dag AND run_id = :run"
            " AND task_id = :task AND map_index = :index",
            event=event,
            task=task_id,
            index=map_index,
        )[0][0]

    # -- what reached the robot, and who sent it

    def alerts(self, task_id: str) -> list[tuple[int, int, str]]:
        """(map index, try, outcome) of each accepted message about ``task_id`` of this run."""
        found = []
        for message in self.robot.messages:
            (named,) = named_in(message["body"]["markdown"]["text"])
            assert (named.dag, named.run) == (DAG_ID, RUN_ID), named
            if named.task == task_id:
                found.append((named.map_index, named.try_number, named.outcome))
        return sorted(found)

    def texts(self, task_id: str, map_index: int = -1) -> list[str]:
        """The text of each accepted message about the task instance."""
        texts = [m["body"]["markdown"]["text"] for m in self.robot.messages]
        return [t for t in texts if (named_in(t)[0].task, named_in(t)[0].map_index) == (task_id, map_index)]

    def sends(self, task_id: str | None = None) -> list[dict]:
        """Each send of the test's backend, in order, with the process that made it."""
        if not self.sends_file.exists():
            return []
        records = [json.loads(line) for line in self.sends_file.read_text().splitlines()]
        return [
            {**r, "process": airflow_process(r["process"])}
            for r in records
            if task_id is None or r["task_id"] == task_id
        ]

    def senders(self, task_id: str) -> dict[tuple[int, int], list[str]]:
        """(map index, try) -> the processes that handled that try's failure, in order."""
        found = collections.defaultdict(list)
        for record in self.sends(task_id):
            found[(record["map_index"], record["try_number"])].append(record["process"])
        return dict(found)

    # -- waiting

    def diagnostics(self) -> str:
        titles = [m["body"]["markdown"]["title"] for m in self.robot.messages]
        return (
            f"task instances {self.states()}\nalerts {titles}\nsends {self.sends()}"
            f"\n--- scheduler:\n{tail(self.scheduler_log)}"
        )

    def wait_until(self, condition, what: str, timeout: float = STEP_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if self.scheduler.poll() is not None:
                pytest.fail(f"the scheduler exited while waiting for {what}\n{self.diagnostics()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout} s\n{self.diagnostics()}")
            time.sleep(0.5)

    def settled(self, task_id: str, map_index: int = -1) -> tuple[str, int]:
        """Wait for the task instance's final state: no failure handling of it can follow."""

        def final():
            state = self.states().get((task_id, map_index))
            return state if state and state[0] in TERMINAL else None

        return self.wait_until(final, f"final state of {task_id} [{map_index}]")

    def started(self, task_id: str, try_number: int, map_index: int = -1) -> dict[str, int]:
        """Wait for the try's task process to publish its PID and its supervisor's."""
        path = self.pids / f"{task_id}.{map_index}.{try_number}.json"
        self.wait_until(path.exists, f"try {try_number} of {task_id} running")
        return json.loads(path.read_text())


# -- the scheduler -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def robot():
    """One robot for the module: the scheduler and its DAG run serve every test."""
    with counting_robot(UuidRobot) as fake:
        yield fake


@pytest.fixture(scope="module")
def metadata_url():
    """A migrated PostgreSQL database for Airflow's metadata, dropped (WITH (FORCE)) afterwards."""
    with postgres_airflow_database() as url:
        yield url


def kill_leftover_tasks(pid_folder: Path) -> None:
    """SIGKILL the task processes (in their own process groups) that outlived the scheduler."""
    for path in pid_folder.glob("*.json"):
        for pid in json.loads(path.read_text()).values():
            try:
                if airflow_process(process_title(pid)) in ("task process", "task supervisor"):
                    os.kill(pid, signal.SIGKILL)
            except (psutil.Error, ProcessLookupError):
                pass


@pytest.fixture(scope="module")
def killed(airflow_base_env, metadata_url, robot, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("killed")
    (tmp / "pids").mkdir()
    env = local_executor_env(
        airflow_base_env,
        tmp / "home",
        metadata_url,
        **robot_env(robot, AIRFLOW__DINGBOT__DING_BOT_BACKEND="kill_after_send_backend.send"),
        **{
            "AIRFLOW__CORE__PARALLELISM": str(len(EXPECTED_STATES)),  # all at once
            # The zombie callbacks make the DAG processor parse dingbot_killed.py at once anyway.
            # Zombies within seconds: looked for every 3 s (default 10); a live supervisor
            # heartbeats every second (default 5), a dead one is a zombie after ZOMBIE_THRESHOLD_S
            # (default 300). A finished LocalTaskJob makes a zombie at the next look.
            "AIRFLOW__SCHEDULER__ZOMBIE_DETECTION_INTERVAL": "3",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_ZOMBIE_TASK_THRESHOLD": str(ZOMBIE_THRESHOLD_S),
            # The default, on purpose: LocalExecutor cannot revoke a queued task, so Airflow's
            # stuck-in-queued handling does nothing under it; the executor reports a worker's
            # failure at once instead.
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            "DINGBOT_E2E_PIDS": str(tmp / "pids"),
            "DINGBOT_E2E_SENDS": str(tmp / "sends.jsonl"),
            "DINGBOT_E2E_KILL_MARKER": str(tmp / "kill-after-send"),
        },
    )
    airflow = str(BIN / "airflow")
    done = run([airflow, "dags", "reserialize"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_no_secret(done.stdout, done.stderr)
    Path(env["DINGBOT_E2E_KILL_MARKER"]).write_text(f"{DAG_ID}.{KILL_AFTER_SEND}")
    trigger = run([airflow, "dags", "trigger", DAG_ID, "--run-id", RUN_ID], env)
    assert trigger.returncode == 0, trigger.stdout + trigger.stderr
    assert_no_secret(trigger.stdout, trigger.stderr)

    metadata = create_engine(metadata_url, poolclass=NullPool)
    scheduler_log = tmp / "scheduler.log"
    scheduler = start([airflow, "scheduler"], env, scheduler_log)
    try:
        yield KilledRun(env, scheduler, scheduler_log, metadata, robot)
    finally:
        stop_all([scheduler])
        kill_leftover_tasks(tmp / "pids")
        metadata.dispose()


# -- the cases ---------------------------------------------------------------------------------------


def test_task_process_sigkilled_alerts_once_per_try(killed):
    """Like the OOM killer: only the task process dies, in both tries."""
    for try_number in (1, 2):
        pids = killed.started("oom_killed", try_number)
        assert airflow_process(process_title(pids["pid"])) == "task process"
        os.kill(pids["pid"], signal.SIGKILL)

    assert killed.settled("oom_killed") == EXPECTED_STATES[("oom_killed", -1)]
    # The supervisor outlived its task and finished its LocalTaskJob: a zombie for that reason.
    assert killed.job_state("oom_killed") == "success"
    assert killed.events("heartbeat timeout", "oom_killed") >= 2
    assert killed.alerts("oom_killed") == [(-1, 1, "will retry"), (-1, 2, "failed")]
    senders = killed.senders("oom_killed")
    assert set(senders) == {(-1, 1), (-1, 2)}, senders
    assert {p for processes in senders.values() for p in processes} == {"DAG processor"}, senders


def test_supervisor_and_task_sigkilled_alert_once(killed):
    """Like a container kill: `airflow tasks run` and its task process die together."""
    pids = killed.started("group_killed", 1)
    task, supervisor = pids["pid"], pids["ppid"]
    assert airflow_process(process_title(task)) == "task process"
    assert airflow_process(process_title(supervisor)) == "task supervisor"
    # The task process leads its own process group; the supervisor is in the scheduler's, so
    # killing the supervisor's group would kill the scheduler: kill it and the task's group.
    assert os.getpgid(task) == task != os.getpgid(supervisor)
    os.kill(supervisor, signal.SIGKILL)
    os.killpg(task, signal.SIGKILL)

    assert killed.settled("group_killed") == EXPECTED_STATES[("group_killed", -1)]
    # Nobody finished the LocalTaskJob: a zombie only because its heartbeat grew too old.
    assert killed.job_state("group_killed") == "running"
    assert killed.events("heartbeat timeout", "group_killed") >= 1
    assert killed.alerts("group_killed") == [(-1, 1, "failed")]
    senders = killed.senders("group_killed")
    assert set(senders) == {(-1, 1)} and set(senders[(-1, 1)]) == {"DAG processor"}, senders


def test_killed_map_index_alerts_once_naming_it(killed):
    """Map index 1 SIGKILLs itself; index 0 succeeds and index 2 fails, each per its own outcome."""
    settled = {index: killed.settled("mapped_killed", index) for index in (0, 1, 2)}

    assert settled == {i: EXPECTED_STATES[("mapped_killed", i)] for i in (0, 1, 2)}
    assert [killed.events("heartbeat timeout", "mapped_killed", i) > 0 for i in (0, 1, 2)] == [
        False,
        True,
        False,
    ]
    assert killed.alerts("mapped_killed") == [(1, 1, "failed"), (2, 1, "failed")]
    (text,) = killed.texts("mapped_killed", 1)
    assert "**Task:** mapped_killed [map index 1]" in text
    # Index 1 is handled by the zombie path, index 2 by its own task process.
    senders = killed.senders("mapped_killed")
    assert set(senders) == {(1, 1), (2, 1)}, senders
    assert set(senders[(1, 1)]) == {"DAG processor"} and senders[(2, 1)] == ["task process"], senders


def test_worker_that_cannot_import_the_dag_alerts_once_with_the_import_error(killed):
    """The worker cannot import the DAG file: it alerts with why; the executor then reports the
    still-queued task failed, and the scheduler's failure handling sends nothing again."""
    assert killed.settled("worker_parse_fails") == EXPECTED_STATES[("worker_parse_fails", -1)]

    # Both tries were failed by the scheduler on the executor's report, never run.
    assert killed.events("state mismatch", "worker_parse_fails") == 2
    assert killed.events("running", "worker_parse_fails") == 0
    assert killed.alerts("worker_parse_fails") == [(-1, 1, "will retry"), (-1, 2, "failed")]
    assert killed.senders("worker_parse_fails") == {(-1, 1): [WORKER], (-1, 2): [WORKER]}
    texts = killed.texts("worker_parse_fails")
    assert len(texts) == 2 and all(f"**DAG:** {DAG_ID}" in t for t in texts), texts
    for text_ in texts:
        assert "could not import the DAG file dingbot_killed.py" in text_, text_
        assert "does not parse for worker_parse_fails (an intended e2e fault)" in text_, text_
        assert "reported that the task instance" not in text_, text_


def test_mapped_task_whose_worker_cannot_import_the_dag_alerts_once(killed):
    """As above, for map indexes: the flags come from the serialized mapped operator."""
    settled = {i: killed.settled("worker_parse_fails_mapped", i) for i in (0, 1)}

    assert settled == {i: EXPECTED_STATES[("worker_parse_fails_mapped", i)] for i in (0, 1)}
    assert [killed.events("state mismatch", "worker_parse_fails_mapped", i) for i in (0, 1)] == [1, 1]
    assert killed.alerts("worker_parse_fails_mapped") == [(0, 1, "failed"), (1, 1, "failed")]
    assert killed.senders("worker_parse_fails_mapped") == {(0, 1): [WORKER], (1, 1): [WORKER]}
    for index in (0, 1):
        (text,) = killed.texts("worker_parse_fails_mapped", index)
        assert f"**Task:** worker_parse_fails_mapped [map index {index}]" in text
        assert "does not parse for worker_parse_fails_mapped" in text


def test_task_with_callbacks_whose_worker_cannot_import_the_dag_alerts_once(killed):
    """A task with failure callbacks: the scheduler hands the executor's report to the DAG processor,
    which finds the worker's alert already sent."""
    assert (
        killed.settled("worker_parse_fails_callback") == EXPECTED_STATES[("worker_parse_fails_callback", -1)]
    )

    assert killed.events("state mismatch", "worker_parse_fails_callback") == 1
    assert killed.events("running", "worker_parse_fails_callback") == 0
    assert killed.alerts("worker_parse_fails_callback") == [(-1, 1, "failed")]
    assert killed.senders("worker_parse_fails_callback") == {(-1, 1): [WORKER]}


def test_try_reported_twice_carries_one_msg_uuid(killed):
    """The task process sends its alert and is SIGKILLed before committing the state; the zombie
    path reports the same try again, with the same msgUuid."""
    assert killed.settled(KILL_AFTER_SEND) == EXPECTED_STATES[(KILL_AFTER_SEND, -1)]
    assert not killed.kill_marker.exists(), "the backend never claimed the kill"

    sends = killed.sends(KILL_AFTER_SEND)
    uuids = {s["msg_uuid"] for s in sends}
    assert len(uuids) == 1, sends
    (uuid,) = uuids
    # First the task process (killed right after its send), then the DAG processor, same try.
    assert [(s["process"], s["killed"]) for s in sends[:2]] == [
        ("task process", True),
        ("DAG processor", False),
    ], sends
    assert {(s["try_number"], s["kind"], s["process"]) for s in sends[1:]} == {
        (1, "failure", "DAG processor")
    }
    assert killed.events("heartbeat timeout", KILL_AFTER_SEND) >= 1

    # The one window no sender can close: the robot got both sends, each with the same msgUuid,
    # which is what lets DingTalk drop the repeat (the fake robot's own dedup is off in this run).
    assert killed.alerts(KILL_AFTER_SEND) == [(-1, 1, "failed")] * len(sends)
    requests = [r for r in killed.robot.requests if r["msg_uuid"] == uuid]
    assert len(requests) == len(sends) and {r["errcode"] for r in requests} == {0}, requests
    print(f"{KILL_AFTER_SEND}: {len(requests)} requests with msgUuid {uuid}; sent by {sends}")


def test_whole_run_alerts_each_try_once_and_leaks_nothing(killed):
    """After every task instance settled: each failed try alerted once, nothing else, no secret."""
    killed.wait_until(lambda: killed.run_state() in ("success", "failed"), "end of the DAG run")

    assert killed.states() == EXPECTED_STATES
    messages = killed.robot.messages
    named = [n for m in messages for n in named_in(m["body"]["markdown"]["text"])]
    keys = [(n.task, n.map_index, n.try_number, n.outcome) for n in named]
    # Exactly once per try at the robot, counted without its msgUuid dedup; the only repeat is the
    # kill-after-send window (test_try_reported_twice_carries_one_msg_uuid).
    repeated = len(killed.sends(KILL_AFTER_SEND))
    expected = sorted([*EXPECTED_ALERTS, *[(KILL_AFTER_SEND, -1, 1, "failed")] * (repeated - 1)])
    assert sorted(keys) == expected, collections.Counter(keys)
    assert len({m["body"]["msgUuid"] for m in messages}) == len(messages) - (repeated - 1)
    assert all(m["signed"] for m in messages)
    requests = killed.robot.requests
    assert {r["errcode"] for r in requests} == {0}, requests
    assert len(requests) == len(messages), "every request was kept as a message"

    logs = [killed.scheduler_log, killed.sends_file, *Path(killed.env["AIRFLOW_HOME"], "logs").rglob("*")]
    files = [p for p in logs if p.is_file()]
    assert any("attempt=" in p.name for p in files), files  # the task logs are among them
    for path in files:
        assert_no_secret(path.read_text(errors="replace"))
