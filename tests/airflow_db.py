"""Airflow metadata databases for the tests, migrated once and then copied (not a test module).

`airflow db migrate` costs 7 s (3.3.2) to 12 s (2.11.2) of CPU, and a dozen modules each need a
database of their own. So each Airflow line migrates one PostgreSQL *template* database, and every
module gets a copy of it (``CREATE DATABASE … TEMPLATE``, a fraction of a second). The template's
name carries a digest of what its schema depends on (the line, the installed Airflow distributions
and their migration files): a suite on other Airflow files builds its own, and a template is only
ever seen complete (it is built under another name and renamed at the end), so concurrent test
processes and later sessions can share it. SQLite homes are copied from the session's migrated one.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import AIRFLOW_LINE, BIN, MIGRATED_SQLITE, run
from tests.outbox.conftest import POSTGRES_ADMIN_URL, _unavailable

#: Every template of this line starts so; the rest of the name is the digest.
TEMPLATE_PREFIX = f"dingbot_tpl_airflow{AIRFLOW_LINE}_"
#: A whole `airflow db migrate` of an empty database, with room for a loaded machine.
MIGRATE_TIMEOUT_S = 300


def _schema_digest() -> str:
    """What the migrated schema depends on: the Airflow distributions and their migration files."""
    parts = [AIRFLOW_LINE or "?"]
    for dist in sorted(d.metadata["Name"] for d in metadata.distributions()):
        if dist.startswith("apache-airflow") and not dist.startswith("apache-airflow-providers"):
            parts.append(f"{dist}=={metadata.version(dist)}")
    spec = importlib.util.find_spec("airflow")  # locates the package without importing it
    for location in spec.submodule_search_locations or ():
        for path in sorted(Path(location, "migrations", "versions").glob("*.py")):
            parts.append(f"{path.name}:{path.stat().st_size}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _database_url(name: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _migrate(url: str) -> None:
    with tempfile.TemporaryDirectory(prefix="dingbot-template-") as home:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW__DINGDING__", "AIRFLOW__DINGBOT__", "AIRFLOW_CONN_"))
        }
        env.update(
            AIRFLOW_HOME=home,
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=url,
            AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS="False",
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
        )
        result = run([str(BIN / "airflow"), "db", "migrate"], env, timeout=MIGRATE_TIMEOUT_S)
    assert result.returncode == 0, f"migrating the template database failed:\n{result.stdout}{result.stderr}"


def _ensure_template(admin) -> str:
    """The name of this line's migrated template, built now if no test process has built it yet."""
    name = TEMPLATE_PREFIX + _schema_digest()
    exists = "SELECT 1 FROM pg_database WHERE datname = :name"
    with admin.connect() as conn:
        if conn.execute(text(exists), {"name": name}).scalar():
            return name
        lock = int(hashlib.sha256(name.encode()).hexdigest()[:15], 16)
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock})  # one builder at a time
        try:
            if conn.execute(text(exists), {"name": name}).scalar():
                return name  # another test process built it while this one waited
            building = f"{name}_building"
            conn.execute(text(f"DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {building}"))
            _migrate(_database_url(building))
            conn.execute(text(f"ALTER DATABASE {building} RENAME TO {name}"))
            # Templates of this line for other Airflow files are of no further use here.
            stale = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :prefix AND datname <> :name"),
                {"prefix": TEMPLATE_PREFIX.replace("_", r"\_") + "%", "name": name},
            ).scalars()
            for old in list(stale):
                if not old.endswith("_building"):
                    conn.execute(text(f"DROP DATABASE IF EXISTS {old} WITH (FORCE)"))
            return name
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock})


@contextlib.contextmanager
def postgres_airflow_database() -> Iterator[str]:
    """The URL of a new PostgreSQL database holding Airflow's migrated (empty) metadata schema,
    dropped (WITH (FORCE)) afterwards. Outside CI an unreachable server skips the test."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    database = f"dingbot_test_{uuid.uuid4().hex[:12]}"
    try:
        try:
            template = _ensure_template(admin)
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {database} TEMPLATE {template}"))
        except AssertionError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure means the server is not usable here
            _unavailable("PostgreSQL", err)
        try:
            yield _database_url(database)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
    finally:
        admin.dispose()


def copy_sqlite_home(base_env: dict[str, str], home: Path) -> Path:
    """Make ``home`` an Airflow home with a SQLite database of its own, a copy of the session's
    freshly migrated one (``base_env``'s home, before any test wrote to it); return its path."""
    source = Path(base_env["AIRFLOW_HOME"]) / MIGRATED_SQLITE
    assert source.is_file(), f"the session's Airflow home has no migrated SQLite database: {source}"
    home.mkdir(parents=True, exist_ok=True)
    target = home / "airflow.db"
    shutil.copyfile(source, target)
    return target
