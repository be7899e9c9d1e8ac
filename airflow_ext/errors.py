"""Every exception airflow_ext raises derives from :class:`DingbotError`."""

from __future__ import annotations


class DingbotError(Exception):
    """Root of all airflow-dingbot errors."""


class ConfigError(DingbotError):
    """A configuration value is missing or malformed; the message names the option."""


class PatchError(DingbotError):
    """The patch series cannot be applied, checked or reverted on this Airflow installation."""


class DeliveryError(DingbotError):
    """An alert was not accepted by the robot.

    ``retryable`` tells the delivery loop whether trying again can succeed (throttling, 5xx,
    network trouble) or cannot (bad token, signature/keyword/IP refused, message too long).
    ``throttled`` says the robot refused for its rate limit (it needs a pause, not a quick retry);
    ``retry_after_s`` is how long the robot asked to wait, when it said so (Slack's Retry-After).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        errcode: int | None = None,
        errmsg: str | None = None,
        http_status: int | None = None,
        throttled: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.errcode = errcode
        self.errmsg = errmsg
        self.http_status = http_status
        self.throttled = throttled
        self.retry_after_s = retry_after_s


class DeadlineExceeded(DeliveryError):
    """The per-alert deadline (``[dingbot] timeout``) ran out before the robot accepted the alert."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)
