"""Writing the patched or restored files: all of them, across distributions, or none.

Each new file is written to a temp file beside its target and renamed over it. Readers see the
old file or the new one, never half of one; and the rename gives the target a new inode instead of
rewriting the old one in place, which matters because an installer may have hardlinked it to its
cache (uv does), where writing in place would change the cached copy and every environment
sharing it.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from airflow_ext.errors import PatchError


@dataclass(frozen=True)
class Change:
    location: Path  # the installed file to rewrite
    name: str  # the file and its distribution, for messages: "airflow/x.py of apache-airflow 2.11.2"
    new: bytes
    old: bytes  # what to put back if a later rename fails


def _write_temp(target: Path, data: bytes) -> str:
    """Write *data* to a new temp file next to *target*, with *target*'s mode (and owner if possible)."""
    st = os.stat(target)
    fd, tmp = tempfile.mkstemp(dir=str(target.parent), prefix=f".{target.name}.", suffix=".airflow-ext")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        if hasattr(os, "chown") and (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except OSError:
                pass
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def commit(changes: Sequence[Change]) -> None:
    """Replace each file with its new bytes, across all distributions together.

    All temp files are written first; only then are they renamed over the targets. If a rename
    fails, the files already replaced (of whichever distribution) are put back, so the
    installation is never left half-changed.
    """
    prepared: list[tuple[Path, str]] = []
    try:
        for change in changes:
            target = Path(os.path.realpath(change.location))
            prepared.append((target, _write_temp(target, change.new)))
    except OSError as err:
        for _, tmp in prepared:
            _unlink(tmp)
        raise PatchError(
            f"cannot write {changes[len(prepared)].name}: {err.strerror or err}; nothing changed"
        ) from None

    for index, (target, tmp) in enumerate(prepared):
        try:
            os.replace(tmp, target)
        except OSError as err:
            for _, left in prepared[index:]:
                _unlink(left)
            not_restored = []
            for (done_target, _), done in zip(prepared[:index], changes[:index]):
                try:
                    os.replace(_write_temp(done_target, done.old), done_target)
                except OSError:
                    not_restored.append(done.name)
            outcome = f"could not restore {', '.join(not_restored)}" if not_restored else "nothing changed"
            raise PatchError(
                f"cannot replace {changes[index].name}: {err.strerror or err}; {outcome}"
            ) from None
    _drop_stale_bytecode([target for target, _ in prepared])


def _drop_stale_bytecode(targets: Sequence[Path]) -> None:
    """Remove ``__pycache__/<module>.*.pyc`` of rewritten modules (hash-based .pyc may not notice)."""
    for target in targets:
        if target.suffix != ".py":
            continue
        cache = target.parent / "__pycache__"
        try:
            names = os.listdir(cache)
        except OSError:
            continue
        for name in names:
            if name.startswith(target.stem + ".") and name.endswith(".pyc"):
                _unlink(str(cache / name))
