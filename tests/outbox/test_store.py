"""The outbox store on SQLite, PostgreSQL and MariaDB: schema, dedup, the shared rate limit, leases."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_ext.alert import AlertKind
from airflow_ext.outbox.schema import ensure_schema, schema_is_current
from airflow_ext.outbox.store import CLAIMED, DEAD, PENDING, SENT, OutboxStore
from tests.test_render import make_alert

ROBOT = "robot-a"
T0 = 1_800_000_000_000  # a fixed "now" in epoch ms


def singles(pending, budget):
    return [[item] for item in pending[: budget.budget]]


def alert(i: int, **kw):
    return make_alert(task_id=f"task_{i}", try_number=1, **kw)


@pytest.fixture
def store(engine):
    s = OutboxStore(engine)
    s.ensure_schema()
    return s


def claim(store, worker="w1", planner=singles, at=T0, rate_limit=20, lease_s=60):
    return store.claim(ROBOT, worker, planner, rate_limit=rate_limit, window_s=60, lease_s=lease_s, at_ms=at)


def test_schema_is_created_once_even_concurrently(engine):
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: ensure_schema(engine), range(4)))
    ensure_schema(engine)

    assert schema_is_current(engine)


def test_the_same_try_is_recorded_once(store):
    assert store.enqueue(alert(1), ROBOT, at_ms=T0) is True
    assert store.enqueue(alert(1, exception_message="reported again"), ROBOT, at_ms=T0 + 5) is False
    assert store.enqueue(make_alert(task_id="task_1", try_number=2), ROBOT, at_ms=T0) is True
    assert store.enqueue(alert(1), "another-robot", at_ms=T0) is True

    assert [r["status"] for r in store.rows()] == [PENDING] * 3


def test_huge_details_are_bounded_when_stored(store):
    store.enqueue(alert(1, exception_message="错" * 100_000, traceback="栈" * 100_000), ROBOT, at_ms=T0)

    (row,) = store.rows()
    assert len(row["alert"].encode()) < 40_000


def test_claims_never_exceed_the_rate_limit_in_a_window(store):
    for i in range(30):
        store.enqueue(alert(i), ROBOT, at_ms=T0)

    first = claim(store, at=T0, rate_limit=20, lease_s=600)
    second = claim(store, at=T0 + 1_000, rate_limit=20, lease_s=600)
    after_window = claim(store, at=T0 + 60_001, rate_limit=20, lease_s=600)

    assert len(first.groups) == 20
    assert second.groups == [] and second.wake_in_s == pytest.approx(59.0)
    assert len(after_window.groups) == 10
    claimed = [g[0].alert.task_id for g in first.groups + after_window.groups]
    assert claimed == [f"task_{i}" for i in range(30)], "oldest first, each once"


def test_concurrent_deliverers_share_one_budget_and_never_claim_a_row_twice(store):
    for i in range(200):
        store.enqueue(alert(i), ROBOT, at_ms=T0)
    barrier = threading.Barrier(6)

    def deliverer(n):
        barrier.wait()
        return [
            item.id for _ in range(5) for g in claim(store, worker=f"w{n}", at=T0 + 10).groups for item in g
        ]

    with ThreadPoolExecutor(6) as pool:
        claimed = [i for ids in pool.map(deliverer, range(6)) for i in ids]

    assert len(claimed) == 20, "one robot, one window, whoever asks"
    assert len(set(claimed)) == len(claimed)
    assert sum(r["status"] == CLAIMED for r in store.rows()) == 20


def test_a_lost_claim_is_taken_over_after_its_lease(store):
    store.enqueue(alert(1), ROBOT, at_ms=T0)
    (group,) = claim(store, worker="killed", at=T0, lease_s=30).groups

    assert claim(store, worker="other", at=T0 + 10_000, lease_s=30).groups == []
    (again,) = claim(store, worker="other", at=T0 + 31_000, lease_s=30).groups
    assert again[0].id == group[0].id and again[0].attempts == 1
    # The killed deliverer cannot settle rows it no longer holds.
    assert store.mark_sent([group[0].id], "killed", "uuid") == 0
    assert store.mark_sent([group[0].id], "other", "uuid") == 1


def test_settling_and_status(store):
    for i in range(4):
        store.enqueue(alert(i, kind=AlertKind.RETRY), ROBOT, at_ms=T0)
    groups = claim(store, at=T0 + 2_000).groups
    ids = [g[0].id for g in groups]

    store.mark_sent(ids[:1], "w1", "m1", at_ms=T0 + 2_100)
    store.release(ids[1:2], "w1", "the robot answered HTTP 500", retry_at_ms=T0 + 10_000)
    store.mark_dead(ids[2:3], "w1", "errcode=310000 errmsg='sign not match'")

    (status,) = store.status(at_ms=T0 + 5_000)
    assert (status.pending, status.claimed, status.sent, status.dead) == (1, 1, 1, 1)
    assert status.oldest_pending_age_s == pytest.approx(5.0)
    assert status.sent_last_minute == 4
    assert claim(store, at=T0 + 5_000).groups == [], "released row waits for its retry time"
    (retried,) = claim(store, at=T0 + 10_000, lease_s=1).groups
    assert retried[0].id == ids[1]

    assert store.retry_dead(at_ms=T0 + 11_000) == 1
    assert [r["status"] for r in store.rows() if r["id"] == ids[2]] == [PENDING]


def test_paused_robot_claims_nothing_until_the_pause_ends(store):
    store.enqueue(alert(1), ROBOT, at_ms=T0)
    claim(store, at=T0, planner=lambda p, b: [])  # creates the robot row
    store.pause_robot(ROBOT, T0 + 600_000, "errcode=130101: throttled")

    paused = claim(store, at=T0 + 1_000)
    assert paused.groups == [] and paused.wake_in_s == pytest.approx(599.0)
    assert len(claim(store, at=T0 + 600_001).groups) == 1


def test_purge_deletes_only_old_delivered_alerts(store):
    for i in range(3):
        store.enqueue(alert(i), ROBOT, at_ms=T0)
    ids = [g[0].id for g in claim(store, at=T0).groups]
    store.mark_sent(ids[:2], "w1", "m", at_ms=T0)
    store.mark_dead(ids[2:], "w1", "bad token")

    assert store.purge(older_than_s=3600, at_ms=T0 + 1_000) == 0
    assert store.purge(older_than_s=3600, at_ms=T0 + 3_600_001) == 2
    assert [r["status"] for r in store.rows()] == [DEAD]


def test_planner_sees_budget_and_pacing(store):
    seen = []

    def planner(pending, budget):
        seen.append((len(pending), budget.budget, budget.used_in_window, budget.since_last_send_s))
        return [pending[:2]]

    for i in range(5):
        store.enqueue(alert(i), ROBOT, at_ms=T0)
    claim(store, at=T0, planner=planner, rate_limit=20)
    claim(store, at=T0 + 3_000, planner=planner, rate_limit=20)

    assert seen == [(5, 20, 0, None), (3, 19, 1, 3.0)]
    assert [r["status"] for r in store.rows()].count(SENT) == 0


def test_a_send_counts_from_when_it_finished(store):
    for i in range(2):
        store.enqueue(alert(i), ROBOT, at_ms=T0)
    first = claim(store, at=T0, rate_limit=1)
    store.send_finished(first.send_ids[0], at_ms=T0 + 700)  # the robot answered 0.7 s later

    # 60 s after the reservation the robot still counts the message (it arrived later).
    assert claim(store, at=T0 + 60_100, rate_limit=1).groups == []
    assert len(claim(store, at=T0 + 60_701, rate_limit=1).groups) == 1
