"""What an alert says of a worker that could not load its DAG or task at start-up.

A worker parses the DAG file itself before it runs a task; when that fails on one worker only (a
package missing there, a broken file deployed to workers before the DAG processor saw it, another
version of the file), the try fails before the worker knows the task. The alert then carries the
worker's import error, read from Airflow's DAG bag, as its failure text.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from airflow_ext.alert import Alert, clean_text, masked


@dataclass(frozen=True)
class LoadFailure:
    """Why a worker could not load the DAG or task of a try (what the alert says)."""

    exception_type: str
    exception_message: str
    traceback: str | None = None


#: The last line of a formatted traceback: ``ModuleNotFoundError: No module named 'x'``.
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")


def describe(
    dag_id: str, task_id: str, dag_rel_path: str, import_errors: dict, *, dag_loaded: bool
) -> LoadFailure:
    """What the alert says of a worker that could not load the task: the import error of the
    DAG's file if there was one (its exception, the worker's traceback), else what was missing."""
    where = f"the DAG file {dag_rel_path}" if dag_rel_path else "the DAG file"
    if dag_loaded:
        return LoadFailure(
            "Task not found",
            f"This worker's copy of {where} has DAG {dag_id!r} without task {task_id!r} (the worker "
            "runs another version of the file than the DAG processor parsed).",
        )
    of_this_file = [text for path, text in import_errors.items() if str(path).endswith(dag_rel_path or "\0")]
    traceback = str((of_this_file or list(import_errors.values()) or [""])[0]).strip()
    if not traceback:
        return LoadFailure(
            "DAG not found",
            f"This worker's copy of {where} has no DAG {dag_id!r} (the worker runs another version "
            "of the file than the DAG processor parsed).",
        )
    last = traceback.splitlines()[-1].strip()
    found = _EXCEPTION_LINE.match(last)
    exception_type = found["type"].rsplit(".", 1)[-1] if found else "ImportError"
    message = (found["message"] or "") if found else last
    return LoadFailure(
        exception_type,
        f"This worker could not import {where}: {message}".rstrip(": "),
        traceback,
    )


def with_failure(alert: Alert, failure: LoadFailure) -> Alert:
    """``alert`` saying ``failure`` as its failure text (masked, like any failure text)."""
    return dataclasses.replace(
        alert,
        exception_type=clean_text(failure.exception_type),
        exception_message=masked(clean_text(failure.exception_message)),
        traceback=masked(clean_text(failure.traceback)) if failure.traceback else None,
    )
