"""The outbox under an alert storm: 1000 alerts from 8 processes within 10 s while 2 ``airflow-ext
deliver`` replicas with the default schedule deliver them to one local robot that enforces
DingTalk's rule (20 messages per rolling 60 s, then 10 minutes of refusals).

* Airflow 2.11.2: 8 producer processes record the alerts through ``outbox_sender`` (on
  PostgreSQL, and in the full profile on SQLite too); "within 75 s" counts from the storm's start.
* Airflow 3.3.2: 8 processes POST them to the api-server's outbox route (``post_alert``, the
  supervisor's client), each for a genuine failed try; "within 75 s" counts from the last POST.

Figures (``outbox_storm_report.py``): failures named in accepted messages within 75 s, throttled
answers, the most messages in any 60 s, when the last failure was named.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from harness.environments import PATCHED, airflow_env
from harness.processes import WorkerProcess
from harness.redaction import progress
from harness.robots import dingtalk_robot

from benchmarks import outbox_storm_report as storm
from benchmarks.outbox_airflow3 import RUN_STORM, Airflow3, ApiServer, warm_up
from benchmarks.outbox_setup import (
    STORM_ALERTS,
    Deliverer,
    Profile,
    database_url,
    make_home,
    note_named,
    outbox_status,
    poster,
    producer,
    robot_env,
)

#: The same storm in every run: when each alert is recorded, and by which producer.
STORM_SEED = 20261121


def storm_plan(seed: int) -> list[list[tuple[int, float]]]:
    """Alert n goes to producer n % 8 at a uniformly random moment of the 10 s; each producer's
    share in time order."""
    rng = random.Random(seed)
    plans: list[list[tuple[int, float]]] = [[] for _ in range(storm.STORM_PRODUCERS)]
    for n in range(STORM_ALERTS):
        plans[n % storm.STORM_PRODUCERS].append((n, rng.uniform(0, storm.STORM_SPREAD_S)))
    return [sorted(plan, key=lambda item: item[1]) for plan in plans]


def start_deliverers(venv: Path, env: dict[str, str], tmp: Path, prefix: str) -> list[Deliverer]:
    deliverers = [
        Deliverer(f"deliverer {i}", venv, env, tmp / f"{prefix}-deliverer-{i}.log")
        for i in range(storm.STORM_DELIVERERS)
    ]
    for deliverer in deliverers:
        deliverer.wait_ready()
    time.sleep(1.0)  # both are polling: an empty outbox
    return deliverers


def measure(envs, tmp: Path, kind: str, postgres_url: str | None, profile: Profile, secret: str) -> dict:
    """Airflow 2.11.2: the producers record the alerts in the metadata database (``kind``)."""
    robot = dingtalk_robot("storm", secret)  # 20 / 60 s / 600 s
    home = tmp / f"storm-{kind}"
    make_home(home, database_url(kind, home, postgres_url))
    venv = envs[PATCHED]
    env = airflow_env(venv, home, **robot_env(robot, secret))
    producers: list[WorkerProcess] = []
    deliverers: list[Deliverer] = []
    try:
        progress(
            f"storm on {kind}: starting {storm.STORM_PRODUCERS} producers and "
            f"{storm.STORM_DELIVERERS} deliverers"
        )
        # The first producer creates the outbox tables; the others start together.
        producers.append(producer(0, venv, env, tmp / f"storm-{kind}-producer-0.log").ready())
        producers += [
            producer(i, venv, env, tmp / f"storm-{kind}-producer-{i}.log")
            for i in range(1, storm.STORM_PRODUCERS)
        ]
        for each in producers[1:]:
            each.ready()
        deliverers = start_deliverers(venv, env, tmp, f"storm-{kind}")

        plans = storm_plan(seed=STORM_SEED)
        start_at = time.time() + 1.0
        progress(
            f"storm on {kind}: {STORM_ALERTS} alerts in {storm.STORM_SPREAD_S:g} s; watching the robot "
            f"for up to {profile.storm_observe_s:g} s"
        )
        for each, plan in zip(producers, plans):
            each.send(op="storm", start_at=start_at, plan=plan)
        first_named: dict[int, float] = {}
        seen = 0
        while time.time() < start_at + profile.storm_observe_s and len(first_named) < STORM_ALERTS:
            time.sleep(0.25)
            seen = note_named(robot, first_named, seen)
        watched_s = time.time() - start_at
        records = [r for p in producers for r in p.receive(60, "storm")["records"]]
        for deliverer in deliverers:
            deliverer.stop()
        counts = producers[0].call(60, op="counts")
        status = outbox_status(venv, env)
        messages, requests = robot.messages, robot.requests
        logs = [d.log() for d in deliverers]
    finally:
        for deliverer in deliverers:
            deliverer.stop()
        for each in producers:
            each.close()
        robot.stop()
    return storm.figures(
        kind,
        STORM_ALERTS,
        start_at,
        records,
        first_named,
        messages,
        requests,
        counts,
        status,
        logs,
        watched_s,
    )


def measure3(af: Airflow3, profile: Profile, secret: str) -> dict:
    """Airflow 3.3.2: the posters POST the alerts to the api-server, which queues them."""
    robot = dingtalk_robot("storm", secret)  # 20 / 60 s / 600 s
    venv, tmp = af.envs[PATCHED], af.tmp
    env = af.env(robot, secret)
    api: ApiServer | None = None
    posters: list[WorkerProcess] = []
    deliverers: list[Deliverer] = []
    try:
        progress("storm on 3.3.2: starting the api-server")
        api = ApiServer(af, env, tmp / "storm3-api-server.log")
        progress(
            f"storm on 3.3.2: starting {storm.STORM_PRODUCERS} posters and "
            f"{storm.STORM_DELIVERERS} deliverers"
        )
        posters = [poster(i, venv, env, tmp / f"storm3-poster-{i}.log") for i in range(storm.STORM_PRODUCERS)]
        for each in posters:
            each.ready()
        for each in posters:  # untimed: each poster's imports, the api-server's first requests
            warm_up(each, api)
        deliverers = start_deliverers(venv, env, tmp, "storm3")
        alerts = STORM_ALERTS
        plans = [
            [(n, offset, af.try_of(RUN_STORM, n)) for n, offset in plan]
            for plan in storm_plan(seed=STORM_SEED)
        ]
        start_at = time.time() + 1.0
        progress(
            f"storm on 3.3.2: {alerts} alerts POSTed in {storm.STORM_SPREAD_S:g} s; watching the robot "
            f"until {storm.STORM_WITHIN_S:g} s after the last POST"
        )
        for each, plan in zip(posters, plans):
            each.send(op="storm", url=api.outbox_url, start_at=start_at, plan=plan)
        first_named: dict[int, float] = {}
        seen = 0
        records: list[dict] = []
        pending = list(posters)
        last_post_at = None
        hard_stop = start_at + profile.storm_observe_s + storm.STORM_WITHIN_S
        while time.time() < hard_stop and len(first_named) < alerts:
            time.sleep(0.25)
            seen = note_named(robot, first_named, seen)
            if pending:
                for each in list(pending):
                    if each.answer_waiting():
                        records += each.receive(60, "storm")["records"]
                        pending.remove(each)
                if not pending:
                    last_post_at = max(r["at"] for r in records)
                    hard_stop = min(hard_stop, last_post_at + storm.STORM_WITHIN_S + 5.0)
        for each in pending:
            records += each.receive(120, "storm")["records"]
        if last_post_at is None:
            last_post_at = max(r["at"] for r in records)
        watched_s = time.time() - start_at
        for deliverer in deliverers:
            deliverer.stop()
        counts = posters[0].call(60, op="counts")
        status = outbox_status(venv, env)
        messages, requests = robot.messages, robot.requests
        logs = [d.log() for d in deliverers]
        api_log = api.log_file.read_text(encoding="utf-8", errors="replace")
    finally:
        for deliverer in deliverers:
            deliverer.stop()
        for each in posters:
            each.close()
        if api is not None:
            api.stop()
        robot.stop()
    out = storm.figures(
        "PostgreSQL",
        alerts,
        start_at,
        records,
        first_named,
        messages,
        requests,
        counts,
        status,
        logs,
        watched_s,
    )
    within = sum(1 for t in first_named.values() if t - last_post_at <= storm.STORM_WITHIN_S)
    out.update(
        {
            "how": ", through the api-server's outbox route",
            "since": storm.SINCE3,
            "named_within": within,
            "last_post_s": last_post_at - start_at,
            "last_named_since_s": (max(first_named.values()) - last_post_at) if first_named else None,
            "post_errors": sorted({r["error"] for r in records if r["error"]})[:5],
            "post_failed": sum(1 for r in records if r["error"]),
            "api_refusals": api_log.count("Refused an outbox alert"),
            "recorded_label": "POSTs answered queued (201); the last POST started at",
            "record_label": "POST to the outbox route during the storm: median / p99 / max",
        }
    )
    return out
