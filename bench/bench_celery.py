"""Scale-out on CeleryExecutor: alerts delivered per minute, and where a failed try's time goes,
with 1, 2 and 4 Celery workers and 1 or 2 deliverers, side by side in one run.

Each configuration is a fresh deployment on this machine (tests/e2e/celery_cluster.py: Redis as
broker, PostgreSQL as metadata database and result backend, the scheduler, and on Airflow 3 the
api-server and the dag-processor), a fresh robot with DingTalk's own limit (20 messages a minute,
so no configuration inherits another's budget), and the outbox backend. It triggers one run of
bench/celery_dags/dingbot_bench_celery.py (STORM_SIZE task instances that fail at once) and
watches until every failure is named in the group. It prints figures; it asserts nothing about
time, and exits non-zero only if the benchmark could not run (or a failure never arrived).

Runs with the Python of an environment where the line's Airflow is installed and patched, as
tox's bench environments are (`tox -e bench`, `tox -e bench-airflow2`); `--quick` runs fewer
configurations with fewer tasks.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from harness.lines import LINES  # noqa: E402
from harness.redaction import progress  # noqa: E402
from harness.report import emit, paragraph, table  # noqa: E402
from harness.stats import percentile  # noqa: E402
from sqlalchemy import text  # noqa: E402

from airflow_ext.fake_robot import FakeRobot  # noqa: E402
from tests.conftest import AIRFLOW_LINE, BIN, ROBOT_KEYWORD, ROBOT_SECRET, robot_env, run  # noqa: E402
from tests.e2e.celery_cluster import SERVICES, Worker, celery_env, redis_broker, stop_cluster  # noqa: E402
from tests.e2e.scheduled import metadata_engine, start, start_services, tail  # noqa: E402
from tests.e2e.test_storm_localexecutor import all_named, busiest_window, refused  # noqa: E402

DAGS = Path(__file__).resolve().parent / "celery_dags"
DAG_ID = "dingbot_bench_celery"
BROKER_DB = 14
CONCURRENCY = 4  # task slots per worker, as the e2e tests have them
FULL = {"size": 80, "configs": [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2), (4, 2)]}
QUICK = {"size": 40, "configs": [(1, 1), (2, 2), (4, 2)]}
TIMEOUT_S = 420
WINDOW_S = 60.0


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def hook_seconds(paths: list[Path]) -> list[float]:
    """The alert hook's own time per try, as its log line gives it ("queued in the outbox ... in
    0.02 s"): in the task logs (2.11) or the workers' output (3.x, the supervisor's)."""
    found = []
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if "failure alert for" in line and "queued in the outbox" in line and " in " in line:
                try:
                    found.append(float(line.rsplit(" in ", 1)[1].split()[0]))
                except ValueError:
                    continue
    return found


def one_run(workers: int, deliverers: int, size: int, database_url: str, engine, tmp: Path) -> dict:
    run_id = f"bench_w{workers}_d{deliverers}"
    home = tmp / "home"
    with (
        redis_broker(BROKER_DB) as broker_url,
        FakeRobot(
            access_token=f"bench-{run_id}", secret=ROBOT_SECRET, keyword=ROBOT_KEYWORD, dedup_msg_uuid=False
        ) as robot,
    ):
        env = celery_env(
            base_env(home),
            home,
            database_url,
            broker_url,
            **robot_env(robot, AIRFLOW__DINGBOT__DING_BOT_BACKEND="airflow_ext.dingbot.outbox_sender"),
            AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
            AIRFLOW__CORE__PARALLELISM=str(max(workers, 1) * CONCURRENCY),
            AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=str(size),
            AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY="64",
            DINGBOT_BENCH_STORM_SIZE=str(size),
        )
        done = run([str(BIN / "airflow"), "dags", "reserialize"], env)
        if done.returncode:
            raise SystemExit(f"airflow dags reserialize failed:\n{done.stdout}{done.stderr}")
        logs_dir = tmp / run_id
        logs_dir.mkdir()
        processes, logs = start_services(env, logs_dir, SERVICES[AIRFLOW_LINE])
        try:
            pool = [
                Worker(env, logs_dir, f"node-{n}", ("default",), CONCURRENCY) for n in range(1, workers + 1)
            ]
            processes += [w.process for w in pool]
            for worker in pool:
                worker.wait_ready()
            delivering = [
                start([str(BIN / "airflow-ext"), "deliver"], env, logs_dir / f"deliver-{n}.log")
                for n in range(deliverers)
            ]
            processes += delivering
            triggered = time.time()
            done = run([str(BIN / "airflow"), "dags", "trigger", DAG_ID, "--run-id", run_id], env)
            if done.returncode:
                raise SystemExit(f"trigger failed:\n{done.stdout}{done.stderr}")
            deadline = time.monotonic() + TIMEOUT_S
            named_at: dict[int, float] = {}
            while len(named_at) < size:
                for message in robot.messages:
                    for n in all_named([message]):
                        if n.run == run_id:
                            named_at.setdefault(n.map_index, message["received_at"])
                if refused(robot.requests) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT map_index, state, queued_dttm, start_date, end_date, hostname "
                        "FROM task_instance WHERE dag_id = :dag AND run_id = :run"
                    ),
                    {"dag": DAG_ID, "run": run_id},
                ).all()
            worker_logs = [w.log for w in pool]
            task_logs = [p for p in Path(home, "logs").rglob("*") if f"run_id={run_id}" in str(p)]
            hooks = hook_seconds(worker_logs + task_logs)
            messages, requests = robot.messages, robot.requests
        finally:
            stop_cluster(processes)
    if len(named_at) < size:
        raise SystemExit(
            f"{run_id}: {size - len(named_at)} failures never reached the robot "
            f"(refused: {refused(requests)[:3]})\n"
            + "\n".join(f"--- {k}:\n{tail(v, 1500)}" for k, v in logs.items())
        )
    ended = {r.map_index: r.end_date.timestamp() for r in rows if r.end_date}
    queue_wait = [
        (r.start_date - r.queued_dttm).total_seconds() for r in rows if r.start_date and r.queued_dttm
    ]
    run_time = [(r.end_date - r.start_date).total_seconds() for r in rows if r.end_date and r.start_date]
    to_group = [named_at[i] - ended[i] for i in named_at if i in ended]
    first_end, last_named = min(ended.values()), max(named_at.values())
    times = [m["received_at"] for m in messages]
    return {
        "workers": workers,
        "deliverers": deliverers,
        "size": size,
        "states": collections.Counter(r.state for r in rows),
        "hosts": len({r.hostname for r in rows}),
        "all_ended_s": max(ended.values()) - triggered,
        "all_named_s": last_named - triggered,
        "per_minute": size * 60.0 / max(last_named - first_end, 1e-9),
        "queue_wait": queue_wait,
        "run_time": run_time,
        "hook": hooks,
        "to_group": to_group,
        "messages": len(messages),
        "busiest": busiest_window(times, WINDOW_S),
        "refused": len(refused(requests)),
    }


def fmt_s(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {percentile(values, 0.95):.2f}"


def report(results: list[dict], version: str, elapsed_s: float, size: int) -> str:
    header = [
        "workers x deliverers",
        "states",
        "hosts",
        "all failed (s)",
        "all in group (s)",
        "alerts / min",
        "messages (most in 60 s)",
        "throttled",
        "queued->running p50/p95 (s)",
        "try run p50/p95 (s)",
        "alert hook p50/p95 (s)",
        "failed->in group p50/p95 (s)",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                f"{r['workers']} x {r['deliverers']}",
                " ".join(f"{k} {v}" for k, v in sorted(r["states"].items())),
                str(r["hosts"]),
                f"{r['all_ended_s']:.1f}",
                f"{r['all_named_s']:.1f}",
                f"{r['per_minute']:.0f}",
                f"{r['messages']} ({r['busiest']})",
                str(r["refused"]),
                fmt_s(r["queue_wait"]),
                fmt_s(r["run_time"]),
                fmt_s(r["hook"]),
                fmt_s(r["to_group"]),
            ]
        )
    lines = [
        f"airflow-dingbot Celery benchmark: Airflow {version}, {os.cpu_count()} CPUs, {elapsed_s:.0f} s; "
        f"{size} task instances failing at once per configuration, {CONCURRENCY} slots per worker, "
        "outbox backend, one robot at DingTalk's 20 messages per 60 s",
        "",
        table(header, rows),
        "",
        paragraph(
            "all failed / all in group: seconds from the trigger until the last try ended / until the "
            "last failure was named in an accepted message. alerts / min: failures named per minute, "
            "from the first try's end to the last failure named. queued->running: Airflow's queued time "
            "to the try's start (scheduler, broker, worker pick-up); try run: start to end of the failed "
            "try (on 2.11 failure handling included; on 3.x the end is the state the supervisor "
            "reports); alert hook: the alert's own time as its log line gives it, 10 ms resolution "
            "(2.11: building it and recording it in the outbox, inside the try; 3.x: the supervisor's "
            "post to the api-server, after the try's end); failed->in group: the try's end to the "
            "message naming it (deliverer's poll, budget, digest). p95 is the nearest-rank percentile."
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 configurations of 40 tasks")
    parser.add_argument("--json", metavar="FILE", help="also write every figure and sample to FILE as JSON")
    # tox passes every benchmark the same arguments: the others' options are theirs, not errors here.
    args, _ = parser.parse_known_args(argv)
    profile = QUICK if args.quick else FULL
    check = run([str(BIN / "airflow-ext"), "patch", "check"], base_env(Path(tempfile.gettempdir())))
    if check.returncode:
        raise SystemExit(f"the Airflow of this Python is not patched:\n{check.stdout}{check.stderr}")
    version = LINES[AIRFLOW_LINE].version
    started = time.monotonic()
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="dingbot-bench-celery-") as tmp,
        metadata_engine() as (url, engine),
    ):
        for workers, deliverers in profile["configs"]:
            progress(
                f"Celery on {version}: {workers} workers, {deliverers} deliverers, {profile['size']} failures"
            )
            results.append(one_run(workers, deliverers, profile["size"], url, engine, Path(tmp)))
    text = report(results, version, time.monotonic() - started, profile["size"])
    emit(text, {"airflow": version, "results": results}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
