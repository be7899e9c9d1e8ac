"""What both Airflow lines share when a worker times the failure path of a task's final failure:
the timed calls, the pieces of one alert, and the failure path with the ding flags on and off.

Runs with the Python of the environment under test (``failure_path_worker.py``); the subclass of
each line (``timed_failure_lines.py``) says how one try is failed. Standard library plus whatever
the environment under test has; never imports the repository.
"""

from __future__ import annotations

import importlib
import importlib.util
import time

from worker_protocol import summarize


def fail_deep(depth: int) -> None:
    if depth:
        fail_deep(depth - 1)
    raise ValueError("benchmark failure: the task raised on purpose")


def make_error() -> ValueError:
    """A raised-and-caught exception, so it carries a real traceback like a failing task's."""
    try:
        fail_deep(3)
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
            "failure_path_calls_hook": module_mentions(self.patched_module, self.hook_module),
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


def module_mentions(module_name: str, text: str) -> bool:
    """Whether the source of ``module_name`` (found without importing it) mentions ``text``."""
    spec = importlib.util.find_spec(module_name)
    try:
        with open(spec.origin, encoding="utf-8") as fh:
            return text in fh.read()
    except (OSError, TypeError, AttributeError):
        return False
