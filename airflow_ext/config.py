"""Every read of ``[dingbot]`` / ``[dingding]`` happens here, with validation that names the option.

Values come from Airflow's ``conf``: airflow.cfg, ``AIRFLOW__DINGDING__BOT_URL``, the ``_cmd`` and
``_secret`` variants (both sections are registered as core sections with ``bot_url`` and ``secret``
sensitive), so a webhook kept in a secrets backend works like any Airflow secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from airflow_ext.config_description import DEFAULT_BACKEND
from airflow_ext.delivery import DeliverySchedule, RetryPolicy
from airflow_ext.errors import ConfigError

_MOBILE = re.compile(r"^\+?[0-9][0-9-]{4,19}$")


def _conf():
    from airflow.configuration import conf

    return conf


def _mask(*values: str | None) -> None:
    """Keep secrets out of logs: Airflow's masker (task logs) and our own filter (everywhere else)."""
    from airflow.utils.log.secrets_masker import mask_secret

    from airflow_ext.redaction import protect

    for value in values:
        if value:
            mask_secret(value)
    protect(*values)


@dataclass(frozen=True)
class DingTalkSettings:
    """The robot an alert goes to (``[dingding]``)."""

    bot_url: str
    secret: str | None = None
    at_mobiles: tuple[str, ...] = ()
    at_all: bool = False
    keyword: str | None = None

    def __repr__(self) -> str:  # never show the webhook or the secret, even in a debugger dump
        return (
            f"DingTalkSettings(bot_url=***, secret={'***' if self.secret else None}, "
            f"at_mobiles={self.at_mobiles!r}, at_all={self.at_all!r}, keyword={self.keyword!r})"
        )


def parse_bot_url(value: str | None) -> tuple[str, str]:
    """Return ``(bot_url, access_token)``; the error never repeats the URL, which holds the token."""
    if not value or not value.strip():
        raise ConfigError("[dingding] bot_url is not set (AIRFLOW__DINGDING__BOT_URL)")
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            "[dingding] bot_url must be an http(s) URL like https://oapi.dingtalk.com/robot/send?access_token=..."
        )
    tokens = parse_qs(parts.query).get("access_token", [])
    if len(tokens) != 1 or not tokens[0].strip():
        raise ConfigError("[dingding] bot_url has no access_token query parameter")
    return url, tokens[0]


def parse_at_mobiles(value: str | None) -> tuple[str, ...]:
    mobiles = tuple(m.strip() for m in (value or "").split(",") if m.strip())
    for mobile in mobiles:
        if not _MOBILE.match(mobile):
            raise ConfigError(f"[dingding] at_mobiles: {mobile!r} is not a mobile number")
    return mobiles


def _positive(section: str, key: str, value: Any, cast: Callable[[Any], Any]):
    try:
        number = cast(value)
    except (TypeError, ValueError):
        raise ConfigError(f"[{section}] {key} must be a number, got {value!r}") from None
    if number <= 0:
        raise ConfigError(f"[{section}] {key} must be greater than 0, got {value!r}")
    return number


def load_dingtalk_settings(conf=None) -> DingTalkSettings:
    conf = conf or _conf()
    bot_url, token = parse_bot_url(conf.get("dingding", "bot_url", fallback=None))
    secret = (conf.get("dingding", "secret", fallback=None) or "").strip() or None
    _mask(bot_url, token, secret)
    if secret is not None and not secret.startswith("SEC"):
        raise ConfigError("[dingding] secret must be the robot's signing secret, which starts with SEC")
    try:
        at_all = conf.getboolean("dingding", "at_all", fallback=False)
    except Exception:
        raise ConfigError("[dingding] at_all must be true or false") from None
    return DingTalkSettings(
        bot_url=bot_url,
        secret=secret,
        at_mobiles=parse_at_mobiles(conf.get("dingding", "at_mobiles", fallback="")),
        at_all=at_all,
        keyword=(conf.get("dingding", "keyword", fallback="") or "").strip() or None,
    )


def _dingbot_positive(conf, key: str, default: Any, cast: Callable[[Any], Any]):
    return _positive("dingbot", key, conf.get("dingbot", key, fallback=str(default)), cast)


def load_retry_policy(conf=None) -> RetryPolicy:
    """``[dingbot]`` timeout, connect_timeout, read_timeout and max_attempts as a RetryPolicy."""
    conf = conf or _conf()
    defaults = RetryPolicy()

    return RetryPolicy(
        deadline_s=_dingbot_positive(conf, "timeout", defaults.deadline_s, float),
        connect_timeout_s=_dingbot_positive(conf, "connect_timeout", defaults.connect_timeout_s, float),
        read_timeout_s=_dingbot_positive(conf, "read_timeout", defaults.read_timeout_s, float),
        max_attempts=_dingbot_positive(conf, "max_attempts", defaults.max_attempts, int),
    )


def load_delivery_schedule(conf=None) -> DeliverySchedule:
    """``[dingbot]`` rate_limit and outbox_* options, as the deliverer's schedule."""
    conf = conf or _conf()
    defaults = DeliverySchedule()

    return DeliverySchedule(
        rate_limit=_dingbot_positive(conf, "rate_limit", defaults.rate_limit, int),
        poll_interval_s=_dingbot_positive(conf, "outbox_poll_interval", defaults.poll_interval_s, float),
        lease_s=_dingbot_positive(conf, "outbox_lease", defaults.lease_s, float),
        purge_after_s=_dingbot_positive(
            conf, "outbox_purge_after_days", defaults.purge_after_s / 86400, float
        )
        * 86400,
    )


def backend_path(conf=None) -> str:
    conf = conf or _conf()
    return (conf.get("dingbot", "ding_bot_backend", fallback=DEFAULT_BACKEND) or "").strip()


def load_backend(conf=None) -> Callable[..., Any]:
    """Import ``[dingbot] ding_bot_backend`` with Airflow's own loader, as ``[email] email_backend`` is."""
    conf = conf or _conf()
    path = backend_path(conf)
    if not path:
        raise ConfigError(f"[dingbot] ding_bot_backend is empty (the default is {DEFAULT_BACKEND})")
    try:
        backend = conf.getimport("dingbot", "ding_bot_backend", fallback=DEFAULT_BACKEND)
    except Exception:
        raise ConfigError(f"[dingbot] ding_bot_backend: cannot import {path!r}") from None
    if not callable(backend):
        raise ConfigError(f"[dingbot] ding_bot_backend: {path!r} is not callable")
    return backend
