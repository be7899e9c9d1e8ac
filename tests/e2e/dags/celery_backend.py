"""A [dingbot] ding_bot_backend for tests/e2e/test_celery_executor.py, so that one Celery cluster
covers both shipped backends: an alert routed to the ``lost_direct`` robot is sent directly, by the
default backend, from whichever process reports the try; every other alert goes through the outbox.
"""

from airflow_ext.dingbot import dingbot_msg_sender, outbox_sender

#: The Connection id of the robot whose alerts the default (direct) backend sends.
DIRECT_CONN_ID = "lost_direct"


def send(alert):
    if DIRECT_CONN_ID in alert.conn_ids:
        return dingbot_msg_sender(alert)
    return outbox_sender(alert)
