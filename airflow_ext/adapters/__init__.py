"""One adapter per Airflow line: the only code that knows which line is installed.

Each adapter builds :class:`airflow_ext.alert.Alert` objects from its line's task instances and
offers the few Airflow services whose import path differs between lines (the secrets masker,
``Stats``). Everything else in ``airflow_ext`` is the same on every line.
"""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def current() -> ModuleType:
    """The adapter module of the Airflow installed in this environment."""
    from airflow import __version__

    major = __version__.split(".", 1)[0]
    if major == "2":
        from airflow_ext.adapters import airflow2 as adapter
    elif major == "3":
        from airflow_ext.adapters import airflow3 as adapter
    else:
        from airflow_ext.errors import ConfigError

        raise ConfigError(f"apache-airflow {__version__} is not supported (supported lines: 2.11, 3.3)")
    return adapter
