"""The Airflow plugin the package registers (entry point ``airflow.plugins``): installing the
package is all the webserver and the api-server need.

- The Alerts page (:mod:`airflow_ext.ui`): on Airflow 2 a Flask-AppBuilder view under Browse; on
  Airflow 3 an app on the api-server at ``/dingbot-alerts`` and an entry in the UI's navigation.
- On Airflow 3, the outbox route (:mod:`airflow_ext.outbox.api`) at ``/dingbot`` on the api-server,
  where workers, which have no database, queue their alerts. Airflow 2 needs none: its task
  processes write to the outbox themselves.

Each is built on first use, by the webserver or the api-server, not in every process that loads
plugins.
"""

from __future__ import annotations

import functools
import sys

# Subclass the AirflowPlugin of the plugins manager that is loading us (Airflow checks the base by
# name, so either is valid): in an Airflow 3 task process that is the Task SDK's, and importing
# core's would add about 5 ms to every task's start for nothing.
if "airflow.sdk.plugins_manager" in sys.modules and "airflow.plugins_manager" not in sys.modules:
    from airflow.sdk.plugins_manager import AirflowPlugin
else:
    try:
        from airflow.plugins_manager import AirflowPlugin
    except ImportError:  # an Airflow 3 worker with the Task SDK alone
        from airflow.sdk.plugins_manager import AirflowPlugin


class DingbotPlugin(AirflowPlugin):
    name = "airflow_dingbot"

    @functools.cached_property
    def fastapi_apps(self) -> list[dict]:
        from airflow_ext import lines

        return lines.choose().fastapi_apps()

    @functools.cached_property
    def external_views(self) -> list[dict]:
        from airflow_ext import lines

        return lines.choose().external_views()

    @functools.cached_property
    def appbuilder_views(self) -> list[dict]:
        from airflow_ext import lines

        return lines.choose().appbuilder_views()
