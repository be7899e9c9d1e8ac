"""Retry within a deadline: permanent errors are never retried, retryable ones back off, time is bounded."""

from __future__ import annotations

import time

import pytest

from airflow_ext.delivery import AttemptTimeouts, RetryPolicy, deliver, run_within
from airflow_ext.errors import DeadlineExceeded, DeliveryError

pytestmark = pytest.mark.version_free


class FakeClock:
    """Time that only moves when the code under test sleeps or an attempt takes time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(clock: FakeClock, outcomes, attempt_cost_s: float = 0.1):
    calls: list[AttemptTimeouts] = []

    def send(timeouts: AttemptTimeouts):
        calls.append(timeouts)
        clock.now += attempt_cost_s
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return send, calls


def retryable() -> DeliveryError:
    return DeliveryError("throttled", retryable=True, errcode=130101)


def test_retryable_failures_are_retried_with_backoff_until_success():
    clock = FakeClock()
    send, calls = scripted(clock, [retryable(), retryable(), {"errcode": 0}])

    answer = deliver(send, RetryPolicy(max_attempts=3, deadline_s=10), clock=clock, sleep=clock.sleep)

    assert answer == {"errcode": 0} and len(calls) == 3
    assert len(clock.sleeps) == 2 and all(0 <= s <= 4.0 for s in clock.sleeps)


def test_permanent_failure_is_raised_after_one_attempt():
    clock = FakeClock()
    permanent = DeliveryError("bad token", retryable=False, errcode=300001)
    send, calls = scripted(clock, [permanent, {"errcode": 0}])

    with pytest.raises(DeliveryError) as caught:
        deliver(send, RetryPolicy(max_attempts=5), clock=clock, sleep=clock.sleep)

    assert caught.value is permanent and len(calls) == 1 and clock.sleeps == []


def test_attempts_are_capped():
    clock = FakeClock()
    send, calls = scripted(clock, [retryable()] * 10)

    with pytest.raises(DeliveryError):
        deliver(send, RetryPolicy(max_attempts=4, deadline_s=1000), clock=clock, sleep=clock.sleep)

    assert len(calls) == 4


def test_deadline_bounds_attempt_timeouts_and_backoff():
    clock = FakeClock()
    send, calls = scripted(clock, [retryable()] * 50, attempt_cost_s=0.7)
    policy = RetryPolicy(max_attempts=50, deadline_s=2.0, connect_timeout_s=3.0, read_timeout_s=5.0)

    with pytest.raises(DeliveryError):
        deliver(send, policy, clock=clock, sleep=clock.sleep)

    assert clock.now <= 2.0 + 0.7, "no attempt starts after the deadline"
    assert calls[0] == AttemptTimeouts(connect_s=2.0, read_s=2.0), (
        "per-attempt timeouts shrink to the time left"
    )
    assert all(c.read_s <= 2.0 for c in calls)


def test_run_within_returns_result_and_reraises_errors():
    assert run_within(lambda: 42, 1.0) == 42
    with pytest.raises(KeyError):
        run_within(lambda: {}["missing"], 1.0)


def test_run_within_gives_up_on_a_backend_that_never_returns():
    started = time.monotonic()

    with pytest.raises(DeadlineExceeded):
        run_within(lambda: time.sleep(30), 0.3)

    assert time.monotonic() - started < 1.0


def test_caller_deadline_wins_over_policy_deadline():
    clock = FakeClock()
    send, calls = scripted(clock, [retryable()] * 50, attempt_cost_s=0.2)

    with pytest.raises(DeliveryError):
        deliver(
            send, RetryPolicy(max_attempts=50, deadline_s=10), clock=clock, sleep=clock.sleep, deadline_at=1.0
        )

    assert clock.now <= 1.0 + 0.2 and calls[0].read_s == 1.0


def test_run_within_tells_the_backend_its_deadline():
    from airflow_ext.delivery import current_deadline

    before = time.monotonic()
    seen = run_within(current_deadline, 2.0)

    assert current_deadline() is None, "only the backend's thread sees it"
    assert before + 2.0 <= seen <= time.monotonic() + 2.0


def test_running_out_of_time_reports_the_robots_last_answer():
    clock = FakeClock()
    http500 = DeliveryError("the robot answered HTTP 500", retryable=True, http_status=500)
    send, calls = scripted(clock, [http500] * 50, attempt_cost_s=0.3)

    with pytest.raises(DeliveryError) as caught:
        deliver(send, RetryPolicy(max_attempts=50, deadline_s=1.0), clock=clock, sleep=clock.sleep)

    assert caught.value is http500


def test_a_robot_asking_to_wait_longer_than_the_deadline_leaves_is_not_tried_again():
    clock = FakeClock()
    attempts = []

    def send(timeouts):
        attempts.append(timeouts)
        raise DeliveryError("throttled", retryable=True, throttled=True, retry_after_s=30.0)

    with pytest.raises(DeliveryError, match="throttled"):
        deliver(send, RetryPolicy(deadline_s=2.0, max_attempts=3), clock=clock, sleep=clock.sleep)

    assert len(attempts) == 1


def test_retry_after_is_waited_when_the_deadline_fits_it():
    clock = FakeClock()
    attempts = []

    def send(timeouts):
        attempts.append(clock.now)
        if len(attempts) == 1:
            raise DeliveryError("throttled", retryable=True, throttled=True, retry_after_s=1.5)
        return "ok"

    assert deliver(send, RetryPolicy(deadline_s=5.0), clock=clock, sleep=clock.sleep) == "ok"
    assert attempts[1] - attempts[0] >= 1.5
