"""The delivery loop against the local robot, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter

import pytest

from airflow_ext.channels.dingtalk import DingTalkRobot
from airflow_ext.config import DingTalkSettings
from airflow_ext.delivery import DeliverySchedule, RetryPolicy
from airflow_ext.fake_robot import FakeRobot
from airflow_ext.outbox.deliverer import Deliverer
from airflow_ext.outbox.store import DEAD, SENT, OutboxStore
from tests.conftest import ROBOT_KEYWORD, ROBOT_SECRET, ROBOT_TOKEN
from tests.test_render import make_alert

TASK_NAME = re.compile(r"\bt\d{4}\b")


class RecordingStats:
    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.timings: list[tuple[str, float]] = []
        self.gauges: dict[str, float] = {}

    def incr(self, name, count=1, *args, **kwargs):
        self.counts[name] += count

    def timing(self, name, value, *args, **kwargs):
        self.timings.append((name, value))

    def gauge(self, name, value, *args, **kwargs):
        self.gauges[name] = value


@pytest.fixture
def store(engine):
    s = OutboxStore(engine)
    s.ensure_schema()
    return s


def fast_robot(**kw) -> FakeRobot:
    """A robot with DingTalk's rules at a speed tests can wait for: 4 messages per 2 s."""
    defaults = dict(
        access_token=ROBOT_TOKEN, secret=ROBOT_SECRET, keyword=ROBOT_KEYWORD, rate_limit=4, window_s=2.0
    )
    defaults.update(kw)
    return FakeRobot(**defaults).start()


FAST = DeliverySchedule(
    rate_limit=4,
    window_s=2.0,
    poll_interval_s=0.05,
    lease_s=5.0,
    retry_initial_s=0.1,
    retry_max_s=0.5,
    throttled_pause_s=1.0,
)


def deliverer(store, robot, schedule=FAST, stats=None) -> Deliverer:
    settings = DingTalkSettings(bot_url=robot.url, secret=ROBOT_SECRET, keyword=ROBOT_KEYWORD)
    return Deliverer(
        store,
        DingTalkRobot(settings),
        schedule=schedule,
        policy=RetryPolicy(connect_timeout_s=1.0, read_timeout_s=1.0),
        stats=stats or RecordingStats(),
    )


def enqueue(store, robot_key, n, start=0):
    for i in range(start, start + n):
        store.enqueue(make_alert(dag_id=f"dag_{i % 3}", task_id=f"t{i:04d}", try_number=1), robot_key)


def named(robot) -> Counter:
    return Counter(name for m in robot.messages for name in TASK_NAME.findall(m["body"]["markdown"]["text"]))


def run_until(deliverers, condition, timeout=30.0):
    stop = threading.Event()
    threads = [threading.Thread(target=d.run, args=(stop,), daemon=True) for d in deliverers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    try:
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert condition(), "timed out"


def max_in_window(robot, window_s) -> int:
    times = sorted(r["received_at"] for r in robot.requests)
    return max((sum(1 for t in times if start <= t < start + window_s) for start in times), default=0)


def test_a_single_failure_is_sent_alone_with_its_detail(store):
    robot = fast_robot()
    try:
        d = deliverer(store, robot)
        enqueue(store, d.robot_key, 1)

        run_until([d], lambda: len(robot.messages) == 1)

        text = robot.messages[0]["body"]["markdown"]["text"]
        assert "**Task:** t0000" in text and "**ValueError:** orders table is empty" in text
        assert [r["status"] for r in store.rows()] == [SENT]
        assert d.stats.counts["dingbot.outbox.sent"] == 1
        assert d.stats.timings and d.stats.timings[0][0] == "dingbot.outbox.delivery_latency"
    finally:
        robot.stop()


def test_a_storm_is_coalesced_every_failure_named_once_never_throttled(store):
    robot = fast_robot()
    try:
        d = deliverer(store, robot)
        enqueue(store, d.robot_key, 300)

        run_until([d], lambda: sum(named(robot).values()) >= 300)

        assert set(named(robot)) == {f"t{i:04d}" for i in range(300)}
        assert all(n == 1 for n in named(robot).values()), "none twice"
        assert all(r["errcode"] == 0 for r in robot.requests), "never throttled"
        assert max_in_window(robot, 2.0) <= 4
        assert len(robot.messages) <= 8, "a handful of digests"
        assert d.stats.counts["dingbot.outbox.coalesced"] == 300
    finally:
        robot.stop()


def test_replicas_share_the_budget_and_send_nothing_twice(store):
    robot = fast_robot()
    try:
        replicas = [deliverer(store, robot) for _ in range(3)]
        enqueue(store, replicas[0].robot_key, 150)

        run_until(replicas, lambda: sum(named(robot).values()) >= 150)

        assert sorted(named(robot)) == [f"t{i:04d}" for i in range(150)]
        assert set(named(robot).values()) == {1}
        assert all(r["errcode"] == 0 for r in robot.requests)
        assert max_in_window(robot, 2.0) <= 4
    finally:
        robot.stop()


@pytest.mark.parametrize("outage", ["http500", "hang", "garbage"])
def test_alerts_wait_out_an_outage_and_arrive_after_it(store, outage):
    robot = fast_robot()
    try:
        d = deliverer(store, robot)
        robot.set_mode(outage)
        enqueue(store, d.robot_key, 5)
        run_until([d], lambda: len(robot.requests) >= 2)
        assert robot.messages == []

        robot.set_mode("ok")
        run_until([d], lambda: sum(named(robot).values()) >= 5)

        assert set(named(robot).values()) == {1}
        assert [r["status"] for r in store.rows()] == [SENT] * 5
    finally:
        robot.stop()


def test_throttling_pauses_the_robot_then_delivers(store):
    robot = fast_robot()
    try:
        d = deliverer(store, robot)
        robot.set_mode("errcode", errcode=130101, errmsg="send too fast")
        enqueue(store, d.robot_key, 2)
        run_until([d], lambda: len(robot.requests) >= 1)
        time.sleep(0.3)
        assert len(robot.requests) == 1, "paused: no more requests while the robot blocks"
        assert d.stats.counts["dingbot.outbox.throttled"] == 1

        robot.set_mode("ok")
        run_until([d], lambda: sum(named(robot).values()) >= 2)
    finally:
        robot.stop()


def test_permanent_refusal_becomes_dead_letters_that_can_be_retried(store):
    robot = fast_robot()
    try:
        d = deliverer(store, robot)
        robot.set_mode("errcode", errcode=310000, errmsg="sign not match")
        enqueue(store, d.robot_key, 2)
        run_until([d], lambda: all(r["status"] == DEAD for r in store.rows()))
        assert all("errcode=310000" in r["last_error"] for r in store.rows())
        (status,) = store.status()
        assert status.dead == 2

        robot.set_mode("ok")
        assert store.retry_dead() == 2
        run_until([d], lambda: sum(named(robot).values()) >= 2)
    finally:
        robot.stop()


def test_a_killed_deliverers_claim_is_delivered_after_the_lease(store):
    robot = fast_robot()
    try:
        d = deliverer(store, robot, schedule=DeliverySchedule(**{**FAST.__dict__, "lease_s": 1.0}))
        enqueue(store, d.robot_key, 3)
        # A deliverer that claims and dies before sending (SIGKILL between claim and post).
        store.claim(d.robot_key, "killed", d.plan, rate_limit=4, window_s=2.0, lease_s=1.0)
        assert robot.requests == []

        run_until([d], lambda: sum(named(robot).values()) >= 3)

        assert set(named(robot).values()) == {1}
    finally:
        robot.stop()


def test_the_same_failure_reported_twice_is_sent_once(store):
    robot = fast_robot()
    try:
        d = deliverer(store, robot)
        enqueue(store, d.robot_key, 1)
        enqueue(store, d.robot_key, 1)

        run_until([d], lambda: len(robot.messages) >= 1)
        time.sleep(0.3)

        assert len(robot.messages) == 1 and len(store.rows()) == 1
    finally:
        robot.stop()


def test_a_steady_trickle_at_the_limit_is_never_throttled(store):
    """Alerts arriving faster than the budget: the messages the robot counts must stay under it,
    measured by arrival at the robot, not by when the deliverer decided to send."""
    robot = fast_robot()
    try:
        d = deliverer(store, robot)
        stop = threading.Event()
        thread = threading.Thread(target=d.run, args=(stop,), daemon=True)
        thread.start()
        try:
            for i in range(40):  # one alert every 0.1 s for 4 s
                enqueue(store, d.robot_key, 1, start=i)
                time.sleep(0.1)
            deadline = time.monotonic() + 20
            while sum(named(robot).values()) < 40 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(10)

        assert [r["errcode"] for r in robot.requests if r["errcode"]] == [], "never throttled"
        assert sorted(named(robot)) == [f"t{i:04d}" for i in range(40)]
        assert len(robot.messages) > 4, "the budget was really in play"
    finally:
        robot.stop()
