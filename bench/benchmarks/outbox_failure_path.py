"""The failure path with the outbox backend on Airflow 2.11.2: ``TaskInstance.handle_failure``
recording the alert in the metadata database, against stock Airflow.

In the failure-path workers of both environments (``bench/workers/failure_path_worker.py``),
alternating A B / B A, with a healthy robot configured, with ``[dingbot] default_conn_id`` naming
three healthy robots (DingTalk, WeCom, Feishu Connections: one outbox row each) and with one that
never answers; on SQLite (a home per environment) and on PostgreSQL (one migrated database shared
by both environments). Then, in the patched worker, the hook's own time with the flags on and off.
"""

from __future__ import annotations

from pathlib import Path

from harness.environments import ENV_NAMES, PATCHED, UNPATCHED, airflow_env, migrate, run
from harness.errors import BenchError
from harness.processes import WorkerProcess
from harness.redaction import progress
from harness.report import ms, paragraph, table, verdict
from harness.robots import ONE_ROBOT_ENV, UNLIMITED, FanOutRobots, dingtalk_robot, requests_at
from harness.stats import alternating, diff_ci, stats

from benchmarks.failure_path import start_workers
from benchmarks.outbox_setup import (
    FAILURE_PATH_P99_MAX_MS,
    SILENT_DEADLINE_S,
    Profile,
    database_url,
    make_home,
    producer,
    robot_env,
)


def measure(envs, tmp: Path, kind: str, postgres_url: str | None, profile: Profile, secret: str) -> dict:
    fan_out = FanOutRobots(secret)
    healthy = dingtalk_robot("fp", secret, rate_limit=UNLIMITED)
    silent = dingtalk_robot("fp", secret, rate_limit=UNLIMITED)
    silent.set_mode("hang")
    homes = {name: tmp / f"fp-{kind}-{name}" for name in ENV_NAMES}
    if kind == "sqlite":
        migrate(envs, homes)
    else:
        for home in homes.values():
            make_home(home, database_url(kind, home, postgres_url))
        progress("airflow db migrate (PostgreSQL, one database for both environments)")
        run(
            [str(envs[UNPATCHED] / "bin" / "airflow"), "db", "migrate"],
            "airflow db migrate (PostgreSQL)",
            env=airflow_env(envs[UNPATCHED], homes[UNPATCHED]),
        )
    workers: dict[str, WorkerProcess] = {}
    counter: WorkerProcess | None = None
    out: dict = {"db": kind}
    try:
        progress(f"failure path on {kind}: starting one handle_failure worker per environment")
        workers = start_workers(envs, homes, tmp, prefix=f"fp-{kind}")
        counter = producer(
            0,
            envs[PATCHED],
            airflow_env(envs[PATCHED], homes[PATCHED], **robot_env(healthy, secret)),
            tmp / f"fp-{kind}-counter.log",
        ).ready()
        one_robot = ONE_ROBOT_ENV
        # (label, the robots it goes to, the [dingding] robot and the other settings, rows per alert)
        for label, robots, robot, settings, rows in (
            ("healthy robot", [healthy], healthy, {"AIRFLOW__DINGBOT__TIMEOUT": "10", **one_robot}, 1),
            (
                f"3 robots (default_conn_id: {fan_out.channels})",
                list(fan_out.robots.values()),
                healthy,
                {"AIRFLOW__DINGBOT__TIMEOUT": "10", **fan_out.env},
                len(fan_out.robots),
            ),
            (
                f"never-answering robot ({SILENT_DEADLINE_S:g} s deadline)",
                [silent],
                silent,
                {"AIRFLOW__DINGBOT__TIMEOUT": f"{SILENT_DEADLINE_S:g}", **one_robot},
                1,
            ),
        ):
            env = robot_env(robot, secret, **settings)
            before_rows = counter.call(60, op="counts")["pending"]
            before_requests = requests_at(robots)
            samples: dict[str, list[float]] = {name: [] for name in ENV_NAMES}
            calls = 0
            progress(
                f"failure path on {kind}, {label}: "
                f"{profile.fp_rounds * profile.fp_per_round} timed calls per environment"
            )
            for order in alternating(profile.fp_rounds, ENV_NAMES):
                for name in order:
                    answer = workers[name].call(
                        600, op="time", n=profile.fp_per_round, warmup=profile.fp_warmup, env=env
                    )
                    if answer["states"] != ["failed"]:
                        raise BenchError(f"{name}: handle_failure left the task in {answer['states']}")
                    samples[name] += answer["samples_ms"]
                    if name == PATCHED:
                        calls += answer["calls"]
            recorded = counter.call(60, op="counts")["pending"] - before_rows
            requests = requests_at(robots) - before_requests
            if recorded != rows * calls:
                raise BenchError(
                    f"failure path on {kind}, {label}: the outbox recorded {recorded} rows for {calls} "
                    f"patched calls, not {rows} per call"
                )
            # The hook's own time inside handle_failure, and flags on - flags off, in one process.
            hook = workers[PATCHED].call(600, op="in_situ", n=profile.fp_per_round, env=env)["parts"]
            out[label] = {
                **{name: stats(samples[name]) for name in ENV_NAMES},
                "added_p99_ci": diff_ci(samples[PATCHED], samples[UNPATCHED], 0.99),
                "in_situ": hook,
                "patched_calls": calls,
                "rows_per_call": rows,
                "recorded": recorded,
                "robot_requests": requests,
                "robot_requests_incl_in_situ": requests_at(robots) - before_requests,
            }
        counter.call(60, op="settle")  # the next part may share this database
    finally:
        for worker in workers.values():
            worker.close()
        if counter is not None:
            counter.close()
        healthy.stop()
        silent.stop()
        fan_out.stop()
    return out


def report(results: list[dict]) -> list[str]:
    rows, hook_rows, notes = [], [], []
    for res in results:
        for label in (k for k in res if k != "db"):
            r = res[label]
            u, p = r[UNPATCHED], r[PATCHED]
            added_p99 = p["p99_ms"] - u["p99_ms"]
            low, high = r["added_p99_ci"]
            text = verdict(added_p99 <= FAILURE_PATH_P99_MAX_MS, (low, high), FAILURE_PATH_P99_MAX_MS)
            rows.append(
                [
                    f"{res['db']}, {label}",
                    f"{ms(u['median_ms'])} / {ms(u['p99_ms'])}",
                    f"{ms(p['median_ms'])} / {ms(p['p99_ms'])}",
                    f"{p['median_ms'] - u['median_ms']:+.1f} ms",
                    f"{added_p99:+.1f} ms",
                    f"{low:+.1f} to {high:+.1f}",
                    f"<= {FAILURE_PATH_P99_MAX_MS:g} ms",
                    text,
                ]
            )
            hook = r["in_situ"]["hook_in_failure_path"]
            on, off = r["in_situ"]["failure_path_flags_on"], r["in_situ"]["failure_path_flags_off"]
            hook_rows.append(
                [
                    f"{res['db']}, {label}",
                    f"{ms(hook['median_ms'])} / {ms(hook['p99_ms'])} / {ms(hook['max_ms'])}",
                    f"{ms(on['median_ms'])} / {ms(on['p99_ms'])}",
                    f"{ms(off['median_ms'])} / {ms(off['p99_ms'])}",
                ]
            )
            rows_per_call = r.get("rows_per_call", 1)
            recorded = (
                f"alerts recorded in the outbox {r['recorded']}/{r['patched_calls']}"
                if rows_per_call == 1
                else f"outbox rows recorded {r['recorded']} = {rows_per_call} per call x {r['patched_calls']}"
            )
            notes.append(
                f"{res['db']}, {label}: {p['n']} + {u['n']} timed calls (patched + unpatched), "
                f"then {r['in_situ']['hook_in_failure_path']['n']} calls each with the flags on and off in "
                f"the patched process; {recorded} patched calls (warm-ups included); requests the "
                f"robot{'s' if rows_per_call > 1 else ''} received {r['robot_requests_incl_in_situ']}."
            )
    main_table = table(
        [
            "handle_failure, outbox backend",
            "unpatched p50 / p99",
            "patched p50 / p99",
            "added p50",
            "added p99",
            "added p99 95% CI",
            "target",
            "result",
        ],
        rows,
    )
    hook_table = table(
        [
            "same process (patched worker)",
            "hook: p50 / p99 / max",
            "flags on: p50 / p99",
            "flags off: p50 / p99",
        ],
        hook_rows,
    )
    return [
        "2. Failure path: TaskInstance.handle_failure with ding_bot_backend = outbox_sender, against "
        "stock Airflow",
        "",
        main_table,
        "",
        hook_table,
        "",
        *[paragraph(n) for n in notes],
        paragraph(
            "added p50/p99: patched percentile - unpatched percentile, both environments measured "
            "alternately (A B / B A) in the same run; its 95% CI is a bootstrap interval (how far "
            "noise alone moves it). hook: the time inside handle_failure spent in send_ding_alert "
            "(building the Alert, reading the config, outbox_sender's INSERT, in the run_within "
            "thread); flags on/off: handle_failure with ding_on_failure switched on and off in the "
            "same process.",
        ),
    ]
