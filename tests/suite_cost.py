"""What the suite cost, printed at its end: wall and CPU time on this Airflow line, in all and for
the costliest modules (a pytest plugin, loaded by tests/conftest.py; not a test module).

CPU time is user + system time of the test processes and of every process they started and waited
for (Airflow's CLI and services, robots' threads, browsers). "Cores busy" says how much of the
machine a run used: on 2 cores, a figure well below 2 means time spent waiting. A module's figures
run from its first test's setup to its last test's teardown (its module fixtures included).
"""

from __future__ import annotations

import collections
import resource
import time

import pytest

#: How many modules the summary names, costliest first.
MODULES_SHOWN = 12

_started = time.monotonic()
#: module path -> [wall s, CPU s], of this process's tests (a worker's, or the only process's).
_modules: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
#: What each pytest-xdist worker reported: (its CPU s, its modules).
_workers: list[tuple[float, dict[str, list[float]]]] = []


def _cpu_s(*who: int) -> float:
    return sum(usage.ru_utime + usage.ru_stime for usage in map(resource.getrusage, who))


def _own_and_children_s() -> float:
    return _cpu_s(resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    wall, cpu = time.monotonic(), _own_and_children_s()
    yield
    figures = _modules[item.nodeid.split("::", 1)[0]]
    figures[0] += time.monotonic() - wall
    figures[1] += _own_and_children_s() - cpu


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: its figures go to the controller
        workeroutput["dingbot_cost"] = {"cpu_s": _own_and_children_s(), "modules": dict(_modules)}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    cost = getattr(node, "workeroutput", {}).get("dingbot_cost")
    if cost:
        _workers.append((cost["cpu_s"], cost["modules"]))


def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, "workerinput"):
        return
    from tests.conftest import AIRFLOW_VERSION

    wall_s = time.monotonic() - _started
    if _workers:
        cpu_s = _cpu_s(resource.RUSAGE_SELF) + sum(cpu for cpu, _ in _workers)
        modules = {path: figures for _, worker in _workers for path, figures in worker.items()}
        processes = f"{len(_workers)} test processes"
    else:
        cpu_s = _own_and_children_s()
        modules, processes = _modules, "1 test process"
    write = terminalreporter.write_line
    write(
        f"suite cost on Airflow {AIRFLOW_VERSION}: {wall_s / 60:.1f} min wall, {cpu_s / 60:.1f} min CPU "
        f"({cpu_s / max(wall_s, 1e-9):.2f} cores busy on average, {processes})"
    )
    costliest = sorted(modules.items(), key=lambda entry: -entry[1][1])[:MODULES_SHOWN]
    for path, (module_wall_s, module_cpu_s) in costliest:
        write(f"  {module_cpu_s:7.0f} s CPU {module_wall_s:7.0f} s wall  {path}")
