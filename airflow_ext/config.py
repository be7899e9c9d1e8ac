"""Every read of ``[dingbot]`` / ``[dingding]`` happens here, with validation that names the option.

Values come from Airflow's ``conf``: airflow.cfg, ``AIRFLOW__DINGDING__BOT_URL``, the ``_cmd`` and
``_secret`` variants (both sections are registered as core sections with ``bot_url`` and ``secret``
sensitive), so a webhook kept in a secrets backend works like any Airflow secret.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from airflow_ext.config_description import CONFIG_DESCRIPTION, DEFAULT_BACKEND
from airflow_ext.delivery import DeliverySchedule, RetryPolicy
from airflow_ext.errors import ConfigError
from airflow_ext.problems import report_once

log = logging.getLogger(__name__)

_MOBILE = re.compile(r"^\+?[0-9][0-9-]{4,19}$")


def _conf():
    from airflow.configuration import conf

    return conf


def read_option(conf, section: str, key: str, fallback: str | None = None) -> str | None:
    """``conf.get``, with a failure to read the option (a ``_cmd`` that fails, a stray ``%`` in
    airflow.cfg) as a ConfigError naming it. The message never quotes the value: it may hold a secret.
    """
    try:
        return conf.get(section, key, fallback=fallback)
    except Exception as err:
        hint = ""
        if "Interpolation" in type(err).__name__:
            hint = ": in airflow.cfg a literal % is written %% (a Jinja {% ... %} as {%% ... %%})"
        raise ConfigError(f"[{section}] {key} cannot be read ({type(err).__name__}){hint}") from None


def _mask(*values: str | None) -> None:
    """Keep secrets out of logs: Airflow's masker (task logs) and our own filter (everywhere else)."""
    from airflow_ext.adapters import current
    from airflow_ext.redaction import protect

    adapter = current()
    for value in values:
        if value:
            adapter.mask_secret(value)
    protect(*values)


@dataclass(frozen=True)
class DingTalkSettings:
    """The robot an alert goes to (``[dingding]``)."""

    bot_url: str
    secret: str | None = None
    at_mobiles: tuple[str, ...] = ()
    at_all: bool = False
    keyword: str | None = None
    #: ``[dingding] message_template`` as written; compiled (and checked) where it is used.
    message_template: str | None = None

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
    bad = [mobile for mobile in mobiles if not _MOBILE.match(mobile)]
    if bad:
        raise ConfigError(
            f"[dingding] at_mobiles: {', '.join(map(repr, bad))} "
            f"{'is not a mobile number' if len(bad) == 1 else 'are not mobile numbers'} "
            "(expected comma-separated digits, e.g. 13800000000,13900000000)"
        )
    return mobiles


_WHOLE = {int: "a whole number", float: "a number"}


def _positive(section: str, key: str, value: Any, cast: Callable[[Any], Any]):
    try:
        number = cast(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"[{section}] {key} must be {_WHOLE.get(cast, 'a number')}, got {value!r}"
        ) from None
    if number <= 0:
        raise ConfigError(f"[{section}] {key} must be greater than 0, got {value!r}")
    return number


def read_bot_url(conf=None) -> str:
    conf = conf or _conf()
    bot_url, token = parse_bot_url(read_option(conf, "dingding", "bot_url"))
    _mask(bot_url, token)
    return bot_url


def read_secret(conf=None) -> str | None:
    conf = conf or _conf()
    secret = (read_option(conf, "dingding", "secret") or "").strip() or None
    _mask(secret)
    if secret is not None and not secret.startswith("SEC"):
        raise ConfigError(
            "[dingding] secret must be the robot's signing secret, which starts with SEC "
            "(leave it empty if the robot does not use signature security)"
        )
    return secret


def read_at_all(conf=None) -> bool:
    conf = conf or _conf()
    try:
        return conf.getboolean("dingding", "at_all", fallback=False)
    except Exception:
        raise ConfigError("[dingding] at_all must be true or false") from None


def read_at_mobiles(conf=None) -> tuple[str, ...]:
    conf = conf or _conf()
    return parse_at_mobiles(read_option(conf, "dingding", "at_mobiles", ""))


def text_option(conf, key: str) -> str | None:
    """A ``[dingding]`` text option, None when empty."""
    return (read_option(conf, "dingding", key, "") or "").strip() or None


def load_dingtalk_settings(conf=None) -> DingTalkSettings:
    conf = conf or _conf()
    return DingTalkSettings(
        bot_url=read_bot_url(conf),
        secret=read_secret(conf),
        at_mobiles=read_at_mobiles(conf),
        at_all=read_at_all(conf),
        keyword=text_option(conf, "keyword"),
        message_template=_message_template(conf),
    )


def _message_template(conf) -> str | None:
    """The operator's layout; one that cannot be read costs the layout, never the alert."""
    try:
        return text_option(conf, "message_template")
    except ConfigError as err:
        report_once(log, "DingTalk alerts use the built-in layout", str(err))
        return None


#: The numeric ``[dingbot]`` options and their types; each must be greater than 0.
DINGBOT_NUMBERS: dict[str, Callable[[Any], Any]] = {
    "timeout": float,
    "connect_timeout": float,
    "read_timeout": float,
    "max_attempts": int,
    "rate_limit": int,
    "outbox_poll_interval": float,
    "outbox_lease": float,
    "outbox_purge_after_days": float,
}


def read_dingbot_number(conf, key: str):
    """One numeric ``[dingbot]`` option, its documented default when unset."""
    conf = conf or _conf()
    default = CONFIG_DESCRIPTION["dingbot"]["options"][key]["default"]
    return _positive("dingbot", key, read_option(conf, "dingbot", key, default), DINGBOT_NUMBERS[key])


def load_retry_policy(conf=None) -> RetryPolicy:
    """``[dingbot]`` timeout, connect_timeout, read_timeout and max_attempts as a RetryPolicy."""
    conf = conf or _conf()
    return RetryPolicy(
        deadline_s=read_dingbot_number(conf, "timeout"),
        connect_timeout_s=read_dingbot_number(conf, "connect_timeout"),
        read_timeout_s=read_dingbot_number(conf, "read_timeout"),
        max_attempts=read_dingbot_number(conf, "max_attempts"),
    )


def load_delivery_schedule(conf=None) -> DeliverySchedule:
    """``[dingbot]`` rate_limit and outbox_* options, as the deliverer's schedule."""
    conf = conf or _conf()
    return DeliverySchedule(
        rate_limit=read_dingbot_number(conf, "rate_limit"),
        poll_interval_s=read_dingbot_number(conf, "outbox_poll_interval"),
        lease_s=read_dingbot_number(conf, "outbox_lease"),
        purge_after_s=read_dingbot_number(conf, "outbox_purge_after_days") * 86400,
    )


def read_outbox_url(conf=None) -> str:
    """Where Airflow 3 workers post outbox alerts: beside ``[core] execution_api_server_url``."""
    from airflow_ext.outbox.api_client import outbox_url

    conf = conf or _conf()
    return outbox_url(read_option(conf, "core", "execution_api_server_url", "") or "")


def backend_path(conf=None) -> str:
    conf = conf or _conf()
    return (read_option(conf, "dingbot", "ding_bot_backend", DEFAULT_BACKEND) or "").strip()


def load_backend(conf=None) -> Callable[..., Any]:
    """Import ``[dingbot] ding_bot_backend`` with Airflow's own loader, as ``[email] email_backend`` is."""
    conf = conf or _conf()
    path = backend_path(conf)
    if not path:
        raise ConfigError(f"[dingbot] ding_bot_backend is empty (the default is {DEFAULT_BACKEND})")
    problem = _import_problem(path)  # first, so that Airflow's loader does not log a warning of its own
    if problem:
        raise ConfigError(f"[dingbot] ding_bot_backend: cannot import {path!r} ({problem})")
    try:
        backend = conf.getimport("dingbot", "ding_bot_backend", fallback=DEFAULT_BACKEND)
    except Exception:
        raise ConfigError(f"[dingbot] ding_bot_backend: cannot import {path!r}") from None
    if not callable(backend):
        raise ConfigError(f"[dingbot] ding_bot_backend: {path!r} is not callable")
    return backend


def _import_problem(path: str) -> str | None:
    """Why ``path`` does not import, in the words an operator needs to fix the option; None if it does."""
    import importlib

    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        return "expected a dotted path like package.module.function"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        return f"no module named {err.name!r}"
    except Exception as err:  # the module exists but fails on import: its author needs the type
        return f"importing {module_name} raised {type(err).__name__}"
    if not hasattr(module, attribute):
        return f"module {module_name} has no attribute {attribute!r}"
    return None
