"""Configuration problems met while handling failures: each is logged once per process.

A scheduler or DAG processor handles many failures; a misspelled option must produce one clear
line naming it, not one per failed task, and must never stop failure handling.
"""

from __future__ import annotations

import logging
import threading

_reported: set[str] = set()
_lock = threading.Lock()


def report_once(logger: logging.Logger, what: str, problem: str) -> bool:
    """Log ``what: problem`` at ERROR the first time ``problem`` is met in this process."""
    with _lock:
        first = problem not in _reported
        _reported.add(problem)
    if first:
        logger.error("%s: %s (`airflow-ext check` lists every configuration problem)", what, problem)
    else:
        logger.debug("%s: %s (reported before)", what, problem)
    return first


def forget() -> None:
    """For tests: report every problem again."""
    with _lock:
        _reported.clear()
