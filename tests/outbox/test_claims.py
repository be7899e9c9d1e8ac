"""airflow_ext.claims on SQLite, PostgreSQL and MariaDB, beside the outbox (its tables are the
outbox's): the first report of a try wins, every other report of it sends nothing, and a claim
whose sender never finished expires with its lease."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select, update

from airflow_ext import claims
from airflow_ext.outbox.schema import alert_claims
from airflow_ext.outbox.store import dedup_hash
from tests.test_render import make_alert

T0 = 1_800_000_000_000  # a fixed "now" in epoch ms
LEASE_S = 3.0


def test_the_first_claim_wins_and_names_itself(engine):
    alert = make_alert(try_number=1)

    first = claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0)
    second = claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0 + 40)

    assert first.won and not second.won
    assert second.holder == claims.owner_name() and not second.sent
    with engine.connect() as conn:
        (row,) = conn.execute(select(alert_claims)).all()
    assert row.dag_id == alert.dag_id and row.claimed_at_ms == T0
    assert row.lease_until_ms == T0 + int((LEASE_S + claims.LEASE_SLACK_S) * 1000)


def test_a_sent_try_is_never_claimed_again(engine):
    alert = make_alert(try_number=1)
    won = claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0)
    claims.mark_sent(engine, won, at_ms=T0 + 100)

    much_later = claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0 + 3_600_000)

    assert not much_later.won and much_later.sent


def test_an_unsent_claim_expires_with_its_lease(engine):
    alert = make_alert(try_number=1)
    claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0)
    lease_ms = int((LEASE_S + claims.LEASE_SLACK_S) * 1000)

    assert not claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0 + lease_ms - 1).won
    taken = claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0 + lease_ms + 1)

    assert taken.won
    assert not claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0 + lease_ms + 2).won


def test_each_try_and_task_has_its_own_claim(engine):
    tries = [
        make_alert(try_number=1),
        make_alert(try_number=2),
        make_alert(try_number=1, task_id="other"),
        make_alert(try_number=1, map_index=3),
    ]
    assert all(claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0).won for alert in tries)


def test_concurrent_reports_of_one_try_have_one_winner(engine):
    alert = make_alert(try_number=1)
    start = threading.Barrier(8)

    def report(_):
        start.wait()
        return claims.claim(engine, alert, lease_s=LEASE_S).won

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(report, range(8)))

    assert outcomes.count(True) == 1, outcomes


def test_old_claims_are_purged(engine):
    old, recent = make_alert(try_number=1), make_alert(try_number=2)
    claims.claim(engine, old, lease_s=LEASE_S, at_ms=T0)
    claims.claim(engine, recent, lease_s=LEASE_S, at_ms=T0 + 3_600_000)

    assert claims.purge(engine, older_than_s=1800, at_ms=T0 + 3_600_000) == 1

    assert claims.claim(engine, old, lease_s=LEASE_S, at_ms=T0 + 3_600_001).won
    assert not claims.claim(engine, recent, lease_s=LEASE_S, at_ms=T0 + 3_600_001).won


def test_a_dead_holder_on_this_host_is_taken_over_at_once(engine):
    """A task process killed mid-alert: the next report of its try sends again at once (its alert
    may not have gone out); a live holder, or one on another host, keeps the try for its lease."""
    import subprocess
    import sys

    alert, other_host = make_alert(try_number=1), make_alert(try_number=2)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for try_alert, holder in (
            (alert, f"{socket.gethostname()}:{alive.pid}"),
            (other_host, f"elsewhere:{gone.pid}"),
        ):
            claims.claim(engine, try_alert, lease_s=LEASE_S, at_ms=T0)
            with engine.begin() as conn:
                conn.execute(
                    update(alert_claims)
                    .where(alert_claims.c.dedup_hash == dedup_hash(try_alert))
                    .values(claimed_by=holder)
                )
            assert not claims.claim(engine, try_alert, lease_s=LEASE_S, at_ms=T0 + 10).won, holder
    finally:
        alive.kill()
        alive.wait()

    assert claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0 + 20).won  # its holder died
    assert not claims.claim(engine, alert, lease_s=LEASE_S, at_ms=T0 + 30).won  # now held by us
    assert not claims.claim(engine, other_host, lease_s=LEASE_S, at_ms=T0 + 30).won
