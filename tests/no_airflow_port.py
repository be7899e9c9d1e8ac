"""The core's Airflow port for the version-free modules: no Airflow at all (not a test module).

What it answers is what a process without Airflow's services would have: nothing masked by Airflow
(the package's own log filter still protects), no Connections, no database, Stats that count
nothing. A test that needs more sets it on this object with monkeypatch.
"""

from __future__ import annotations

from airflow_ext.errors import ConfigError

OUTBOX_THROUGH_API_SERVER = False


class _Stats:
    def incr(self, *args, **kwargs) -> None:
        pass

    def timing(self, *args, **kwargs) -> None:
        pass

    def gauge(self, *args, **kwargs) -> None:
        pass


def redact(text: str) -> str:
    return text


def mask_secret(value: str) -> None:
    pass


def get_connection(conn_id: str):
    raise ConfigError(f"Connection {conn_id!r} is not defined (no Airflow in a version-free test)")


def stats():
    return _Stats()


def load_dags():
    raise ConfigError("no DAGs folder without Airflow")


def metadata_engine():
    return None


def queue_in_outbox(alert):
    raise ConfigError("no outbox without Airflow")
