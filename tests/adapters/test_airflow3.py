"""The Airflow 3 adapter: which process alerts for which try, from plain objects shaped like Airflow's."""

from __future__ import annotations

import logging
import signal
from types import SimpleNamespace

import pytest

from airflow_ext import handoff, hooks, load_failure
from airflow_ext.adapters import airflow3
from airflow_ext.alert import AlertKind
from tests.outbox.test_api_client import Server

pytestmark = pytest.mark.airflow3


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(handoff.tempfile, "gettempdir", lambda: str(tmp_path))


@pytest.fixture
def sent(monkeypatch):
    alerts = []
    monkeypatch.setattr(airflow3, "deliver_alert", alerts.append)
    monkeypatch.setattr(hooks, "deliver_alert", alerts.append)
    return alerts


def runtime_ti(**flags):
    task = SimpleNamespace(**{"ding_on_failure": False, "ding_on_retry": False, **flags})
    return SimpleNamespace(
        id="0192-ti",
        dag_id="d",
        task_id="t",
        run_id="r",
        map_index=-1,
        try_number=1,
        max_tries=1,
        hostname="worker-1",
        log_url="http://x/log",
        task=task,
        _ti_context_from_server=None,
    )


@pytest.mark.parametrize(
    "exit_code, what, words",
    [
        (-signal.SIGKILL, "SIGKILL", "killed by SIGKILL (the out-of-memory killer sends SIGKILL)"),
        (-signal.SIGSEGV, "SIGSEGV", "killed by SIGSEGV before"),
        (1, "exit code 1", "exited with code 1 before"),
        (-200, "signal 200", "killed by signal 200 before"),
    ],
)
def test_describe_exit_names_the_signal_or_code(exit_code, what, words):
    name, text = airflow3.describe_exit(exit_code)
    assert name == what and words in text


def test_process_killed_before_finalize_alerts_from_the_supervisor(sent):
    ti = runtime_ti(ding_on_retry=True)
    airflow3.task_started(ti)
    airflow3.task_process_ended(ti, -signal.SIGKILL, "up_for_retry")

    (alert,) = sent
    assert (alert.kind, alert.exception_type, alert.max_tries) == (AlertKind.RETRY, "SIGKILL", 1)
    assert alert.log_url == "http://x/log"
    assert "killed by SIGKILL" in alert.exception_message and alert.hostname == "worker-1"


def test_finalize_handled_try_is_not_reported_again_by_the_supervisor(sent):
    ti = runtime_ti(ding_on_failure=True)
    airflow3.task_started(ti)
    airflow3.task_finalized(ti, "failed", ValueError("boom"))
    airflow3.task_process_ended(ti, 0, "failed")

    assert [(a.kind, a.exception_type) for a in sent] == [(AlertKind.FAILURE, "ValueError")]


@pytest.mark.parametrize(
    "flags, state",
    [({"ding_on_failure": True}, "up_for_retry"), ({}, "failed"), ({"ding_on_failure": True}, "success")],
)
def test_supervisor_follows_the_flags_and_the_state(sent, flags, state):
    ti = runtime_ti(**flags)
    airflow3.task_started(ti)
    airflow3.task_process_ended(ti, -signal.SIGKILL, state)
    assert sent == []


def server_ti(state, *, retry: bool, **flags):
    task = SimpleNamespace(**{"ding_on_failure": False, "ding_on_retry": False, **flags})
    return SimpleNamespace(
        dag_id="d",
        task_id="t",
        run_id="r",
        map_index=-1,
        try_number=1,
        max_tries=1,
        hostname="w",
        log_url=None,
        task=task,
        state=state,
        dag_run=None,
        is_eligible_to_retry=lambda: retry,
    )


@pytest.mark.parametrize(
    "executor_state, ti_state, retry, expected",
    [
        ("failed", "running", False, [AlertKind.FAILURE]),  # heartbeat timeout, killed externally
        ("failed", "queued", True, [AlertKind.RETRY]),  # the worker could not start it
        ("success", "running", True, []),  # the supervisor survived and reported it
        ("success", "queued", False, [AlertKind.FAILURE]),
    ],
)
def test_scheduler_alerts_unless_the_supervisor_did(sent, executor_state, ti_state, retry, expected):
    ti = server_ti(ti_state, retry=retry, ding_on_failure=True, ding_on_retry=True)
    airflow3.executor_reported_failure(ti, executor_state, "Executor reported ...")
    assert [a.kind for a in sent] == expected


@pytest.mark.parametrize("flags, expected", [({"ding_on_failure": True}, [AlertKind.FAILURE]), ({}, [])])
def test_stuck_in_queued_is_a_final_failure_per_the_flag(sent, flags, expected):
    ti = server_ti("queued", retry=True, **flags)
    airflow3.stuck_in_queued(ti, ti.task, "Task was requeued more than 2 times and will be failed.")
    assert [a.kind for a in sent] == expected
    assert all(a.exception_message.startswith("Task was requeued") for a in sent)


def test_adapter_never_raises(sent, monkeypatch):
    monkeypatch.setattr(airflow3, "deliver_alert", lambda alert: 1 / 0)
    monkeypatch.setattr(hooks, "deliver_alert", lambda alert: 1 / 0)
    ti = runtime_ti(ding_on_failure=True)
    airflow3.task_started(ti)
    airflow3.task_finalized(ti, "failed", ValueError("boom"))
    airflow3.task_process_ended(None, 1, "failed")
    airflow3.executor_reported_failure(None, "failed", "x")
    failing = server_ti("queued", retry=False, ding_on_failure=True)
    airflow3.executor_reported_failure(failing, "failed", "x")
    airflow3.stuck_in_queued(failing, failing.task, "x")


# -- the outbox backend on Airflow 3: which way each process reaches the outbox ----------------------


@pytest.fixture
def outbox_backend(monkeypatch, caplog):
    monkeypatch.setenv("AIRFLOW__DINGBOT__DING_BOT_BACKEND", "airflow_ext.dingbot.outbox_sender")
    monkeypatch.setenv("AIRFLOW__DINGBOT__TIMEOUT", "2")
    caplog.set_level(logging.INFO, logger="airflow_ext")


@pytest.fixture
def api_server():
    """A stand-in for the api-server's outbox route that queues every alert."""
    api = Server([(201, {"queued": True, "duplicate": False})])
    yield api
    api.close()


@pytest.fixture
def no_database(monkeypatch):
    monkeypatch.setattr(airflow3, "_has_database", lambda: False)


def logged(caplog, capsys) -> str:
    """What was logged: Airflow 3's structlog set-up, once loaded, writes to stdout instead."""
    return caplog.text + capsys.readouterr().out


TOKEN = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ0aSJ9.c2lnbmF0dXJlLXRoYXQtaXMtc2VjcmV0"


def supervisor_client(api) -> SimpleNamespace:
    """Shaped like the supervisor's Execution API client (airflow.sdk.api.client.Client)."""
    root = api.url.removesuffix("/dingbot/outbox/alerts")
    return SimpleNamespace(auth=SimpleNamespace(token=TOKEN), base_url=f"{root}/execution/")


def test_a_task_process_hands_its_alert_to_the_supervisor_which_posts_it(
    outbox_backend, no_database, api_server, caplog, capsys
):
    api = api_server
    ti = runtime_ti(ding_on_failure=True)
    airflow3.task_started(ti)
    try:
        raise ValueError("boom")
    except ValueError as err:
        airflow3.task_finalized(ti, "failed", err)
    assert api.seen == [], "the task process has no token: it posts nothing itself"
    assert "handed to the supervisor for the outbox" in logged(caplog, capsys)

    airflow3.task_process_ended(ti, 0, "failed", supervisor_client(api))

    ((authorization, sent),) = api.seen
    assert authorization == f"Bearer {TOKEN}"
    assert sent["alert"]["exception_type"] == "ValueError" and "boom" in sent["alert"]["exception_message"]
    assert "raise ValueError" in sent["alert"]["traceback"]
    assert "queued in the outbox through the api-server" in logged(caplog, capsys)
    assert handoff.take_alert(ti.id, ti.try_number) is None, "the relayed alert is gone once posted"
    assert TOKEN not in logged(caplog, capsys)


def test_the_supervisor_posts_its_own_alert_for_a_killed_process(outbox_backend, no_database, api_server):
    api = api_server
    ti = runtime_ti(ding_on_failure=True)
    airflow3.task_started(ti)
    airflow3.task_process_ended(ti, -signal.SIGKILL, "failed", supervisor_client(api))
    ((_, sent),) = api.seen
    assert sent["alert"]["exception_type"] == "SIGKILL"


def test_a_process_with_the_database_writes_to_it(outbox_backend, monkeypatch, caplog, capsys):
    written = []
    monkeypatch.setattr(airflow3, "_has_database", lambda: True)
    monkeypatch.setattr("airflow_ext.dingbot.queue_in_database", lambda alert: written.append(alert) or True)
    ti = runtime_ti(ding_on_failure=True)
    airflow3.task_finalized(ti, "failed", ValueError("boom"))  # `airflow dags test`: in-process
    assert [a.exception_type for a in written] == ["ValueError"]
    assert handoff.take_alert(ti.id, ti.try_number) is None
    assert "queued in the outbox in" in logged(caplog, capsys)


def test_without_database_or_token_the_alert_is_logged_as_lost(outbox_backend, no_database, caplog, capsys):
    ti = runtime_ti(ding_on_failure=True)
    airflow3.task_started(ti)
    airflow3.task_process_ended(ti, -signal.SIGKILL, "failed", None)  # no client (a dry run)
    assert "neither the metadata database nor a task's Execution API token" in logged(caplog, capsys)


def test_the_api_server_unreachable_is_logged_once_and_bounded(outbox_backend, no_database, caplog, capsys):
    import time

    ti = runtime_ti(ding_on_failure=True)
    airflow3.task_started(ti)
    client = SimpleNamespace(auth=SimpleNamespace(token=TOKEN), base_url="http://127.0.0.1:9/execution/")
    started = time.monotonic()
    airflow3.task_process_ended(ti, -signal.SIGKILL, "failed", client)
    assert time.monotonic() - started < 2 + 0.5
    lines = [line for line in logged(caplog, capsys).splitlines() if "not delivered" in line]
    assert len(lines) == 1 and "http://127.0.0.1:9/dingbot/outbox/alerts did not answer" in lines[0]


def test_a_long_lived_worker_masks_each_tries_token_where_the_supervisor_resets_it(
    outbox_backend, no_database, api_server, capsys
):
    """Celery and LocalExecutor workers run many supervisors in one process. Each try's token is
    masked in the Task SDK's masker, which the supervisor resets per workload, never in core's,
    which nothing resets in a worker and which recompiles one regex of all its secrets per secret
    added: there, every try made every later try's alert slower."""
    from airflow._shared.secrets_masker.secrets_masker import _secrets_masker as core_masker
    from airflow.sdk.log import redact

    core_patterns = set(core_masker().patterns)
    for n in range(5):
        ti = runtime_ti(ding_on_failure=True)
        ti.id = f"0192-ti-{n}"
        client = supervisor_client(api_server)
        client.auth.token = token = f"eyJhbGciOiJIUzUxMiJ9.eyJ0cnkiOi{n}J9.dHJ5LXNpZ25hdHVyZS0{n}"
        airflow3.task_started(ti)
        airflow3.task_process_ended(ti, -signal.SIGKILL, "failed", client)
        assert redact(f"token {token}") == "token ***", "the try's token is masked"
        assert token not in capsys.readouterr().out
    assert len(api_server.seen) == 5
    assert core_masker().patterns == core_patterns, "core's masker did not grow"


def test_a_try_without_an_alert_masks_nothing(sent):
    from airflow.sdk._shared.secrets_masker.secrets_masker import _secrets_masker as sdk_masker

    before = set(sdk_masker().patterns)
    ti = runtime_ti()  # no flags: nothing to send
    airflow3.task_started(ti)
    client = supervisor_client(SimpleNamespace(url="http://h/x"))
    client.auth.token = "eyJhbGciOiJIUzUxMiJ9.eyJ0cnkiOiJub25lIn0.bm8tYWxlcnQtc2lnbmF0dXJl"
    airflow3.task_process_ended(ti, 0, "failed", client)
    assert sent == [] and sdk_masker().patterns == before


# -- a worker that cannot load the DAG file: the import error, per the flags the api-server has ------


def startup_details(ti) -> SimpleNamespace:
    """Shaped like the task runner's StartupDetails."""
    return SimpleNamespace(ti=ti, dag_rel_path="team/orders.py")


IMPORT_ERROR = (
    'Traceback (most recent call last):\n  File "/bundle/team/orders.py", line 3, in <module>\n'
    "    import pandas\nModuleNotFoundError: No module named 'pandas'"
)
SETTINGS = {
    "ding_on_failure": True,
    "ding_on_retry": False,
    "max_tries": 0,
    "owner": "data",
    "conn_ids": ["team"],
}


def test_a_worker_that_cannot_import_the_dag_alerts_with_the_import_error(sent):
    api = Server([(200, {"settings": SETTINGS})])
    ti = runtime_ti()  # the worker never learnt the task's own flags
    try:
        airflow3.task_could_not_load(startup_details(ti), {"/bundle/team/orders.py": IMPORT_ERROR})
        airflow3.task_process_ended(ti, 1, "failed", supervisor_client(api))
    finally:
        api.close()

    ((authorization, path),) = api.seen
    assert authorization == f"Bearer {TOKEN}" and path == "/dingbot/outbox/try-settings"
    (alert,) = sent
    assert alert.kind is AlertKind.FAILURE and alert.exception_type == "ModuleNotFoundError"
    assert (
        alert.exception_message
        == "This worker could not import the DAG file team/orders.py: No module named 'pandas'"
    )
    assert alert.traceback.endswith("No module named 'pandas'")
    assert (alert.owner, alert.conn_ids) == ("data", ("team",))
    assert handoff.take_load_failure(ti.id, ti.try_number) is None


@pytest.mark.parametrize(
    "state, settings", [("failed", {**SETTINGS, "ding_on_failure": False}), ("up_for_retry", SETTINGS)]
)
def test_a_worker_that_cannot_import_follows_the_serialized_flags(sent, state, settings):
    api = Server([(200, {"settings": settings})])
    ti = runtime_ti(ding_on_failure=True, ding_on_retry=True)
    try:
        airflow3.task_could_not_load(startup_details(ti), {"/bundle/team/orders.py": IMPORT_ERROR})
        airflow3.task_process_ended(ti, 1, state, supervisor_client(api))
    finally:
        api.close()
    assert sent == []


def test_the_api_server_not_telling_the_flags_is_one_line_without_the_token(sent, caplog, capsys):
    caplog.set_level(logging.INFO, logger="airflow_ext")
    api = Server([(403, {"detail": "invalid task token"})])
    ti = runtime_ti()
    try:
        airflow3.task_could_not_load(startup_details(ti), {})
        airflow3.task_process_ended(ti, 1, "failed", supervisor_client(api))
    finally:
        api.close()
    assert sent == []
    lines = [
        line
        for line in logged(caplog, capsys).splitlines()
        if "could not say whether it wants alerts" in line
    ]
    assert len(lines) == 1 and "HTTP 403: invalid task token" in lines[0], lines
    assert TOKEN not in logged(caplog, capsys)


@pytest.mark.parametrize(
    "import_errors, dag_loaded, what, words",
    [
        (
            {"/b/team/orders.py": "SyntaxError: invalid syntax (orders.py, line 7)"},
            False,
            "SyntaxError",
            "invalid syntax",
        ),
        ({"/b/other.py": "ValueError: x", "/b/team/orders.py": "KeyError: 'y'"}, False, "KeyError", "'y'"),
        ({}, False, "DAG not found", "has no DAG 'd'"),
        ({}, True, "Task not found", "has DAG 'd' without task 't'"),
    ],
)
def test_the_load_failure_names_what_the_worker_could_not_load(import_errors, dag_loaded, what, words):
    failure = load_failure.describe("d", "t", "team/orders.py", import_errors, dag_loaded=dag_loaded)
    assert failure.exception_type == what and words in failure.exception_message
    assert "team/orders.py" in failure.exception_message
