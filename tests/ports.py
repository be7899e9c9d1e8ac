"""Ports for the services the tests start (not a test module)."""

from __future__ import annotations

import itertools
import os
import socket

#: Ports for services that bind later (api-servers, log servers, webservers) come from a block of
#: this test process's own, below the kernel's ephemeral range (32768 and up, where every robot and
#: client socket binds). A port the kernel handed out and that was then released could be handed
#: to another test process, or to a robot, before the service binds it; these cannot.
#: DINGBOT_TEST_PORTS_FROM moves the blocks (e.g. to 10000), so that the suites of two checkouts
#: can run at once on one machine.
SERVICE_PORTS_FROM = int(os.environ.get("DINGBOT_TEST_PORTS_FROM") or 20000)
SERVICE_PORTS_PER_PROCESS = 400
_service_ports = itertools.count()


def _port_block() -> int:
    """This test process's block: one per Airflow line (tox's DINGBOT_AIRFLOW_LINE, so that both
    lines' suites can run at once) and pytest-xdist worker ("gw<n>")."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % 8
    line = {"2": 1, "3": 2}.get(os.environ.get("DINGBOT_AIRFLOW_LINE", ""), 0)
    return SERVICE_PORTS_FROM + (line * 8 + worker) * SERVICE_PORTS_PER_PROCESS


def free_port() -> int:
    """A port nothing listens on, for a service this test starts: the next one of this process's
    block that can be bound (another program may hold some of them)."""
    block = _port_block()
    for _ in range(SERVICE_PORTS_PER_PROCESS):
        port = block + next(_service_ports) % SERVICE_PORTS_PER_PROCESS
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {block}..{block + SERVICE_PORTS_PER_PROCESS - 1}")
