"""Which process alerts a try: one shared record per try, in the metadata database.

Airflow can report one try from several processes, or several times from one: on 2.11 a lost
Celery worker's task is found by the scheduler's heartbeat check on each pass until the DAG
processor has failed it, and each pass queues another failure callback. Every process that can
report a try and reach the database claims the try first (``dingbot_alert_claim``, keyed by the
try): the first claim wins and the others send nothing, whatever the backend, so exactly once does
not depend on the robot dropping a repeated ``msgUuid``.

A claim is a lease as long as the alert may take (``[dingbot] timeout``). The winner marks the try
sent once the backend returned. A claim never marked sent is taken over by a later report of the
same try once its lease is over, or at once when its holder is known to be dead (a process of this
host that no longer runs: a task process killed mid-alert, whose try the DAG processor reports
next). Its alert may or may not have gone out: sending again risks a repeat (which carries the same
``msgUuid``), not sending would risk a lost alert.

Where a process cannot reach the database (on Airflow 3 a task process, its supervisor or a DAG
processor's callback process), it sends without a claim: each of those failure paths alerts only
for the tries the others cannot see (README, "Exactly once per try").
"""

from __future__ import annotations

import os
import random
import socket
import weakref
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from airflow_ext.alert import Alert
from airflow_ext.outbox.schema import alert_claims, ensure_schema
from airflow_ext.outbox.store import dedup_hash, now_ms

#: How long a try's claim is kept: far longer than Airflow takes to report a try again.
KEEP_S = 7 * 24 * 3600
#: One claim in this many also deletes the claims older than KEEP_S. Chance, not a per-process
#: timer: an Airflow 2.11 task process makes one claim in its life, and each would purge.
PURGE_ONE_IN = 100
#: Added to the lease: hosts' clocks differ a little (keep them NTP-synced, as for the outbox).
LEASE_SLACK_S = 1.0

#: Engines whose tables this process has checked (one check per engine, not per alert).
_schema_checked: weakref.WeakSet[Engine] = weakref.WeakSet()


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a try: ``won``, or who holds it (``holder``) and whether it was sent."""

    won: bool
    dedup_hash: str
    owner: str
    holder: str | None = None
    sent: bool = False


def owner_name() -> str:
    """This process, as claims name it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


def _ensure_schema(engine: Engine) -> None:
    if engine not in _schema_checked:
        ensure_schema(engine)
        _schema_checked.add(engine)


def claim(engine: Engine, alert: Alert, *, lease_s: float, at_ms: int | None = None) -> Claim:
    """Claim ``alert``'s try for this process for ``lease_s`` (plus clock slack)."""
    _ensure_schema(engine)
    at_ms = now_ms() if at_ms is None else at_ms
    lease_until_ms = at_ms + int((lease_s + LEASE_SLACK_S) * 1000)
    digest, owner = dedup_hash(alert), owner_name()
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(alert_claims).values(
                    dedup_hash=digest,
                    dag_id=alert.dag_id[:250],
                    claimed_by=owner,
                    claimed_at_ms=at_ms,
                    lease_until_ms=lease_until_ms,
                )
            )
    except IntegrityError:  # claimed before: take it over only if never sent and its holder is gone
        with engine.begin() as conn:
            holder, claimed_ms, lease_ms, sent_at_ms = conn.execute(
                select(
                    alert_claims.c.claimed_by,
                    alert_claims.c.claimed_at_ms,
                    alert_claims.c.lease_until_ms,
                    alert_claims.c.sent_at_ms,
                ).where(alert_claims.c.dedup_hash == digest)
            ).one()
            refused = Claim(False, digest, owner, holder=holder, sent=sent_at_ms is not None)
            if sent_at_ms is not None or (lease_ms >= at_ms and not holder_is_gone(holder)):
                return refused
            taken = conn.execute(  # compare and set: of two reports taking over, one wins
                update(alert_claims)
                .where(
                    alert_claims.c.dedup_hash == digest,
                    alert_claims.c.claimed_by == holder,
                    alert_claims.c.claimed_at_ms == claimed_ms,
                    alert_claims.c.sent_at_ms.is_(None),
                )
                .values(claimed_by=owner, claimed_at_ms=at_ms, lease_until_ms=lease_until_ms)
            ).rowcount
            if taken != 1:
                return refused
    if random.randrange(PURGE_ONE_IN) == 0:  # without a deliverer nothing else deletes a claim
        purge(engine, KEEP_S, at_ms)
    return Claim(True, digest, owner)


def holder_is_gone(holder: str) -> bool:
    """Whether the process named ``holder`` (``host:pid``) is known to have ended: it ran on this host
    and its pid is no longer running (or is a zombie, dead but not yet reaped by its parent). A
    process of another host is never known to be gone; its lease decides."""
    host, _, pid_text = holder.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    import psutil  # Airflow's own dependency, on both lines

    try:
        return psutil.Process(int(pid_text)).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # not ours to look at: it runs
        return False


def mark_sent(engine: Engine, won: Claim, at_ms: int | None = None) -> None:
    """Record that the try ``won`` holds was alerted: no later report of it sends again."""
    with engine.begin() as conn:
        conn.execute(
            update(alert_claims)
            .where(alert_claims.c.dedup_hash == won.dedup_hash, alert_claims.c.claimed_by == won.owner)
            .values(sent_at_ms=now_ms() if at_ms is None else at_ms)
        )


def purge(engine: Engine, older_than_s: float = KEEP_S, at_ms: int | None = None) -> int:
    """Delete claims made more than ``older_than_s`` ago; returns how many."""
    at_ms = now_ms() if at_ms is None else at_ms
    with engine.begin() as conn:
        return conn.execute(
            delete(alert_claims).where(alert_claims.c.claimed_at_ms < at_ms - int(older_than_s * 1000))
        ).rowcount
