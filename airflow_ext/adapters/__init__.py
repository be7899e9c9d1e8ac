"""One adapter per Airflow line: the only code that knows which line is installed.

Each adapter builds :class:`airflow_ext.alert.Alert` objects from its line's task instances (its
functions are what the patches call) and implements :class:`airflow_ext.airflow_port.AirflowPort`,
the few Airflow services whose import path or behaviour differs between lines (the secrets
masker, ``Stats``, Connections, the metadata database, the outbox's way in). Importing an adapter
installs it as the core's port; :func:`airflow_ext.lines.choose` picks the one of the installed
Airflow. Everything else in ``airflow_ext`` is the same on every line and imports no adapter.
"""
