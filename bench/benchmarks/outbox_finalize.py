"""The failure path with the outbox backend on Airflow 3.3.2, on and off the task's path.

* On the task's path: the task runner's ``finalize`` with the outbox backend in a process that has
  called the Task SDK's ``block_orm_access()``, as a task process has, patched against stock,
  alternating; the alert goes to the handoff file. Routing happens in the api-server, so
  ``finalize`` is the same call whatever the robots: the fan-out is not timed there.
* After the task process has ended: the supervisor's ``task_process_ended`` taking that file and
  posting it to the api-server; alternately, to a second api-server whose ``default_conn_id`` names
  the three robots (it records one row for each).
"""

from __future__ import annotations

import itertools

from harness.environments import ENV_NAMES, PATCHED, UNPATCHED
from harness.errors import BenchError
from harness.processes import WorkerProcess
from harness.redaction import progress
from harness.report import ms, paragraph, table, verdict
from harness.robots import ONE_ROBOT_ENV, UNLIMITED, FanOutRobots, dingtalk_robot, requests_at
from harness.stats import alternating, diff_ci, stats

from benchmarks.outbox_airflow3 import RUN_SUPERVISOR, Airflow3, ApiServer, finalize_worker
from benchmarks.outbox_setup import (
    FAILURE_PATH_P99_MAX_MS,
    STORM_ALERTS,
    Profile,
    make_home,
    poster,
    robot_env,
)


def measure(af: Airflow3, profile: Profile, secret: str) -> dict:
    """finalize with the outbox backend in a process with the ORM blocked (patched vs stock), then
    the supervisor's post of the relayed alert against two running api-servers, alternately: one
    routing to the [dingding] robot alone, one with default_conn_id naming the 3 fan-out robots.

    A task process only hands its alert to the supervisor, whatever the routing: there the fan-out
    has nothing to add, so only the api-server's side (one outbox row per robot) is measured."""
    fan_out = FanOutRobots(secret)
    robot = dingtalk_robot("fp", secret, rate_limit=UNLIMITED)
    env = robot_env(robot, secret)
    tmp = af.tmp
    homes = {
        name: make_home(tmp / f"fp3-{name}", "sqlite:///" + str(tmp / f"fp3-{name}" / "unused.db"))
        for name in ENV_NAMES
    }
    workers: dict[str, WorkerProcess] = {}
    apis: dict[str, ApiServer] = {}
    supervisor: WorkerProcess | None = None
    out: dict = {}
    try:
        progress("failure path on 3.3.2: one finalize worker per environment, ORM blocked")
        for name in ENV_NAMES:
            workers[name] = finalize_worker(name, af.envs[name], homes[name], tmp / f"fp3-{name}.log")
        for name, worker in workers.items():
            wants = name == PATCHED
            info = worker.info
            if (
                info["failure_path_calls_hook"] != wants
                or info["ding_on_failure"] != wants
                or not info["orm_blocked"]
            ):
                raise BenchError(f"the {name} environment does not look {name} with the ORM blocked: {info}")
        samples: dict[str, list[float]] = {name: [] for name in ENV_NAMES}
        relayed = {name: 0 for name in ENV_NAMES}
        calls = {name: 0 for name in ENV_NAMES}
        progress(
            f"failure path on 3.3.2: {profile.fp_rounds * profile.fp_per_round} timed finalize calls "
            "per environment"
        )
        for order in alternating(profile.fp_rounds, ENV_NAMES):
            for name in order:
                answer = workers[name].call(
                    600, op="time", n=profile.fp_per_round, warmup=profile.fp_warmup, env=env
                )
                if answer["states"] != ["failed"]:
                    raise BenchError(f"{name}: finalize left the task in {answer['states']}")
                samples[name] += answer["samples_ms"]
                relayed[name] += answer["relayed"]
                calls[name] += answer["calls"]
        for worker in workers.values():
            worker.close()
        out["finalize"] = {
            **{name: stats(samples[name]) for name in ENV_NAMES},
            "added_p99_ci": diff_ci(samples[PATCHED], samples[UNPATCHED], 0.99),
            "relayed": relayed,
            "calls": calls,
            "robot_requests": len(robot.requests),
        }

        progress("failure path on 3.3.2: the supervisor's post against the api-server, 1 and 3 robots")
        # arm: (what the api-server routes the alert to, outbox rows per alert)
        arms = {"1 robot": (ONE_ROBOT_ENV, 1), "3 robots": (fan_out.env, len(fan_out.robots))}
        for arm, (routing, _) in arms.items():
            apis[arm] = ApiServer(
                af, af.env(robot, secret, **routing), tmp / f"fp3-api-server-{arm.replace(' ', '-')}.log"
            )
        supervisor = poster(0, af.envs[PATCHED], af.env(robot, secret), tmp / "fp3-supervisor.log").ready()
        per_call = profile.fp_per_round + profile.fp_warmup
        tries = iter(range(STORM_ALERTS))
        post: dict[str, list[float]] = {arm: [] for arm in arms}
        posted = dict.fromkeys(arms, 0)
        queued = dict.fromkeys(arms, 0)
        for order in alternating(profile.fp_rounds, tuple(arms)):
            for arm in order:
                batch = [[n, af.try_of(RUN_SUPERVISOR, n)] for n in itertools.islice(tries, per_call)]
                before = supervisor.call(60, op="counts")
                answer = supervisor.call(
                    600,
                    op="supervisor",
                    base_url=apis[arm].execution_url,
                    tries=batch,
                    warmup=profile.fp_warmup,
                )
                after = supervisor.call(60, op="counts")
                post[arm] += answer["samples_ms"]
                posted[arm] += answer["calls"]
                queued[arm] += sum(after[k] - before[k] for k in ("pending", "claimed", "sent", "dead"))
        for arm, (_, rows) in arms.items():
            if queued[arm] != rows * posted[arm]:
                raise BenchError(
                    f"the api-server routing to {arm} queued {queued[arm]} rows for {posted[arm]} "
                    f"alerts, not {rows} per alert\n{apis[arm].log()}"
                )
        out["supervisor_post"] = {
            **stats(post["1 robot"]),
            "queued": queued["1 robot"],
            "calls": posted["1 robot"],
        }
        out["supervisor_post_fan_out"] = {
            **stats(post["3 robots"]),
            "robots": fan_out.channels,
            "rows_per_call": arms["3 robots"][1],
            "queued": queued["3 robots"],
            "calls": posted["3 robots"],
            "added_p99_ci": diff_ci(post["3 robots"], post["1 robot"], 0.99),
            "robot_requests": requests_at(fan_out.robots.values()),
        }
        supervisor.call(60, op="settle")  # the next part's deliverer must not send these
    finally:
        for worker in workers.values():
            worker.close()
        if supervisor is not None:
            supervisor.close()
        for api in apis.values():
            api.stop()
        robot.stop()
        fan_out.stop()
    return out


def report(r: dict) -> list[str]:
    f, sup, fan = r["finalize"], r["supervisor_post"], r.get("supervisor_post_fan_out")
    u, p = f[UNPATCHED], f[PATCHED]
    added_p99 = p["p99_ms"] - u["p99_ms"]
    low, high = f["added_p99_ci"]
    text = verdict(added_p99 <= FAILURE_PATH_P99_MAX_MS, (low, high), FAILURE_PATH_P99_MAX_MS)
    rows = [
        [
            "finalize, outbox backend, ORM blocked",
            f"{ms(u['median_ms'])} / {ms(u['p99_ms'])}",
            f"{ms(p['median_ms'])} / {ms(p['p99_ms'])}",
            f"{p['median_ms'] - u['median_ms']:+.1f} ms",
            f"{added_p99:+.1f} ms",
            f"{low:+.1f} to {high:+.1f}",
            f"<= {FAILURE_PATH_P99_MAX_MS:g} ms",
            text,
        ],
        [
            "  with 3 robots (default_conn_id)",
            "the same call",
            "the same call",
            "none, by design",
            "none, by design",
            "",
            "",
            "(see below)",
        ],
    ]
    task_table = table(
        [
            "task process (on the task's path)",
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

    def post_row(what: str, figures: dict) -> list[str]:
        return [what, *(ms(figures[k]) for k in ("median_ms", "p99_ms", "max_ms"))]

    sup_rows = [post_row("task_process_ended: take the relayed alert, POST it to the api-server", sup)]
    if fan:
        low3, high3 = fan["added_p99_ci"]
        sup_rows += [
            post_row(f"  the same, the api-server routing it to 3 robots ({fan['robots']})", fan),
            [
                "  3 robots - 1 robot (p99 95% CI)",
                f"{fan['median_ms'] - sup['median_ms']:+.1f} ms",
                f"{fan['p99_ms'] - sup['p99_ms']:+.1f} ms ({low3:+.1f} to {high3:+.1f})",
                "",
            ],
        ]
    sup_table = table(
        ["supervisor, after the task process ended (off the task's path)", "p50", "p99", "max"], sup_rows
    )
    fan_note = (
        f" With 3 robots: {fan['n']} timed posts, alternating A B / B A with the 1-robot ones (each "
        f"api-server its own routing); rows that api-server queued {fan['queued']} = "
        f"{fan['rows_per_call']} per alert x {fan['calls']}; requests the 3 robots received "
        f"{fan['robot_requests']}."
        if fan
        else ""
    )
    return [
        "2. Failure path on 3.3.2: the task runner's finalize with ding_bot_backend = outbox_sender in a "
        "process with the ORM blocked (block_orm_access), against stock Airflow",
        "",
        task_table,
        "",
        sup_table,
        "",
        paragraph(
            f"finalize: {p['n']} + {u['n']} timed calls (patched + unpatched), alternating A B / B A; "
            f"alerts handed to the supervisor (handoff files): patched {f['relayed'][PATCHED]}/"
            f"{f['calls'][PATCHED]} calls, unpatched {f['relayed'][UNPATCHED]}; requests the robot "
            f"received {f['robot_requests']}. Supervisor: {sup['n']} timed posts (after "
            f"{sup['calls'] - sup['n']} warm-ups), one genuine failed try each with its own execution "
            f"token; rows the api-server queued {sup['queued']}/{sup['calls']}." + fan_note,
        ),
        paragraph(
            "3 robots on the task's path: finalize hands the alert to its supervisor as it is, whatever "
            "the routing (the robots are chosen, one outbox row each, in the api-server), so the fan-out "
            "adds nothing there; its cost is the api-server's, in the supervisor's post above.",
        ),
    ]
