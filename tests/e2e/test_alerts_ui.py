"""The Alerts page in a real browser: the real webserver (2.11) or api-server (3.3) on PostgreSQL,
headless Chromium driven by Playwright, an admin and a viewer logged in through Airflow's own login.

The outbox holds real rows: alerts queued by the package's own outbox code, then delivered by a
real ``airflow-ext deliver`` to the local robot, where one robot's Connection has a wrong token, so
its alert is a dead letter with the robot's reason. The tests check that the page's figures are the
database's, that an admin's retry requeues the dead letter and a viewer's is refused, that a POST
without a CSRF token (2.11) or from another origin (3.3) is refused, that an anonymous visitor is
sent to the login page, and that no token or secret is on any page. Each page is saved as a
screenshot in the test artifacts.
"""

from __future__ import annotations

import contextlib
import json
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from airflow_ext.outbox.store import DEAD, PENDING, SENT, OutboxStore
from airflow_ext.ui import page as alerts_page
from tests.browser import browser_fixture, screenshot  # noqa: F401 - fixture
from tests.conftest import (
    AIRFLOW_LINE,
    BIN,
    ROBOT_KEYWORD,
    ROBOT_SECRET,
    ROBOT_TOKEN,
    counting_robot,
    local_executor_env,
    run,
)
from tests.e2e.scheduled import (
    airflow3_services_env,
    free_port,
    metadata_engine,
    start,
    stop_all,
    tail,
    wait_for_port,
)

pytestmark = [pytest.mark.e2e, pytest.mark.services]

UI_DAGS = Path(__file__).resolve().parent / "ui_dags"
WRONG_TOKEN = "ops-robot-token-rotated-0a9b8c"
ADMIN, VIEWER = ("admin", "admin-pass-5b1e"), ("viewer", "viewer-pass-7c2f")
#: 2.11: a user whose role may read the DAG ui_orders only (FAB's per-DAG permission).
ORDERS_READER, ORDERS_READER_ROLE = ("orders_reader", "orders-pass-3e4d"), "OrdersReader"
SECRETS = (ROBOT_TOKEN, ROBOT_SECRET, WRONG_TOKEN)
DEAD_REASON = "token is not exist"

#: Queues four alerts through the package's own outbox code, in the server's configuration: two
#: tries of ui_orders.report for the [dingding] robot, ui_orders.load_orders for the ops_robot
#: Connection (ding_conn_id), and, after the deliverer ran, one still pending.
SEED = textwrap.dedent(
    """
    import sys
    from airflow_ext.alert import Alert, AlertKind
    from airflow_ext.dingbot import queue_in_database

    def alert(task_id, try_number, kind, **kw):
        return Alert(
            kind=kind, dag_id="ui_orders", task_id=task_id, run_id="manual__ui", try_number=try_number,
            max_tries=1, exception_type="RuntimeError", exception_message="orders table is **locked**",
            hostname="worker-1", tags=("team-payments",), **kw,
        )

    if sys.argv[1] == "delivered":
        assert queue_in_database(alert("report", 1, AlertKind.RETRY))
        assert queue_in_database(alert("report", 2, AlertKind.FAILURE))
        assert queue_in_database(alert("load_orders", 1, AlertKind.RETRY, conn_ids=("ops_robot",)))
    else:
        assert queue_in_database(alert("load_orders", 2, AlertKind.FAILURE, conn_ids=("ops_robot",)))
    """
)


def _outbox(engine) -> list[dict]:
    with engine.connect() as conn:
        return [
            dict(row._mapping)
            for row in conn.execute(
                text("SELECT id, robot_ref, status, last_error, dag_id FROM dingbot_outbox ORDER BY id")
            ).all()
        ]


def _wait_until(check, timeout_s: float, what: str, logs: dict[str, Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"no {what} in {timeout_s} s\n" + "\n".join(
            f"--- {name}:\n{tail(log)}" for name, log in logs.items()
        )
        time.sleep(0.5)


def _seed_and_deliver(env: dict[str, str], engine, tmp: Path) -> None:
    """Three alerts delivered for real (the ops_robot one refused for its token), then one pending."""
    seed = run([str(BIN / "python"), "-c", SEED, "delivered"], env)
    assert seed.returncode == 0, seed.stdout + seed.stderr
    logs = {"deliver": tmp / "deliver.log"}
    deliverer = start([str(BIN / "airflow-ext"), "deliver"], env, logs["deliver"])
    try:
        _wait_until(
            lambda: sorted(row["status"] for row in _outbox(engine)) == [DEAD, SENT, SENT],
            60,
            "settled outbox (2 sent, 1 dead)",
            logs,
        )
    finally:
        stop_all([deliverer])
    seed = run([str(BIN / "python"), "-c", SEED, "pending"], env)
    assert seed.returncode == 0, seed.stdout + seed.stderr


def _robot_env(robot, **extra) -> dict[str, str]:
    ops_robot = {
        "conn_type": "dingding",
        "host": robot.base_url,
        "password": WRONG_TOKEN,
        "extra": {"secret": ROBOT_SECRET, "keyword": ROBOT_KEYWORD},
    }
    return {
        "AIRFLOW__DINGDING__BOT_URL": robot.url,
        "AIRFLOW__DINGDING__SECRET": ROBOT_SECRET,
        "AIRFLOW__DINGDING__KEYWORD": ROBOT_KEYWORD,
        "AIRFLOW__DINGDING__AT_MOBILES": "13800000000",
        "AIRFLOW__DINGBOT__TIMEOUT": "5",
        "AIRFLOW__DINGBOT__DING_BOT_BACKEND": "airflow_ext.dingbot.outbox_sender",
        "AIRFLOW_CONN_OPS_ROBOT": json.dumps(ops_robot),
        "AIRFLOW__CORE__DAGS_FOLDER": str(UI_DAGS),
        **extra,
    }


@contextlib.contextmanager
def _airflow2_webserver(base_env, tmp: Path, database_url: str, robot):
    port = free_port()
    env = local_executor_env(
        base_env,
        tmp / "home",
        database_url,
        **_robot_env(robot, DINGBOT_UI_DAG_PARSES=str(tmp / "dag-parses.log")),
        AIRFLOW__WEBSERVER__SECRET_KEY="dingbot-ui-test-secret-key",
        AIRFLOW__WEBSERVER__BASE_URL=f"http://127.0.0.1:{port}",
        AIRFLOW__WEBSERVER__WORKERS="1",
        AIRFLOW__WEBSERVER__AUTH_RATE_LIMITED="False",
        AIRFLOW__WEBSERVER__WARN_DEPLOYMENT_EXPOSURE="False",
    )
    airflow = str(BIN / "airflow")
    # The DAG in the database (the page shows alerts of the DAGs the user may read) and the roles.
    for args in (["dags", "reserialize"], ["sync-perm"]):
        result = run([airflow, *args], env, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
    for args in (
        ["roles", "create", ORDERS_READER_ROLE],
        ["roles", "add-perms", ORDERS_READER_ROLE, "-r", "DAG:ui_orders", "-a", "can_read"],
        ["roles", "add-perms", ORDERS_READER_ROLE, "-r", "Website", "-a", "can_read"],
    ):
        result = run([airflow, *args], env)
        assert result.returncode == 0, result.stdout + result.stderr
    for (user, password), role in ((ADMIN, "Admin"), (VIEWER, "Viewer"), (ORDERS_READER, ORDERS_READER_ROLE)):
        created = run(
            [
                airflow,
                "users",
                "create",
                "--username",
                user,
                "--password",
                password,
                "--role",
                role,
                "--email",
                f"{user}@example.com",
                "--firstname",
                user,
                "--lastname",
                "Tester",
            ],
            env,
        )
        assert created.returncode == 0, created.stdout + created.stderr
    log = tmp / "webserver.log"
    server = start(
        [airflow, "webserver", "--hostname", "127.0.0.1", "--port", str(port), "--workers", "1"], env, log
    )
    try:
        wait_for_port(port, server, log, timeout_s=180)
        yield env, f"http://127.0.0.1:{port}", {"webserver": log, "dag-parses": tmp / "dag-parses.log"}
    finally:
        stop_all([server])


@contextlib.contextmanager
def _airflow3_api_server(base_env, tmp: Path, database_url: str, robot):
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps(dict((ADMIN, VIEWER))))
    env = airflow3_services_env(
        base_env,
        tmp / "home",
        database_url,
        **_robot_env(robot, DINGBOT_UI_DAG_PARSES=str(tmp / "dag-parses.log")),
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN[0]}:admin,{VIEWER[0]}:viewer",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__API__SECRET_KEY="dingbot-ui-test-secret-key",
    )
    airflow = str(BIN / "airflow")
    # The DAG in the database: the page shows alerts of the DAGs the user may read.
    result = run([airflow, "dags", "reserialize"], env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    log = tmp / "api-server.log"
    server = start([airflow, "api-server"], env, log)
    try:
        wait_for_port(int(env["AIRFLOW__API__PORT"]), server, log, timeout_s=180)
        yield env, env["AIRFLOW__API__BASE_URL"], {"api-server": log, "dag-parses": tmp / "dag-parses.log"}
    finally:
        stop_all([server])


@pytest.fixture(scope="module")
def ui(airflow_base_env, tmp_path_factory):
    """The line's UI server with a settled outbox: ``(base URL, engine, server logs)``."""
    tmp = tmp_path_factory.mktemp("alerts-ui")
    serve = _airflow2_webserver if AIRFLOW_LINE == "2" else _airflow3_api_server
    with counting_robot() as robot, metadata_engine() as (url, engine):
        with serve(airflow_base_env, tmp, url, robot) as (env, base_url, logs):
            _seed_and_deliver(env, engine, tmp)
            yield base_url, engine, logs, robot


# -- the browser ----------------------------------------------------------------------------------


def login(context, base_url: str, user: tuple[str, str]):
    """Log in through Airflow's own login page; returns the page."""
    page = context.new_page()
    name, password = user
    if AIRFLOW_LINE == "2":
        page.goto(f"{base_url}/login/")
        page.fill("#username", name)
        page.fill("#password", password)
        page.click("input[type=submit]")
    else:
        page.goto(f"{base_url}/auth/login?next={base_url}/")
        page.fill("input[name=username]", name)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
    # The login page leaves by itself once the token is set (3.x: a script sets location.href
    # after its fetch); a goto issued before that navigation is aborted by it, so wait for it.
    page.wait_for_url(lambda url: "/login" not in url)
    page.wait_for_load_state("networkidle")
    return page


def open_alerts(page, base_url: str):
    """The Alerts page as the UI shows it; returns what holds its content (3.x: the iframe)."""
    if AIRFLOW_LINE == "2":
        page.goto(f"{base_url}/dingbot-alerts/")
        page.wait_for_selector(".dingbot-alerts")
        return page
    page.goto(f"{base_url}/plugin/dingbot-alerts")
    frame = page.frame_locator("iframe")
    frame.locator(".dingbot-alerts").wait_for()
    return frame


def page_texts(page) -> list[str]:
    """The HTML of the page and of every frame in it."""
    return [frame.content() for frame in page.frames]


def assert_no_secret_on(page) -> None:
    for html in page_texts(page):
        for secret in SECRETS:
            assert secret not in html, "a token or secret is on the page"


def robot_cells(content, robot_ref: str) -> dict[str, str]:
    row = content.locator("#dingbot-robots tbody tr", has_text=f"{robot_ref}:")
    return {
        name: row.locator(f"td.dingbot-{name}").first.inner_text().split("\n")[0].strip()
        for name in ("pending", "sent", "dead")
    }


def status_by_name(engine) -> dict[str, object]:
    return {", ".join(s.names): s for s in OutboxStore(engine).status()}


def test_an_admin_sees_the_databases_figures_and_retries_a_dead_letter(ui, browser):
    from playwright.sync_api import expect

    base_url, engine, logs, robot = ui
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = login(context, base_url, ADMIN)
    content = open_alerts(page, base_url)

    statuses = status_by_name(engine)
    for name in ("[dingding]", "ops_robot"):
        status = statuses[name]
        assert robot_cells(content, name) == {
            "pending": str(status.pending + status.claimed),
            "sent": str(status.sent_last_day),
            "dead": str(status.dead),
        }
    assert (statuses["ops_robot"].dead, statuses["[dingding]"].sent_last_day) == (1, 2)
    dead = content.locator("section.dingbot-alert[data-status=dead]")
    assert dead.count() == 1
    assert DEAD_REASON in dead.locator(".dingbot-last-error").inner_text()
    # Rendered as the group sees it: markdown became HTML, the mention is shown.
    sent = content.locator("section.dingbot-alert[data-status=sent]").first
    assert (
        sent.locator(
            ".dingbot-message strong, .dingbot-message h1, .dingbot-message h2, "
            ".dingbot-message h3, .dingbot-message h4"
        ).count()
        > 0
    )
    assert "13800000000" in sent.locator(".dingbot-message").inner_text()
    # The style reaches the browser as written: escaped, its child selectors and quoted fonts break.
    css = alerts_page.page_css().strip()
    assert any(css in style for style in content.locator("style").all_text_contents()), "style escaped"
    assert_no_secret_on(page)
    screenshot(page, f"airflow{AIRFLOW_LINE}-alerts-admin")
    if AIRFLOW_LINE == "3":
        # The UI's iframe shows only its top in a screenshot; the app's own page shows it all.
        whole = context.new_page()
        whole.goto(f"{base_url}/dingbot-alerts/")
        whole.wait_for_selector(".dingbot-alerts")
        assert_no_secret_on(whole)
        screenshot(whole, "airflow3-alerts-admin-whole-page")
        whole.close()

    # Filter by outcome: only the dead letter.
    content.locator("#dingbot-filter select[name=outcome]").select_option("dead")
    content.locator("#dingbot-filter button[type=submit]").click()
    expect(content.locator("section.dingbot-alert")).to_have_count(1)
    assert content.locator("section.dingbot-alert[data-status=dead]").count() == 1

    # Where would ui_orders.load_orders alert? Its ding_conn_id, with no secret, read from the
    # serialized DAG: `dags reserialize` parsed the file; the server never does.
    parses_before = logs["dag-parses"].read_text()
    assert parses_before, "dags reserialize parsed the DAG file"
    content.locator("#dingbot-route input[name=route_dag]").fill("ui_orders")
    content.locator("#dingbot-route input[name=route_task]").fill("load_orders")
    content.locator("#dingbot-route button[type=submit]").click()
    answer = content.locator("#dingbot-route-answer")
    answer.wait_for()
    assert "ops_robot" in answer.inner_text() and "ding_conn_id" in answer.inner_text()
    assert logs["dag-parses"].read_text() == parses_before, "the UI server parsed a DAG file"
    assert_no_secret_on(page)
    screenshot(page, f"airflow{AIRFLOW_LINE}-alerts-route")

    dead_id = next(row["id"] for row in _outbox(engine) if row["status"] == DEAD)
    content.locator(f"section[data-alert-id='{dead_id}'] button.dingbot-retry-one").click()
    content.locator("text=queued again").first.wait_for()
    assert {row["id"]: row["status"] for row in _outbox(engine)}[dead_id] == PENDING
    screenshot(page, f"airflow{AIRFLOW_LINE}-alerts-after-retry")
    context.close()


def test_a_viewer_sees_the_page_read_only_and_cannot_act(ui, browser):
    base_url, engine, logs, robot = ui
    # A dead letter to see and to retry, whichever test ran first (the admin's requeues the one
    # the deliverer left).
    ops_robot = status_by_name(engine)["ops_robot"]
    if not ops_robot.dead:
        OutboxStore(engine).mark_dead_pending(ops_robot.robot_key, "ops_robot", DEAD_REASON)
    robot_key = ops_robot.robot_key
    before = _outbox(engine)
    assert any(row["status"] == DEAD for row in before)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = login(context, base_url, VIEWER)
    content = open_alerts(page, base_url)

    assert content.locator(".dingbot-alerts").get_attribute("data-can-act") == "no"
    assert (
        content.locator("button.dingbot-retry-one, button.dingbot-retry-all, button.dingbot-test").count()
        == 0
    )
    assert content.locator("section.dingbot-alert").count() == len(before)
    assert robot_cells(content, "ops_robot")["dead"] == str(status_by_name(engine)["ops_robot"].dead)
    dead = content.locator("section.dingbot-alert[data-status=dead]").first
    assert DEAD_REASON in dead.locator(".dingbot-last-error").inner_text()
    assert_no_secret_on(page)
    screenshot(page, f"airflow{AIRFLOW_LINE}-alerts-viewer")

    if AIRFLOW_LINE == "2":
        # With a valid CSRF token: refused for the permission, not the token.
        token = page.evaluate("csrfToken")
        answer = page.request.post(
            f"{base_url}/dingbot-alerts/retry",
            form={"robot_key": robot_key, "csrf_token": token},
            max_redirects=0,
        )
    else:
        answer = page.request.post(
            f"{base_url}/dingbot-alerts/retry",
            data=json.dumps({"robot_key": robot_key}),
            headers={"Content-Type": "application/json", "Origin": base_url},
        )
    assert answer.status == 403, answer.text()
    assert _outbox(engine) == before
    context.close()


@pytest.mark.airflow2
def test_a_user_who_may_read_some_dags_sees_their_alerts(ui, browser):
    base_url, engine, logs, robot = ui
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = login(context, base_url, ORDERS_READER)
    content = open_alerts(page, base_url)

    assert content.locator(".dingbot-alerts").get_attribute("data-can-act") == "no"
    # Every seeded alert is of ui_orders, the DAG the role may read.
    assert content.locator("section.dingbot-alert").count() == len(_outbox(engine))
    assert content.locator("#dingbot-filter select[name=dag_id] option").all_text_contents() == [
        "all",
        "ui_orders",
    ]
    assert_no_secret_on(page)
    screenshot(page, "airflow2-alerts-orders-reader")
    context.close()


def test_forged_and_anonymous_requests_are_refused(ui, browser):
    base_url, engine, logs, robot = ui
    robot_key = OutboxStore(engine).status()[0].robot_key
    anonymous = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    anonymous.goto(f"{base_url}/dingbot-alerts/")
    assert "login" in anonymous.url, anonymous.url
    screenshot(anonymous, f"airflow{AIRFLOW_LINE}-alerts-anonymous")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = login(context, base_url, ADMIN)
    open_alerts(page, base_url)
    before = _outbox(engine)
    if AIRFLOW_LINE == "2":
        forged = page.request.post(
            f"{base_url}/dingbot-alerts/retry", form={"robot_key": robot_key}, max_redirects=0
        )
        assert forged.status == 400 and "CSRF" in forged.text()
    else:
        forged = page.request.post(
            f"{base_url}/dingbot-alerts/retry",
            data=json.dumps({"robot_key": robot_key}),
            headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
        )
        assert forged.status == 403 and "origin" in forged.text()
        form_post = page.request.post(
            f"{base_url}/dingbot-alerts/retry",
            form={"robot_key": robot_key},
            headers={"Origin": base_url},
        )
        assert form_post.status == 415
    assert _outbox(engine) == before
    for log in logs.values():
        for secret in SECRETS:
            assert secret not in log.read_text(errors="replace"), f"a secret is in {log.name}"
    context.close()
