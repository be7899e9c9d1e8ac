"""Reading and writing the outbox: enqueue, claim under a shared per-robot rate limit, settle.

Every decision that spends a robot's budget happens in one transaction that first takes the
robot's lock (an UPDATE of its ``dingbot_robot`` row: a row lock on PostgreSQL and MySQL, the
database write lock on SQLite), so any number of deliverers on any number of hosts share one
rolling window per robot. Claimed rows carry a lease: a deliverer killed mid-send loses nothing,
its rows are claimed again once the lease expires (at-least-once; DingTalk's ``msgUuid`` makes a
repeat of the same message a no-op).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Callable

from sqlalchemy import and_, delete, func, or_, select, true, update
from sqlalchemy.engine import Connection, Engine

from airflow_ext.alert import Alert
from airflow_ext.outbox.schema import ensure_schema, outbox, robots, send_log
from airflow_ext.render import utf8_head, utf8_tail

PENDING, CLAIMED, SENT, DEAD = "pending", "claimed", "sent", "dead"


class _Any:
    def __repr__(self) -> str:
        return "ANY_REF"


#: ``claim(robot_ref=ANY_REF)``: rows of every name of the robot.
ANY_REF = _Any()

#: Detail kept per alert in the outbox; a message shows far less (20000 bytes for everything).
MAX_STORED_MESSAGE_BYTES = 4_000
MAX_STORED_TRACEBACK_BYTES = 8_000
#: Rows looked at per claim: more than any plan can carry in one go (20 digests of ~60 alerts).
MAX_ROWS_PER_CLAIM = 5_000


def now_ms() -> int:
    return int(time.time() * 1000)


def dedup_hash(alert: Alert) -> str:
    return hashlib.sha256(alert.dedup_key.encode("utf-8")).hexdigest()


def _bounded(alert: Alert) -> Alert:
    """The alert with its exception message and traceback cut to what is worth storing."""
    message, traceback = alert.exception_message, alert.traceback
    if message and len(message.encode("utf-8")) > MAX_STORED_MESSAGE_BYTES:
        message = utf8_head(message, MAX_STORED_MESSAGE_BYTES) + " …"
    if traceback and len(traceback.encode("utf-8")) > MAX_STORED_TRACEBACK_BYTES:
        traceback = "…\n" + utf8_tail(traceback, MAX_STORED_TRACEBACK_BYTES)
    return replace(alert, exception_message=message, traceback=traceback)


@dataclass(frozen=True)
class OutboxAlert:
    """A row of the outbox as the deliverer sees it."""

    id: int
    alert: Alert
    attempts: int
    created_at_ms: int


@dataclass(frozen=True)
class BudgetView:
    """What a planner may spend now: ``budget`` messages; ``since_last_send_s`` None if never sent."""

    budget: int
    used_in_window: int
    since_last_send_s: float | None


#: Given what is pending (oldest first) and the budget, the groups to send now (one message each).
Planner = Callable[[Sequence[OutboxAlert], BudgetView], Sequence[Sequence[OutboxAlert]]]


@dataclass
class ClaimResult:
    groups: list[list[OutboxAlert]] = field(default_factory=list)
    #: The send-log row reserved for each group, to pass to :meth:`OutboxStore.send_finished`.
    send_ids: list[int] = field(default_factory=list)
    #: When it is worth looking again for this robot (seconds), if nothing was claimed.
    wake_in_s: float | None = None


@dataclass(frozen=True)
class RobotStatus:
    robot_key: str
    pending: int
    claimed: int
    sent: int
    dead: int
    oldest_pending_age_s: float | None
    paused_until_ms: int
    pause_reason: str | None
    sent_last_minute: int
    #: The names (Connection ids) alerts were queued under for this robot.
    names: tuple[str, ...] = ()
    #: Alerts delivered in the last ``day_s`` (24 h unless asked otherwise).
    sent_last_day: int = 0
    #: Why the dead letters died: ``(reason, how many)``, most frequent first.
    dead_reasons: tuple[tuple[str, int], ...] = ()
    #: What the robot answered the last message sent to it, and when (None: never sent).
    last_answer: str | None = None
    last_answer_ms: int | None = None


@dataclass(frozen=True)
class OutboxEntry:
    """One outbox row as the Alerts page shows it."""

    id: int
    robot_key: str
    robot_ref: str | None
    status: str
    alert: Alert
    attempts: int
    created_at_ms: int
    sent_at_ms: int | None
    last_error: str | None
    message_uuid: str | None

    @property
    def robot_name(self) -> str:
        return self.robot_ref or "[dingding]"


@dataclass(frozen=True)
class SendReservation:
    """The answer of :meth:`OutboxStore.reserve_send`: reserved, or how long to wait and why."""

    reserved: bool
    wait_s: float = 0.0
    reason: str | None = None


class OutboxStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._known_robots: set[str] = set()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def ensure_schema(self) -> None:
        ensure_schema(self.engine)

    # -- writing alerts ---------------------------------------------------------------------------

    def _insert_ignoring_duplicates(self, table, index_elements: list[str]):
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert

            return insert(table).on_conflict_do_nothing(index_elements=index_elements)
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert

            return insert(table).on_conflict_do_nothing(index_elements=index_elements)
        if self.dialect in ("mysql", "mariadb"):
            return table.insert().prefix_with("IGNORE")
        raise NotImplementedError(f"the outbox does not support the {self.dialect} database")

    def enqueue(
        self, alert: Alert, robot_key: str, *, robot_ref: str | None = None, at_ms: int | None = None
    ) -> bool:
        """Record ``alert`` for ``robot_key`` (named ``robot_ref``: its Connection id, or None for the
        ``[dingding]`` section); False if this try of this task was recorded for this robot before."""
        return self.enqueue_for_robots(alert, [(robot_key, robot_ref)], at_ms=at_ms) == 1

    def enqueue_for_robots(
        self, alert: Alert, robots: Sequence[tuple[str, str | None]], *, at_ms: int | None = None
    ) -> int:
        """Record ``alert`` once for each ``(robot_key, robot_ref)``, in one transaction (a fan-out
        costs one commit, not one per robot); returns how many rows were new."""
        at_ms = now_ms() if at_ms is None else at_ms
        fields = dict(
            dedup_hash=dedup_hash(alert),
            dag_id=alert.dag_id[:250],
            alert=json.dumps(_bounded(alert).to_dict(), ensure_ascii=False),
            status=PENDING,
            attempts=0,
            created_at_ms=at_ms,
            next_attempt_at_ms=at_ms,
        )
        insert = self._insert_ignoring_duplicates(outbox, ["robot_key", "dedup_hash"])
        with self.engine.begin() as conn:
            return sum(
                conn.execute(insert.values(robot_key=key, robot_ref=ref, **fields)).rowcount
                for key, ref in robots
            )

    # -- claiming under the rate limit ------------------------------------------------------------

    def _ensure_robot_row(self, robot_key: str) -> None:
        # In a transaction of its own: InnoDB's duplicate check takes a shared lock, and a shared
        # lock upgraded to the UPDATE's exclusive one deadlocks against a concurrent deliverer.
        if robot_key in self._known_robots:
            return
        with self.engine.begin() as conn:
            conn.execute(
                self._insert_ignoring_duplicates(robots, ["robot_key"]).values(
                    robot_key=robot_key, lock_version=0, paused_until_ms=0, last_send_ms=0
                )
            )
        self._known_robots.add(robot_key)

    def _lock_robot(self, conn: Connection, robot_key: str):
        # The first statement of the transaction, and an exclusive lock straight away: every
        # deliverer of this robot waits here for the others.
        conn.execute(
            update(robots)
            .where(robots.c.robot_key == robot_key)
            .values(lock_version=robots.c.lock_version + 1)
        )
        return conn.execute(select(robots).where(robots.c.robot_key == robot_key)).one()

    def claim(
        self,
        robot_key: str,
        worker_id: str,
        planner: Planner,
        *,
        rate_limit: int,
        window_s: float,
        lease_s: float,
        at_ms: int | None = None,
        robot_ref: str | None | _Any = ANY_REF,
    ) -> ClaimResult:
        """Take the robot's lock, let ``planner`` spend its budget, reserve the sends, claim the rows.

        With ``robot_ref`` only the rows queued under that name are claimed (each name is sent with
        its own Connection's settings); the budget is the robot's, whatever the names.

        Each reserved send counts from now until :meth:`send_finished` moves it to when the robot
        had answered: the robot counts arrivals, which come later than this reservation.
        """
        window_ms = int(window_s * 1000)
        self._ensure_robot_row(robot_key)
        with self.engine.begin() as conn:
            robot = self._lock_robot(conn, robot_key)
            at_ms = now_ms() if at_ms is None else at_ms  # after the wait for the lock
            if robot.paused_until_ms > at_ms:
                return ClaimResult(wake_in_s=(robot.paused_until_ms - at_ms) / 1000)
            used, oldest_ms = _window_use(conn, robot_key, at_ms, window_ms)
            if used >= rate_limit:
                return ClaimResult(wake_in_s=max(0.0, (oldest_ms + window_ms - at_ms) / 1000))
            rows = conn.execute(
                select(outbox.c.id, outbox.c.alert, outbox.c.attempts, outbox.c.created_at_ms)
                .where(
                    outbox.c.robot_key == robot_key,
                    *_ref_condition(robot_ref),
                    or_(
                        and_(outbox.c.status == PENDING, outbox.c.next_attempt_at_ms <= at_ms),
                        and_(outbox.c.status == CLAIMED, outbox.c.claim_expires_ms < at_ms),
                    ),
                )
                .order_by(outbox.c.id)
                .limit(MAX_ROWS_PER_CLAIM)
            ).all()
            if not rows:
                return ClaimResult()
            pending = [
                OutboxAlert(r.id, Alert.from_dict(json.loads(r.alert)), r.attempts, r.created_at_ms)
                for r in rows
            ]
            since_last = (at_ms - robot.last_send_ms) / 1000 if robot.last_send_ms else None
            groups = [
                list(g) for g in planner(pending, BudgetView(rate_limit - used, used, since_last)) if g
            ][: rate_limit - used]
            if not groups:
                return ClaimResult(wake_in_s=None)
            send_ids = [
                conn.execute(
                    send_log.insert().values(robot_key=robot_key, sent_at_ms=at_ms)
                ).inserted_primary_key[0]
                for _ in groups
            ]
            conn.execute(update(robots).where(robots.c.robot_key == robot_key).values(last_send_ms=at_ms))
            ids = [item.id for group in groups for item in group]
            for chunk in _chunks(ids, 500):
                conn.execute(
                    update(outbox)
                    .where(outbox.c.id.in_(chunk))
                    .values(
                        status=CLAIMED,
                        claimed_by=worker_id,
                        claim_expires_ms=at_ms + int(lease_s * 1000),
                        attempts=outbox.c.attempts + 1,
                    )
                )
            # Keep the window table small: rows older than two windows are no longer counted.
            conn.execute(
                delete(send_log).where(
                    send_log.c.robot_key == robot_key, send_log.c.sent_at_ms < at_ms - 2 * window_ms
                )
            )
        return ClaimResult(groups=groups, send_ids=send_ids)

    def send_finished(self, send_id: int, *, at_ms: int | None = None) -> None:
        """The message reserved as ``send_id`` got its answer (or gave up) now: count it from now."""
        at_ms = now_ms() if at_ms is None else at_ms
        with self.engine.begin() as conn:
            conn.execute(
                update(send_log)
                .where(send_log.c.id == send_id, send_log.c.sent_at_ms < at_ms)
                .values(sent_at_ms=at_ms)
            )

    # -- settling claimed rows --------------------------------------------------------------------

    def _settle(self, ids: Iterable[int], worker_id: str, **values) -> int:
        changed = 0
        with self.engine.begin() as conn:
            for chunk in _chunks(list(ids), 500):
                changed += conn.execute(
                    update(outbox)
                    .where(
                        outbox.c.id.in_(chunk), outbox.c.status == CLAIMED, outbox.c.claimed_by == worker_id
                    )
                    .values(**values)
                ).rowcount
        return changed

    def mark_sent(
        self, ids: Iterable[int], worker_id: str, message_uuid: str, *, at_ms: int | None = None
    ) -> int:
        at_ms = now_ms() if at_ms is None else at_ms
        return self._settle(
            ids,
            worker_id,
            status=SENT,
            sent_at_ms=at_ms,
            message_uuid=message_uuid,
            claimed_by=None,
            claim_expires_ms=None,
            last_error=None,
        )

    def release(self, ids: Iterable[int], worker_id: str, error: str, retry_at_ms: int) -> int:
        """Back to pending after a retryable failure, not before ``retry_at_ms``."""
        return self._settle(
            ids,
            worker_id,
            status=PENDING,
            next_attempt_at_ms=retry_at_ms,
            claimed_by=None,
            claim_expires_ms=None,
            last_error=error[:1000],
        )

    def mark_dead(self, ids: Iterable[int], worker_id: str, reason: str) -> int:
        return self._settle(
            ids, worker_id, status=DEAD, claimed_by=None, claim_expires_ms=None, last_error=reason[:1000]
        )

    def pause_robot(self, robot_key: str, until_ms: int, reason: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(robots)
                .where(robots.c.robot_key == robot_key)
                .values(paused_until_ms=until_ms, pause_reason=reason[:1000])
            )

    # -- operating --------------------------------------------------------------------------------

    def status(
        self, *, at_ms: int | None = None, window_s: float = 60.0, day_s: float = 86_400.0
    ) -> list[RobotStatus]:
        at_ms = now_ms() if at_ms is None else at_ms
        with self.engine.connect() as conn:
            sent_recently = dict(
                conn.execute(
                    select(outbox.c.robot_key, func.count())
                    .where(outbox.c.status == SENT, outbox.c.sent_at_ms > at_ms - int(day_s * 1000))
                    .group_by(outbox.c.robot_key)
                ).all()
            )
            reasons: dict[str, list[tuple[str, int]]] = {}
            for key, reason, n in conn.execute(
                select(outbox.c.robot_key, outbox.c.last_error, func.count())
                .where(outbox.c.status == DEAD)
                .group_by(outbox.c.robot_key, outbox.c.last_error)
            ).all():
                reasons.setdefault(key, []).append((reason or "(no reason recorded)", int(n)))
            counts = conn.execute(
                select(
                    outbox.c.robot_key, outbox.c.status, func.count(), func.min(outbox.c.created_at_ms)
                ).group_by(outbox.c.robot_key, outbox.c.status)
            ).all()
            refs: dict[str, set[str]] = {}
            for key, ref in conn.execute(
                select(outbox.c.robot_key, outbox.c.robot_ref).group_by(
                    outbox.c.robot_key, outbox.c.robot_ref
                )
            ).all():
                refs.setdefault(key, set()).add(ref or "[dingding]")
            robot_rows = {r.robot_key: r for r in conn.execute(select(robots)).all()}
            recent = dict(
                conn.execute(
                    select(send_log.c.robot_key, func.count())
                    .where(send_log.c.sent_at_ms > at_ms - int(window_s * 1000))
                    .group_by(send_log.c.robot_key)
                ).all()
            )
        keys = sorted({row[0] for row in counts} | set(robot_rows))
        result = []
        for key in keys:
            by_status = {status: (n, oldest) for k, status, n, oldest in counts if k == key}
            oldest_pending = min(
                (by_status[s][1] for s in (PENDING, CLAIMED) if s in by_status), default=None
            )
            robot = robot_rows.get(key)
            result.append(
                RobotStatus(
                    robot_key=key,
                    pending=by_status.get(PENDING, (0, None))[0],
                    claimed=by_status.get(CLAIMED, (0, None))[0],
                    sent=by_status.get(SENT, (0, None))[0],
                    dead=by_status.get(DEAD, (0, None))[0],
                    oldest_pending_age_s=(at_ms - oldest_pending) / 1000 if oldest_pending else None,
                    paused_until_ms=robot.paused_until_ms if robot else 0,
                    pause_reason=robot.pause_reason if robot else None,
                    sent_last_minute=int(recent.get(key, 0)),
                    names=tuple(sorted(refs.get(key, ()))),
                    sent_last_day=int(sent_recently.get(key, 0)),
                    dead_reasons=tuple(sorted(reasons.get(key, ()), key=lambda item: (-item[1], item[0]))),
                    last_answer=robot.last_answer if robot else None,
                    last_answer_ms=robot.last_answer_ms if robot else None,
                )
            )
        return result

    def pending_robots(self) -> list[tuple[str, str | None]]:
        """The ``(robot_key, robot_ref)`` pairs that have alerts waiting to be sent."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox.c.robot_key, outbox.c.robot_ref)
                .where(outbox.c.status.in_((PENDING, CLAIMED)))
                .group_by(outbox.c.robot_key, outbox.c.robot_ref)
            ).all()
        return [(row[0], row[1]) for row in rows]

    def mark_dead_pending(self, robot_key: str, robot_ref: str | None, reason: str) -> int:
        """Every waiting row of one robot name becomes a dead letter (its Connection is unusable)."""
        with self.engine.begin() as conn:
            return conn.execute(
                update(outbox)
                .where(
                    outbox.c.robot_key == robot_key, *_ref_condition(robot_ref), outbox.c.status == PENDING
                )
                .values(status=DEAD, last_error=reason[:1000])
            ).rowcount

    def pending_count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).where(outbox.c.status.in_((PENDING, CLAIMED)))).scalar()
            )

    def retry_dead(
        self, robot_key: str | None = None, *, ids: Sequence[int] | None = None, at_ms: int | None = None
    ) -> int:
        """Put dead letters back in the queue (after the configuration was fixed): every one, a
        robot's, or only ``ids`` (of that robot, if given); a robot's pause after a throttle ends."""
        at_ms = now_ms() if at_ms is None else at_ms
        condition = [outbox.c.status == DEAD]
        if robot_key:
            condition.append(outbox.c.robot_key == robot_key)
        if ids is not None:
            condition.append(outbox.c.id.in_(list(ids)))
        with self.engine.begin() as conn:
            if ids is not None:
                keys = {row[0] for row in conn.execute(select(outbox.c.robot_key).where(*condition)).all()}
                unpause = robots.c.robot_key.in_(keys)
            else:
                unpause = robots.c.robot_key == robot_key if robot_key else true()
            conn.execute(update(robots).where(unpause).values(paused_until_ms=0, pause_reason=None))
            return conn.execute(
                update(outbox)
                .where(*condition)
                .values(status=PENDING, next_attempt_at_ms=at_ms, last_error=None)
            ).rowcount

    def record_answer(self, robot_key: str, answer: str, *, at_ms: int | None = None) -> None:
        """What the robot answered the last message (or why it got none), for the Alerts page."""
        at_ms = now_ms() if at_ms is None else at_ms
        with self.engine.begin() as conn:
            conn.execute(
                update(robots)
                .where(robots.c.robot_key == robot_key)
                .values(last_answer=answer[:1000], last_answer_ms=at_ms)
            )

    def reserve_send(
        self, robot_key: str, *, rate_limit: int, window_s: float, at_ms: int | None = None
    ) -> SendReservation:
        """Count one message outside the deliverers' plans (a test alert) in the robot's window,
        unless the robot is paused or its window is full: the test must not get it throttled."""
        window_ms = int(window_s * 1000)
        self._ensure_robot_row(robot_key)
        with self.engine.begin() as conn:
            robot = self._lock_robot(conn, robot_key)
            at_ms = now_ms() if at_ms is None else at_ms
            if robot.paused_until_ms > at_ms:
                return SendReservation(
                    False, (robot.paused_until_ms - at_ms) / 1000, robot.pause_reason or "the robot is paused"
                )
            used, oldest_ms = _window_use(conn, robot_key, at_ms, window_ms)
            if used >= rate_limit:
                return SendReservation(
                    False,
                    max(0.0, (oldest_ms + window_ms - at_ms) / 1000),
                    f"the robot's {rate_limit} messages per {window_s:g} s are used",
                )
            conn.execute(send_log.insert().values(robot_key=robot_key, sent_at_ms=at_ms))
            conn.execute(update(robots).where(robots.c.robot_key == robot_key).values(last_send_ms=at_ms))
        return SendReservation(True)

    def recent(
        self,
        *,
        limit: int = 50,
        dag_id: str | None = None,
        status: str | None = None,
        dag_ids: Iterable[str] | None = None,
        robot_key: str | None = None,
    ) -> list[OutboxEntry]:
        """The newest outbox rows, optionally of one DAG, one status, one robot, or only ``dag_ids``
        (those the user may read)."""
        condition = []
        if dag_id:
            condition.append(outbox.c.dag_id == dag_id)
        if status:
            condition.append(outbox.c.status == status)
        if robot_key:
            condition.append(outbox.c.robot_key == robot_key)
        if dag_ids is not None:
            allowed = list(dag_ids)
            if not allowed:
                return []
            condition.append(outbox.c.dag_id.in_(allowed))
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(outbox).where(*condition).order_by(outbox.c.id.desc()).limit(limit)
            ).all()
        return [
            OutboxEntry(
                id=r.id,
                robot_key=r.robot_key,
                robot_ref=r.robot_ref,
                status=r.status,
                alert=Alert.from_dict(json.loads(r.alert)),
                attempts=r.attempts,
                created_at_ms=r.created_at_ms,
                sent_at_ms=r.sent_at_ms,
                last_error=r.last_error,
                message_uuid=r.message_uuid,
            )
            for r in rows
        ]

    def dag_ids(self) -> list[str]:
        """Every DAG with an alert in the outbox (the Alerts page's DAG filter)."""
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(select(outbox.c.dag_id).distinct()).all())

    def purge(self, older_than_s: float, *, at_ms: int | None = None) -> int:
        """Delete delivered alerts sent more than ``older_than_s`` ago."""
        at_ms = now_ms() if at_ms is None else at_ms
        with self.engine.begin() as conn:
            return conn.execute(
                delete(outbox).where(
                    outbox.c.status == SENT, outbox.c.sent_at_ms < at_ms - int(older_than_s * 1000)
                )
            ).rowcount

    def rows(self) -> list[dict]:
        """Every outbox row (for tests and `outbox status --verbose`)."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(outbox).order_by(outbox.c.id)).all()]


def _window_use(conn: Connection, robot_key: str, at_ms: int, window_ms: int) -> tuple[int, int | None]:
    """Messages the robot's rolling window holds at ``at_ms``, and when the oldest of them was sent."""
    used, oldest_ms = conn.execute(
        select(func.count(), func.min(send_log.c.sent_at_ms)).where(
            send_log.c.robot_key == robot_key, send_log.c.sent_at_ms > at_ms - window_ms
        )
    ).one()
    return int(used), oldest_ms


def _ref_condition(robot_ref) -> list:
    if robot_ref is ANY_REF:
        return []
    if robot_ref is None:
        return [outbox.c.robot_ref.is_(None)]
    return [outbox.c.robot_ref == robot_ref]


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
