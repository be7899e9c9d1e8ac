"""The ``[dingbot]`` and ``[dingding]`` sections, described the way Airflow's own ``config.yml`` is.

The patched ``airflow/configuration.py`` merges this into Airflow's core configuration description,
so both sections exist in every Airflow process (scheduler, DAG processor, ``airflow tasks run`` and
``tasks test``), appear in generated ``airflow.cfg`` files and ``airflow config list``, and the options
marked ``sensitive`` get ``_cmd`` / ``_secret`` variants and are masked like any core secret.

This module is imported while ``airflow.configuration`` itself is being imported: it must not import
anything from Airflow or from the rest of ``airflow_ext``.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

DEFAULT_BACKEND = "airflow_ext.dingbot.dingbot_msg_sender"


def _option(description: str, type_: str, default: str | None, example: str | None = None, **extra: Any):
    return {
        "description": description,
        "version_added": None,
        "type": type_,
        "example": example,
        "default": default,
        **extra,
    }


CONFIG_DESCRIPTION: dict[str, dict[str, Any]] = {
    "dingbot": {
        "description": "How failing tasks are reported to chat robots (airflow-dingbot).\n",
        "options": {
            "ding_bot_backend": _option(
                "Import path of the callable that delivers an alert: backend(alert) -> result.\n",
                "string",
                DEFAULT_BACKEND,
                example="mypackage.alerts.send_to_pager",
            ),
            "timeout": _option(
                "Total time in seconds one alert may take, retries included; failure handling never "
                "waits longer for the robot.\n",
                "float",
                "10",
            ),
            "connect_timeout": _option(
                "Seconds to wait for the robot's TCP/TLS connection, per attempt.\n", "float", "3"
            ),
            "read_timeout": _option("Seconds to wait for the robot's answer, per attempt.\n", "float", "5"),
            "max_attempts": _option(
                "Attempts per alert for retryable failures (throttling, 5xx, network), within timeout.\n",
                "integer",
                "3",
            ),
            "rate_limit": _option(
                "Outbox: at most this many messages per robot in any rolling 60 s, shared by all "
                "deliverers; empty: each channel's own limit (DingTalk and WeCom 20, Slack 60, Feishu "
                "100). A value can only lower a channel's limit.\n",
                "integer",
                "",
            ),
            "outbox_poll_interval": _option(
                "Outbox: seconds between the deliverer's looks for new alerts.\n", "float", "0.5"
            ),
            "outbox_lease": _option(
                "Outbox: seconds a deliverer holds claimed alerts; a killed one's are retried after.\n",
                "float",
                "60",
            ),
            "outbox_purge_after_days": _option(
                "Outbox: delivered alerts are deleted this many days after delivery.\n", "float", "7"
            ),
            "default_ding_on_failure": _option(
                "Whether tasks alert on a final failure when neither the task nor the DAG's "
                "default_args set ding_on_failure (like [email] default_email_on_failure). On Airflow 3 "
                "it is read where the DAG is parsed and stored with the serialized DAG.\n",
                "boolean",
                "False",
            ),
            "default_ding_on_retry": _option(
                "Whether tasks alert on a failed try that will be retried when neither the task nor "
                "the DAG's default_args set ding_on_retry.\n",
                "boolean",
                "False",
            ),
            "routes": _option(
                "Where alerts go when the task sets no ding_conn_id: a JSON list of rules, the first "
                "that matches wins. Each rule has a conn_id (one Airflow Connection id or a list of "
                "them: one message on each) and optional match keys dag_id (a glob), tag (a DAG tag) "
                "and owner (the task's owner); a rule without match keys matches every task.\n",
                "string",
                "",
                example='[{"tag": "team-payments", "conn_id": "payments_dingtalk"}, '
                '{"dag_id": "ml_*", "conn_id": ["ml_wecom", "ml_feishu"]}]',
            ),
            "default_conn_id": _option(
                "The robot Connection (or comma-separated Connections) for alerts no ding_conn_id or "
                "route chose; empty: the [dingding] robot.\n",
                "string",
                "",
                example="platform_dingtalk",
            ),
        },
    },
    "dingding": {
        "description": "The DingTalk custom robot that receives the alerts.\n",
        "options": {
            "bot_url": _option(
                "Webhook URL of the robot, including access_token. Keep it secret.\n",
                "string",
                None,
                example="https://oapi.dingtalk.com/robot/send?access_token=...",
                sensitive=True,
            ),
            "secret": _option(
                "Signing secret (starts with SEC) when the robot uses signature security; empty if not.\n",
                "string",
                None,
                sensitive=True,
            ),
            "at_mobiles": _option(
                "Comma-separated mobile numbers to @mention in every alert.\n",
                "string",
                "",
                example="13800000000,13900000000",
            ),
            "at_all": _option("Whether every alert @mentions the whole group.\n", "boolean", "False"),
            "message_template": _option(
                "Jinja template for the markdown text of a single alert, rendered in Jinja's sandbox; "
                "empty for the built-in layout. Variables: header, error, traceback, log_link (markdown "
                "blocks) and alert (dag_id, task_id, run_id, map_index, try_number, attempts, outcome, "
                "kind, logical_date, hostname, log_url, exception_type, occurred_at). Text from the task "
                "is escaped and never evaluated. The configured mentions and keyword are always added.\n",
                "string",
                "",
                example="{{ header }}  Runbook: https://wiki.example/runbooks/{{ alert.dag_id }}",
            ),
            "keyword": _option(
                "Keyword the robot's keyword security requires; every message carries it.\n",
                "string",
                "",
                example="Airflow",
            ),
        },
    },
}


def configuration_description() -> dict[str, dict[str, Any]]:
    """A copy of the sections, safe for Airflow to mutate (it stamps ``source`` into them)."""
    return deepcopy(CONFIG_DESCRIPTION)
