"""Keep the robot's access_token and signing secret out of every log line.

Airflow's secrets masker only redacts inside ``airflow tasks run/test`` and the triggerer
(``MASK_SECRETS_IN_LOGS``); the scheduler and DAG processor also run failure handling, and urllib3
logs each request URL — access_token included — at DEBUG level. So the loggers that can print a
request URL get this filter, which redacts unconditionally.
"""

from __future__ import annotations

import logging
import re
import threading

REDACTED = "***"
#: Loggers that print request URLs, ours, and the one that logs what a backend raised. A logger's
#: filters see only records logged on it, not its children's, so each is named.
GUARDED_LOGGERS = (
    "urllib3.connectionpool",
    "requests",
    "airflow_ext.hooks",
    "airflow_ext.adapters.airflow2",
    "airflow_ext.adapters.airflow3",
    "airflow_ext.dingbot",
    "airflow_ext.outbox.deliverer",
    "airflow.models.taskinstance",
)
_TOKEN_IN_URL = re.compile(r"((?:access_token|sign)=)[^&\s\"'<>]+")


class SecretFilter(logging.Filter):
    """Rewrites a record's message with secrets and URL tokens replaced by ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            self._secrets = self._secrets | {s for s in secrets if s}

    def redact(self, text: str) -> str:
        # Longest first, so a URL is replaced whole rather than around the token inside it.
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return _TOKEN_IN_URL.sub(rf"\1{REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging system's business, not ours
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_FILTER = SecretFilter()


def protect(*secrets: str | None) -> None:
    """Redact ``secrets`` (and any access_token/sign in a URL) from the guarded loggers."""
    _FILTER.add(*secrets)
    for name in GUARDED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
