#!/usr/bin/env python3
"""What the airflow-dingbot patch series costs: stock Airflow against patched, side by side.

    python bench/bench_failure_path.py [--airflow-line 3] [--quick] [--json FILE]
    tox -e bench [-- --quick]            (Airflow 3.3.2; tox -e bench-airflow2 for 2.11.2)

The script builds (or reuses) two virtual environments under
``<repo>/.bench/envs/<airflow version>/<hash>/`` with ``uv``, keyed by a hash of the lock file and
the project's source: both get the pinned Airflow from that line's
``requirements/lock-airflow-<version>-py3.11.txt`` and this project (non-editable); only
``patched`` then gets ``airflow-ext patch apply`` (verified with ``airflow-ext patch check``).
Whatever environment runs this script is only the driver: it is never measured. The line is
``--airflow-line``, else ``DINGBOT_AIRFLOW_LINE`` (the tox environments set it), else 3.

It then measures, alternating between the two environments so drift hits both alike:

1. the failure path of a final failure with ``ding_on_failure=True`` per call (Airflow 2:
   ``TaskInstance.handle_failure``; Airflow 3: the task runner's ``finalize``), with a healthy
   local DingTalk-compatible robot (signature and keyword security on), and with a robot that
   accepts the connection and never answers, under ``[dingbot] timeout = 2``; beside the healthy
   robot, in the same rounds (A B C / C B A), the patched environment with ``[dingbot]
   default_conn_id`` naming three healthy robots given as Connections (a DingTalk and a Feishu
   robot, signed and with the keyword, and a WeCom robot): the direct backend's fan-out, one
   message on each robot at the same time;
2. importing the module a task process starts from (Airflow 2: ``airflow``; Airflow 3:
   ``airflow.sdk.execution_time.task_runner``) in fresh processes;
3. parsing a generated 1000-task DAG file with ``DagBag`` in fresh processes.

It prints a table of figures with PASS/MISS for each target. The targets are informational:
the exit status is 0 unless the benchmark itself could not run. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import platform
import random
import secrets
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / ".bench"
ENVS_DIR = BENCH_DIR / "envs"
WORKER = Path(__file__).resolve().parent / "_failure_path_worker.py"
DAGBAG_WORKER = Path(__file__).resolve().parent / "_dagbag_worker.py"
#: Bump when the way the environments are built changes, to force a rebuild.
ENV_RECIPE = "2"
PYTHON_SERIES = "3.11"

UNPATCHED, PATCHED = "unpatched", "patched"
ENV_NAMES = (UNPATCHED, PATCHED)
#: The patched environment with ``[dingbot] default_conn_id`` naming the three fan-out robots.
FAN_OUT = "patched, 3 robots"

# Targets (informational).
HEALTHY_ADDED_MEDIAN_MAX_MS = 15.0
SILENT_DEADLINE_S = 2.0
SILENT_SLACK_S = 0.2
RATIO_MAX = 1.01

ROBOT_KEYWORD = "Airflow"
DAG_TASKS = 1000


@dataclass(frozen=True)
class Line:
    """What differs between the Airflow lines for this benchmark."""

    version: str
    #: What the patch series hooks the alert into, and the hook it calls there.
    failure_path: str
    hook: str
    #: The module a task process starts from: its import is what the patch may slow down.
    import_module: str
    #: The operator module of the generated DAG, and how the DAG file imports it.
    operator_module: str
    dag_imports: str

    @property
    def lock(self) -> Path:
        return REPO / "requirements" / f"lock-airflow-{self.version}-py3.11.txt"


LINES = {
    "2": Line(
        "2.11.2",
        "handle_failure",
        "send_ding_alert",
        "airflow",
        "airflow.operators.empty",
        "from airflow import DAG\nfrom airflow.operators.empty import EmptyOperator",
    ),
    "3": Line(
        "3.3.2",
        "finalize",
        "task_finalized",
        "airflow.sdk.execution_time.task_runner",
        "airflow.providers.standard.operators.empty",
        "from airflow.providers.standard.operators.empty import EmptyOperator\nfrom airflow.sdk import DAG",
    ),
}
#: The line this run measures; main() sets it from --airflow-line.
LINE = LINES["3"]


@dataclass(frozen=True)
class Profile:
    name: str
    healthy_rounds: int  # rounds per env; each round is healthy_per_round timed calls
    healthy_per_round: int
    healthy_warmup: int  # untimed calls before every round
    silent_calls: int  # per env
    breakdown_calls: int
    import_runs: int  # per env
    parse_runs: int  # fresh processes per env
    parse_repeats: int  # extra parses per process, for the steadier "repeat parse" figure


FULL = Profile("full", 4, 50, 5, 5, 50, 60, 30, 3)
QUICK = Profile("quick", 2, 30, 3, 2, 30, 12, 6, 2)


class BenchError(Exception):
    """The benchmark itself could not run (not: a target was missed)."""


# ----------------------------------------------------------------------------------------------
# Output hygiene: the robot's access token and signing secret never reach the terminal.
# ----------------------------------------------------------------------------------------------

_SECRETS: list[str] = []


def redact(text: str) -> str:
    for value in _SECRETS:
        if value:
            text = text.replace(value, "***")
    return text


def progress(message: str) -> None:
    print(f"[bench] {redact(message)}", file=sys.stderr, flush=True)


def tail(text: str, lines: int = 25) -> str:
    return redact("\n".join(text.rstrip().splitlines()[-lines:]))


# ----------------------------------------------------------------------------------------------
# Environments
# ----------------------------------------------------------------------------------------------


def uv_command() -> list[str]:
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    found = shutil.which("uv")
    if found:
        return [found]
    raise BenchError(
        "uv is needed to build the benchmark environments: `pip install uv` (it is in the lock file)"
    )


def _source_files() -> list[Path]:
    files = [LINE.lock, REPO / "pyproject.toml"]
    for top in (REPO / "airflow_ext", REPO / "patches"):
        files.extend(
            p
            for p in sorted(top.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
    return files


def source_hash(python: str) -> str:
    digest = hashlib.sha256()
    digest.update(f"recipe={ENV_RECIPE};python={python}\0".encode())
    for path in _source_files():
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def run(
    cmd: list[str], what: str, *, env: dict | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: no result within {timeout:.0f} s") from None
    if result.returncode != 0:
        raise BenchError(f"{what} failed (exit {result.returncode}):\n{tail(result.stdout + result.stderr)}")
    return result


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if not found:
        raise BenchError(f"no site-packages in the {venv.name} environment")
    return found[0]


def _installed_matches_source(venv: Path) -> bool:
    """The wheel uv installed carries exactly this checkout's airflow_ext (no stale cached build)."""
    installed = site_packages(venv) / "airflow_ext"
    for src in sorted((REPO / "airflow_ext").rglob("*.py")):
        if "__pycache__" in src.parts:
            continue
        dst = installed / src.relative_to(REPO / "airflow_ext")
        if not dst.is_file() or dst.read_bytes() != src.read_bytes():
            return False
    return True


def build_env(venv: Path, *, patched: bool, uv: list[str], python: str) -> None:
    name = venv.name
    if venv.exists():
        shutil.rmtree(venv)
    progress(f"building the {name} environment with uv")
    run([*uv, "venv", "--quiet", "--python", python, str(venv)], f"uv venv ({name})")
    py = str(venv_python(venv))
    run(
        [*uv, "pip", "install", "--quiet", "--python", py, "--compile-bytecode", "-r", str(LINE.lock)],
        f"uv pip install -r {LINE.lock.name} ({name})",
    )
    run(
        [
            *uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            py,
            "--compile-bytecode",
            # A local directory is cached by uv on pyproject.toml alone: force a fresh build.
            "--reinstall-package",
            "airflow-dingbot",
            "--refresh-package",
            "airflow-dingbot",
            str(REPO),
        ],
        f"uv pip install <repo> ({name})",
    )
    if not _installed_matches_source(venv):
        raise BenchError(f"the airflow_ext installed in the {name} environment differs from this checkout")
    ext = str(venv / "bin" / "airflow-ext")
    env = airflow_env(venv, home=None)
    if patched:
        run([ext, "patch", "apply"], "airflow-ext patch apply", env=env)
        run([ext, "patch", "check"], "airflow-ext patch check (after apply)", env=env)
    else:
        check = subprocess.run([ext, "patch", "check"], env=env, capture_output=True, text=True)
        if check.returncode == 0:
            raise BenchError("the unpatched environment reports the patch series as applied")
    # Patching drops the bytecode of the files it changed; compile everything again, in both
    # environments alike, so no measured import compiles source.
    run(
        [py, "-m", "compileall", "-q", "-j", "0", str(site_packages(venv) / "airflow")],
        f"compileall ({name})",
    )
    (venv / ".bench-ready").write_text(f"{name}\n", encoding="utf-8")


def ensure_envs() -> dict[str, Path]:
    python = sys.executable if sys.version_info[:2] == (3, 11) else PYTHON_SERIES
    key = source_hash(platform.python_version() if python == sys.executable else PYTHON_SERIES)
    line_dir = ENVS_DIR / LINE.version
    root = line_dir / key
    envs = {name: root / name for name in ENV_NAMES}
    missing = [name for name, venv in envs.items() if not (venv / ".bench-ready").is_file()]
    if missing:
        uv = uv_command()
        for name in missing:
            build_env(envs[name], patched=(name == PATCHED), uv=uv, python=python)
        for stale in line_dir.iterdir():  # this line's environments of older sources
            if stale.is_dir() and stale.name != key:
                shutil.rmtree(stale, ignore_errors=True)
    else:
        progress(f"reusing the environments in .bench/envs/{LINE.version}/{key}")
    # Cheap re-checks on every run: the patched env is patched, the other is not.
    run(
        [str(envs[PATCHED] / "bin" / "airflow-ext"), "patch", "check"],
        "airflow-ext patch check",
        env=airflow_env(envs[PATCHED], home=None),
    )
    unpatched = subprocess.run(
        [str(envs[UNPATCHED] / "bin" / "airflow-ext"), "patch", "check"],
        env=airflow_env(envs[UNPATCHED], home=None),
        capture_output=True,
        text=True,
    )
    if unpatched.returncode == 0:
        raise BenchError("the unpatched environment reports the patch series as applied; delete .bench/")
    return envs


#: With --postgres: each measured environment's home -> its metadata database (else SQLite).
_DATABASE_FOR_HOME: dict[Path, str] = {}


def fresh_postgres_databases(server_url: str, homes: dict[str, Path]) -> None:
    """One empty PostgreSQL database per measured environment, on the server ``server_url`` names."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name, home in homes.items():
                database = f"dingbot_bench_{LINE.version.replace('.', '_')}_{name}"
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}"'))
                conn.execute(text(f'CREATE DATABASE "{database}"'))
                _DATABASE_FOR_HOME[home] = server.set(database=database).render_as_string(hide_password=False)
    except Exception as err:
        raise BenchError(f"--postgres {server.render_as_string()}: {type(err).__name__}: {err}") from None
    finally:
        admin.dispose()


def airflow_env(venv: Path, home: Path | None, **extra: str) -> dict[str, str]:
    """A clean environment for a process of ``venv``: none of the driver's AIRFLOW*/PYTHON* settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "PYTHON", "VIRTUAL_ENV", "CONDA_", "__PYVENV"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    for key in ("NO_PROXY", "no_proxy"):  # the robot is local: never through a proxy
        env[key] = ",".join(x for x in (env.get(key, ""), "127.0.0.1", "localhost") if x)
    if home is not None:
        env["AIRFLOW_HOME"] = str(home)
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(home / "dags")
        if home in _DATABASE_FOR_HOME:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = _DATABASE_FOR_HOME[home]
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    env.update(extra)
    return env


def migrate(envs: dict[str, Path], homes: dict[str, Path]) -> None:
    database = "PostgreSQL" if _DATABASE_FOR_HOME else "SQLite"
    progress(f"airflow db migrate ({database}), once per environment")
    procs = {}
    for name, venv in envs.items():
        homes[name].mkdir(parents=True)
        (homes[name] / "dags").mkdir()
        procs[name] = subprocess.Popen(
            [str(venv / "bin" / "airflow"), "db", "migrate"],
            env=airflow_env(venv, homes[name]),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise BenchError(f"airflow db migrate ({name}) failed:\n{tail(out)}")


# ----------------------------------------------------------------------------------------------
# The fan-out robots: three channels, as Connections
# ----------------------------------------------------------------------------------------------

#: (conn id, conn type, the fake's module and class, whether the channel signs and has a keyword)
FAN_OUT_ROBOTS = (
    ("bench_dingtalk", "dingding", "airflow_ext.fake_robot", "FakeRobot", True),
    ("bench_wecom", "wecom", "airflow_ext.channels.wecom.fake", "FakeWeComRobot", False),
    ("bench_feishu", "feishu", "airflow_ext.channels.feishu.fake", "FakeFeishuRobot", True),
)
#: What turns the fan-out off again in a worker (its os.environ keeps what earlier calls set):
#: no default_conn_id, so the alert goes to the [dingding] robot alone.
ONE_ROBOT_ENV = {"AIRFLOW__DINGBOT__DEFAULT_CONN_ID": ""}


def accepted(robot) -> int:
    """The messages a fake robot accepted so far."""
    return sum(1 for r in robot.requests if r["errcode"] == 0)


class FanOutRobots:
    """Three healthy local robots of three channels, each an ``AIRFLOW_CONN_<ID>`` Connection, all
    chosen by ``[dingbot] default_conn_id`` (``env``): DingTalk and Feishu sign and check the keyword,
    WeCom (which has neither) does not. No rate limit of theirs ever refuses a benchmark alert."""

    def __init__(self, secret: str) -> None:
        sys.path.insert(0, str(REPO))  # the fakes are standard library only
        self.robots: dict = {}
        self.env = {"AIRFLOW__DINGBOT__DEFAULT_CONN_ID": ",".join(robot[0] for robot in FAN_OUT_ROBOTS)}
        try:
            for conn_id, conn_type, module, class_name, signed in FAN_OUT_ROBOTS:
                token = f"{conn_type}-{secrets.token_hex(12)}"
                _SECRETS.append(token)
                fake = getattr(importlib.import_module(module), class_name)
                limits = {"per_second": 0} if conn_type == "feishu" else {}
                robot = fake(
                    token,
                    secret if signed else None,
                    ROBOT_KEYWORD if signed else None,
                    rate_limit=10**9,
                    **limits,
                )
                self.robots[conn_id] = robot.start()
                _SECRETS.append(robot.url)
                conn: dict = {"conn_type": conn_type, "host": robot.base_url, "password": token}
                if signed:
                    conn["extra"] = {"secret": secret, "keyword": ROBOT_KEYWORD}
                self.env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
        except BaseException:
            self.stop()
            raise

    @property
    def channels(self) -> str:
        return ", ".join(robot.CHANNEL_NAME for robot in self.robots.values())

    def accepted(self) -> dict[str, int]:
        return {conn_id: accepted(robot) for conn_id, robot in self.robots.items()}

    def stop(self) -> None:
        for robot in self.robots.values():
            robot.stop()


# ----------------------------------------------------------------------------------------------
# The failure-path workers
# ----------------------------------------------------------------------------------------------


class Worker:
    """One long-lived ``_failure_path_worker.py serve`` process in one environment."""

    def __init__(self, name: str, venv: Path, home: Path, log_file: Path) -> None:
        self.name = name
        self.log_file = log_file
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [str(venv_python(venv)), str(WORKER), "serve", "--log-file", str(log_file)],
                env=airflow_env(venv, home),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self._buffer = b""
        self.info = self._read(timeout=300, what="start-up")

    def _log_tail(self) -> str:
        try:
            return tail(self.log_file.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return "(no log)"

    def _read(self, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise BenchError(
                        f"{self.name} worker: no answer to {what} within {timeout:.0f} s\n{self._log_tail()}"
                    )
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(timeout=10)
                    raise BenchError(
                        f"{self.name} worker exited (code {self.proc.returncode}) during {what}\n"
                        f"{self._log_tail()}"
                    )
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if not answer.get("ok"):
            raise BenchError(f"{self.name} worker: {redact(str(answer.get('error')))}\n{self._log_tail()}")
        return answer

    def call(self, timeout: float, **cmd) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        return self._read(timeout, what=cmd.get("op", "?"))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def alternating(rounds: int, arms: tuple[str, ...] = ENV_NAMES) -> list[tuple[str, ...]]:
    """ABBA order: A B, B A, A B, ... (A B C, C B A, ... for three) so that no arm always goes first
    and a steady drift hits every arm alike."""
    return [arms if i % 2 == 0 else arms[::-1] for i in range(rounds)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered) - 1e-9) - 1))  # nearest rank
    return ordered[index]


def stats(samples: list[float]) -> dict:
    """n, median, p99 and max of timings in milliseconds."""
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples),
        "p99_ms": percentile(samples, 0.99),
        "max_ms": max(samples),
    }


def bootstrap_ci(statistic, *samples: list[float], resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of ``statistic(*samples)``: how far noise alone moves it."""
    rng = random.Random(20261121)
    values = sorted(statistic(*(rng.choices(s, k=len(s)) for s in samples)) for _ in range(resamples))
    return values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]


def ratio_ci(num: list[float], den: list[float], resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of median(num) / median(den)."""
    return bootstrap_ci(
        lambda a, b: statistics.median(a) / statistics.median(b), num, den, resamples=resamples
    )


def median_diff(a: list[float], b: list[float]) -> float:
    return statistics.median(a) - statistics.median(b)


def added_ratio(more: list[float], one: list[float], base: list[float]) -> float:
    """(median(more) - median(base)) / (median(one) - median(base)): what ``more`` adds to the
    baseline, in units of what ``one`` adds (inf when ``one`` adds nothing)."""
    added_one = statistics.median(one) - statistics.median(base)
    added_more = statistics.median(more) - statistics.median(base)
    return added_more / added_one if added_one > 0 else math.inf


def bench_failure_path(envs, homes, tmp: Path, profile: Profile, token: str, secret: str) -> dict:
    sys.path.insert(0, str(REPO))  # the fake robot is standard library only
    from airflow_ext.fake_robot import FakeRobot

    results: dict = {"healthy": {}, "silent": {}, "delivered": {}}
    fan_out = FanOutRobots(secret)
    healthy = FakeRobot(access_token=token, secret=secret, keyword=ROBOT_KEYWORD, rate_limit=10**9).start()
    silent = FakeRobot(access_token=token, secret=secret, keyword=ROBOT_KEYWORD, rate_limit=10**9).start()
    silent.set_mode("hang")
    _SECRETS.extend([healthy.url, silent.url])
    workers: dict[str, Worker] = {}
    try:
        progress(f"starting one {LINE.failure_path} worker per environment")
        for name in ENV_NAMES:
            workers[name] = Worker(name, envs[name], homes[name], tmp / f"worker-{name}.log")
        for name, worker in workers.items():
            wants = name == PATCHED
            if worker.info["failure_path_calls_hook"] != wants or worker.info["ding_on_failure"] != wants:
                raise BenchError(f"the {name} environment does not look {name}: {worker.info}")
        results["airflow_version"] = workers[PATCHED].info["airflow_version"]

        def robot_env(robot, timeout_s: str) -> dict[str, str]:
            return {
                "AIRFLOW__DINGDING__BOT_URL": robot.url,
                "AIRFLOW__DINGDING__SECRET": secret,
                "AIRFLOW__DINGDING__KEYWORD": ROBOT_KEYWORD,
                "AIRFLOW__DINGBOT__TIMEOUT": timeout_s,
                **ONE_ROBOT_ENV,
            }

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
            f"{LINE.failure_path} with a healthy robot, and patched with 3 robots ({fan_out.channels}): "
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
                    raise BenchError(f"{arm}: {LINE.failure_path} left the task in {answer['states']}")
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
            f"{LINE.failure_path} with a silent robot: {profile.silent_calls} calls per environment "
            f"(about {profile.silent_calls * SILENT_DEADLINE_S:.0f} s)"
        )
        samples = {name: [] for name in ENV_NAMES}
        reached = {name: 0 for name in ENV_NAMES}
        for order in alternating(profile.silent_calls):
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


# ----------------------------------------------------------------------------------------------
# Fresh-process figures: the task-process import, DagBag parse
# ----------------------------------------------------------------------------------------------


def import_snippet() -> str:
    return (
        f"import time; t0 = time.perf_counter(); import {LINE.import_module}; "
        "print('\\nIMPORT_S', time.perf_counter() - t0)"
    )


def bench_import(envs, home: Path, profile: Profile) -> dict:
    what = f"import {LINE.import_module}"
    progress(f"{what}: {profile.import_runs} fresh processes per environment")
    # The first process writes airflow.cfg into the shared home (stock Airflow's, from the unpatched
    # environment); a second, untimed round warms the page cache for both.
    for name in (UNPATCHED, PATCHED, UNPATCHED, PATCHED):
        run(
            [str(venv_python(envs[name])), "-c", what],
            f"{what} ({name})",
            env=airflow_env(envs[name], home),
        )
    inproc = {name: [] for name in ENV_NAMES}
    wall = {name: [] for name in ENV_NAMES}
    for order in alternating(profile.import_runs):
        for name in order:
            env = airflow_env(envs[name], home)
            t0 = time.perf_counter()
            result = run([str(venv_python(envs[name])), "-c", import_snippet()], f"{what} ({name})", env=env)
            wall[name].append(time.perf_counter() - t0)
            inproc[name].append(float(result.stdout.rsplit("IMPORT_S", 1)[1]))
    # What the patch itself adds to the import: the import of airflow_ext.config_description from
    # Airflow's configuration module, as CPython's own -X importtime reports it (cumulative).
    ext_us = []
    for _ in range(5):
        result = run(
            [str(venv_python(envs[PATCHED])), "-X", "importtime", "-c", what],
            f"{what} -X importtime (patched)",
            env=airflow_env(envs[PATCHED], home),
        )
        cumulative = [
            int(line.split("|")[1])
            for line in result.stderr.splitlines()
            if line.startswith("import time:") and line.rstrip().endswith("airflow_ext.config_description")
        ]
        if not cumulative:
            raise BenchError(f"the patched `{what}` did not import airflow_ext.config_description")
        ext_us.append(cumulative[0])
    out = {
        name: {
            "n": len(inproc[name]),
            "import_median_s": statistics.median(inproc[name]),
            "process_median_s": statistics.median(wall[name]),
            "import_samples_s": inproc[name],
            "process_samples_s": wall[name],
        }
        for name in ENV_NAMES
    }
    out["airflow_ext_import_ms"] = statistics.median(ext_us) / 1000
    out["import_ratio_ci"] = ratio_ci(inproc[PATCHED], inproc[UNPATCHED])
    out["process_ratio_ci"] = ratio_ci(wall[PATCHED], wall[UNPATCHED])
    return out


DAG_TEMPLATE = '''\
"""{n} tasks, generated by bench_failure_path.py. The ding flags come from default_args."""
from datetime import datetime

{imports}

with DAG(
    "bench_{n}_tasks",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args={{"owner": "bench", "retries": 1, "ding_on_failure": True, "ding_on_retry": True}},
):
    for i in range({n}):
        EmptyOperator(task_id=f"task_{{i:04d}}")
'''


def bench_parse(envs, home: Path, tmp: Path, profile: Profile) -> dict:
    progress(f"DagBag parse of a {DAG_TASKS}-task DAG: {profile.parse_runs} fresh processes per environment")
    dag_dir = tmp / "parse-dags"
    dag_dir.mkdir()
    dag_file = dag_dir / f"bench_{DAG_TASKS}_tasks.py"
    dag_file.write_text(DAG_TEMPLATE.format(n=DAG_TASKS, imports=LINE.dag_imports), encoding="utf-8")
    first = {name: [] for name in ENV_NAMES}
    repeat = {name: [] for name in ENV_NAMES}
    seen: dict[str, dict] = {}
    cmd_tail = [
        str(DAGBAG_WORKER),
        str(dag_file),
        "--repeats",
        str(profile.parse_repeats),
        "--operator-module",
        LINE.operator_module,
    ]
    for name in ENV_NAMES:  # untimed: compiles the DAG file's bytecode, warms the page cache
        run(
            [str(venv_python(envs[name])), *cmd_tail],
            f"DagBag parse ({name})",
            env=airflow_env(envs[name], home),
        )
    for order in alternating(profile.parse_runs):
        for name in order:
            result = run(
                [str(venv_python(envs[name])), *cmd_tail],
                f"DagBag parse ({name})",
                env=airflow_env(envs[name], home),
            )
            out = json.loads(result.stdout.strip().splitlines()[-1])
            if out["dags"] != 1 or out["tasks"] != DAG_TASKS or out["import_errors"]:
                raise BenchError(f"{name}: the generated DAG did not parse as expected: {out}")
            first[name].append(out["first_parse_s"])
            if out["repeat_parse_s"] is not None:
                repeat[name].append(out["repeat_parse_s"])
            seen[name] = out
    flagged = {name: seen[name]["tasks_with_ding_on_failure"] for name in ENV_NAMES}
    if flagged[PATCHED] != DAG_TASKS or flagged[UNPATCHED] != 0:
        raise BenchError(f"ding_on_failure did not reach the tasks as expected: {flagged}")
    out = {
        name: {
            "n": len(first[name]),
            "first_median_s": statistics.median(first[name]),
            "repeat_median_s": statistics.median(repeat[name]) if repeat[name] else None,
            "first_samples_s": first[name],
            "repeat_samples_s": repeat[name],
            "tasks_with_ding_flags": flagged[name],
        }
        for name in ENV_NAMES
    }
    out["first_ratio_ci"] = ratio_ci(first[PATCHED], first[UNPATCHED])
    out["repeat_ratio_ci"] = ratio_ci(repeat[PATCHED], repeat[UNPATCHED]) if repeat[PATCHED] else None
    return out


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:,.1f} ms" if value < 10_000 else f"{value / 1000:,.2f} s"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    lines += [_row(r, widths) for r in rows]
    return "\n".join(lines)


def verdict(ok: bool, ci: tuple[float, float] | None = None, limit: float | None = None) -> str:
    """PASS/MISS on the point estimate; "(within noise)" when the ratio's 95% interval straddles the limit."""
    text = "PASS" if ok else "MISS"
    if ci is not None and limit is not None and ci[0] <= limit < ci[1]:
        text += " (within noise)"
    return text


def report(res: dict, profile: Profile, elapsed_s: float) -> str:
    hf, sil, imp, parse, fo = res["healthy"], res["silent"], res["import"], res["parse"], res["fan_out"]
    u, p = UNPATCHED, PATCHED
    added = hf[p]["median_ms"] - hf[u]["median_ms"]
    added3 = fo["median_ms"] - hf[u]["median_ms"]
    silent_limit_ms = (SILENT_DEADLINE_S + SILENT_SLACK_S) * 1000
    imp_ratio = imp[p]["import_median_s"] / imp[u]["import_median_s"]
    proc_ratio = imp[p]["process_median_s"] / imp[u]["process_median_s"]
    first_ratio = parse[p]["first_median_s"] / parse[u]["first_median_s"]
    repeat_ratio = (
        parse[p]["repeat_median_s"] / parse[u]["repeat_median_s"] if parse[p]["repeat_median_s"] else None
    )

    checks = {
        "healthy": added <= HEALTHY_ADDED_MEDIAN_MAX_MS,
        # Three robots are held to one robot's target: what a failing task may pay for its alerts.
        "fan_out": added3 <= HEALTHY_ADDED_MEDIAN_MAX_MS,
        "silent": sil[p]["median_ms"] <= silent_limit_ms,
        "import": imp_ratio <= RATIO_MAX,
        "parse": first_ratio <= RATIO_MAX,
    }
    res["targets"] = {k: "PASS" if v else "MISS" for k, v in checks.items()}

    def s(x: float) -> str:
        return f"{x * 1000:,.1f} ms"

    def ci(bounds) -> str:
        return f"{bounds[0]:.3f}-{bounds[1]:.3f}" if bounds else ""

    def timed_rows(what: str, patched: dict) -> list[list[str]]:
        """median and p99 of a failure path against the unpatched one (no target)."""
        return [
            [
                f"{what}: {stat}",
                _ms(hf[u][f"{stat}_ms"]),
                _ms(patched[f"{stat}_ms"]),
                f"{patched[f'{stat}_ms'] - hf[u][f'{stat}_ms']:+.1f} ms",
                f"{patched[f'{stat}_ms'] / hf[u][f'{stat}_ms']:.2f}",
                "",
                "",
                "",
            ]
            for stat in ("median", "p99")
        ]

    healthy_rows = timed_rows(f"{LINE.failure_path}, healthy robot", hf[p])
    healthy_rows[0][6:] = [f"added <= {HEALTHY_ADDED_MEDIAN_MAX_MS:g} ms", verdict(checks["healthy"])]
    rows = [
        *healthy_rows,
        *timed_rows(f"{LINE.failure_path}, 3 robots (default_conn_id)", fo),
        [
            f"{LINE.failure_path}, silent robot ({SILENT_DEADLINE_S:g} s deadline): median",
            _ms(sil[u]["median_ms"]),
            _ms(sil[p]["median_ms"]),
            f"{sil[p]['median_ms'] - sil[u]['median_ms']:+,.1f} ms",
            f"{sil[p]['median_ms'] / sil[u]['median_ms']:.0f}",
            "",
            f"patched <= {SILENT_DEADLINE_S + SILENT_SLACK_S:g} s",
            verdict(checks["silent"]),
        ],
        [
            f"{LINE.failure_path}, silent robot ({SILENT_DEADLINE_S:g} s deadline): max",
            _ms(sil[u]["max_ms"]),
            _ms(sil[p]["max_ms"]),
            "",
            "",
            "",
            "",
            "",
        ],
        [
            f"import {LINE.import_module} (in process): median",
            s(imp[u]["import_median_s"]),
            s(imp[p]["import_median_s"]),
            f"{(imp[p]['import_median_s'] - imp[u]['import_median_s']) * 1000:+.1f} ms",
            f"{imp_ratio:.3f}",
            ci(imp["import_ratio_ci"]),
            f"ratio <= {RATIO_MAX:g}",
            verdict(checks["import"], imp["import_ratio_ci"], RATIO_MAX),
        ],
        [
            "  of which: importing airflow_ext.config_description (-X importtime)",
            "-",
            f"{imp['airflow_ext_import_ms']:.1f} ms",
            f"+{imp['airflow_ext_import_ms']:.1f} ms",
            "",
            "",
            "",
            "",
        ],
        [
            f'python -c "import {LINE.import_module}" (whole process): median',
            s(imp[u]["process_median_s"]),
            s(imp[p]["process_median_s"]),
            f"{(imp[p]['process_median_s'] - imp[u]['process_median_s']) * 1000:+.1f} ms",
            f"{proc_ratio:.3f}",
            ci(imp["process_ratio_ci"]),
            "",
            "",
        ],
        [
            f"DagBag, {DAG_TASKS}-task DAG, first parse in a fresh process: median",
            s(parse[u]["first_median_s"]),
            s(parse[p]["first_median_s"]),
            f"{(parse[p]['first_median_s'] - parse[u]['first_median_s']) * 1000:+.1f} ms",
            f"{first_ratio:.3f}",
            ci(parse["first_ratio_ci"]),
            f"ratio <= {RATIO_MAX:g}",
            verdict(checks["parse"], parse["first_ratio_ci"], RATIO_MAX),
        ],
    ]
    if repeat_ratio is not None:
        rows.append(
            [
                f"DagBag, {DAG_TASKS}-task DAG, repeat parse: median",
                s(parse[u]["repeat_median_s"]),
                s(parse[p]["repeat_median_s"]),
                f"{(parse[p]['repeat_median_s'] - parse[u]['repeat_median_s']) * 1000:+.1f} ms",
                f"{repeat_ratio:.3f}",
                ci(parse["repeat_ratio_ci"]),
                "",
                "",
            ]
        )
    main_table = _table(
        ["figure", "unpatched", "patched", "added", "ratio", "ratio 95% CI", "target", "result"], rows
    )

    def added_row(stat: str) -> list[str]:
        one = hf[p][f"{stat}_ms"] - hf[u][f"{stat}_ms"]
        three = fo[f"{stat}_ms"] - hf[u][f"{stat}_ms"]
        return [
            f"added time (patched - unpatched): {stat}",
            f"{one:+.1f} ms",
            f"{three:+.1f} ms",
            f"{three / one:.2f}" if one > 0 else "-",
        ]

    median_row, p99_row = added_row("median"), added_row("p99")
    low, high = fo["added_median_ratio_ci"]
    median_row += [
        f"{low:.2f}-{high:.2f}",
        f"3 robots: added median <= {HEALTHY_ADDED_MEDIAN_MAX_MS:g} ms",
        verdict(checks["fan_out"]),
    ]
    low, high = fo["minus_one_robot_median_ci"]
    same_process_row = [
        "3 robots - 1 robot, same patched process: median",
        "",
        f"{fo['minus_one_robot_median_ms']:+.1f} ms",
        "",
        f"{low:+.1f} to {high:+.1f} ms",
        "",
        "",
    ]
    fan_out_table = _table(
        [
            f"fan-out, direct backend: {LINE.failure_path} to 1 robot and to 3 at once",
            "1 robot",
            "3 robots",
            "3 / 1",
            "95% CI",
            "target",
            "result",
        ],
        [median_row, [*p99_row, "", "", ""], same_process_row],
    )

    parts = res["breakdown"]
    labels = {
        "alert_from_task_instance": "Alert.from_task_instance (traceback, log_url, hostname)",
        "read_config_and_backend": "read [dingding]/[dingbot] config, import the backend",
        "render_body": "render markdown + JSON body (size check)",
        "http_post": "HTTP POST to the local robot (keep-alive session)",
        "thread_start_join": "run_within: start + join one thread (empty function)",
        "hook_total": f"{LINE.hook}, all of the above end to end",
        "hook_in_failure_path": f"{LINE.hook} as the patched {LINE.failure_path} calls it",
        "failure_path_flags_on": f"{LINE.failure_path}, ding_on_failure=True (same process)",
        "failure_path_flags_off": f"{LINE.failure_path}, ding_on_failure=False (same process)",
    }
    breakdown_table = _table(
        ["piece of one alert (patched env, healthy robot)", "median", "p99"],
        [[labels[k], _ms(v["median_ms"]), _ms(v["p99_ms"])] for k, v in parts.items()],
    )
    on_off = parts["failure_path_flags_on"]["median_ms"] - parts["failure_path_flags_off"]["median_ms"]
    breakdown_table += f"\n(flags on - flags off, same process: {on_off:+.1f} ms)"

    d = res["delivered"]
    counts = (
        f"healthy robot: {hf[u]['n']} + {hf[p]['n']} timed calls (unpatched + patched), warm-up "
        f"{profile.healthy_warmup} calls before each of {profile.healthy_rounds} rounds per environment; "
        f"alerts accepted by the robot: patched {d['healthy'][p][0]}/{d['healthy'][p][1]} calls, "
        f"unpatched {d['healthy'][u][0]}. 3 robots: {fo['n']} timed calls in the patched environment, "
        f"in the same rounds (A B C / C B A), default_conn_id naming {fo['robots']} (Connections; "
        f"DingTalk and Feishu signed, with the keyword); alerts accepted by each: "
        + ", ".join(f"{robot} {got}/{fo['calls']}" for robot, got in fo["received"].items())
        + f" calls. Silent robot: {sil[p]['n']} calls per environment; requests it "
        f"received: patched {d['silent'][p]}, unpatched {d['silent'][u]}. import {LINE.import_module}: "
        f"{imp[u]['n']} processes per environment; DagBag: {parse[u]['n']} processes per environment "
        f"(+{profile.parse_repeats} repeat parses each); tasks with ding_on_failure after parsing: "
        f"patched {parse[p]['tasks_with_ding_flags']}, unpatched {parse[u]['tasks_with_ding_flags']}."
    )
    header = (
        f"airflow-dingbot failure-path benchmark ({profile.name} profile): apache-airflow "
        f"{res['airflow_version']}, Python {res['python']}, {res['cpus']} CPUs, "
        f"metadata database {res.get('database', 'sqlite')}, {elapsed_s:.0f} s"
    )
    return "\n".join(
        [
            header,
            "",
            main_table,
            "",
            fan_out_table,
            "",
            breakdown_table,
            "",
            textwrap.fill(counts, 100),
            textwrap.fill(
                "ratio 95% CI: bootstrap interval of the ratio of medians, i.e. how far run-to-run "
                "noise alone moves it. Targets are informational; timings on a shared machine vary "
                "from run to run.",
                100,
            ),
        ]
    )


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (about 2 minutes)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument(
        "--airflow-line",
        choices=sorted(LINES),
        default=os.environ.get("DINGBOT_AIRFLOW_LINE") or "3",
        help="which Airflow line to measure (default: DINGBOT_AIRFLOW_LINE, else 3)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="the measured environments' metadata databases on this PostgreSQL server "
        "(postgresql://user@host:port; fresh databases dingbot_bench_*), instead of SQLite",
    )
    args = parser.parse_args(argv)
    global LINE
    LINE = LINES[args.airflow_line]
    profile = QUICK if args.quick else FULL
    started = time.monotonic()

    token = f"bench-{secrets.token_hex(12)}"
    secret = f"SEC{secrets.token_hex(32)}"
    _SECRETS.extend([token, secret])

    tmp = Path(tempfile.mkdtemp(prefix="dingbot-bench-"))
    try:
        envs = ensure_envs()
        homes = {name: tmp / f"home-{name}" for name in ENV_NAMES}
        if args.postgres:
            fresh_postgres_databases(args.postgres, homes)
        migrate(envs, homes)
        results = bench_failure_path(envs, homes, tmp, profile, token, secret)
        shared_home = tmp / "home-shared"
        (shared_home / "dags").mkdir(parents=True)
        results["import"] = bench_import(envs, shared_home, profile)
        results["parse"] = bench_parse(envs, shared_home, tmp, profile)
        results["python"] = subprocess.run(
            [str(venv_python(envs[PATCHED])), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        results["cpus"] = os.cpu_count()
        results["profile"] = profile.name
        results["database"] = "postgresql" if args.postgres else "sqlite"
        text = report(results, profile, time.monotonic() - started)
    except BenchError as err:
        print(f"benchmark could not run: {redact(str(err))}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(redact(text), flush=True)
    if args.json:
        Path(args.json).write_text(
            redact(json.dumps(results, indent=2, sort_keys=True)) + "\n", encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
