"""One alert at a time through the outbox: from the failure to the robot's acceptance, with one
deliverer running.

Alerts come one every 3-5 s (a random phase against the deliverer's 0.5 s poll), to a robot with
DingTalk's own limit and no ``[dingbot] rate_limit`` (the channel's 20 a minute). The deliverer
paces a robot's sends 60 / 20 = 3 s apart, so alerts this far apart never wait for the budget: the
figure is the outbox's own latency, not the rate limit's. Airflow 2.11.2: from the
``outbox_sender`` call; Airflow 3.3.2: from the POST to the api-server's outbox route.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

from harness.environments import PATCHED, airflow_env
from harness.errors import BenchError
from harness.processes import WorkerProcess
from harness.redaction import progress, tail
from harness.report import ms, table, verdict
from harness.robots import dingtalk_robot
from harness.stats import percentile

from benchmarks.outbox_airflow3 import RUN_LATENCY, Airflow3, ApiServer, warm_up
from benchmarks.outbox_setup import (
    Deliverer,
    Profile,
    database_url,
    make_home,
    named_in,
    poster,
    producer,
    robot_env,
)

LATENCY_SPACING_S = (3.0, 5.0)
SPACING = f"{LATENCY_SPACING_S[0]:g}-{LATENCY_SPACING_S[1]:g} s apart (random)"
#: The same spacing in every run.
SPACING_SEED = 7
# Target (informational).
LATENCY_P50_MAX_S = 2.0


def measure(envs, tmp: Path, kind: str, postgres_url: str | None, profile: Profile, secret: str) -> dict:
    """Airflow 2.11.2: a producer records each alert in the metadata database (``kind``)."""
    robot = dingtalk_robot("calm", secret)
    home = tmp / f"latency-{kind}"
    make_home(home, database_url(kind, home, postgres_url))
    venv = envs[PATCHED]
    env = airflow_env(venv, home, **robot_env(robot, secret))
    recorder: WorkerProcess | None = None
    deliverer: Deliverer | None = None
    latencies: list[float] = []
    try:
        progress(f"one alert at a time on {kind}: {profile.latency_samples} alerts, one deliverer")
        recorder = producer(0, venv, env, tmp / f"latency-{kind}-producer.log").ready()
        deliverer = Deliverer("deliverer", venv, env, tmp / f"latency-{kind}-deliverer.log")
        deliverer.wait_ready()
        rng = random.Random(SPACING_SEED)
        for k in range(profile.latency_samples):
            time.sleep(rng.uniform(*LATENCY_SPACING_S))
            record = recorder.call(60, op="one", n=k)
            messages = robot.wait_for_messages(k + 1, timeout=30)
            accepted = [m["received_at"] for m in messages if k in named_in(m)]
            if not accepted:
                raise BenchError(f"alert {k} did not reach the robot within 30 s:\n{tail(deliverer.log())}")
            latencies.append(accepted[0] - record["at"])
        requests = robot.requests
    finally:
        if deliverer is not None:
            deliverer.stop()
        if recorder is not None:
            recorder.close()
        robot.stop()
    return {
        "db": kind,
        "n": len(latencies),
        "latency_s": latencies,
        "messages": len(requests),
        "refused": sum(1 for r in requests if r["errcode"] != 0),
    }


def measure3(af: Airflow3, profile: Profile, secret: str) -> dict:
    """Airflow 3.3.2: a supervisor stand-in posts each alert to the api-server's outbox route."""
    robot = dingtalk_robot("calm", secret)
    tmp = af.tmp
    env = af.env(robot, secret)
    api: ApiServer | None = None
    sender: WorkerProcess | None = None
    deliverer: Deliverer | None = None
    latencies: list[float] = []
    post_ms: list[float] = []
    try:
        progress(f"one alert at a time on 3.3.2: {profile.latency_samples} alerts, one deliverer")
        api = ApiServer(af, env, tmp / "latency3-api-server.log")
        sender = poster(0, af.envs[PATCHED], env, tmp / "latency3-poster.log").ready()
        deliverer = Deliverer("deliverer", af.envs[PATCHED], env, tmp / "latency3-deliverer.log")
        deliverer.wait_ready()
        warm_up(sender, api)
        rng = random.Random(SPACING_SEED)
        for k in range(profile.latency_samples):
            time.sleep(rng.uniform(*LATENCY_SPACING_S))
            record = sender.call(60, op="one", url=api.outbox_url, n=k, ti=af.try_of(RUN_LATENCY, k))
            if not record["queued"]:
                raise BenchError(f"alert {k} was not queued: {record['error']}\n{api.log()}")
            post_ms.append(record["ms"])
            deadline = time.monotonic() + 30
            accepted: list[float] = []
            while not accepted:
                accepted = [m["received_at"] for m in robot.messages if k in named_in(m)]
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"alert {k} did not reach the robot within 30 s:\n{tail(deliverer.log())}"
                    )
                time.sleep(0.02)
            latencies.append(accepted[0] - record["at"])
        requests = robot.requests
    finally:
        if deliverer is not None:
            deliverer.stop()
        if sender is not None:
            sender.close()
        if api is not None:
            api.stop()
        robot.stop()
    return {
        "db": "PostgreSQL, through the api-server",
        "n": len(latencies),
        "latency_s": latencies,
        "post_ms": post_ms,
        "messages": len(requests),
        "refused": sum(1 for r in requests if r["errcode"] != 0),
        "from": "POST to the outbox route",
    }


def report(r: dict) -> list[str]:
    lat = sorted(r["latency_s"])
    p50 = statistics.median(lat)
    rows = [
        [
            f"failure ({r.get('from', 'outbox_sender call')}) -> accepted by the robot: median",
            f"{p50 * 1000:.0f} ms",
            f"<= {LATENCY_P50_MAX_S:g} s",
            verdict(p50 <= LATENCY_P50_MAX_S),
        ],
        ["  p90", f"{percentile(lat, 0.9) * 1000:.0f} ms", "", ""],
        ["  min / max", f"{lat[0] * 1000:.0f} ms / {lat[-1] * 1000:.0f} ms", "", ""],
    ]
    post = (
        f" POST to the outbox route: median {ms(statistics.median(r['post_ms']))}."
        if r.get("post_ms")
        else ""
    )
    return [
        f"3. One alert at a time on {r['db']}: one `airflow-ext deliver`, poll interval 0.5 s (default); "
        "robot limited to 20 per 60 s (DingTalk's), [dingbot] rate_limit unset (the channel's own); "
        "alerts no closer than the deliverer's pace (60 / 20 s), so none waits for the budget",
        "",
        table(["figure", "value", "target", "result"], rows),
        "",
        f"{r['n']} alerts, {SPACING}; messages sent {r['messages']}, refused {r['refused']}." + post,
    ]
