"""Which Airflow line this process runs: the entry points' choice of adapter.

The ``airflow-ext`` CLI and the Airflow plugin call :func:`choose` before they use the core; the
functions the patches call need not, as they are the adapters' own (importing an adapter installs
it). Nothing of the core imports this module (see :mod:`airflow_ext.airflow_port`).
"""

from __future__ import annotations

from types import ModuleType

from airflow_ext import airflow_port
from airflow_ext.errors import ConfigError

SUPPORTED_LINES = ("2.11", "3.3")


def choose() -> ModuleType:
    """The adapter module of the Airflow installed in this environment, installed as the core's port."""
    from airflow import __version__

    major = __version__.split(".", 1)[0]
    if major == "2":
        from airflow_ext.adapters import airflow2 as adapter
    elif major == "3":
        from airflow_ext.adapters import airflow3 as adapter
    else:
        raise ConfigError(
            f"apache-airflow {__version__} is not supported (supported lines: {', '.join(SUPPORTED_LINES)})"
        )
    airflow_port.install(adapter)  # importing it did, unless a test installed another port since
    return adapter
