"""No credential at any log level: every Airflow component that runs on a line, and every
`airflow-ext` command, at DEBUG (``[logging] logging_level``), while each of them really handles
the robots' credentials, and not one byte of any output or log holds one.

One stack per line, on CeleryExecutor (tests/e2e/celery_cluster.py: PostgreSQL, Redis): the
scheduler, a Celery worker, the triggerer, the DAG processor (2.11: standalone), the webserver
(2.11) or api-server (3.3), `airflow-ext deliver` and `airflow-ext fake-robot` (the robot `airflow-
ext send-test` sends to). The credentials: the ``[dingding]`` robot's webhook token and signing
secret in airflow.cfg, a DingTalk Connection in the metadata database (password and signing
secret), WeCom, Feishu (with its signing secret) and Slack Connections from AIRFLOW_CONN_
variables, and a DingTalk Connection whose alerts go through the outbox. The DAGs
(debug_dags/dingbot_debug.py) fail tasks on each path that sends an alert: the task process on the
worker (on 3.3 also its supervisor, for a task process SIGKILLed), a task resumed after its trigger
failed in the triggerer, the scheduler (stuck in queued; on 2.11 also a failure the executor
reports for a queued task), the DAG processor's callbacks (2.11), the outbox (on 3.3 through the
api-server's outbox route) and its deliverer; `dags test`, `tasks test` and the `airflow-ext`
commands send too, and the Alerts page sends a test alert from the webserver or api-server. The
test waits until every robot has had every alert it must get, so each credential was used at DEBUG,
then searches each process's output and every file under AIRFLOW_HOME (logs of the services, tasks
and DAG processor) for each secret: as written, URL-encoded, JSON-escaped and as Python's repr
spells it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import requests
from sqlalchemy import text

from airflow_ext.channels.feishu.fake import FakeFeishuRobot
from airflow_ext.channels.slack.fake import FakeSlackWebhook
from airflow_ext.channels.wecom.fake import FakeWeComRobot
from airflow_ext.fake_robot import FakeRobot, read_messages_file
from tests.conftest import AIRFLOW_LINE, BIN, ROBOT_KEYWORD, run
from tests.e2e.celery_cluster import SERVICES, Worker, celery_env, redis_broker, stop_cluster
from tests.e2e.scheduled import metadata_engine, start, tail, wait_for_port
from tests.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.services]

DEBUG_DAGS = Path(__file__).resolve().parent / "debug_dags"
DAG_ID, CLI_DAG_ID = "dingbot_debug", "dingbot_debug_cli"  # as in debug_dags/dingbot_debug.py
RUN_ID = "debug_logs"
#: Redis databases of their own, one per line: both lines' suites may run at once.
BROKER_DB = {"2": 12, "3": 13}
#: A task on a queue no worker listens on is failed once queued this long (no requeue first). Far
#: longer than a task on the worker's queue waits to start on a busy machine: they must run there.
QUEUED_TIMEOUT_S = 45
#: The worker's task slots: every task of the worker's queue starts at once, none waits for a slot.
WORKER_SLOTS = 10
WORKER_NODE = "node-debug"
RUN_TIMEOUT_S = 240
PARSE_TIMEOUT_S = 120
WEB_TIMEOUT_S = 180

#: Every credential of the stack, by what it is. Each is used while the components log at DEBUG.
CFG_TOKEN = "cfgdingtoken6b1e4f2a9c0d"  # [dingding] bot_url's access_token, in airflow.cfg
CFG_SECRET = "SECcfgsigning2f7c9a1e5b3d8f0a4c6e"  # [dingding] secret, in airflow.cfg
DB_TOKEN = "dbdingtoken0e3a7c5f1b9d"  # the DingTalk Connection in the metadata database
DB_SECRET = "SECdbsigning8d2b6f0a4e7c1d9b3f5a"
OUTBOX_TOKEN = "outboxdingtoken4c8e2a6f0b"  # the DingTalk Connection the outbox delivers to
OUTBOX_SECRET = "SECoutboxsigning1a5e9c3f7b0d2e6a"
WECOM_KEY = "wecomkey-7f3b9e1d-5a2c"
FEISHU_TOKEN = "feishuhook-2d6a0e4c-8b1f"
FEISHU_SECRET = "feishusigning9c3e7a1f5d"
SLACK_TOKEN = "T0DEBUG0/B0DEBUG0/slackdebugsecret0b7d3f9a"  # '/' makes its URL-encoded form differ
#: The robot `airflow-ext fake-robot` stands for (a process of its own); `airflow-ext send-test` sends to it.
FAKE_ROBOT_TOKEN = "fakerobotcmdtoken5e1a9c3d"
FAKE_ROBOT_SECRET = "SECfakerobotcmd3b7f1d5a9c0e"
SECRETS = {
    "[dingding] token": CFG_TOKEN,
    "[dingding] secret": CFG_SECRET,
    "db_dingtalk password": DB_TOKEN,
    "db_dingtalk secret": DB_SECRET,
    "outbox_dingtalk password": OUTBOX_TOKEN,
    "outbox_dingtalk secret": OUTBOX_SECRET,
    "env_wecom password": WECOM_KEY,
    "env_feishu password": FEISHU_TOKEN,
    "env_feishu secret": FEISHU_SECRET,
    "env_slack password": SLACK_TOKEN,
    "cli_fake_robot password": FAKE_ROBOT_TOKEN,
    "cli_fake_robot secret": FAKE_ROBOT_SECRET,
}

CONNECTIONS = ("db_dingtalk", "env_wecom", "env_feishu", "env_slack")
#: The task ids each robot must see alerts for: every path sends to the [dingding] robot from a
#: ``*_cfg`` task and to every Connection from a ``*_conns`` task.
PATHS = ["worker", "trigger", "stuck", "cli"] + (
    ["unparsed", "unparsed_cb"] if AIRFLOW_LINE == "2" else ["killed"]
)
EXPECTED = {
    "[dingding]": {f"{path}_cfg" for path in PATHS},
    **{conn_id: {f"{path}_conns" for path in PATHS} for conn_id in CONNECTIONS},
    "outbox_dingtalk": {"outbox_conn", "cli_outbox"},
}
#: The Alerts page's test alert names no task; it is told by its text.
WEB_TEST_ROBOTS = ("[dingding]", "db_dingtalk")
TEST_ALERT_MARK = "test alert"
#: 2.11: the webserver's user, created with `airflow users create`.
WEB_ADMIN, WEB_ADMIN_PASSWORD = "debugadmin", "debugadmin-password"
WEB_ADMIN_ARGS = [
    "--username",
    WEB_ADMIN,
    "--password",
    WEB_ADMIN_PASSWORD,
    "--role",
    "Admin",
    "--email",
    "debugadmin@example.com",
    "--firstname",
    "Debug",
    "--lastname",
    "Admin",
]
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def spellings(secret: str) -> dict[bytes, str]:
    """Each way a library might print ``secret`` (as written, URL-encoded in a path, query or form,
    JSON-escaped, as Python's repr of the text or of its bytes), each spelling once, with its name."""
    forms = {
        "raw": secret,
        "url-encoded": quote(secret, safe=""),
        "form-encoded": quote_plus(secret),
        "json": json.dumps(secret)[1:-1],
        "repr": repr(secret)[1:-1],
        "repr of bytes": repr(secret.encode())[2:-1],
    }
    found: dict[bytes, str] = {}
    for name, form in forms.items():
        found.setdefault(form.encode(), name)
    return found


def leaks(content: bytes) -> list[str]:
    """For each spelling of a credential that ``content`` holds: what it is, the spelling, and the
    first line it is on (cut to 300 bytes)."""
    found = []
    for what, secret in SECRETS.items():
        for spelled, form in spellings(secret).items():
            at = content.find(spelled)
            if at >= 0:
                start, end = content.rfind(b"\n", 0, at) + 1, content.find(b"\n", at)
                line = content[start : end if end >= 0 else len(content)][:300]
                found.append(f"{what} ({form}) in: {line.decode(errors='replace')}")
    return found


def _robots() -> dict[str, FakeRobot]:
    return {
        "[dingding]": FakeRobot(CFG_TOKEN, CFG_SECRET, ROBOT_KEYWORD, dedup_msg_uuid=False),
        "db_dingtalk": FakeRobot(DB_TOKEN, DB_SECRET, ROBOT_KEYWORD, dedup_msg_uuid=False),
        "outbox_dingtalk": FakeRobot(OUTBOX_TOKEN, OUTBOX_SECRET, ROBOT_KEYWORD, dedup_msg_uuid=False),
        "env_wecom": FakeWeComRobot(WECOM_KEY),
        "env_feishu": FakeFeishuRobot(FEISHU_TOKEN, FEISHU_SECRET, ROBOT_KEYWORD),
        "env_slack": FakeSlackWebhook(SLACK_TOKEN),
    }


def _seen(robot) -> set[str]:
    """The task ids (of the debug DAGs) the robot's messages name; TEST_ALERT_MARK for a test alert."""
    found = set()
    for message in robot.messages:
        body = json.dumps(message["body"], ensure_ascii=False)
        found |= set(
            re.findall(
                r"\b(?:worker|trigger|stuck|cli|unparsed|unparsed_cb|killed|outbox)_(?:cfg|conns|conn|outbox)\b",
                body,
            )
        )
        if TEST_ALERT_MARK in body.lower():
            found.add(TEST_ALERT_MARK)
    return found


def airflow_cfg(robot: FakeRobot) -> str:
    """The [dingding] robot where most deployments keep it: in airflow.cfg."""
    return f"[dingding]\nbot_url = {robot.url}\nsecret = {CFG_SECRET}\nkeyword = {ROBOT_KEYWORD}\n"


def _write_airflow_cfg(home: Path, robot: FakeRobot) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "airflow.cfg"
    cfg.write_text(airflow_cfg(robot), encoding="utf-8")
    return cfg


def _connection_env(robots, fake_robot_port: int) -> dict[str, str]:
    connections = {
        "cli_fake_robot": {
            "conn_type": "dingding",
            "host": f"http://127.0.0.1:{fake_robot_port}",
            "password": FAKE_ROBOT_TOKEN,
            "extra": {"secret": FAKE_ROBOT_SECRET, "keyword": ROBOT_KEYWORD},
        },
        "outbox_dingtalk": {
            "conn_type": "dingding",
            "host": robots["outbox_dingtalk"].base_url,
            "password": OUTBOX_TOKEN,
            "extra": {"secret": OUTBOX_SECRET, "keyword": ROBOT_KEYWORD},
        },
        "env_wecom": {"conn_type": "wecom", "host": robots["env_wecom"].base_url, "password": WECOM_KEY},
        "env_feishu": {
            "conn_type": "feishu",
            "host": robots["env_feishu"].base_url,
            "password": FEISHU_TOKEN,
            "extra": {"secret": FEISHU_SECRET, "keyword": ROBOT_KEYWORD},
        },
        "env_slack": {
            "conn_type": "slackwebhook",
            "host": f"{robots['env_slack'].base_url}/services",
            "password": SLACK_TOKEN,
        },
    }
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in connections.items()}


class Stack:
    """The line's services at DEBUG, and every command the test runs against them, each with its
    output in a file of ``tmp``."""

    def __init__(self, env: dict[str, str], tmp: Path):
        self.env, self.tmp = env, tmp
        self.processes: list = []
        self.logs: dict[str, Path] = {}
        self.outputs: dict[str, Path] = {}

    def start(self, name: str, cmd: list[str]):
        self.logs[name] = self.tmp / f"{name}.log"
        self.processes.append(start(cmd, self.env, self.logs[name]))
        return self.processes[-1]

    def command(self, name: str, cmd: list[str], *, runs_failing_tasks: bool = False) -> str:
        """Run ``cmd`` to its end; its output is kept for the search and returned. One that runs
        the failing tasks itself (`dags test`, `tasks test`) may exit non-zero for them."""
        result = run(cmd, self.env)
        output = result.stdout + result.stderr
        self.outputs[name] = self.tmp / f"{name}.out"
        self.outputs[name].write_text(output, encoding="utf-8")
        assert result.returncode == 0 or runs_failing_tasks, f"{name}:\n{output}"
        return output

    def keep(self, name: str, content: bytes) -> None:
        """What the test itself received (a page): searched like the rest."""
        self.outputs[name] = self.tmp / f"{name}.out"
        self.outputs[name].write_bytes(content)

    def assert_running(self) -> None:
        for process, (name, log) in zip(self.processes, self.logs.items()):
            assert process.poll() is None, f"{name} exited early:\n{tail(log)}"

    def wait_until(self, condition, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not (done := condition())[0]:
            self.assert_running()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: not after {timeout_s} s: {done[1]}\n"
                    + "\n".join(f"--- {name}:\n{tail(log, 2000)}" for name, log in self.logs.items())
                )
            time.sleep(0.5)


def _dag_parsed(engine) -> tuple[bool, str]:
    with engine.connect() as conn:
        parsed = set(conn.execute(text("SELECT dag_id FROM serialized_dag")).scalars())
    return {DAG_ID, CLI_DAG_ID} <= parsed, f"parsed: {sorted(parsed)}"


def _run_state(engine) -> tuple[str | None, dict[str, tuple[str, str | None]]]:
    """The run's state and ``{task_id: (state, host that ran it)}``."""
    with engine.connect() as conn:
        state = conn.execute(
            text("SELECT state FROM dag_run WHERE dag_id = :dag AND run_id = :run"),
            {"dag": DAG_ID, "run": RUN_ID},
        ).scalar()
        rows = conn.execute(
            text("SELECT task_id, state, hostname FROM task_instance WHERE dag_id = :dag AND run_id = :run"),
            {"dag": DAG_ID, "run": RUN_ID},
        ).all()
    return state, {task: (ti_state, host or None) for task, ti_state, host in rows}


def _start_webserver(stack: Stack) -> tuple[str, Callable[[], None]]:
    """The 2.11 webserver's URL, and what waits until it listens."""
    port = free_port()
    airflow = str(BIN / "airflow")
    stack.env.update(
        AIRFLOW__WEBSERVER__SECRET_KEY="dingbot-debug-test-secret-key",
        AIRFLOW__WEBSERVER__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__WEBSERVER__WORKERS="1",
        AIRFLOW__WEBSERVER__AUTH_RATE_LIMITED="False",
        AIRFLOW__WEBSERVER__WARN_DEPLOYMENT_EXPOSURE="False",
    )
    server = stack.start(
        "webserver", [airflow, "webserver", "--hostname", "127.0.0.1", "--port", str(port), "--workers", "1"]
    )
    return f"http://127.0.0.1:{port}", lambda: wait_for_port(
        port, server, stack.logs["webserver"], WEB_TIMEOUT_S
    )


def _csrf_token(page: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page
    )
    assert match, f"no CSRF token on the page:\n{page[:2000]}"
    return match.group(1)


def _use_alerts_page(stack: Stack, base_url: str) -> None:
    """Open the Alerts page with a routing question and send a test alert to each of
    WEB_TEST_ROBOTS from it: the web process reads and uses those robots' credentials. 2.11: as an
    Admin logged in through FAB's login form; 3.3: every request is an admin's."""
    session = requests.Session()
    route = {"route_dag": DAG_ID, "route_task": "worker_conns"}
    if AIRFLOW_LINE == "2":
        login = session.get(f"{base_url}/login/", timeout=60)
        stack.keep("webserver login page", login.content)
        session.post(
            f"{base_url}/login/",
            data={
                "username": WEB_ADMIN,
                "password": WEB_ADMIN_PASSWORD,
                "csrf_token": _csrf_token(login.text),
            },
            timeout=60,
        )
        page = session.get(f"{base_url}/dingbot-alerts/", params=route, timeout=60)
        stack.keep("webserver alerts page", page.content)
        assert page.status_code == 200 and "/login" not in page.url, page.url
        for robot in WEB_TEST_ROBOTS:
            sent = session.post(
                f"{base_url}/dingbot-alerts/test",
                data={"robot": robot, "csrf_token": _csrf_token(page.text)},
                timeout=60,
            )
            stack.keep(f"webserver test alert to {robot}", sent.content)
            assert sent.status_code == 200 and "test alert sent to" in sent.text, sent.text[:2000]
    else:
        page = session.get(f"{base_url}/dingbot-alerts/", params=route, timeout=60)
        stack.keep("api-server alerts page", page.content)
        assert page.status_code == 200, page.text[:2000]
        for robot in WEB_TEST_ROBOTS:
            sent = session.post(
                f"{base_url}/dingbot-alerts/test",
                json={"robot": robot},
                headers={"Origin": base_url},
                timeout=60,
            )
            stack.keep(f"api-server test alert to {robot}", sent.content)
            assert sent.status_code == 200 and "test alert sent to" in sent.text, sent.text[:2000]


@pytest.fixture(scope="module")
def debug_stack(airflow_base_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("debug-logs")
    home = tmp / "home"
    robots = _robots()
    for robot in robots.values():
        robot.start()
    try:
        with metadata_engine() as (database_url, engine), redis_broker(BROKER_DB[AIRFLOW_LINE]) as broker_url:
            cfg = _write_airflow_cfg(home, robots["[dingding]"])
            fake_robot_port, fake_robot_messages = free_port(), tmp / "fake-robot-messages.jsonl"
            env = celery_env(
                airflow_base_env,
                home,
                database_url,
                broker_url,
                AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG",
                AIRFLOW__CORE__DAGS_FOLDER=str(DEBUG_DAGS),
                AIRFLOW__DINGBOT__DING_BOT_BACKEND="debug_backend.send",
                AIRFLOW__DINGBOT__TIMEOUT="5",
                AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT=str(QUEUED_TIMEOUT_S),
                AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL="2",
                AIRFLOW__SCHEDULER__NUM_STUCK_IN_QUEUED_RETRIES="0",
                # 2.11: callbacks go to a DAG processor of their own (`airflow dag-processor`).
                AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR="True",
                **_connection_env(robots, fake_robot_port),
            )
            if AIRFLOW_LINE == "3":  # every request to the api-server is an admin's: no login to drive
                env["AIRFLOW__CORE__AUTH_MANAGER"] = SIMPLE_AUTH_MANAGER
                env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
            env["PYTHONPATH"] = f"{DEBUG_DAGS}:{env['PYTHONPATH']}"  # the backend, for every process
            stack = Stack(env, tmp)
            airflow, ext = str(BIN / "airflow"), str(BIN / "airflow-ext")
            db_conn = {
                "conn_type": "dingding",
                "host": robots["db_dingtalk"].base_url,
                "password": DB_TOKEN,
                "extra": {"secret": DB_SECRET, "keyword": ROBOT_KEYWORD},
            }
            stack.command(
                "connections add",
                [airflow, "connections", "add", "db_dingtalk", "--conn-json", json.dumps(db_conn)],
            )
            if AIRFLOW_LINE == "2":
                stack.command(
                    "users create",
                    [
                        airflow,
                        "users",
                        "create",
                        "--username",
                        "debugadmin",
                        "--password",
                        "debugadmin-password",
                        "--role",
                        "Admin",
                        "--email",
                        "debugadmin@example.com",
                        "--firstname",
                        "Debug",
                        "--lastname",
                        "Admin",
                    ],
                )
            try:
                for name in SERVICES[AIRFLOW_LINE]:
                    stack.start(name, [airflow, name])
                    if name == "api-server":
                        wait_for_port(int(env["AIRFLOW__API__PORT"]), stack.processes[-1], stack.logs[name])
                        web_url, web_ready = env["AIRFLOW__API__BASE_URL"], lambda: None
                if AIRFLOW_LINE == "2":
                    stack.start("dag-processor", [airflow, "dag-processor"])
                    web_url, web_ready = _start_webserver(stack)
                stack.start("triggerer", [airflow, "triggerer"])
                stack.start("deliver", [ext, "deliver"])
                fake_robot = stack.start(
                    "airflow-ext fake-robot",
                    [
                        ext,
                        "fake-robot",
                        *("--port", str(fake_robot_port), "--token", FAKE_ROBOT_TOKEN),
                        *("--secret", FAKE_ROBOT_SECRET, "--keyword", ROBOT_KEYWORD),
                        *("--messages-file", str(fake_robot_messages)),
                    ],
                )
                worker = Worker(env, tmp, WORKER_NODE, ("default",), concurrency=WORKER_SLOTS)
                stack.processes.append(worker.process)
                stack.logs["celery worker"] = worker.log
                worker.wait_ready()
                # The DAG processor parses the DAGs as it starts (no `dags reserialize` needed).
                stack.wait_until(
                    lambda: _dag_parsed(engine), "the DAG processor parsed the DAGs", PARSE_TIMEOUT_S
                )
                stack.command("dags trigger", [airflow, "dags", "trigger", DAG_ID, "--run-id", RUN_ID])
                # While the run goes on: the commands, each sending with the same credentials.
                stack.command("dags test", [airflow, "dags", "test", CLI_DAG_ID], runs_failing_tasks=True)
                stack.command(
                    "tasks test", [airflow, "tasks", "test", CLI_DAG_ID, "cli_conns"], runs_failing_tasks=True
                )
                stack.command("airflow-ext check", [ext, "check", "--dags", "--send"])
                wait_for_port(fake_robot_port, fake_robot, stack.logs["airflow-ext fake-robot"])
                stack.command("airflow-ext send-test", [ext, "send-test", "--conn-id", "cli_fake_robot"])
                stack.command("airflow-ext route", [ext, "route", DAG_ID])
                # The [dingding] robot's credentials are options of airflow.cfg.
                stack.command("config list", [airflow, "config", "list"])
                web_ready()
                _use_alerts_page(stack, web_url)

                def everything_sent():
                    state, tis = _run_state(engine)
                    seen = {name: _seen(robot) for name, robot in robots.items()}
                    missing = {
                        name: sorted(want - seen[name])
                        for name, want in EXPECTED.items()
                        if want - seen[name]
                    }
                    missing |= {
                        name: [TEST_ALERT_MARK]
                        for name in WEB_TEST_ROBOTS
                        if TEST_ALERT_MARK not in seen[name]
                    }
                    return state == "failed" and not missing, f"run {state} {tis}; not yet seen: {missing}"

                stack.wait_until(everything_sent, "every robot had every alert", RUN_TIMEOUT_S)
                stack.command("airflow-ext outbox status", [ext, "outbox", "status"])
                result = {
                    "task_instances": _run_state(engine)[1],
                    "seen": {name: _seen(robot) for name, robot in robots.items()},
                    "messages": {name: len(robot.messages) for name, robot in robots.items()},
                    "fake_robot_messages": read_messages_file(str(fake_robot_messages)),
                }
            finally:
                stop_cluster(stack.processes)
            result.update(
                logs=dict(stack.logs),
                outputs=dict(stack.outputs),
                home_files=[p for p in home.rglob("*") if p.is_file() and p != cfg],
                cfg=cfg,
                cfg_written=airflow_cfg(robots["[dingding]"]),
            )
            yield result
    finally:
        for robot in robots.values():
            robot.stop()


#: Each component whose every byte is searched: the services' logs, the commands' outputs, what
#: the web process answered, and every file under AIRFLOW_HOME.
AIRFLOW_SERVICES = [*SERVICES[AIRFLOW_LINE], "triggerer", "deliver", "celery worker"] + (
    ["dag-processor", "webserver"] if AIRFLOW_LINE == "2" else []
)
#: `airflow-ext fake-robot` logs nothing through Airflow: it has no DEBUG lines to show.
SERVICE_LOGS = [*AIRFLOW_SERVICES, "airflow-ext fake-robot"]
COMMANDS = [
    "connections add",
    "dags trigger",
    "dags test",
    "tasks test",
    "airflow-ext check",
    "airflow-ext send-test",
    "airflow-ext route",
    "airflow-ext outbox status",
    "config list",
] + (["users create"] if AIRFLOW_LINE == "2" else [])
HOME = "files under AIRFLOW_HOME"
WEB = "web pages"


def _files(debug_stack, component: str) -> list[Path]:
    if component == HOME:
        return debug_stack["home_files"]
    if component == WEB:
        return [
            path for name, path in debug_stack["outputs"].items() if " page" in name or "test alert" in name
        ]
    return [debug_stack["logs"].get(component) or debug_stack["outputs"][component]]


@pytest.mark.parametrize("component", [*SERVICE_LOGS, *COMMANDS, HOME, WEB])
def test_no_credential_in_any_byte(debug_stack, component):
    files = _files(debug_stack, component)
    assert files and all(path.is_file() for path in files), files
    found = {str(path): hits for path in files if (hits := leaks(path.read_bytes()))}
    assert not found, f"credentials in the output of {component}: {found}"


def test_each_credential_was_used_while_at_debug(debug_stack):
    seen = debug_stack["seen"]
    for name, want in EXPECTED.items():
        assert want <= seen[name], (name, seen[name])
    for name in WEB_TEST_ROBOTS:
        assert TEST_ALERT_MARK in seen[name], name
    (sent,) = debug_stack["fake_robot_messages"]  # `airflow-ext send-test`'s
    assert TEST_ALERT_MARK in json.dumps(sent["body"]).lower(), sent


def test_each_path_ran_where_it_sends_from(debug_stack):
    """The alerts named for a path came from that path: the worker's tasks ran on the worker (none
    was failed for waiting in the queue), the stuck ones never started."""
    tis = debug_stack["task_instances"]
    assert {state for state, _ in tis.values()} == {"failed"}, tis
    for task, (_, host) in tis.items():
        if task.startswith(("worker_", "outbox_", "trigger_", "killed_")):
            assert host == WORKER_NODE, (task, host)
        else:
            assert host is None, (task, host)


@pytest.mark.parametrize("component", [*AIRFLOW_SERVICES, *COMMANDS])
def test_each_component_logged_at_debug(debug_stack, component):
    (path,) = _files(debug_stack, component)
    content = path.read_text(errors="replace")
    assert " DEBUG " in content or "[debug" in content or "DEBUG/" in content, tail(path)


def test_the_search_covers_task_and_dag_processor_logs(debug_stack):
    names = [str(path) for path in debug_stack["home_files"]]
    assert any(f"dag_id={DAG_ID}" in name for name in names), names
    assert any("dag_processor" in name or "scheduler" in name for name in names), names
    # The one file the search leaves out holds the secrets because the test wrote them there, and
    # nothing else: no component wrote to it.
    assert debug_stack["cfg"].read_text() == debug_stack["cfg_written"]
