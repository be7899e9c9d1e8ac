"""The delivery loop behind `airflow-ext deliver`: claim under the robot's budget, send, settle.

Calm: while what is pending fits in a quarter of the robot's budget, every alert is its own message and
reaches the group at the next poll. Storm: beyond that, one digest naming as many failures as fit in
a message goes out every ``window / rate_limit`` seconds, so the robot is never throttled and every
failure is reported.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Callable

from airflow_ext.channels.base.robot import ChannelRobot, encode_body
from airflow_ext.delivery import DeliverySchedule, RetryPolicy
from airflow_ext.errors import ConfigError, DeliveryError
from airflow_ext.outbox.store import ANY_REF, BudgetView, OutboxAlert, OutboxStore, now_ms

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def schedule_for(robot: ChannelRobot, schedule: DeliverySchedule) -> DeliverySchedule:
    """``schedule`` within the robot's channel: its rate limit (``[dingbot] rate_limit`` can only
    lower it) and, unless the schedule says, how long it refuses everything after throttling us."""
    return dataclasses.replace(
        schedule,
        rate_limit=min(schedule.rate_limit, robot.RATE_LIMIT_PER_MINUTE),
        throttled_pause_s=(
            robot.THROTTLED_PAUSE_S if schedule.throttled_pause_s is None else schedule.throttled_pause_s
        ),
    )


def answer_text(answer: object) -> str:
    """A robot's answer as one line of text (``{"errcode": 0, "errmsg": "ok"}``, or Slack's ``ok``)."""
    import json

    if isinstance(answer, (dict, list)):
        return json.dumps(answer, ensure_ascii=False, sort_keys=True)
    return str(answer)


class Deliverer:
    """Delivers one robot's alerts (of one robot name, with ``robot_ref``; of any, without)."""

    def __init__(
        self,
        store: OutboxStore,
        robot: ChannelRobot,
        *,
        schedule: DeliverySchedule,
        policy: RetryPolicy,
        worker_id: str | None = None,
        stats=None,
        clock: Callable[[], float] = time.time,
        robot_key: str | None = None,
        robot_ref=ANY_REF,
    ) -> None:
        self.store, self.robot, self.policy = store, robot, policy
        self.schedule = schedule_for(robot, schedule)
        self.robot_key = robot_key or robot.key
        self.robot_ref = robot_ref
        self._last_send_at = 0.0
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock
        self._stats = stats
        self._last_purge = 0.0
        self._pacing_wait_s: float | None = None

    @property
    def stats(self):
        if self._stats is None:
            from airflow_ext.airflow_port import airflow

            self._stats = airflow().stats()
        return self._stats

    # -- planning ---------------------------------------------------------------------------------

    def plan(self, pending: Sequence[OutboxAlert], budget: BudgetView) -> list[list[OutboxAlert]]:
        """Singles while calm; under pressure one digest per pacing interval (see module doc).

        Calm means everything pending, and what the window already used, fits in a quarter of the
        budget: singles spent at the start of a storm are messages its digests will miss.
        """
        self._pacing_wait_s = None
        if budget.used_in_window + len(pending) <= self.schedule.rate_limit // 4:
            return [[item] for item in pending]
        if budget.since_last_send_s is not None and budget.since_last_send_s < self.schedule.pacing_s:
            self._pacing_wait_s = self.schedule.pacing_s - budget.since_last_send_s
            return []
        digests = self._digests([item.alert for item in pending], max_messages=1)
        return [list(pending[: len(digests[0].alerts)])] if digests else []

    def _digests(self, alerts, max_messages: int | None = None):
        from airflow_ext.digest import render_digests

        return render_digests(
            alerts,
            keyword=self.robot.settings.keyword,
            at_mobiles=self.robot.mention_ids(),
            fits=self.robot.fits,
            max_messages=max_messages,
            markup=self.robot.MARKUP,
        )

    def body_for(self, group: Sequence[OutboxAlert]) -> tuple[bytes, str]:
        """The message for a claimed group, and its msgUuid."""
        if len(group) == 1:
            return self.robot.body_for(group[0].alert), self.robot.msg_uuid_for(group[0].alert)
        from airflow_ext.digest import digest_msg_uuid

        (digest,) = self._digests([item.alert for item in group], max_messages=1)
        if len(digest.alerts) != len(group):  # the planner packed exactly this group: never expected
            raise RuntimeError(f"a digest of {len(group)} alerts no longer fits one message")
        msg_uuid = digest_msg_uuid(digest)
        return encode_body(self.robot.payload(digest.message, msg_uuid)), msg_uuid

    # -- the loop ---------------------------------------------------------------------------------

    def tick(self) -> float:
        """One round for the robot; returns how long to wait before the next."""
        self._maybe_purge()
        result = self.store.claim(
            self.robot_key,
            self.worker_id,
            self.plan,
            rate_limit=self.schedule.rate_limit,
            window_s=self.schedule.window_s + self.schedule.window_margin_s,
            lease_s=self.schedule.lease_s,
            robot_ref=self.robot_ref,
        )
        for index, (group, send_id) in enumerate(zip(result.groups, result.send_ids)):
            self._keep_interval()
            try:
                paused_until = self._send(group)
            finally:  # the robot counts the message from its arrival: so do we, from the answer
                self.store.send_finished(send_id)
            if paused_until is not None:  # the robot refuses everything now: the rest waits too
                rest = [item.id for later in result.groups[index + 1 :] for item in later]
                self.store.release(rest, self.worker_id, "robot paused (throttled)", retry_at_ms=paused_until)
                break
        if result.groups:
            return 0.0
        # Wake exactly when the pacing allows the next digest, not up to a poll interval later.
        wake = result.wake_in_s if result.wake_in_s is not None else self._pacing_wait_s
        return min(self.schedule.poll_interval_s, wake) if wake is not None else self.schedule.poll_interval_s

    def _keep_interval(self) -> None:
        """A channel with a per-second limit (Feishu, Slack) gets its messages that far apart."""
        gap = self.robot.MIN_SEND_INTERVAL_S - (time.monotonic() - self._last_send_at)
        if gap > 0:
            time.sleep(gap)
        self._last_send_at = time.monotonic()

    def run(self, stop: threading.Event) -> None:
        self.store.ensure_schema()
        log.info(
            "Delivering %s alerts for %s from the outbox (worker %s, at most %d messages per %g s)",
            self.robot.DISPLAY_NAME,
            self.robot.name,
            self.worker_id,
            self.schedule.rate_limit,
            self.schedule.window_s,
        )
        next_gauge = 0.0
        while not stop.is_set():
            try:
                wait = self.tick()
                if self.clock() >= next_gauge:
                    self.stats.gauge("dingbot.outbox.pending", self.store.pending_count())
                    next_gauge = self.clock() + 10
            except Exception:  # the database or the network went away: keep the loop alive
                log.exception("Outbox delivery round failed; trying again")
                wait = min(5.0, 10 * self.schedule.poll_interval_s)
            stop.wait(wait)
        log.info("Outbox deliverer %s stopped", self.worker_id)

    def _maybe_purge(self) -> None:
        now = self.clock()
        if now - self._last_purge < self.schedule.purge_every_s:
            return
        self._last_purge = now
        purged = self.store.purge(self.schedule.purge_after_s)
        if purged:
            log.info("Purged %d delivered alerts older than %g s", purged, self.schedule.purge_after_s)

    # -- one message ------------------------------------------------------------------------------

    def _record_answer(self, answer: str, at_ms: int) -> None:
        try:
            self.store.record_answer(self.robot_key, answer, at_ms=at_ms)
        except Exception:  # only the Alerts page reads it: never worth failing a delivery for
            log.warning("Could not record the answer of the robot %s", self.robot.name, exc_info=True)

    def _send(self, group: Sequence[OutboxAlert]) -> int | None:
        """Send one claimed group and settle it; returns the pause end if the robot throttled us."""
        ids = [item.id for item in group]
        what = f"{len(group)} alert{'s' if len(group) > 1 else ''}"
        try:
            body, msg_uuid = self.body_for(group)
            answer = self.robot.post(
                body,
                connect_timeout_s=self.policy.connect_timeout_s,
                read_timeout_s=self.policy.read_timeout_s,
            )
        except DeliveryError as err:
            return self._failed(group, ids, what, err)
        except Exception as err:  # a bug must not lose the alerts: back to pending, logged
            log.exception("Sending %s failed unexpectedly", what)
            return self._failed(
                group, ids, what, DeliveryError(f"{type(err).__name__}: {err}", retryable=True)
            )
        sent_at = now_ms()
        self.store.mark_sent(ids, self.worker_id, msg_uuid, at_ms=sent_at)
        self._record_answer(answer_text(answer), sent_at)
        self.stats.incr("dingbot.outbox.messages_sent")
        self.stats.incr("dingbot.outbox.sent", len(group))
        if len(group) > 1:
            self.stats.incr("dingbot.outbox.coalesced", len(group))
        for item in group:
            self.stats.timing("dingbot.outbox.delivery_latency", sent_at - item.created_at_ms)
        log.info("Delivered %s in one %s", what, "digest" if len(group) > 1 else "message")
        return None

    def _failed(
        self, group: Sequence[OutboxAlert], ids: list[int], what: str, err: DeliveryError
    ) -> int | None:
        now = now_ms()
        self._record_answer(str(err), now)
        if err.throttled:
            pause_s = err.retry_after_s if err.retry_after_s is not None else self.schedule.throttled_pause_s
            until = now + int(pause_s * 1000)
            self.store.pause_robot(self.robot_key, until, str(err))
            self.store.release(ids, self.worker_id, str(err), retry_at_ms=until)
            self.stats.incr("dingbot.outbox.throttled")
            log.error(
                "The robot %s throttled %s; pausing it for %g s: %s", self.robot.name, what, pause_s, err
            )
            return until
        if err.retryable:
            attempts = max(item.attempts for item in group) + 1
            backoff = min(self.schedule.retry_max_s, self.schedule.retry_initial_s * 2 ** (attempts - 1))
            retry_at = now + int(backoff * random.uniform(0.5, 1.0) * 1000)
            self.store.release(ids, self.worker_id, str(err), retry_at_ms=retry_at)
            self.stats.incr("dingbot.outbox.failed")
            log.warning("Sending %s failed, will retry in %.0f s: %s", what, (retry_at - now) / 1000, err)
            return None
        self.store.mark_dead(ids, self.worker_id, str(err))
        self.stats.incr("dingbot.outbox.failed")
        self.stats.incr("dingbot.outbox.dead", len(ids))
        log.error(
            "The robot refused %s for good; kept as dead letters (airflow-ext outbox retry-dead): %s",
            what,
            err,
        )
        return None


class DeliveryService:
    """``airflow-ext deliver``: one :class:`Deliverer` thread per robot name with alerts waiting.

    Robots never share a thread: one that hangs or throttles holds up only its own alerts. The
    robots are found in the outbox itself (every name an alert was queued for), so a Connection
    named only by a task's ``ding_conn_id`` is delivered too.
    """

    def __init__(
        self,
        store: OutboxStore,
        resolve: Callable[[str | None], ChannelRobot],
        *,
        schedule: DeliverySchedule,
        policy: RetryPolicy,
        worker_id: str | None = None,
    ) -> None:
        self.store, self.resolve, self.schedule, self.policy = store, resolve, schedule, policy
        self.worker_id = worker_id or default_worker_id()
        self._threads: dict[tuple[str, str | None], threading.Thread] = {}
        self._unusable: dict[tuple[str, str | None], float] = {}

    def discover(self, stop: threading.Event) -> None:
        """Start a deliverer for every robot name with waiting alerts that has none yet."""
        for pair in self.store.pending_robots():
            thread = self._threads.get(pair)
            if thread is not None and thread.is_alive():
                continue
            robot_key, robot_ref = pair
            try:
                robot = self.resolve(robot_ref)
            except ConfigError as err:  # the Connection is gone or broken: keep the alerts, say why
                if time.monotonic() >= self._unusable.get(pair, 0.0):
                    dead = self.store.mark_dead_pending(robot_key, robot_ref, f"cannot send: {err}")
                    log.error("%d alerts for %s kept as dead letters: %s", dead, robot_ref, err)
                    self._unusable[pair] = time.monotonic() + 60
                continue
            deliverer = Deliverer(
                self.store,
                robot,
                schedule=self.schedule,
                policy=self.policy,
                worker_id=f"{self.worker_id}:{robot.name}"[:128],
                robot_key=robot_key,
                robot_ref=robot_ref,
            )
            thread = threading.Thread(
                target=deliverer.run, args=(stop,), name=f"dingbot-deliver-{robot.name}", daemon=True
            )
            self._threads[pair] = thread
            thread.start()

    def run(self, stop: threading.Event) -> None:
        self.store.ensure_schema()
        log.info("Outbox delivery service %s started", self.worker_id)
        while not stop.is_set():
            try:
                self.discover(stop)
            except Exception:  # the database went away: keep looking
                log.exception("Looking for robots with waiting alerts failed; trying again")
            stop.wait(max(self.schedule.poll_interval_s, 1.0))
        for thread in list(self._threads.values()):
            thread.join(timeout=self.policy.deadline_s + 5)
        log.info("Outbox delivery service %s stopped", self.worker_id)
