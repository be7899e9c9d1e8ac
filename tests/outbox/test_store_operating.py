"""What the Alerts page reads and does through the store, on SQLite, PostgreSQL and MariaDB: per-robot
figures over 24 h, dead letters by reason, the robot's last answer, recent rows with filters, retrying
one dead letter or a robot's, and a test message counted in the robot's window."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from airflow_ext.outbox import schema
from airflow_ext.outbox.store import DEAD, PENDING, SENT, OutboxStore
from tests.outbox.test_store import T0, alert, singles
from tests.test_render import make_alert

DAY_MS = 86_400_000


@pytest.fixture
def store(engine):
    s = OutboxStore(engine)
    s.ensure_schema()
    return s


def settle(store, robot, outcomes, at):
    """Claim every due row of ``robot`` and settle each as ``outcomes`` says, in order."""
    result = store.claim(robot, "w1", singles, rate_limit=1000, window_s=60, lease_s=60, at_ms=at)
    ids = [group[0].id for group in result.groups]
    assert len(ids) == len(outcomes)
    for row_id, outcome in zip(ids, outcomes):
        if outcome == SENT:
            store.mark_sent([row_id], "w1", f"uuid-{row_id}", at_ms=at)
        else:
            store.mark_dead([row_id], "w1", outcome)
    return ids


def test_status_counts_sent_over_the_last_day_and_groups_dead_letters_by_reason(store):
    for i in range(6):
        store.enqueue(alert(i), "robot-a", robot_ref="team_a", at_ms=T0 - 2 * DAY_MS)
    settle(
        store,
        "robot-a",
        [SENT, SENT, "token is not exist", "token is not exist", "keywords", SENT],
        T0 - 2 * DAY_MS,
    )
    for i in range(6, 9):
        store.enqueue(alert(i), "robot-a", robot_ref="team_a", at_ms=T0 - 1000)
    result = store.claim("robot-a", "w1", singles, rate_limit=1000, window_s=60, lease_s=60, at_ms=T0 - 500)
    first, second, _third = (group[0].id for group in result.groups)
    store.mark_sent([first, second], "w1", "uuid", at_ms=T0 - 500)
    store.release([_third], "w1", "the robot did not answer in time", retry_at_ms=T0 + 1000)

    (status,) = store.status(at_ms=T0)

    assert (status.sent, status.sent_last_day, status.dead, status.pending) == (5, 2, 3, 1)
    assert status.dead_reasons == (("token is not exist", 2), ("keywords", 1))
    assert status.oldest_pending_age_s == pytest.approx(1.0)


def test_the_robots_last_answer_is_kept_and_shown_in_its_status(store):
    store.enqueue(alert(1), "robot-a", at_ms=T0)
    claim = store.claim("robot-a", "w1", singles, rate_limit=20, window_s=60, lease_s=60, at_ms=T0)
    assert claim.groups
    (before,) = store.status(at_ms=T0)
    assert before.last_answer is None and before.last_answer_ms is None

    store.record_answer("robot-a", '{"errcode": 310000, "errmsg": "keywords not in content"}', at_ms=T0 + 5)
    store.record_answer("robot-a", '{"errcode": 0, "errmsg": "ok"}', at_ms=T0 + 9)

    (after,) = store.status(at_ms=T0 + 10)
    assert (after.last_answer, after.last_answer_ms) == ('{"errcode": 0, "errmsg": "ok"}', T0 + 9)


def test_recent_rows_come_newest_first_and_filter_by_dag_status_robot_and_readable_dags(store):
    store.enqueue(make_alert(dag_id="etl", task_id="a"), "robot-a", robot_ref="team_a", at_ms=T0)
    store.enqueue(make_alert(dag_id="etl", task_id="b"), "robot-b", robot_ref="team_b", at_ms=T0 + 1)
    store.enqueue(make_alert(dag_id="reports", task_id="c"), "robot-a", robot_ref="team_a", at_ms=T0 + 2)
    (dead_id,) = settle(store, "robot-b", ["token is not exist"], T0 + 3)

    assert [e.alert.task_id for e in store.recent()] == ["c", "b", "a"]
    assert [e.alert.task_id for e in store.recent(dag_id="etl")] == ["b", "a"]
    assert [(e.id, e.status, e.last_error, e.robot_name) for e in store.recent(status=DEAD)] == [
        (dead_id, DEAD, "token is not exist", "team_b")
    ]
    assert [e.alert.task_id for e in store.recent(robot_key="robot-a")] == ["c", "a"]
    assert [e.alert.task_id for e in store.recent(dag_ids=["reports"])] == ["c"]
    assert store.recent(dag_ids=[]) == []
    assert [e.alert.task_id for e in store.recent(limit=1)] == ["c"]
    assert store.dag_ids() == ["etl", "reports"]


def test_retrying_one_dead_letter_queues_only_it_and_ends_the_robots_pause(store):
    for i in range(3):
        store.enqueue(alert(i), "robot-a", at_ms=T0)
    first, second, third = settle(store, "robot-a", ["gone", "gone", "gone"], T0)
    store.enqueue(alert(9), "robot-b", at_ms=T0)
    (other,) = settle(store, "robot-b", ["gone"], T0)
    store.pause_robot("robot-a", T0 + 600_000, "send too fast")

    assert store.retry_dead("robot-a", ids=[second], at_ms=T0 + 1) == 1
    assert store.retry_dead("robot-a", ids=[other], at_ms=T0 + 1) == 0  # another robot's row

    statuses = {row["id"]: row["status"] for row in store.rows()}
    assert statuses == {first: DEAD, second: PENDING, third: DEAD, other: DEAD}
    assert {s.robot_key: s.paused_until_ms for s in store.status(at_ms=T0 + 2)}["robot-a"] == 0

    assert store.retry_dead("robot-a", at_ms=T0 + 3) == 2
    assert {row["id"]: row["status"] for row in store.rows()}[other] == DEAD


def test_a_test_message_is_counted_in_the_window_and_refused_when_it_is_full_or_paused(store):
    first = store.reserve_send("robot-a", rate_limit=2, window_s=60, at_ms=T0)
    second = store.reserve_send("robot-a", rate_limit=2, window_s=60, at_ms=T0 + 1000)
    full = store.reserve_send("robot-a", rate_limit=2, window_s=60, at_ms=T0 + 2000)

    assert first.reserved and second.reserved
    assert not full.reserved and full.wait_s == pytest.approx(58.0)
    assert "2 messages per 60 s" in full.reason
    # A deliverer sees the test messages in the robot's budget.
    store.enqueue(alert(1), "robot-a", at_ms=T0)
    claim = store.claim("robot-a", "w1", singles, rate_limit=2, window_s=60, lease_s=60, at_ms=T0 + 3000)
    assert claim.groups == [] and claim.wake_in_s == pytest.approx(57.0)

    assert store.reserve_send("robot-b", rate_limit=20, window_s=60, at_ms=T0).reserved
    store.pause_robot("robot-b", T0 + 600_000, "send too fast, exceed 20 times per minute")
    paused = store.reserve_send("robot-b", rate_limit=20, window_s=60, at_ms=T0 + 100_000)
    assert not paused.reserved and paused.wait_s == pytest.approx(500.0)
    assert paused.reason == "send too fast, exceed 20 times per minute"


def test_a_schema_2_outbox_gains_the_answer_columns_in_place(engine):
    store = OutboxStore(engine)
    store.ensure_schema()
    store.enqueue(alert(1), "robot-a", at_ms=T0)
    store.claim("robot-a", "w1", singles, rate_limit=20, window_s=60, lease_s=60, at_ms=T0)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE dingbot_robot DROP COLUMN last_answer"))
        conn.execute(text("ALTER TABLE dingbot_robot DROP COLUMN last_answer_ms"))
        conn.execute(schema.meta.update().values(value="2"))
    assert not schema.schema_is_current(engine)

    OutboxStore(engine).ensure_schema()

    assert schema.schema_is_current(engine)
    store.record_answer("robot-a", "ok", at_ms=T0 + 1)
    (status,) = store.status(at_ms=T0 + 2)
    assert (status.pending + status.claimed, status.last_answer) == (1, "ok")
