"""Several robots in one outbox: each name delivered by its own deliverer, within its channel's
limits, one robot's trouble never holding up another; and the schema-1 upgrade that added names."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from sqlalchemy import select, text

from airflow_ext.channels.dingtalk import DingTalkRobot
from airflow_ext.channels.wecom import WeComRobot
from airflow_ext.channels.wecom.fake import FakeWeComRobot
from airflow_ext.config import RobotSettings
from airflow_ext.delivery import DeliverySchedule, RetryPolicy
from airflow_ext.errors import ConfigError
from airflow_ext.fake_robot import FakeRobot
from airflow_ext.outbox import schema
from airflow_ext.outbox.deliverer import DeliveryService, schedule_for
from airflow_ext.outbox.store import DEAD, PENDING, SENT, OutboxStore
from tests.outbox.test_deliverer import FAST, RecordingStats  # noqa: F401 - shared schedule
from tests.test_render import make_alert

POLICY = RetryPolicy(connect_timeout_s=1.0, read_timeout_s=1.0)


@pytest.fixture
def store(engine):
    s = OutboxStore(engine)
    s.ensure_schema()
    return s


def dingtalk(fake: FakeRobot, name: str) -> DingTalkRobot:
    return DingTalkRobot(RobotSettings(channel="dingtalk", url=fake.url, name=name))


def wecom(fake: FakeWeComRobot, name: str) -> WeComRobot:
    return WeComRobot(RobotSettings(channel="wecom", url=fake.url, name=name))


@contextlib.contextmanager
def service_running(store, resolve, policy=POLICY):
    service = DeliveryService(store, resolve, schedule=FAST, policy=policy, worker_id="test")
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition(), "timed out"


def run_service(store, resolve, condition, timeout=30.0) -> None:
    with service_running(store, resolve):
        wait_for(condition, timeout)


def statuses(store) -> dict[tuple[str | None, str], int]:
    counts: dict[tuple[str | None, str], int] = {}
    for row in store.rows():
        counts[(row["robot_ref"], row["status"])] = counts.get((row["robot_ref"], row["status"]), 0) + 1
    return counts


def test_each_robot_gets_its_alerts_once_and_a_hanging_one_holds_up_no_other(store):
    hanging = FakeRobot(access_token="ding-token", dedup_msg_uuid=False).start()
    group = FakeWeComRobot(access_token="wecom-key", rate_limit=4, window_s=2.0).start()
    hanging.set_mode("hang")
    robots = {"team_a": dingtalk(hanging, "team_a"), "team_b": wecom(group, "team_b")}
    alerts = [make_alert(task_id=f"t{i:04d}", try_number=1) for i in range(3)]
    # Held up behind a send that never gets an answer, team_b would wait 30 s for the read timeout.
    patient = RetryPolicy(connect_timeout_s=1.0, read_timeout_s=30.0)
    try:
        for alert in alerts:
            store.enqueue(alert, robots["team_a"].key, robot_ref="team_a")
        with service_running(store, robots.__getitem__, patient):
            wait_for(lambda: hanging.requests, timeout=10)  # team_a's deliverer is stuck in a send
            for alert in alerts:  # the same three tries fanned out to the other robot
                store.enqueue(alert, robots["team_b"].key, robot_ref="team_b")
            wait_for(lambda: statuses(store).get(("team_b", SENT)) == 3, timeout=10)
            assert len(hanging.requests) == 1 and statuses(store).get(("team_a", SENT), 0) == 0
            hanging.stop()  # lets team_a's send end, so the service stops at once

        text = "\n".join(m["body"]["markdown"]["content"] for m in group.messages)
        assert [text.count(f"t{i:04d}") for i in range(3)] == [1, 1, 1]  # once each, in one or more
    finally:
        hanging.stop()
        group.stop()


def test_a_robot_whose_connection_is_gone_keeps_its_alerts_as_dead_letters_with_the_reason(store):
    group = FakeWeComRobot(access_token="wecom-key").start()
    good = wecom(group, "good")

    def resolve(name):
        if name == "gone":
            raise ConfigError("Connection 'gone' is not defined")
        return good

    try:
        store.enqueue(make_alert(task_id="t0001"), "unresolved-key", robot_ref="gone")
        store.enqueue(make_alert(task_id="t0001"), good.key, robot_ref="good")

        run_service(store, resolve, lambda: statuses(store).get(("gone", DEAD)) == 1 and group.messages)

        (dead,) = [row for row in store.rows() if row["robot_ref"] == "gone"]
        assert dead["last_error"] == "cannot send: Connection 'gone' is not defined"
        assert len(group.messages) == 1
    finally:
        group.stop()


def test_two_names_of_one_robot_share_its_budget_and_its_dedup(store):
    fake = FakeRobot(access_token="ding-token", dedup_msg_uuid=False).start()
    first, second = dingtalk(fake, "first"), dingtalk(fake, "second")
    try:
        assert first.key == second.key  # the robot is its token, whatever the Connection is called
        alert = make_alert(task_id="t0001")
        assert store.enqueue(alert, first.key, robot_ref="first") is True
        assert store.enqueue(alert, second.key, robot_ref="second") is False  # same group: once
    finally:
        fake.stop()


@pytest.mark.parametrize(
    "robot_class, channel, configured, expected",
    [
        (DingTalkRobot, "dingtalk", 1_000_000, 20),
        (DingTalkRobot, "dingtalk", 15, 15),  # [dingbot] rate_limit can lower a channel's limit
        (WeComRobot, "wecom", 1_000_000, 20),
    ],
)
def test_the_rate_limit_is_the_channels_unless_configured_lower(robot_class, channel, configured, expected):
    robot = robot_class(RobotSettings(channel=channel, url="http://127.0.0.1:9/x?access_token=t&key=t"))

    schedule = schedule_for(robot, DeliverySchedule(rate_limit=configured))

    assert schedule.rate_limit == expected
    assert schedule.throttled_pause_s == robot.THROTTLED_PAUSE_S


def test_a_schema_1_outbox_is_upgraded_in_place_and_its_alerts_still_go_to_dingding(engine):
    store = OutboxStore(engine)
    store.ensure_schema()
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE dingbot_outbox DROP COLUMN robot_ref"))
        conn.execute(schema.meta.update().values(value="1"))
        conn.execute(
            text(
                "INSERT INTO dingbot_outbox (robot_key, dedup_hash, dag_id, alert, status, attempts, "
                "created_at_ms, next_attempt_at_ms) VALUES ('k', 'h', 'd', :alert, 'pending', 0, 1, 1)"
            ),
            {
                "alert": '{"kind": "failure", "dag_id": "d", "task_id": "t", "run_id": "r", '
                '"try_number": 1, "max_tries": 0}'
            },
        )
    assert not schema.schema_is_current(engine)

    OutboxStore(engine).ensure_schema()
    OutboxStore(engine).ensure_schema()  # a second process finds it current

    assert schema.schema_is_current(engine)
    assert store.pending_robots() == [("k", None)]
    with engine.connect() as conn:
        (row,) = conn.execute(select(schema.outbox.c.robot_ref, schema.outbox.c.status)).all()
    assert tuple(row) == (None, PENDING)


def test_a_fan_out_is_recorded_in_one_call_and_a_repeat_adds_nothing(store):
    alert = make_alert(task_id="t0001")
    robots = [("key-a", "team_a"), ("key-b", "team_b"), ("key-a", "team_a_alias")]

    assert store.enqueue_for_robots(alert, robots) == 2  # one robot under two names: one row
    assert store.enqueue_for_robots(alert, robots) == 0
    assert sorted((r["robot_key"], r["robot_ref"]) for r in store.rows()) == [
        ("key-a", "team_a"),
        ("key-b", "team_b"),
    ]
