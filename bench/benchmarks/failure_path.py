"""The failure path of a final failure with ``ding_on_failure=True``, stock Airflow against patched.

Per call, what the patch series hooks the alert into (Airflow 2: ``TaskInstance.handle_failure``;
Airflow 3: the task runner's ``finalize``), in one long-lived worker per environment
(``bench/workers/failure_path_worker.py``), alternating between them:

* with a healthy local DingTalk-compatible robot (signature and keyword security on); beside it,
  in the same rounds (A B C / C B A), the patched environment with ``[dingbot] default_conn_id``
  naming three healthy robots given as Connections (DingTalk, WeCom, Feishu): the direct backend's
  fan-out, one message on each robot at the same time;
* with a robot that accepts the connection and never answers, under ``[dingbot] timeout = 2``;
* then, in the patched worker only, the pieces of one alert and the failure path with the flags on
  and off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.environments import ENV_NAMES, PATCHED, UNPATCHED, airflow_env
from harness.errors import BenchError
from harness.lines import WORKERS, Line
from harness.processes import WorkerProcess
from harness.redaction import progress
from harness.robots import ONE_ROBOT_ENV, UNLIMITED, FanOutRobots, accepted, dingding_env, dingtalk_robot
from harness.stats import added_ratio, alternating, bootstrap_ci, median_diff, stats

WORKER = WORKERS / "failure_path_worker.py"
#: The patched environment with ``[dingbot] default_conn_id`` naming the three fan-out robots.
FAN_OUT = "patched, 3 robots"

# Targets (informational).
HEALTHY_ADDED_MEDIAN_MAX_MS = 15.0
SILENT_DEADLINE_S = 2.0
SILENT_SLACK_S = 0.2


@dataclass(frozen=True)
class Profile:
    healthy_rounds: int  # rounds per env; each round is healthy_per_round timed calls
    healthy_per_round: int
    healthy_warmup: int  # untimed calls before every round
    silent_calls: int  # per env
    breakdown_calls: int


FULL = Profile(4, 50, 5, 5, 50)
QUICK = Profile(2, 30, 3, 2, 30)


def start_workers(envs: dict[str, Path], homes: dict[str, Path], tmp: Path, prefix: str = "worker"):
    """One failure-path worker per environment, each checked to be what its name says."""
    workers: dict[str, WorkerProcess] = {}
    try:
        for name in ENV_NAMES:
            env = airflow_env(envs[name], homes[name])
            log = tmp / f"{prefix}-{name}.log"
            workers[name] = WorkerProcess.start(name, envs[name], WORKER, ["serve"], env, log).ready()
        for name, worker in workers.items():
            wants = name == PATCHED
            if worker.info["failure_path_calls_hook"] != wants or worker.info["ding_on_failure"] != wants:
                raise BenchError(f"the {name} environment does not look {name}: {worker.info}")
    except BaseException:
        for worker in workers.values():
            worker.close()
        raise
    return workers


def measure(line: Line, envs, homes, tmp: Path, profile: Profile, secret: str) -> dict:
    results: dict = {"healthy": {}, "silent": {}, "delivered": {}}
    fan_out = FanOutRobots(secret)
    healthy = dingtalk_robot("bench", secret, rate_limit=UNLIMITED)
    silent = dingtalk_robot("bench", secret, rate_limit=UNLIMITED)
    silent.set_mode("hang")
    workers: dict[str, WorkerProcess] = {}
    try:
        progress(f"starting one {line.failure_path} worker per environment")
        workers = start_workers(envs, homes, tmp)
        results["airflow_version"] = workers[PATCHED].info["airflow_version"]

        def robot_env(robot, timeout_s: str) -> dict[str, str]:
            return {**dingding_env(robot, secret), "AIRFLOW__DINGBOT__TIMEOUT": timeout_s, **ONE_ROBOT_ENV}

        # (a) healthy robot, default deadline (10 s); beside it, in the same rounds, the patched
        # environment sending each alert to the three fan-out robots
        arms = {
            UNPATCHED: (workers[UNPATCHED], robot_env(healthy, "10")),
            PATCHED: (workers[PATCHED], robot_env(healthy, "10")),
            FAN_OUT: (workers[PATCHED], {**robot_env(healthy, "10"), **fan_out.env}),
        }
        # the robots each arm's alerts must reach, one message per call on each
        sent_to = {UNPATCHED: (), PATCHED: ("[dingding]",), FAN_OUT: tuple(fan_out.robots)}
        total = profile.healthy_rounds * profile.healthy_per_round
        progress(
            f"{line.failure_path} with a healthy robot, and patched with 3 robots ({fan_out.channels}): "
            f"{total} timed calls each"
        )

        def counts() -> dict[str, int]:
            return {"[dingding]": accepted(healthy), **fan_out.accepted()}

        samples = {arm: [] for arm in arms}
        calls = {arm: 0 for arm in arms}
        received = {arm: dict.fromkeys(counts(), 0) for arm in arms}
        for order in alternating(profile.healthy_rounds, tuple(arms)):
            for arm in order:
                worker, env = arms[arm]
                before = counts()
                answer = worker.call(
                    600, op="time", n=profile.healthy_per_round, warmup=profile.healthy_warmup, env=env
                )
                after = counts()
                if answer["states"] != ["failed"]:
                    raise BenchError(f"{arm}: {line.failure_path} left the task in {answer['states']}")
                samples[arm] += answer["samples_ms"]
                calls[arm] += answer["calls"]
                for robot in received[arm]:
                    received[arm][robot] += after[robot] - before[robot]
        for name in ENV_NAMES:
            results["healthy"][name] = stats(samples[name])
        results["delivered"]["healthy"] = {
            name: [received[name]["[dingding]"], calls[name]] for name in ENV_NAMES
        }
        results["fan_out"] = {
            "robots": fan_out.channels,
            **stats(samples[FAN_OUT]),
            "added_median_ratio": added_ratio(samples[FAN_OUT], samples[PATCHED], samples[UNPATCHED]),
            "added_median_ratio_ci": bootstrap_ci(
                added_ratio, samples[FAN_OUT], samples[PATCHED], samples[UNPATCHED]
            ),
            # the same patched worker, alternating: free of the two environments' differences
            "minus_one_robot_median_ms": median_diff(samples[FAN_OUT], samples[PATCHED]),
            "minus_one_robot_median_ci": bootstrap_ci(median_diff, samples[FAN_OUT], samples[PATCHED]),
            "calls": calls[FAN_OUT],
            "received": {robot: received[FAN_OUT][robot] for robot in fan_out.robots},
        }
        unexpected = {
            f"{arm} -> {robot}": f"{got} of {calls[arm] if robot in sent_to[arm] else 0}"
            for arm in arms
            for robot, got in received[arm].items()
            if got != (calls[arm] if robot in sent_to[arm] else 0)
        }
        if unexpected:
            raise BenchError(f"unexpected alert counts at the healthy robots: {unexpected}")

        # (b) a robot that accepts the connection and never answers, deadline 2 s
        progress(
            f"{line.failure_path} with a silent robot: {profile.silent_calls} calls per environment "
            f"(about {profile.silent_calls * SILENT_DEADLINE_S:.0f} s)"
        )
        samples = {name: [] for name in ENV_NAMES}
        reached = {name: 0 for name in ENV_NAMES}
        for order in alternating(profile.silent_calls, ENV_NAMES):
            for name in order:
                before = len(silent.requests)
                answer = workers[name].call(
                    120, op="time", n=1, warmup=0, env=robot_env(silent, f"{SILENT_DEADLINE_S:g}")
                )
                reached[name] += len(silent.requests) - before
                samples[name] += answer["samples_ms"]
        for name in ENV_NAMES:
            results["silent"][name] = stats(samples[name])
        results["delivered"]["silent"] = {name: reached[name] for name in ENV_NAMES}

        # where the added time goes (patched only, healthy robot, pieces called directly)
        progress("breakdown of one alert in the patched environment")
        results["breakdown"] = workers[PATCHED].call(
            600, op="breakdown", n=profile.breakdown_calls, env=robot_env(healthy, "10")
        )["parts"]
    finally:
        for worker in workers.values():
            worker.close()
        healthy.stop()
        silent.stop()
        fan_out.stop()
    return results
