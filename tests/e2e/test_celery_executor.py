"""Scale-out on CeleryExecutor, with the real Airflow services, two Celery workers standing for two
nodes, Redis as the broker and PostgreSQL as metadata database and result backend
(tests/e2e/celery_cluster.py); alerts through the outbox and two deliverers (dags/dingbot_celery.py):

1. a storm: 200 task instances fail at once across both workers: each failure reaches the group
   exactly once, naming the worker host that ran the try, and the robot never throttles;
2. a task stays queued too long (a queue no worker listens on) until Airflow fails it: one alert;
3. a worker is lost mid-task (SIGKILL of the worker and every process under it, as when a node
   disappears): each of its running tasks gets exactly one alert per try, through whatever path
   Airflow takes (the heartbeat timeout, which Airflow 2.11 reports again on each check until the
   try is failed), and the retried task's next try, on the replacement worker, alerts from there.
   Two of the lost tasks alert a robot of their own through the default (direct) backend, the
   third through the outbox (dags/celery_backend.py): exactly once holds for both.

The robots keep repeated msgUuids, so a second alert for a try would be counted.
"""

from __future__ import annotations

import collections
import json
import os
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import (
    AIRFLOW_LINE,
    BIN,
    E2E_DAGS,
    ROBOT_KEYWORD,
    ROBOT_SECRET,
    ROBOT_TOKEN,
    assert_no_secret,
    counting_robot,
    robot_env,
    run,
)
from tests.e2e.celery_cluster import SERVICES, Worker, celery_env, redis_broker, stop_cluster
from tests.e2e.scheduled import metadata_engine, start, start_services, tail
from tests.e2e.test_storm_localexecutor import JWT, all_named, busiest_window, refused, timeline

pytestmark = [pytest.mark.e2e, pytest.mark.services]

BROKER_DB = 11
STORM_DAG, LOST_DAG, STUCK_DAG = "dingbot_celery_storm", "dingbot_celery_lost", "dingbot_celery_stuck"
#: More lost tasks, alerting through the default (direct) backend: dags/dingbot_celery_lost_direct.py.
DIRECT_DAG = "dingbot_celery_lost_direct"
LOST_DAGS = (LOST_DAG, DIRECT_DAG)
RUN_ID = "celery_e2e"
STORM_SIZE = 200  # as in dags/dingbot_celery.py
RATE_LIMIT, WINDOW_S = 20, 60.0  # the FakeRobot defaults: DingTalk's rule
CONCURRENCY = 4  # task slots per worker
FIRST_NODES = ("node-a", "node-b")  # node-a also serves the lost queue, and is the one lost
REPLACEMENT_NODE = "node-c"
#: (task, map index, try, outcome, node that ran the try) of each lost-queue alert.
LOST_EXPECTED = collections.Counter(
    [
        ("lost_plain", -1, 1, "failed", "node-a"),
        ("lost_mapped", 0, 1, "failed", "node-a"),
        ("lost_mapped", 1, 1, "failed", "node-a"),
        ("lost_retry", -1, 1, "will retry", "node-a"),
        ("lost_retry", -1, 2, "failed", REPLACEMENT_NODE),
    ]
)
LOST_RUNNING = {("lost_plain", -1), ("lost_mapped", 0), ("lost_mapped", 1), ("lost_retry", -1)}
#: The lost tasks (of DIRECT_DAG) whose alerts the direct backend sends, to DIRECT_CONN_ID's robot.
LOST_DIRECT = {"lost_plain", "lost_mapped"}
DIRECT_CONN_ID = "lost_direct"  # as in dags/celery_backend.py
#: A dead try is a zombie this long after its last heartbeat (Airflow's default: 300 s); live
#: tries heartbeat every second.
HEARTBEAT_TIMEOUT_S = 20
#: Queued this long (twice: Airflow requeues once) and a task is failed as stuck in queued. Far
#: longer than a storm task waits to start on a busy machine (Airflow queues no more tries than the
#: workers have slots), and the stuck task still fails while the storm is being delivered.
QUEUED_TIMEOUT_S = 60
STORM_TIMEOUT_S = 480
STEP_TIMEOUT_S = 240
#: After the last expected alert: room for a duplicate to arrive before the robot is read.
QUIET_S = 10


class Cluster:
    def __init__(self, env, engine, robot, direct_robot, tmp: Path):
        self.env, self.engine, self.robot, self.tmp = env, engine, robot, tmp
        self.direct_robot = direct_robot
        self.processes, self.logs = start_services(env, tmp, SERVICES[AIRFLOW_LINE])
        self.workers: dict[str, Worker] = {}
        self.lost: list = []  # processes killed on purpose: not expected to be alive

    def add_worker(self, node: str, queues: tuple[str, ...]) -> Worker:
        worker = Worker(self.env, self.tmp, node, queues, CONCURRENCY)
        self.workers[node] = worker
        self.processes.append(worker.process)
        self.logs[worker.log.stem] = worker.log
        return worker

    def add_deliverer(self, n: int) -> None:
        log = self.tmp / f"deliver-{n}.log"
        self.processes.append(start([str(BIN / "airflow-ext"), "deliver"], self.env, log))
        self.logs[log.stem] = log

    def trigger(self, dag_id: str) -> None:
        done = run([str(BIN / "airflow"), "dags", "trigger", dag_id, "--run-id", RUN_ID], self.env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert_no_secret(done.stdout, done.stderr)

    def task_instances(self, dag_id: str) -> dict[tuple[str, int], tuple[str, int, str | None]]:
        """``{(task_id, map_index): (state, try_number, hostname)}`` of the run, as the DB has it."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT task_id, map_index, state, try_number, hostname FROM task_instance "
                    "WHERE dag_id = :dag AND run_id = :run"
                ),
                {"dag": dag_id, "run": RUN_ID},
            ).all()
        return {(task, index): (state, tries, host or None) for task, index, state, tries, host in rows}

    def named(self, *dag_ids: str):
        messages = [*self.robot.messages, *self.direct_robot.messages]
        return [n for n in all_named(messages) if n.dag in dag_ids]

    def lost_instances(self) -> dict[tuple[str, int], tuple[str, int, str | None]]:
        """The task instances of both lost DAGs (their task ids differ)."""
        return {key: value for dag_id in LOST_DAGS for key, value in self.task_instances(dag_id).items()}

    def wait_until(self, condition, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            for process, (name, log) in zip(self.processes, self.logs.items()):
                if process.poll() is not None and process not in self.lost:
                    raise AssertionError(f"{name} exited early:\n{tail(log)}")
            for robot in (self.robot, self.direct_robot):
                if refused(robot.requests):
                    raise AssertionError(f"a robot refused requests: {timeline(robot.requests)}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: not after {timeout_s} s; {len(self.robot.messages)} messages\n"
                    + "\n".join(f"--- {name}:\n{tail(log, 2000)}" for name, log in self.logs.items())
                )
            time.sleep(1)


def ended(states: dict, size: int) -> bool:
    return len(states) == size and all(state == "failed" for state, _, _ in states.values())


@pytest.fixture(scope="module")
def celery_run(airflow_base_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("celery")
    with (
        metadata_engine() as (database_url, engine),
        redis_broker(BROKER_DB) as broker_url,
        counting_robot() as robot,
        counting_robot() as direct_robot,
    ):
        direct_connection = {
            "conn_type": "dingding",
            "host": direct_robot.base_url,
            "password": ROBOT_TOKEN,
            "extra": {"secret": ROBOT_SECRET, "keyword": ROBOT_KEYWORD},
        }
        env = celery_env(
            airflow_base_env,
            tmp / "home",
            database_url,
            broker_url,
            **robot_env(robot, AIRFLOW__DINGBOT__DING_BOT_BACKEND="celery_backend.send"),
            **{f"AIRFLOW_CONN_{DIRECT_CONN_ID.upper()}": json.dumps(direct_connection)},
            DINGBOT_E2E_SLOW_PARSE_MARKER=str(tmp / "slow-parse"),
            # As many tries queued as there are slots: a try waits in Celery's queue for a slot, not
            # in Airflow's; the stuck task holds one more.
            AIRFLOW__CORE__PARALLELISM=str(2 * CONCURRENCY + 1),
            AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=str(STORM_SIZE),
            AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY="64",
            AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT=str(QUEUED_TIMEOUT_S),
            AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL="5",
            AIRFLOW__SCHEDULER__NUM_STUCK_IN_QUEUED_RETRIES="1",
            AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC="1",
            AIRFLOW__SCHEDULER__ZOMBIE_DETECTION_INTERVAL="3",
            AIRFLOW__SCHEDULER__SCHEDULER_ZOMBIE_TASK_THRESHOLD=str(HEARTBEAT_TIMEOUT_S),
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="3",
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT_S),
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC="1",
        )
        env["PYTHONPATH"] = os.pathsep.join([str(E2E_DAGS), env["PYTHONPATH"]])  # the backend
        airflow = str(BIN / "airflow")
        done = run([airflow, "dags", "reserialize"], env)
        assert done.returncode == 0, done.stdout + done.stderr

        cluster = Cluster(env, engine, robot, direct_robot, tmp)
        result = {"cluster": cluster}
        try:
            node_a = cluster.add_worker(FIRST_NODES[0], ("default", "lost"))
            node_b = cluster.add_worker(FIRST_NODES[1], ("default",))
            node_a.wait_ready()
            node_b.wait_ready()
            cluster.add_deliverer(1)
            cluster.add_deliverer(2)

            # 1 and 2: the storm, and the stuck task beside it.
            started = time.monotonic()
            cluster.trigger(STUCK_DAG)
            cluster.trigger(STORM_DAG)
            cluster.wait_until(
                lambda: (
                    {(n.task, n.map_index) for n in cluster.named(STORM_DAG)}
                    >= {("storm", i) for i in range(STORM_SIZE)}
                ),
                "every storm failure in the group",
                STORM_TIMEOUT_S,
            )
            result["storm_delivered_s"] = time.monotonic() - started
            cluster.wait_until(
                lambda: ended(cluster.task_instances(STORM_DAG), STORM_SIZE), "the storm run ended", 60
            )
            cluster.wait_until(
                lambda: ended(cluster.task_instances(STUCK_DAG), 1) and cluster.named(STUCK_DAG),
                "the stuck task failed and alerted",
                STEP_TIMEOUT_S,
            )

            # 3: node-a is lost while its lost-queue tasks run; node-c replaces it.
            for dag_id in LOST_DAGS:
                cluster.trigger(dag_id)
            cluster.wait_until(
                lambda: (
                    {
                        key
                        for key, (state, _, host) in cluster.lost_instances().items()
                        if state == "running" and host == FIRST_NODES[0]
                    }
                    == LOST_RUNNING
                ),
                "every lost-queue task running on node-a",
                STEP_TIMEOUT_S,
            )
            time.sleep(3)  # each try's start is committed and heartbeating, as in a real node loss
            (tmp / "slow-parse").touch()  # dags/dingbot_celery_lost_direct.py: reported again and again
            cluster.lost.append(node_a.process)
            result["killed_pids"] = node_a.lose_node()
            cluster.add_worker(REPLACEMENT_NODE, ("default", "lost")).wait_ready()
            cluster.wait_until(
                lambda: (
                    ended(cluster.lost_instances(), len(LOST_RUNNING))
                    and len(cluster.named(*LOST_DAGS)) >= sum(LOST_EXPECTED.values())
                ),
                "the lost run ended and every try alerted",
                STEP_TIMEOUT_S,
            )
            time.sleep(QUIET_S)  # not an assertion: room for a duplicate to arrive before we look
            status = run([str(BIN / "airflow-ext"), "outbox", "status"], env)
            result.update(
                messages=robot.messages,
                requests=robot.requests,
                direct_messages=direct_robot.messages,
                direct_requests=direct_robot.requests,
                status=status,
                states={dag: cluster.task_instances(dag) for dag in (STORM_DAG, STUCK_DAG)}
                | {LOST_DAG: cluster.lost_instances()},
                alive=[p.poll() is None for p in cluster.processes if p not in cluster.lost],
            )
        finally:
            stop_cluster(cluster.processes)
        yield result


def named(result, dag_id: str, key: str = "messages"):
    return [n for n in all_named(result[key]) if n.dag == dag_id]


def test_storm_across_workers_reaches_the_group_once_each_unthrottled(celery_run):
    storm = named(celery_run, STORM_DAG)
    assert collections.Counter((n.task, n.map_index) for n in storm) == collections.Counter(
        ("storm", i) for i in range(STORM_SIZE)
    )
    assert {(n.run, n.try_number, n.attempts, n.outcome) for n in storm} == {(RUN_ID, 1, 1, "failed")}
    states = celery_run["states"][STORM_DAG]
    assert {state for state, _, _ in states.values()} == {"failed"}
    # Each alert names the node that ran its try, and both nodes ran some of the storm.
    ran_on = {key: host for key, (_, _, host) in states.items()}
    assert {(n.task, n.map_index): n.host for n in storm} == ran_on
    assert set(ran_on.values()) == set(FIRST_NODES)
    print(f"{STORM_SIZE} failures delivered {celery_run['storm_delivered_s']:.0f} s after the trigger")


def test_the_robot_never_throttled_two_deliverers_shared_its_budget(celery_run):
    requests, messages = celery_run["requests"], celery_run["messages"]
    assert not refused(requests), timeline(requests)
    assert all(m["signed"] for m in messages)
    assert busiest_window([m["received_at"] for m in messages], WINDOW_S) <= RATE_LIMIT
    assert len(messages) < STORM_SIZE, "a storm is coalesced into digests"
    assert all(celery_run["alive"]), "every service, worker and deliverer ran to the end"
    status = celery_run["status"]
    through_outbox = sum(n for alert, n in LOST_EXPECTED.items() if alert[0] not in LOST_DIRECT)
    total = STORM_SIZE + 1 + through_outbox
    assert re.search(rf"pending 0 \(oldest -\), sent {total}, dead 0\b", status.stdout), status.stdout


def test_a_task_stuck_in_queued_gets_one_failure_alert(celery_run):
    (alert,) = named(celery_run, STUCK_DAG)
    state, try_number, _ = celery_run["states"][STUCK_DAG][("stuck_flagged", -1)]
    assert state == "failed"
    assert (alert.task, alert.try_number, alert.outcome) == ("stuck_flagged", try_number, "failed")
    # Airflow requeued it once before failing it (the alert itself may be a digest's entry).
    scheduler_log = celery_run["cluster"].logs["scheduler"].read_text(errors="replace").lower()
    assert "stuck in queued; will try to requeue" in scheduler_log


def test_a_lost_worker_gives_each_try_one_alert_from_where_it_ran(celery_run):
    assert celery_run["killed_pids"], "the node had processes to lose"
    lost = named(celery_run, LOST_DAG) + named(celery_run, DIRECT_DAG, "direct_messages")
    got = collections.Counter((n.task, n.map_index, n.try_number, n.outcome, n.host) for n in lost)
    assert got == LOST_EXPECTED
    # Each went where its backend sends it: the direct ones straight to their robot, one message
    # each (the robot keeps repeated msgUuids), nothing of them through the outbox.
    direct = named(celery_run, DIRECT_DAG, "direct_messages")
    assert {n.task for n in direct} == LOST_DIRECT and len(celery_run["direct_messages"]) == len(direct)
    assert {n.task for n in named(celery_run, LOST_DAG)} == {"lost_retry"}
    assert not named(celery_run, DIRECT_DAG), "nothing of the direct backend's went through the outbox"
    assert not refused(celery_run["direct_requests"]), timeline(celery_run["direct_requests"])
    states = celery_run["states"][LOST_DAG]
    assert {key: state for key, (state, _, _) in states.items()} == dict.fromkeys(LOST_RUNNING, "failed")
    assert states[("lost_retry", -1)][1:] == (2, REPLACEMENT_NODE)


def test_no_credential_in_any_log(celery_run):
    cluster = celery_run["cluster"]
    paths = [*cluster.logs.values(), *Path(cluster.env["AIRFLOW_HOME"], "logs").rglob("*")]
    for path in paths:
        if path.is_file():
            content = path.read_text(errors="replace")
            assert ROBOT_TOKEN not in content and ROBOT_SECRET not in content, path
            assert not JWT.search(content), f"a token in {path}"
