"""The workers' side of their protocol with the driver (``bench/harness/processes.py``): one JSON
command a line on stdin, one JSON answer a line on a private copy of stdout, while everything the
process itself prints (Airflow's logs) goes to a log file.

Standard library only: it runs in the measured environments, which never import the repository.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections.abc import Callable


def summarize(samples_ms: list[float]) -> dict:
    """n, median, nearest-rank p99, min and max of timings in milliseconds."""
    ordered = sorted(samples_ms)
    if not ordered:
        return {"n": 0, "median_ms": None, "p99_ms": None}
    p99_index = min(len(ordered) - 1, max(0, math.ceil(0.99 * len(ordered) - 1e-9) - 1))
    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered),
        "p99_ms": ordered[p99_index],
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
    }


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
    """Answer the driver until it says quit.

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
