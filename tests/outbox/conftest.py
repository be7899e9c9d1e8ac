"""Databases for the outbox tests: SQLite, and real PostgreSQL and MariaDB/MySQL servers.

Each test run creates its own database on each server and drops it afterwards. Outside CI a
missing server skips its tests with the reason; in CI (``CI=true``) it fails them, so the
database tests can never be skipped silently there.
"""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest
from sqlalchemy import create_engine, text

POSTGRES_ADMIN_URL = os.environ.get(
    "DINGBOT_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URL = os.environ.get("DINGBOT_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql")


def _unavailable(name: str, err: Exception):
    reason = f"{name} is not reachable ({type(err).__name__}: {err})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}: the database tests must run in CI")
    pytest.skip(reason)


def _server_database(admin_url: str, name: str, url_for) -> tuple[str, callable]:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    database = f"dingbot_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {database}"))
    except Exception as err:  # noqa: BLE001 - any failure means the server is not usable here
        admin.dispose()
        _unavailable(name, err)

    def drop():
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {database}"))
        admin.dispose()

    return url_for(database), drop


@contextlib.contextmanager
def postgres_metadata_database():
    """An empty PostgreSQL database for an Airflow metadata DB, dropped (WITH (FORCE)) afterwards."""
    url, drop = _server_database(
        POSTGRES_ADMIN_URL, "PostgreSQL", lambda db: POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{db}"
    )
    try:
        yield url
    finally:
        drop()


def _database_fixture(kind: str):
    """A session-scoped fixture ``<kind>_url``: the URL of an empty database made for this run."""

    @pytest.fixture(scope="session", name=f"{kind}_url")
    def _fixture(tmp_path_factory):
        if kind == "sqlite":
            yield f"sqlite:///{tmp_path_factory.mktemp('outbox') / 'outbox.db'}"
            return
        admin_url, name = {
            "postgresql": (POSTGRES_ADMIN_URL, "PostgreSQL"),
            "mysql": (MYSQL_ADMIN_URL, "MariaDB/MySQL"),
        }[kind]
        url, drop = _server_database(admin_url, name, lambda db: admin_url.rsplit("/", 1)[0] + f"/{db}")
        try:
            yield url
        finally:
            drop()

    return _fixture


sqlite_url = _database_fixture("sqlite")
postgresql_url = _database_fixture("postgresql")
mysql_url = _database_fixture("mysql")

DB_KINDS = ["sqlite", "postgresql", "mysql"]


def make_engine(url: str):
    if url.startswith("sqlite"):
        # Deliverers and task processes write concurrently: wait for SQLite's lock, don't fail.
        return create_engine(url, future=True, connect_args={"timeout": 30})
    return create_engine(url, future=True, pool_size=10, max_overflow=10)


@pytest.fixture(params=DB_KINDS)
def db_url(request):
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def engine(db_url):
    """An engine on an empty database of each kind; the outbox tables are dropped around each test."""
    from airflow_ext.outbox.schema import metadata

    eng = make_engine(db_url)
    metadata.drop_all(eng)
    yield eng
    metadata.drop_all(eng)
    eng.dispose()
