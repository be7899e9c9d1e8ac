"""Times the failure path of a task's final failure inside one Airflow installation (patched or not).

Run with the Python of the environment under test, with ``AIRFLOW_HOME`` pointing at a migrated
SQLite home. It builds a one-task DAG in-process (the ding flags are passed through
``default_args``, which stock Airflow ignores; ``retries=0``, so every call is a final failure)
and times, with ``time.perf_counter``, what the patch series hooks into on that Airflow line:

* Airflow 2: ``ti.handle_failure(error=ValueError(...), session=session)`` on a TaskInstance of a
  real DagRun in the database, put back to RUNNING (committed, untimed) before each call;
* Airflow 3: the task runner's ``finalize(ti, FAILED, context, log, error)``, the function the
  worker's task process ends a failed try in, on a RuntimeTaskInstance (no database there).

Two ways to run it:

* ``python _failure_path_worker.py once --iterations 200 --warmup 10`` prints one JSON object
  with the samples, median and p99 (milliseconds), for a quick look by hand;
* ``python _failure_path_worker.py serve`` is what ``bench_failure_path.py`` uses: it keeps the
  process (and its DAG, DagRun and session) alive and answers JSON commands, one per line on
  stdin, so that the two environments can be measured alternately in one run. Everything the
  process itself prints (Airflow's logs) goes to ``--log-file`` instead of the protocol stream.

Standard library plus whatever the environment under test has; never imports the repository.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone


def summarize(samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)
    if not ordered:
        return {"n": 0, "median_ms": None, "p99_ms": None}
    p99_index = min(len(ordered) - 1, max(0, math.ceil(0.99 * len(ordered) - 1e-9) - 1))  # nearest rank
    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered),
        "p99_ms": ordered[p99_index],
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
    }


def _fail_deep(depth: int) -> None:
    if depth:
        _fail_deep(depth - 1)
    raise ValueError("benchmark failure: the task raised on purpose")


def make_error() -> ValueError:
    """A raised-and-caught exception, so it carries a real traceback like a failing task's."""
    try:
        _fail_deep(3)
    except ValueError as err:
        return err
    raise AssertionError("unreachable")


class FailurePathBench:
    """What both lines share: timing the failure path, its pieces, and it with the flags on and off.

    A subclass sets ``airflow_version``, ``task`` and ``ti`` up, and says how one try is failed
    (``reset`` untimed, ``fail`` timed), which hook the patched code calls, and how to call it.
    """

    #: The module and function the patched failure path imports its hook from at every call.
    hook_module = ""
    hook_name = ""
    #: The Airflow file the patch series puts that call into.
    patched_module = ""

    def info(self) -> dict:
        return {
            "airflow_version": self.airflow_version,
            "task_has_ding_flags": hasattr(self.task, "ding_on_failure"),
            "ding_on_failure": bool(getattr(self.task, "ding_on_failure", False)),
            "ding_on_retry": bool(getattr(self.task, "ding_on_retry", False)),
            "failure_path_calls_hook": _module_mentions(self.patched_module, self.hook_module),
            "setup_s": self.setup_s,
        }

    def one(self) -> tuple[float, str]:
        self.reset()
        error = make_error()
        t0 = time.perf_counter()
        state = self.fail(error)
        return (time.perf_counter() - t0) * 1000.0, state

    def run(self, n: int, warmup: int) -> dict:
        states = set()
        for _ in range(warmup):
            states.add(self.one()[1])
        samples = []
        for _ in range(n):
            ms, state = self.one()
            samples.append(ms)
            states.add(state)
        return {"samples_ms": samples, "states": sorted(states), "calls": n + warmup}

    def breakdown(self, n: int) -> dict:
        """Patched environment only: time the pieces of one alert, called directly, in this thread."""
        from airflow_ext import config, lines
        from airflow_ext.alert import Alert, AlertKind
        from airflow_ext.channels.dingtalk import DingTalkRobot
        from airflow_ext.delivery import deliver, run_within

        lines.choose()  # as the patched failure handling has it: the line's adapter is the core's port

        parts: dict[str, list[float]] = {
            k: []
            for k in (
                "alert_from_task_instance",
                "read_config_and_backend",
                "render_body",
                "http_post",
                "thread_start_join",
                "hook_total",
            )
        }
        self.reset()
        error = make_error()

        def timed(key, fn, *args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            parts[key].append((time.perf_counter() - t0) * 1000.0)
            return out

        def read_config():
            config.load_backend()
            return config.load_dingtalk_settings(), config.load_retry_policy()

        def post_once(settings, body, policy):
            robot = DingTalkRobot(settings)  # as the default backend does: the process's shared session
            return deliver(
                lambda t: robot.post(body, connect_timeout_s=t.connect_s, read_timeout_s=t.read_s), policy
            )

        for i in range(n + 3):
            self.ti.try_number = 10_000 + 2 * i  # distinct messages for the robot (msgUuid)
            alert = timed(
                "alert_from_task_instance", Alert.from_task_instance, self.ti, error, AlertKind.FAILURE
            )
            settings, policy = timed("read_config_and_backend", read_config)
            body = timed("render_body", DingTalkRobot(settings).body_for, alert)
            timed("http_post", post_once, settings, body, policy)
            timed("thread_start_join", run_within, lambda: None, 5.0)
            self.ti.try_number = 10_001 + 2 * i
            timed("hook_total", self.call_hook, error)
        # drop the warm-up calls
        result = {key: summarize(values[3:]) for key, values in parts.items()}
        result.update(self.in_situ(n))
        return result

    def in_situ(self, n: int) -> dict:
        """The failure path with the ding flags on and off, alternately, in this patched process, with
        the time spent in the hook itself (as the patched code calls it)."""
        module = importlib.import_module(self.hook_module)
        original = getattr(module, self.hook_name)
        hook_ms: list[float] = []

        def timed_hook(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                hook_ms.append((time.perf_counter() - t0) * 1000.0)

        setattr(module, self.hook_name, timed_hook)  # the patched code imports it at every call
        on: list[float] = []
        off: list[float] = []
        hook_on: list[float] = []
        per_round = max(1, n // 2)
        try:
            for round_ in range(4):
                for flag in (True, False) if round_ % 2 == 0 else (False, True):
                    self.task.ding_on_failure = flag
                    self.run(0, 2)
                    hook_ms.clear()
                    samples = self.run(per_round, 0)["samples_ms"]
                    if flag:
                        on.extend(samples)
                        hook_on.extend(hook_ms)
                    else:
                        off.extend(samples)
        finally:
            setattr(module, self.hook_name, original)
            self.task.ding_on_failure = True
        return {
            "hook_in_failure_path": summarize(hook_on),
            "failure_path_flags_on": summarize(on),
            "failure_path_flags_off": summarize(off),
        }

    def close(self) -> None:
        pass


class HandleFailureBench(FailurePathBench):
    """Airflow 2: ``TaskInstance.handle_failure`` of a TaskInstance in the database."""

    hook_module, hook_name = "airflow_ext.hooks", "send_ding_alert"
    patched_module = "airflow.models.taskinstance"

    def __init__(self) -> None:
        t0 = time.perf_counter()
        import airflow
        from airflow.models.dag import DAG
        from airflow.models.taskinstance import TaskInstance
        from airflow.operators.python import PythonOperator
        from airflow.utils.session import create_session
        from airflow.utils.state import DagRunState, TaskInstanceState
        from airflow.utils.types import DagRunType

        # The `airflow` CLI loads the auth manager, whose FAB models define the ab_user table that
        # task_instance_note refers to; without it SQLAlchemy cannot flush a TaskInstance.
        try:
            import airflow.providers.fab.auth_manager.models  # noqa: F401
        except ImportError:
            pass

        self.airflow_version = airflow.__version__
        self.TaskInstanceState = TaskInstanceState
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        dag_id = f"bench_handle_failure_{os.getpid()}"
        self.dag = DAG(
            dag_id,
            schedule=None,
            start_date=start,
            catchup=False,
            # Passed through default_args so the very same code runs on stock Airflow.
            default_args={"retries": 0, "ding_on_failure": True, "ding_on_retry": True},
        )
        self.task = PythonOperator(task_id="fails", python_callable=_fail_deep, op_args=[3], dag=self.dag)
        self.dag.sync_to_db()
        self._session_cm = create_session()
        self.session = self._session_cm.__enter__()
        run_id = f"bench__{os.getpid()}"
        self.dagrun = self.dag.create_dagrun(
            run_id=run_id,
            state=DagRunState.RUNNING,
            execution_date=start,
            data_interval=(start, start),
            run_type=DagRunType.MANUAL,
            session=self.session,
        )
        self.session.commit()
        ti = self.dagrun.get_task_instance(self.task.task_id, session=self.session)
        assert isinstance(ti, TaskInstance), ti
        ti.refresh_from_task(self.task)
        self.ti = ti
        self.try_number = 0
        self.setup_s = time.perf_counter() - t0

    def reset(self) -> None:
        # A new try each time: every alert is a distinct message (its msgUuid changes with the try).
        self.try_number += 1
        self.ti.state = self.TaskInstanceState.RUNNING
        self.ti.try_number = self.try_number
        self.ti.end_date = None
        self.session.merge(self.ti)
        self.session.commit()

    def fail(self, error: BaseException) -> str:
        self.ti.handle_failure(error=error, session=self.session)
        state = getattr(self.ti.state, "value", self.ti.state)
        self.session.commit()
        return str(state)

    def call_hook(self, error: BaseException) -> None:
        from airflow_ext.adapters.airflow2 import send_ding_alert

        self.ti.state = self.TaskInstanceState.FAILED  # as _handle_failure leaves it before the hook
        send_ding_alert(task_instance=self.ti, task=self.task, error=error)

    def close(self) -> None:
        self._session_cm.__exit__(None, None, None)


class FinalizeBench(FailurePathBench):
    """Airflow 3: the task runner's ``finalize`` of a RuntimeTaskInstance, as a failed try ends."""

    hook_module, hook_name = "airflow_ext.adapters.airflow3", "task_finalized"
    patched_module = "airflow.sdk.execution_time.task_runner"

    def __init__(self) -> None:
        t0 = time.perf_counter()
        import uuid

        import airflow
        import structlog
        from airflow.providers.standard.operators.python import PythonOperator
        from airflow.sdk import DAG
        from airflow.sdk.api.datamodels._generated import TaskInstanceState
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance, finalize

        self.airflow_version = airflow.__version__
        self.FAILED = TaskInstanceState.FAILED
        self.finalize = finalize
        self.log = structlog.get_logger(logger_name="task")
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.dag = DAG(
            f"bench_finalize_{os.getpid()}",
            schedule=None,
            start_date=start,
            catchup=False,
            # Passed through default_args so the very same code runs on stock Airflow.
            default_args={"retries": 0, "ding_on_failure": True, "ding_on_retry": True},
        )
        self.task = PythonOperator(task_id="fails", python_callable=_fail_deep, op_args=[3], dag=self.dag)
        self.ti = RuntimeTaskInstance.model_construct(
            id=uuid.uuid4(),
            task_id=self.task.task_id,
            dag_id=self.dag.dag_id,
            run_id=f"bench__{os.getpid()}",
            try_number=0,
            dag_version_id=uuid.uuid4(),
            map_index=-1,
            hostname="bench-worker",
            task=self.task,
            max_tries=0,
            start_date=datetime.now(timezone.utc),
            state=TaskInstanceState.RUNNING,
        )
        self.setup_s = time.perf_counter() - t0

    def reset(self) -> None:
        # A new try each time: every alert is a distinct message (its msgUuid changes with the try).
        self.ti.try_number += 1
        self.ti.end_date = None

    def fail(self, error: BaseException) -> str:
        self.ti.end_date = datetime.now(timezone.utc)
        self.finalize(self.ti, self.FAILED, {"ti": self.ti}, self.log, error)
        return self.FAILED.value

    def call_hook(self, error: BaseException) -> None:
        from airflow_ext.adapters.airflow3 import task_finalized

        task_finalized(self.ti, self.FAILED, error)


def make_bench() -> FailurePathBench:
    from airflow import __version__

    return FinalizeBench() if __version__.startswith("3.") else HandleFailureBench()


def _module_mentions(module_name: str, text: str) -> bool:
    """Whether the source of ``module_name`` (found without importing it) mentions ``text``."""
    spec = importlib.util.find_spec(module_name)
    try:
        with open(spec.origin, encoding="utf-8") as fh:
            return text in fh.read()
    except (OSError, TypeError, AttributeError):
        return False


def private_stdout(log_file: str | None):
    """Keep a private copy of the real stdout for results, then send fd 1 and 2 (and with them every
    log handler Airflow sets up) to ``log_file`` (None: to stderr)."""
    proto = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    if log_file is None:
        os.dup2(2, 1)
    else:
        log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
    return proto


def serve_protocol(
    log_file: str | None,
    setup: Callable[[], dict],
    handle: Callable[[str, dict], dict | None],
    close: Callable[[], None] | None = None,
) -> int:
    """The workers' protocol with their driver: one JSON command a line on stdin, one JSON answer a
    line on the private stdout (the logs go to ``log_file``).

    ``setup()`` gives the first answer's fields; ``handle(op, command)`` each answer's fields, None
    for an op it does not know. What either raises is answered as a failure, never a crash;
    ``{"op": "quit"}`` (or the end of stdin) ends the loop, then ``close()`` runs.
    """
    proto = private_stdout(log_file)

    def reply(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        info = setup()
    except Exception as err:  # reported to the driver, which shows the log
        reply({"ok": False, "error": f"setup failed: {type(err).__name__}: {err}"})
        return 1
    reply({"ok": True, **info})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "quit":
            break
        try:
            answer = handle(op, cmd)
            reply(
                {"ok": True, **answer} if answer is not None else {"ok": False, "error": f"unknown op {op!r}"}
            )
        except Exception as err:
            reply({"ok": False, "error": f"{op} failed: {type(err).__name__}: {err}"})
    if close is not None:
        close()
    return 0


def serve(log_file: str) -> int:
    bench: FailurePathBench | None = None

    def setup() -> dict:
        nonlocal bench
        bench = make_bench()
        return bench.info()

    def handle(op: str, cmd: dict) -> dict | None:
        for key, value in (cmd.get("env") or {}).items():
            os.environ[key] = value  # Airflow's conf reads AIRFLOW__* variables on every get()
        if op == "time":
            return bench.run(int(cmd["n"]), int(cmd.get("warmup", 0)))
        if op == "breakdown":
            return {"parts": bench.breakdown(int(cmd["n"]))}
        if op == "in_situ":  # only the flags on/off part of breakdown: no direct robot calls
            return {"parts": bench.in_situ(int(cmd["n"]))}
        return None

    return serve_protocol(log_file, setup, handle, close=lambda: bench.close())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    once = sub.add_parser("once", help="time N calls and print a JSON summary")
    once.add_argument("--iterations", type=int, default=200)
    once.add_argument("--warmup", type=int, default=10)
    srv = sub.add_parser("serve", help="answer JSON commands on stdin (used by bench_failure_path.py)")
    srv.add_argument("--log-file", default=os.devnull)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args.log_file)
    out = private_stdout(None)
    bench = make_bench()
    result = bench.run(args.iterations, args.warmup)
    bench.close()
    out.write(
        json.dumps({**bench.info(), **summarize(result["samples_ms"]), "states": result["states"]}) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
