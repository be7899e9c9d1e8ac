"""The outbox tables: our own, in the Airflow metadata database, created idempotently.

They live in their own SQLAlchemy ``MetaData``, so ``airflow db migrate`` / ``db reset`` never
see them; :func:`ensure_schema` creates what is missing and records the schema version, and is
safe to run from several processes at once. Times are epoch milliseconds (BIGINT) so every
supported database compares them the same way, without time zones.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

log = logging.getLogger(__name__)

#: 1: the first schema; 2: ``dingbot_outbox.robot_ref``, the robot's name (Connection id);
#: 3: ``dingbot_robot.last_answer`` and ``last_answer_ms``, what the robot last said (the Alerts page);
#: 4: ``dingbot_alert_claim``, which process alerts a try (every backend; see airflow_ext.claims).
SCHEMA_VERSION = 4
_CREATE_ATTEMPTS = 5

#: Integer primary keys autoincrement as BIGINT where the database has it, INTEGER on SQLite.
_ID = BigInteger().with_variant(Integer, "sqlite")

metadata = MetaData()

#: One row per alert: one try of one task instance, for one robot.
outbox = Table(
    "dingbot_outbox",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("robot_key", String(64), nullable=False),
    # The Connection id the deliverer sends with; NULL (rows of schema 1) and "[dingding]": that section.
    Column("robot_ref", String(250)),
    # sha256 of Alert.dedup_key: bounded length for a unique index on every database
    Column("dedup_hash", String(64), nullable=False),
    Column("dag_id", String(250), nullable=False),
    Column("alert", Text, nullable=False),  # Alert.to_dict() as JSON, detail fields bounded
    Column("status", String(16), nullable=False),  # pending | claimed | sent | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at_ms", BigInteger, nullable=False),
    Column("next_attempt_at_ms", BigInteger, nullable=False),
    Column("claimed_by", String(128)),
    Column("claim_expires_ms", BigInteger),
    Column("sent_at_ms", BigInteger),
    Column("message_uuid", String(64)),
    Column("last_error", String(1000)),
    UniqueConstraint("robot_key", "dedup_hash", name="dingbot_outbox_dedup_uq"),
    Index("dingbot_outbox_due_idx", "robot_key", "status", "next_attempt_at_ms"),
    Index("dingbot_outbox_sent_idx", "status", "sent_at_ms"),
)

#: One row per robot: the lock every deliverer takes before spending the robot's budget.
robots = Table(
    "dingbot_robot",
    metadata,
    Column("robot_key", String(64), primary_key=True),
    Column("lock_version", BigInteger, nullable=False, default=0),
    Column("paused_until_ms", BigInteger, nullable=False, default=0),
    Column("pause_reason", String(1000)),
    Column("last_send_ms", BigInteger, nullable=False, default=0),
    # The robot's answer to the last message sent to it (or why it got none), never a credential.
    Column("last_answer", String(1000)),
    Column("last_answer_ms", BigInteger),
)

#: One row per message sent (or attempted) to a robot: the rolling rate-limit window.
send_log = Table(
    "dingbot_send_log",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("robot_key", String(64), nullable=False),
    Column("sent_at_ms", BigInteger, nullable=False),
    Index("dingbot_send_log_window_idx", "robot_key", "sent_at_ms"),
)

#: One row per alerted try, whatever the backend: the first process to report the try claims it for
#: a lease as long as its alert may take, and marks it sent; other reports of the try send nothing.
alert_claims = Table(
    "dingbot_alert_claim",
    metadata,
    # sha256 of Alert.dedup_key, as in dingbot_outbox
    Column("dedup_hash", String(64), primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("claimed_by", String(128), nullable=False),  # host and pid of the claiming process
    Column("claimed_at_ms", BigInteger, nullable=False),
    Column("lease_until_ms", BigInteger, nullable=False),
    Column("sent_at_ms", BigInteger),
    Index("dingbot_alert_claim_age_idx", "claimed_at_ms"),
)

meta = Table(
    "dingbot_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)


def schema_is_current(engine: Engine) -> bool:
    names = set(inspect(engine).get_table_names())
    if not {t.name for t in metadata.sorted_tables} <= names:
        return False
    with engine.connect() as conn:
        version = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    return version == str(SCHEMA_VERSION)


#: Columns added after schema 1, in order: (table, column, its SQL type).
_ADDED_COLUMNS = (
    (outbox.name, "robot_ref", "VARCHAR(250)"),
    (robots.name, "last_answer", "VARCHAR(1000)"),
    (robots.name, "last_answer_ms", "BIGINT"),
)


def _upgrade(engine: Engine) -> None:
    """Bring tables of an older schema up to SCHEMA_VERSION (idempotent: a concurrent upgrade is fine)."""
    for table, column, sql_type in _ADDED_COLUMNS:
        if column in {c["name"] for c in inspect(engine).get_columns(table)}:
            continue
        try:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
        except DBAPIError:
            if column not in {c["name"] for c in inspect(engine).get_columns(table)}:
                raise  # not a concurrent upgrade that won: a real failure
    with engine.begin() as conn:
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))


def ensure_schema(engine: Engine) -> None:
    """Create missing tables, upgrade older ones and record the version; a no-op when current.

    Another process creating the same table at the same moment makes ``create_all`` fail with
    "already exists"; each new try skips what exists by then, so a few tries always settle it.
    """
    if schema_is_current(engine):
        return
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            metadata.create_all(engine, checkfirst=True)
            break
        except DBAPIError:
            if attempt == _CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    try:
        with engine.begin() as conn:
            current = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
            if current is None:
                conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    except IntegrityError:  # recorded by a concurrent ensure_schema
        log.debug("outbox schema version recorded concurrently")
        current = None
    if current is not None and current != str(SCHEMA_VERSION):
        _upgrade(engine)
