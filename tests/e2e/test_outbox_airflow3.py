"""The outbox on Airflow 3, with the real api-server, scheduler and dag-processor (LocalExecutor on
PostgreSQL) running dags/dingbot_outbox3.py twice.

Task processes have no database: ``finalize`` hands its alert to the supervisor, which posts it,
like its own alert for a SIGKILLed task process, to the outbox route the package's plugin adds to
the api-server, with the try's Execution API token.

* Run 1: the robot is down while the tasks fail; the deliverer is SIGKILLed mid-send and another
  one started once the robot is back. Every alert must be delivered exactly once (counted with the
  robot keeping repeated msgUuids).
* Requests that do not come from the failing try are refused, and nothing is stored: no token, a
  forged one, a queued try's workload token, another task instance's or another try's alert, a try
  that did not fail, a body too large.
* Run 2: the outbox route stops answering (a proxy in front of the api-server drops, then holds,
  every request to it) while the tasks fail: every task ends as in run 1, and each alert is given up
  within ``[dingbot] timeout``, retried inside it and logged once.
"""

from __future__ import annotations

import collections
import dataclasses
import http.client
import json
import os
import re
import signal
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from tests.conftest import BIN, assert_no_secret, counting_robot, robot_env, run
from tests.e2e.scheduled import (
    airflow3_services_env,
    metadata_engine,
    prepare_and_trigger,
    run_states,
    start,
    start_services,
    stop_all,
    wait_for_end,
)
from tests.e2e.test_storm_localexecutor import JWT, all_named

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.airflow3]

DAG_ID = "dingbot_outbox3"
FIRST_RUN, SECOND_RUN = "outbox3_robot_down", "outbox3_route_down"
#: (state, try_number) of each task at the end of either run, as Airflow 3.3.2 gives them.
EXPECTED_STATES = {
    ("raises", -1): ("failed", 2),
    ("oom_killed", -1): ("failed", 1),
    ("succeeds", -1): ("success", 1),
}
#: (task, try, outcome) of every alert of a run.
EXPECTED_ALERTS = [("oom_killed", 1, "failed"), ("raises", 1, "will retry"), ("raises", 2, "failed")]
RUN_TIMEOUT_S = 240
DELIVERY_TIMEOUT_S = 120
ALERT_TIMEOUT_S = 3  # [dingbot] timeout, as robot_env sets it
#: The Execution API's audience and the api-server's signing key (airflow3_services_env's).
TOKEN_AUDIENCE = "urn:airflow.apache.org:task"
JWT_SECRET = "dingbot-e2e-jwt-secret-not-for-production"
NOT_DELIVERED = re.compile(
    r"DingTalk (?P<kind>failure|retry) alert for dingbot_outbox3\.(?P<task>\w+) run outbox3_route_down "
    r"try (?P<try>\d+) not delivered after (?P<seconds>[\d.]+) s: (?P<why>.*)"
)


class OutboxBlockingProxy:
    """An HTTP proxy in front of the api-server that forwards everything, except, once ``blocked``,
    the outbox route: it drops every other such request at once and holds the rest unanswered."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.blocked = False
        self.outbox_requests = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.blocked and self.path.startswith("/dingbot/"):
                    with proxy._lock:
                        proxy.outbox_requests += 1
                        drop = proxy.outbox_requests % 2 == 1
                    if not drop:
                        proxy._release.wait(120)
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                skip = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in skip:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


@dataclasses.dataclass
class Outbox3:
    env: dict[str, str]
    engine: object
    api_port: int
    states: dict[str, dict]
    messages: list[dict]
    requests: list[dict]
    scheduler_log: str
    service_logs: list[Path]
    outbox_requests_blocked: int
    status: str


def outbox_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT robot_key, dedup_hash, status, alert FROM dingbot_outbox ORDER BY id")
        )
        return [dict(r._mapping) for r in rows]


def wait_until(condition, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(poll_s)
    return result


@pytest.fixture(scope="module")
def outbox3(airflow_base_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("outbox3")
    with metadata_engine() as (database_url, engine), counting_robot() as robot:
        env = airflow3_services_env(
            airflow_base_env,
            tmp / "home",
            database_url,
            **robot_env(robot, AIRFLOW__DINGBOT__DING_BOT_BACKEND="airflow_ext.dingbot.outbox_sender"),
            AIRFLOW__DINGBOT__OUTBOX_LEASE="3",
            DINGBOT_E2E_KILLS="1",
        )
        api_port = int(env["AIRFLOW__API__PORT"])
        proxy = OutboxBlockingProxy(api_port)
        # The workers reach the api-server through the proxy; everything else talks to it directly.
        env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{proxy.port}/execution/"
        prepare_and_trigger(env, DAG_ID, FIRST_RUN)

        def ended(run_id):
            def check():
                run_state, current = run_states(engine, DAG_ID, run_id)
                return run_state in ("success", "failed"), f"{run_state} {current}"

            return check

        robot.set_mode("http500")  # the robot is down while the tasks fail
        processes, logs = start_services(env, tmp, ("api-server", "scheduler", "dag-processor"))
        deliverers = []
        try:
            deliverers.append(start([str(BIN / "airflow-ext"), "deliver"], env, tmp / "deliver-1.log"))
            wait_for_end(ended(FIRST_RUN), processes, logs, RUN_TIMEOUT_S, poll_s=1)
            wait_until(lambda: len(outbox_rows(engine)) >= 3, 30, "three alerts in the outbox")
            wait_until(lambda: robot.requests, 30, "the deliverer tried the robot")
            robot.set_mode("hang")  # the next send never gets an answer: the deliverer is mid-send
            tried = len(robot.requests)
            wait_until(lambda: len(robot.requests) > tried, 90, "a send to the hung robot")
            os.killpg(deliverers[0].pid, signal.SIGKILL)
            deliverers[0].wait(timeout=30)
            robot.set_mode("ok")
            deliverers.append(start([str(BIN / "airflow-ext"), "deliver"], env, tmp / "deliver-2.log"))
            wait_until(
                lambda: len(all_named(robot.messages)) >= len(EXPECTED_ALERTS),
                DELIVERY_TIMEOUT_S,
                "every alert of the first run delivered",
            )
            time.sleep(5)  # not an assertion: room for a duplicate to arrive before we look
            delivered = robot.messages

            proxy.blocked = True  # run 2: the outbox route stops answering
            trigger = run([str(BIN / "airflow"), "dags", "trigger", DAG_ID, "--run-id", SECOND_RUN], env)
            assert trigger.returncode == 0, trigger.stdout + trigger.stderr
            wait_for_end(ended(SECOND_RUN), processes, logs, RUN_TIMEOUT_S, poll_s=1)
            scheduler_log = wait_until(
                lambda: (
                    len(NOT_DELIVERED.findall(t := logs["scheduler"].read_text(errors="replace")))
                    >= len(EXPECTED_ALERTS)
                    and t
                ),
                60,
                "the second run's alerts given up",
            )
            status = run([str(BIN / "airflow-ext"), "outbox", "status"], env)
            states = {run_id: run_states(engine, DAG_ID, run_id)[1] for run_id in (FIRST_RUN, SECOND_RUN)}
            requests_seen = robot.requests
            yield Outbox3(
                env=env,
                engine=engine,
                api_port=api_port,
                states=states,
                messages=delivered,
                requests=requests_seen,
                scheduler_log=scheduler_log,
                service_logs=[*logs.values(), tmp / "deliver-1.log", tmp / "deliver-2.log"],
                outbox_requests_blocked=proxy.outbox_requests,
                status=status.stdout + status.stderr,
            )
        finally:  # the services stay up for the tests: the refusals are asked of the live api-server
            stop_all(processes + deliverers)
            proxy.close()


# -- run 1: robot down, deliverer killed ------------------------------------------------------------


def test_every_alert_is_delivered_once_after_the_robot_and_the_deliverer_come_back(outbox3):
    # The robot that hung got a send it never answered: the first deliverer was killed mid-send.
    assert any(r["http_status"] is None for r in outbox3.requests), outbox3.requests
    assert any(r["http_status"] == 500 for r in outbox3.requests), (
        "the robot was down for the first deliverer"
    )
    named = sorted((n.task, n.try_number, n.outcome) for n in all_named(outbox3.messages))
    assert named == EXPECTED_ALERTS, named
    assert {(n.dag, n.run) for n in all_named(outbox3.messages)} == {(DAG_ID, FIRST_RUN)}
    assert outbox3.states[FIRST_RUN] == EXPECTED_STATES
    assert "pending 0" in outbox3.status and "dead 0" in outbox3.status, outbox3.status


def test_each_alert_in_the_outbox_says_what_its_process_saw(outbox3):
    stored = {}
    for row in outbox_rows(outbox3.engine):
        alert = json.loads(row["alert"])
        if alert["run_id"] == FIRST_RUN:
            stored[(alert["task_id"], alert["try_number"])] = alert
    assert sorted(stored) == [("oom_killed", 1), ("raises", 1), ("raises", 2)]
    # finalize's alerts carry the exception and its traceback, relayed through the supervisor.
    for try_number, kind in ((1, "retry"), (2, "failure")):
        alert = stored[("raises", try_number)]
        assert (alert["kind"], alert["exception_type"]) == (kind, "ValueError")
        assert "e2e failure with args" in alert["exception_message"]
        assert "dingbot_e2e_common.py" in alert["traceback"], "the traceback names the task's own code"
    # The supervisor's own alert names the signal.
    killed = stored[("oom_killed", 1)]
    assert killed["exception_type"] == "SIGKILL" and "killed by SIGKILL" in killed["exception_message"]
    # And the group saw them: singles, or a digest if the failed sends had used up the calm budget.
    group = "\n".join(m["body"]["markdown"]["text"] for m in outbox3.messages)
    assert "ValueError" in group and "SIGKILL" in group


def test_nothing_leaks_into_the_logs(outbox3):
    task_logs = [p for p in Path(outbox3.env["AIRFLOW_HOME"], "logs").rglob("*") if p.is_file()]
    contents = [p.read_text(errors="replace") for p in [*outbox3.service_logs, *task_logs] if p.exists()]
    assert_no_secret(*contents)
    for content in contents:
        assert not JWT.search(content), "a task token in a log"


# -- refused requests ---------------------------------------------------------------------------------


def token(sub: str, *, scope: str = "execution", secret: str = JWT_SECRET) -> str:
    """A task token as the Execution API issues it (HS512 with [api_auth] jwt_secret)."""
    import jwt

    now = int(time.time())
    claims = {"sub": sub, "scope": scope, "aud": TOKEN_AUDIENCE, "iat": now, "nbf": now, "exp": now + 600}
    return jwt.encode({**claims, "jti": uuid.uuid4().hex}, secret, algorithm="HS512")


def try_of(engine, task_id: str, run_id: str = FIRST_RUN) -> dict:
    """The current try of a task instance: its id (the token's subject) and its alert's identity."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT id, try_number, map_index FROM task_instance "
                "WHERE dag_id = :dag AND run_id = :run AND task_id = :task"
            ),
            {"dag": DAG_ID, "run": run_id, "task": task_id},
        ).one()
    return {"id": str(row.id), "try_number": row.try_number, "map_index": row.map_index, "task_id": task_id}


def history_try(engine, task_id: str, try_number: int) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text(
                    "SELECT task_instance_id FROM task_instance_history WHERE dag_id = :dag "
                    "AND run_id = :run AND task_id = :task AND try_number = :try"
                ),
                {"dag": DAG_ID, "run": FIRST_RUN, "task": task_id, "try": try_number},
            ).scalar()
        )


def alert_for(task_id: str, try_number: int, kind: str = "failure") -> dict:
    return {
        "alert": {
            "kind": kind,
            "dag_id": DAG_ID,
            "task_id": task_id,
            "run_id": FIRST_RUN,
            "try_number": try_number,
            "max_tries": 1,
            "map_index": -1,
            "exception_type": "ValueError",
            "exception_message": "an alert posted by the test",
        }
    }


def test_requests_that_do_not_come_from_the_failing_try_are_refused(outbox3):
    url = f"http://127.0.0.1:{outbox3.api_port}/dingbot/outbox/alerts"
    raises, oom, succeeds = (try_of(outbox3.engine, t) for t in ("raises", "oom_killed", "succeeds"))
    first_try_of_raises = history_try(outbox3.engine, "raises", 1)
    before = outbox_rows(outbox3.engine)
    assert len(before) == len(EXPECTED_ALERTS)

    def post(body, bearer=None, **kwargs):
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return requests.post(url, json=body, headers=headers, timeout=30, **kwargs)

    cases = [  # (what, response, status)
        ("no token", post(alert_for("raises", 2)), 401),
        ("not a JWT", post(alert_for("raises", 2), "not-a-token"), 403),
        (
            "forged: signed with another key",
            post(alert_for("raises", 2), token(raises["id"], secret="x" * 64)),
            403,
        ),
        (
            "a queued try's workload token",
            post(alert_for("raises", 2), token(raises["id"], scope="workload")),
            403,
        ),
        ("another task instance's alert", post(alert_for("oom_killed", 1), token(raises["id"])), 403),
        ("another try's alert", post(alert_for("raises", 1, "retry"), token(raises["id"])), 403),
        ("an unknown task instance", post(alert_for("raises", 2), token(str(uuid.uuid4()))), 404),
        ("a try that succeeded", post(alert_for("succeeds", 1), token(succeeds["id"])), 409),
        (
            "a retry alert for a final failure",
            post(alert_for("raises", 2, "retry"), token(raises["id"])),
            409,
        ),
        (
            "more than one alert's worth",
            requests.post(
                url,
                data=json.dumps({"alert": {**alert_for("raises", 2)["alert"], "traceback": "x" * 70_000}}),
                headers={
                    "Authorization": f"Bearer {token(raises['id'])}",
                    "Content-Type": "application/json",
                },
                timeout=30,
            ),
            413,
        ),
        ("not one alert", post({"alerts": [alert_for("raises", 2)["alert"]]}, token(raises["id"])), 422),
    ]
    for what, response, status in cases:
        assert response.status_code == status, (what, response.status_code, response.text)
        assert "detail" in response.json(), what
    assert cases[0][1].headers.get("WWW-Authenticate") == "Bearer"
    assert outbox_rows(outbox3.engine) == before, "a refused request stored nothing"

    # The door opens for the try itself: each try's own token and alert is accepted, as a repeat.
    for who, alert in (
        (raises["id"], alert_for("raises", 2)),
        (first_try_of_raises, alert_for("raises", 1, "retry")),
    ):
        accepted = post(alert, token(who))
        assert accepted.status_code == 200 and accepted.json() == {"queued": False, "duplicate": True}
    assert post(alert_for("oom_killed", 1), token(oom["id"])).json()["duplicate"] is True
    assert outbox_rows(outbox3.engine) == before, "one row per try, whichever path reports it"


# -- run 2: the outbox route unreachable --------------------------------------------------------------


def test_an_unreachable_outbox_leaves_the_tasks_as_they_were_and_stays_bounded(outbox3):
    assert outbox3.states[SECOND_RUN] == EXPECTED_STATES, "every task ends as it did with the outbox up"
    given_up = [m.groupdict() for m in NOT_DELIVERED.finditer(outbox3.scheduler_log)]
    tries = sorted(
        (g["task"], int(g["try"]), "failed" if g["kind"] == "failure" else "will retry") for g in given_up
    )
    assert tries == EXPECTED_ALERTS, "each alert given up exactly once, with one log line"
    for line in given_up:
        assert float(line["seconds"]) <= ALERT_TIMEOUT_S + 0.5, line
        assert "the api-server's outbox at http://127.0.0.1:" in line["why"], line
    assert outbox3.outbox_requests_blocked > len(EXPECTED_ALERTS), "retried within the deadline"
    # Nothing of the second run reached the outbox or the robot.
    stored = [json.loads(r["alert"])["run_id"] for r in outbox_rows(outbox3.engine)]
    assert collections.Counter(stored) == {FIRST_RUN: len(EXPECTED_ALERTS)}
    assert {n.run for n in all_named(outbox3.messages)} == {FIRST_RUN}
