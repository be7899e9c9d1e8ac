"""What the version-free core needs from Airflow, and which Airflow line provides it.

The core (alerts, rendering, channels, delivery, the outbox, routing, checks) is the same on every
Airflow line; the few Airflow services it uses live at other import paths, or work otherwise, on
2.11 and on 3.3. This module says what those services are (:class:`AirflowPort`); each line's
adapter (``airflow_ext.adapters.airflow2`` / ``airflow3``) implements them and installs itself here
when it is imported. The core asks :func:`airflow` and never imports an adapter.

Only the entry points choose the line: the functions the patches call (they are the adapters'
own), the ``airflow-ext`` CLI and the Airflow plugin (through :mod:`airflow_ext.lines`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from airflow_ext.errors import ConfigError

if TYPE_CHECKING:
    from airflow_ext.alert import Alert
    from airflow_ext.config import RobotConnection


class AirflowPort(Protocol):
    """The Airflow services the core uses, as one line provides them."""

    #: Whether a process without the metadata database reaches the outbox through the api-server
    #: (Airflow 3: task processes have no database), so ``[core] execution_api_server_url`` matters.
    OUTBOX_THROUGH_API_SERVER: bool

    def redact(self, text: str) -> str:
        """``text`` with every secret Airflow's secrets masker knows in this process as ``***``."""

    def mask_secret(self, value: str) -> None:
        """Have Airflow's masker hide ``value`` from logs from now on."""

    def get_connection(self, conn_id: str) -> RobotConnection:
        """A robot Connection from any secrets backend; ConfigError naming it if it cannot be read."""

    def stats(self) -> Any:
        """Airflow's ``Stats`` (``incr``, ``timing``, ``gauge``)."""

    def load_dags(self) -> tuple[dict, dict]:
        """Every DAG of the DAGs folder by id, and the files that failed to import."""

    def metadata_engine(self) -> Any:
        """The metadata database's SQLAlchemy engine where this process may use it, else None."""

    def queue_in_outbox(self, alert: Alert) -> tuple[bool, str]:
        """Record ``alert`` in the outbox the way this process can: ``(queued, via)``."""


_installed: AirflowPort | None = None


def install(port: AirflowPort) -> None:
    """Make ``port`` the Airflow the core uses in this process (an adapter does so on import)."""
    global _installed
    _installed = port


def airflow() -> AirflowPort:
    """The Airflow line's services in this process; ConfigError if no entry point chose a line."""
    if _installed is None:
        raise ConfigError(
            "no Airflow line is chosen in this process: import airflow_ext.lines and call "
            "airflow_ext.lines.choose() first (the patches, the CLI and the plugin do)"
        )
    return _installed


def installed() -> AirflowPort | None:
    """The installed port, or None (for code that can work without Airflow)."""
    return _installed
