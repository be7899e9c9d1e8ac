"""The [dingbot] ding_bot_backend of tests/e2e/test_debug_logs.py, so that one stack covers both
shipped backends: alerts for the outbox's robot go through the outbox (and `airflow-ext deliver`),
every other alert is sent directly by the process that reports the try."""

from airflow_ext.dingbot import dingbot_msg_sender, outbox_sender

OUTBOX_CONN_ID = "outbox_dingtalk"  # as in dingbot_debug.py


def send(alert):
    if OUTBOX_CONN_ID in alert.conn_ids:
        return outbox_sender(alert)
    return dingbot_msg_sender(alert)
