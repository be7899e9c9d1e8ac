"""The Alerts page's model and its shared template, on SQLite, without a web server: figures per
robot, dead letters with their reasons, messages rendered as the group sees them, filters, the
routing answer, the actions, and never a token or secret in what is rendered."""

from __future__ import annotations

import os

import pytest
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import create_engine

from airflow_ext.alert import AlertKind
from airflow_ext.fake_robot import FakeRobot
from airflow_ext.outbox.store import DEAD, PENDING, SENT, OutboxStore
from airflow_ext.ui import page as alerts_page
from tests.outbox.test_store import singles
from tests.test_connections import conn_json
from tests.test_render import make_alert

TOKEN, SECRET, WRONG_TOKEN = "ui-token-0c1d2e3f", "SECui0123456789abcdef", "ui-rotated-9f8e7d"
T0 = 1_800_000_000_000
LINKS = alerts_page.Links(
    task_instance=lambda entry: f"/ti/{entry.alert.dag_id}/{entry.alert.task_id}",
    log=lambda entry: f"/log/{entry.alert.dag_id}/{entry.alert.task_id}",
)


@pytest.fixture
def robots(monkeypatch):
    """The [dingding] robot (signed, keyword, one mention) and a Connection ``ops`` with a wrong token."""
    for name in list(os.environ):
        if name.startswith(("AIRFLOW__DINGBOT__", "AIRFLOW__DINGDING__", "AIRFLOW_CONN_")):
            monkeypatch.delenv(name)
    robot = FakeRobot(access_token=TOKEN, secret=SECRET, keyword="Airflow").start()
    monkeypatch.setenv("AIRFLOW__DINGDING__BOT_URL", robot.url)
    monkeypatch.setenv("AIRFLOW__DINGDING__SECRET", SECRET)
    monkeypatch.setenv("AIRFLOW__DINGDING__KEYWORD", "Airflow")
    monkeypatch.setenv("AIRFLOW__DINGDING__AT_MOBILES", "13800000000")
    monkeypatch.setenv("AIRFLOW__DINGBOT__TIMEOUT", "3")
    monkeypatch.setenv("AIRFLOW_CONN_OPS", conn_json("dingding", password=WRONG_TOKEN, host=robot.base_url))
    yield robot
    robot.stop()


@pytest.fixture
def store(tmp_path):
    s = OutboxStore(create_engine(f"sqlite:///{tmp_path / 'outbox.db'}", future=True))
    s.ensure_schema()
    return s


def _keys():
    from airflow_ext.dingbot import robot_named

    return robot_named("[dingding]").key, robot_named("ops").key


def _fill(store):
    """[dingding]: one sent, one pending; ops: one dead letter (its token), of two DAGs."""
    ding, ops = _keys()
    store.enqueue(
        make_alert(dag_id="etl", task_id="load", exception_message="**locked** <script>x</script>"),
        ding,
        robot_ref="[dingding]",
        at_ms=T0,
    )
    store.enqueue(make_alert(dag_id="etl", task_id="report"), ops, robot_ref="ops", at_ms=T0 + 1)
    claim = store.claim(ding, "w", singles, rate_limit=20, window_s=60, lease_s=60, at_ms=T0 + 2)
    store.mark_sent([claim.groups[0][0].id], "w", "uuid-of-a-digest", at_ms=T0 + 3)
    claim = store.claim(ops, "w", singles, rate_limit=20, window_s=60, lease_s=60, at_ms=T0 + 2)
    store.mark_dead([claim.groups[0][0].id], "w", "token is not exist (errcode 300001)")
    store.enqueue(
        make_alert(dag_id="reports", task_id="mail", kind=AlertKind.RETRY),
        ding,
        robot_ref="[dingding]",
        at_ms=T0 + 4,
    )
    return ding, ops


def render(data) -> str:
    env = Environment(loader=FileSystemLoader(alerts_page.TEMPLATES), autoescape=select_autoescape(["html"]))
    return env.get_template("dingbot/alerts_standalone.html").render(
        page=data,
        fmt=alerts_page,
        urls={"page": "/p/", "retry": "/p/retry", "test": "/p/test"},
        message_css="",
        form_token=None,
    )


def test_the_page_shows_each_robots_figures_and_the_dead_letters_reason(robots, store):
    ding, ops = _fill(store)

    data = alerts_page.build_page(store, LINKS, at_ms=T0 + 10, can_act=True)

    by_key = {view.key: view for view in data.robots}
    assert (by_key[ding].pending, by_key[ding].status.sent_last_day, by_key[ding].status.dead) == (1, 1, 0)
    assert (by_key[ops].pending, by_key[ops].status.dead) == (0, 1)
    assert by_key[ops].status.dead_reasons == (("token is not exist (errcode 300001)", 1),)
    assert by_key[ding].described[0].startswith("[dingding]: DingTalk at http://127.0.0.1:")
    assert [a.entry.alert.task_id for a in data.alerts] == ["mail", "report", "load"]
    html = render(data)
    assert "token is not exist (errcode 300001)" in html
    assert "/ti/etl/report" in html and "/log/etl/report" in html
    for secret in (TOKEN, SECRET, WRONG_TOKEN):
        assert secret not in html


def test_a_message_is_rendered_as_the_group_sees_it_and_hostile_text_stays_text(robots, store):
    _fill(store)

    (load,) = [
        a for a in alerts_page.build_page(store, LINKS, at_ms=T0).alerts if a.entry.alert.task_id == "load"
    ]

    assert "<script>" not in load.message_html and "&lt;script&gt;" in load.message_html
    assert "13800000000" in load.message_html  # the mention, as the group sees it
    assert load.channel == "dingtalk"
    assert load.in_digest  # its message_uuid is not the single alert's
    assert "<script>x" not in render(alerts_page.build_page(store, LINKS, at_ms=T0))


@pytest.mark.parametrize(
    ("dag_id", "outcome", "expected"),
    [
        (None, None, ["mail", "report", "load"]),
        ("etl", None, ["report", "load"]),
        (None, DEAD, ["report"]),
        (None, SENT, ["load"]),
        (None, PENDING, ["mail"]),
        ("reports", DEAD, []),
    ],
)
def test_recent_alerts_filter_by_dag_and_outcome(robots, store, dag_id, outcome, expected):
    _fill(store)

    data = alerts_page.build_page(store, LINKS, at_ms=T0, dag_id=dag_id, outcome=outcome)

    assert [a.entry.alert.task_id for a in data.alerts] == expected


def test_an_unknown_outcome_is_named_and_alerts_of_unreadable_dags_are_not_shown(robots, store):
    _fill(store)

    data = alerts_page.build_page(store, LINKS, at_ms=T0, outcome="exploded", readable_dag_ids=["reports"])

    assert data.notices == ["unknown outcome 'exploded' (one of: pending, sent, dead)"]
    assert [a.entry.alert.dag_id for a in data.alerts] == ["reports"]
    assert data.dag_ids == ["reports"]
    refused = alerts_page.build_page(store, LINKS, at_ms=T0, readable_dag_ids=["reports"], route_dag_id="etl")
    assert refused.route == "cannot explain: you may not read the DAG 'etl'"


def test_a_read_only_page_has_no_action(robots, store):
    _fill(store)

    html = render(alerts_page.build_page(store, LINKS, at_ms=T0, can_act=False))

    assert 'data-can-act="no"' in html
    assert "dingbot-retry" not in html and "dingbot-test" not in html.replace("dingbot-test-", "")


def test_retrying_one_dead_letter_and_all_of_a_robot(robots, store):
    ding, ops = _fill(store)
    (dead,) = store.recent(status=DEAD)

    with pytest.raises(alerts_page.ActionRefused, match="alert id must be a whole number"):
        alerts_page.retry_dead(store, ops, "1; DROP TABLE")
    with pytest.raises(alerts_page.ActionRefused, match="no robot"):
        alerts_page.retry_dead(store, "not-a-robot-key")
    assert alerts_page.retry_dead(store, ops, str(dead.id)) == "1 dead letter of ops queued again"
    with pytest.raises(alerts_page.ActionRefused, match="is not a dead letter"):
        alerts_page.retry_dead(store, ops, str(dead.id))
    assert alerts_page.retry_dead(store, ding) == "0 dead letters of [dingding] queued again"


@pytest.mark.parametrize(
    "alert_id, refusal",
    [
        ("1; DROP TABLE", "alert id must be a whole number"),
        ("1e3", "alert id must be a whole number"),
        ("-1", "alert id must be a whole number"),
        ("١٢", "alert id must be a whole number"),  # Arabic-Indic digits: int() would take them
        (True, "alert id must be a whole number"),
        (1.9, "alert id must be a whole number"),
        (float("inf"), "alert id must be a whole number"),
        ([1], "alert id must be a whole number"),
        (0, "alert id must be from 1 to"),
        (2**63, "alert id must be from 1 to"),
        ("9" * 25, "alert id must be from 1 to"),
    ],
)
def test_an_alert_id_that_is_not_a_row_id_is_refused_by_name(robots, store, alert_id, refusal):
    _ding, ops = _fill(store)
    before = store.recent()

    with pytest.raises(alerts_page.ActionRefused, match=refusal):
        alerts_page.retry_dead(store, ops, alert_id)
    assert store.recent() == before


@pytest.mark.parametrize("alert_id", [" 7 ", "7", 7])
def test_an_alert_id_is_a_whole_number_or_its_digits(alert_id):
    assert alerts_page.parse_alert_id(alert_id) == 7


def test_a_test_alert_reaches_the_robot_and_its_answer_is_kept(robots, store):
    answer = alerts_page.send_test(store, "[dingding]")

    assert "the robot answered" in answer and '"errcode": 0' in answer
    assert len(robots.messages) == 1
    (status,) = [s for s in store.status() if s.robot_key == _keys()[0]]
    assert status.last_answer == '{"errcode": 0, "errmsg": "ok"}'
    assert status.sent_last_minute == 1  # counted in the robot's window


def test_a_test_alert_to_a_robot_that_refuses_says_why_without_the_token(robots, store):
    with pytest.raises(alerts_page.ActionRefused) as refused:
        alerts_page.send_test(store, "ops")

    assert "300001" in str(refused.value) or "token" in str(refused.value)
    assert WRONG_TOKEN not in str(refused.value)
    (status,) = [s for s in store.status() if s.robot_key == _keys()[1]]
    assert status.last_answer and WRONG_TOKEN not in status.last_answer
    with pytest.raises(alerts_page.ActionRefused, match="not defined"):
        alerts_page.send_test(store, "nobody")


def test_a_test_alert_is_not_sent_while_the_robot_is_paused(robots, store):
    ding, _ = _keys()
    assert store.reserve_send(ding, rate_limit=20, window_s=60).reserved
    from airflow_ext.outbox.store import now_ms

    store.pause_robot(ding, now_ms() + 300_000, "send too fast, exceed 20 times per minute")

    with pytest.raises(alerts_page.ActionRefused, match="send too fast.*try again in"):
        alerts_page.send_test(store, "[dingding]")
    assert robots.messages == []
