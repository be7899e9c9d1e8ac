"""Trying an alert again, within a deadline.

:class:`RetryPolicy` is a value object (like urllib3's ``Retry``): attempts, backoff and the total
per-alert deadline. :func:`deliver` runs one send function under it with tenacity, and
:func:`run_within` puts a hard wall-clock bound around any backend, so a robot that accepts the
connection and never answers cannot hold a failing task's process past the deadline.
"""

from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from airflow_ext.errors import DeadlineExceeded, DeliveryError

T = TypeVar("T")

#: Below this much time left, another attempt cannot get an answer from a real robot.
MIN_ATTEMPT_S = 0.05
#: How long past its deadline a backend gets before the caller stops waiting: enough for a backend
#: that honours the deadline to report its own, more telling, last error.
HARD_STOP_GRACE_S = 0.1

#: The absolute (time.monotonic) deadline of the alert being sent, set by :func:`run_within` so a
#: backend's own retry loop ends when its caller stops waiting, not a little later.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("dingbot_deadline", default=None)


def current_deadline() -> float | None:
    return _DEADLINE.get()


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts, backoff and the total per-alert deadline (``[dingbot] timeout``), in seconds."""

    max_attempts: int = 3
    deadline_s: float = 10.0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 4.0


@dataclass(frozen=True)
class DeliverySchedule:
    """How the outbox deliverer paces one robot (``[dingbot]`` rate_limit and outbox_* options)."""

    #: Messages per window and robot; the deliverer lowers it to the robot's channel's own limit.
    rate_limit: int = 20
    window_s: float = 60.0
    #: Added to the window we count: hosts' clocks and network latency differ from the robot's view.
    window_margin_s: float = 1.0
    poll_interval_s: float = 0.5
    lease_s: float = 60.0
    #: Backoff for a message that failed in a retryable way (network, 5xx, busy).
    retry_initial_s: float = 2.0
    retry_max_s: float = 60.0
    #: How long a robot that throttled us is left alone; None: its channel's (DingTalk: 10 minutes).
    throttled_pause_s: float | None = None
    purge_after_s: float = 7 * 24 * 3600.0
    purge_every_s: float = 3600.0

    #: ``rate_limit`` when ``[dingbot] rate_limit`` is empty: only the channel's limit applies.
    NO_LIMIT: ClassVar[int] = 1_000_000

    @property
    def pacing_s(self) -> float:
        return self.window_s / self.rate_limit


@dataclass(frozen=True)
class AttemptTimeouts:
    connect_s: float
    read_s: float


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, DeliveryError) and error.retryable


def deliver(
    send: Callable[[AttemptTimeouts], T],
    policy: RetryPolicy,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    deadline_at: float | None = None,
) -> T:
    """Call ``send`` until it succeeds, a permanent DeliveryError, the attempts or the deadline run out.

    The deadline is ``policy.deadline_s`` from now, or ``deadline_at`` (on ``clock``) if earlier.
    Each attempt's timeouts are shrunk to the time left, and backoff (exponential, full jitter, at
    least what the robot asked for with Retry-After) never sleeps past the deadline; a wait the robot
    asked for that the deadline cannot fit ends the tries. Raises the last DeliveryError, or DeadlineExceeded.
    """
    deadline = clock() + policy.deadline_s
    if deadline_at is not None:
        deadline = min(deadline, deadline_at)
    backoff = wait_random_exponential(multiplier=policy.backoff_initial_s, max=policy.backoff_max_s)

    def remaining() -> float:
        return deadline - clock()

    def asked_to_wait(state: RetryCallState) -> float:
        """How long the robot said to wait before trying again (Slack's Retry-After), else 0."""
        outcome = state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        return getattr(error, "retry_after_s", None) or 0.0

    def wait(state: RetryCallState) -> float:
        return max(0.0, min(max(backoff(state), asked_to_wait(state)), remaining() - MIN_ATTEMPT_S))

    def out_of_time(state: RetryCallState) -> bool:
        # A robot that asked for a longer wait than is left would refuse an attempt made sooner.
        return remaining() - asked_to_wait(state) <= MIN_ATTEMPT_S

    last_error: list[DeliveryError] = []

    def attempt() -> T:
        left = remaining()
        if left <= MIN_ATTEMPT_S:
            if last_error:  # the robot's own last answer says more than "out of time"
                raise last_error[-1]
            raise DeadlineExceeded(f"no answer from the robot within the {policy.deadline_s:g} s deadline")
        try:
            return send(
                AttemptTimeouts(min(policy.connect_timeout_s, left), min(policy.read_timeout_s, left))
            )
        except DeliveryError as err:
            last_error.append(err)
            raise

    retrying = Retrying(
        stop=stop_after_attempt(policy.max_attempts) | out_of_time,
        wait=wait,
        retry=retry_if_exception(_is_retryable),
        sleep=sleep,
        reraise=True,
    )
    return retrying(attempt)


def run_within(fn: Callable[[], T], deadline_s: float, *, name: str = "dingbot-alert") -> T:
    """Run ``fn`` in a daemon thread and stop waiting ``HARD_STOP_GRACE_S`` after ``deadline_s`` seconds.

    The hard bound for any backend, whatever it does with sockets; a thread that overruns is left to
    finish on its own and cannot keep the process alive. ``fn`` sees the deadline through
    :func:`current_deadline`.
    """
    outcome: dict[str, object] = {}
    context = contextvars.copy_context()
    context.run(_DEADLINE.set, time.monotonic() + deadline_s)

    def target() -> None:
        try:
            outcome["result"] = context.run(fn)
        except BaseException as err:  # handed to the caller, which decides what to log
            outcome["error"] = err

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(deadline_s + HARD_STOP_GRACE_S)
    if thread.is_alive():
        raise DeadlineExceeded(f"the alert backend did not finish within the {deadline_s:g} s deadline")
    error = outcome.get("error")
    if isinstance(error, Exception):
        raise error
    if error is not None:  # SystemExit & co. in the backend's thread must not end the caller's process
        raise DeliveryError(f"the alert backend raised {type(error).__name__}", retryable=False)
    return outcome.get("result")  # type: ignore[return-value]
