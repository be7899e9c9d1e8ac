"""What a task process leaves for its supervisor: the ding flags of its try, and alerts to relay.

On Airflow 3 a task process killed by SIGKILL (the OOM killer), a segfault or ``os._exit`` never
reaches its failure handling, and its supervisor, which reports the state from the exit code,
never parsed the DAG: it cannot know whether the task asked for alerts. So right after start-up
the task process writes a small note with its flags, and removes it once its own failure handling
(``finalize``) has dealt with the try. A note still there when the process has ended means the try
was not reported: the supervisor alerts from it, then removes it.

With the outbox backend a task process, which has no database, leaves its alert (exception and
traceback included) in a second file instead: the supervisor, which holds the try's Execution API
token, posts it to the api-server once the process has ended (:func:`leave_alert`, :func:`take_alert`).

A task process that cannot load its DAG or task at start-up (an import error on this worker, a
package missing here, a file not deployed here yet) never learns the task's flags: it leaves why
it could not (:func:`leave_load_failure`), and the supervisor asks the api-server for the flags the
metadata database has for the task (its serialized DAG).

Notes live in a private directory (mode 0700) of this user in the temporary directory, one file
per try, written whole (temp file + rename), so a reader never sees half a note.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from airflow_ext.load_failure import LoadFailure

#: Notes older than this are left by processes that died with their supervisor (the scheduler
#: reports those tries); the next supervisor to finish deletes them.
STALE_AFTER_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Handoff:
    """The facts about a running try that only its task process knows."""

    ding_on_failure: bool
    ding_on_retry: bool
    max_tries: int
    logical_date: str | None = None
    log_url: str | None = None
    #: What routing matches on (see :class:`airflow_ext.alert.Alert`).
    owner: str | None = None
    tags: tuple[str, ...] = ()
    conn_ids: tuple[str, ...] = ()


def directory() -> Path:
    return Path(tempfile.gettempdir()) / f"airflow-dingbot-{os.getuid()}"


def _path(ti_id: object, try_number: int) -> Path:
    # The task instance id is a UUID: safe as a file name as it is.
    return directory() / f"{ti_id}.{int(try_number)}.json"


def _alert_path(ti_id: object, try_number: int) -> Path:
    return directory() / f"{ti_id}.{int(try_number)}.alert.json"


def _load_failure_path(ti_id: object, try_number: int) -> Path:
    return directory() / f"{ti_id}.{int(try_number)}.load-failure.json"


def _write(path: Path, data: dict) -> None:
    folder = directory()
    folder.mkdir(mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".handoff.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _take(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    finally:
        path.unlink(missing_ok=True)


def leave(ti_id: object, try_number: int, handoff: Handoff) -> None:
    _write(_path(ti_id, try_number), dataclasses.asdict(handoff))


def leave_alert(ti_id: object, try_number: int, alert: dict) -> None:
    """Hand an alert (``Alert.to_dict()``) of this try to the supervisor, which queues it."""
    _write(_alert_path(ti_id, try_number), alert)


def take_alert(ti_id: object, try_number: int) -> dict | None:
    """The alert the task process left for this try, removed; None if it left none."""
    return _take(_alert_path(ti_id, try_number))


def leave_load_failure(ti_id: object, try_number: int, failure: LoadFailure) -> None:
    _write(_load_failure_path(ti_id, try_number), dataclasses.asdict(failure))


def take_load_failure(ti_id: object, try_number: int) -> LoadFailure | None:
    """Why this try's task process could not load its task, removed; None if it could."""
    data = _take(_load_failure_path(ti_id, try_number))
    if data is None:
        return None
    names = {f.name for f in dataclasses.fields(LoadFailure)}
    return LoadFailure(**{k: v for k, v in data.items() if k in names})


def handoff_from_dict(data: dict) -> Handoff:
    """A :class:`Handoff` from its JSON form (unknown keys ignored, lists made tuples)."""
    names = {f.name for f in dataclasses.fields(Handoff)}
    fields = {k: v for k, v in data.items() if k in names}
    for name in ("tags", "conn_ids"):  # lists in JSON
        if name in fields:
            fields[name] = tuple(fields[name] or ())
    return Handoff(**fields)


def take(ti_id: object, try_number: int) -> Handoff | None:
    """The note for this try, removed; None if the task process removed it (or never left one)."""
    data = _take(_path(ti_id, try_number))
    return None if data is None else handoff_from_dict(data)


def clear(ti_id: object, try_number: int) -> None:
    _path(ti_id, try_number).unlink(missing_ok=True)


def remove_stale(now: float | None = None) -> int:
    """Delete notes older than :data:`STALE_AFTER_S`; how many went."""
    cutoff = (time.time() if now is None else now) - STALE_AFTER_S
    removed = 0
    try:
        entries = list(os.scandir(directory()))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:  # another supervisor got there first
            continue
    return removed
