"""Every read of ``[dingbot]`` / ``[dingding]`` happens here, with validation that names the option.

Values come from Airflow's ``conf``: airflow.cfg, ``AIRFLOW__DINGDING__BOT_URL``, the ``_cmd`` and
``_secret`` variants (both sections are registered as core sections with ``bot_url`` and ``secret``
sensitive), so a webhook kept in a secrets backend works like any Airflow secret.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from airflow_ext.config_description import CONFIG_DESCRIPTION, DEFAULT_BACKEND
from airflow_ext.delivery import DeliverySchedule, RetryPolicy
from airflow_ext.errors import ConfigError
from airflow_ext.problems import report_once

log = logging.getLogger(__name__)

_MOBILE = re.compile(r"^\+?[0-9][0-9-]{4,19}$")

#: How logs, checks and routes name the robot of the ``[dingding]`` section.
DINGDING_ROBOT = "[dingding]"


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
    from airflow_ext.airflow_port import airflow
    from airflow_ext.redaction import protect

    port = airflow()
    for value in values:
        if value:
            port.mask_secret(value)
    protect(*values)


@dataclass(frozen=True)
class RobotSettings:
    """One chat robot an alert goes to: the ``[dingding]`` section or an Airflow Connection.

    ``url`` is the webhook as the channel takes it, credential included; ``mentions`` are the
    channel's mention ids (DingTalk and WeCom: mobile numbers; Feishu: user ids; Slack: member ids).
    """

    channel: str
    url: str
    secret: str | None = None
    mentions: tuple[str, ...] = ()
    at_all: bool = False
    keyword: str | None = None
    #: ``[dingding] message_template`` as written; compiled (and checked) where it is used.
    message_template: str | None = None
    #: The Connection id, or ``[dingding]``: how logs, checks and ``airflow-ext route`` name it.
    name: str = DINGDING_ROBOT

    def __repr__(self) -> str:  # never show the webhook or the secret, even in a debugger dump
        return (
            f"RobotSettings(channel={self.channel!r}, name={self.name!r}, url=***, "
            f"secret={'***' if self.secret else None}, mentions={self.mentions!r}, "
            f"at_all={self.at_all!r}, keyword={self.keyword!r})"
        )

    @property
    def bot_url(self) -> str:
        return self.url

    @property
    def at_mobiles(self) -> tuple[str, ...]:
        return self.mentions

    def mentions_summary(self) -> str:
        """Who the robot pings, for check and route output: "2 mentions", "1 mention and @all"."""
        count = len(self.mentions)
        return f"{count} mention{'' if count == 1 else 's'}" + (" and @all" if self.at_all else "")


def DingTalkSettings(  # noqa: N802 - the settings of the [dingding] robot, by their option names
    bot_url: str,
    secret: str | None = None,
    at_mobiles: tuple[str, ...] = (),
    at_all: bool = False,
    keyword: str | None = None,
    message_template: str | None = None,
    name: str = DINGDING_ROBOT,
) -> RobotSettings:
    return RobotSettings(
        channel="dingtalk",
        url=bot_url,
        secret=secret,
        mentions=tuple(at_mobiles),
        at_all=at_all,
        keyword=keyword,
        message_template=message_template,
        name=name,
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


def load_dingtalk_settings(conf=None) -> RobotSettings:
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


#: Numeric options that may be left empty: None then (``rate_limit``: each channel's own limit).
OPTIONAL_NUMBERS = frozenset({"rate_limit"})


def read_dingbot_number(conf, key: str):
    """One numeric ``[dingbot]`` option, its documented default when unset."""
    conf = conf or _conf()
    default = CONFIG_DESCRIPTION["dingbot"]["options"][key]["default"]
    value = read_option(conf, "dingbot", key, default)
    if key in OPTIONAL_NUMBERS and not (value or "").strip():
        return None
    return _positive("dingbot", key, value, DINGBOT_NUMBERS[key])


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
    rate_limit = read_dingbot_number(conf, "rate_limit")
    return DeliverySchedule(
        rate_limit=rate_limit if rate_limit is not None else DeliverySchedule.NO_LIMIT,
        poll_interval_s=read_dingbot_number(conf, "outbox_poll_interval"),
        lease_s=read_dingbot_number(conf, "outbox_lease"),
        purge_after_s=read_dingbot_number(conf, "outbox_purge_after_days") * 86400,
    )


def read_execution_api_url(conf=None) -> str:
    """``[core] execution_api_server_url``: Airflow 3 workers post outbox alerts beside it."""
    conf = conf or _conf()
    return read_option(conf, "core", "execution_api_server_url", "") or ""


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


# --- robots as Airflow Connections ----------------------------------------------------------------

#: The conn type of a robot Connection, and the channel (folder under airflow_ext.channels) it is.
CHANNEL_OF_CONN_TYPE = {"dingding": "dingtalk", "wecom": "wecom", "feishu": "feishu", "slackwebhook": "slack"}
#: The extras each conn type takes; any other extra is named by ``airflow-ext check``.
CONNECTION_EXTRAS = {
    "dingding": ("secret", "keyword", "at_mobiles", "at_all"),
    "wecom": ("mentioned_mobile_list",),
    "feishu": ("secret", "keyword", "mention_ids", "at_all"),
    # the Slack provider's own extras (timeout, proxy) are accepted and not used
    "slackwebhook": ("mention_ids", "at_all", "timeout", "proxy"),
}


@dataclass(frozen=True)
class RobotConnection:
    """What a robot Connection holds, as the line's adapter read it (from any secrets backend)."""

    conn_id: str
    conn_type: str
    host: str | None
    password: str | None
    extra: dict[str, Any]

    def __repr__(self) -> str:
        return f"RobotConnection(conn_id={self.conn_id!r}, conn_type={self.conn_type!r}, password=***)"


def robot_connection(conn_id: str, conn: Any) -> RobotConnection:
    """What a robot needs of an Airflow Connection object (either line's, any secrets backend)."""
    try:
        extra = conn.extra_dejson
    except Exception:
        raise ConfigError(f"Connection {conn_id!r}: extra is not a JSON object") from None
    return RobotConnection(
        conn_id=conn_id,
        conn_type=conn.conn_type or "",
        host=conn.host,
        password=conn.password,
        extra=extra if isinstance(extra, dict) else {},
    )


def channel_module(channel: str):
    """The channel's robot module (``airflow_ext.channels.<channel>.robot``): its webhook URL, token
    checks and mention ids."""
    import importlib

    return importlib.import_module(f"airflow_ext.channels.{channel}.robot")


def read_connection(conn_id: str) -> RobotConnection:
    """The Connection ``conn_id`` as this Airflow line reads it; a ConfigError naming it if absent."""
    from airflow_ext.airflow_port import airflow

    return airflow().get_connection(conn_id)


def _extra_list(conn_id: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(item, (str, int)) for item in value):
        return tuple(str(item).strip() for item in value if str(item).strip())
    raise ConfigError(f"Connection {conn_id!r}: extra {key} must be a list or a comma-separated string")


def _mobiles(conn_id: str, key: str, value: Any) -> tuple[str, ...]:
    mobiles = _extra_list(conn_id, key, value)
    bad = [mobile for mobile in mobiles if not _MOBILE.match(mobile) and mobile != "@all"]
    if bad:
        raise ConfigError(
            f"Connection {conn_id!r}: extra {key}: {', '.join(map(repr, bad))} "
            f"{'is not a mobile number' if len(bad) == 1 else 'are not mobile numbers'}"
        )
    return mobiles


def _mention_ids(conn_id: str, module: Any, value: Any) -> tuple[str, ...]:
    """``mention_ids`` as the channel writes them (``module.MENTION_ID``), so none can be markup."""
    ids = _extra_list(conn_id, "mention_ids", value)
    bad = [who for who in ids if not module.MENTION_ID.match(who)]
    if bad:
        raise ConfigError(
            f"Connection {conn_id!r}: extra mention_ids: {', '.join(map(repr, bad))} "
            f"{'is not' if len(bad) == 1 else 'are not each'} {module.MENTION_ID_NAME}"
        )
    return ids


def _extra_bool(conn_id: str, key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None or value == "":
        return False
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ConfigError(f"Connection {conn_id!r}: extra {key} must be true or false")


def _extra_text(conn_id: str, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"Connection {conn_id!r}: extra {key} must be a string")
    return value.strip() or None


def robot_settings_from_connection(conn: RobotConnection) -> RobotSettings:
    """The robot a Connection describes, every field checked; errors name the Connection, never a secret."""
    conn_id = conn.conn_id
    conn_type = (conn.conn_type or "").strip().lower()
    channel = CHANNEL_OF_CONN_TYPE.get(conn_type)
    if channel is None:
        raise ConfigError(
            f"Connection {conn_id!r} has conn type {conn.conn_type!r}; a robot Connection is one of "
            f"{', '.join(sorted(CHANNEL_OF_CONN_TYPE))}"
        )
    module = channel_module(channel)
    token = (conn.password or "").strip()
    _mask(token)
    if not token:
        what = getattr(module, "TOKEN_NAME", "webhook token")
        raise ConfigError(f"Connection {conn_id!r} ({conn_type}) has no password: it holds the {what}")
    problem = module.validate_token(token)
    if problem:
        raise ConfigError(f"Connection {conn_id!r} ({conn_type}): the password {problem}")
    extra = conn.extra if isinstance(conn.extra, dict) else {}
    host = (conn.host or "").strip() or module.DEFAULT_HOST
    if "://" not in host:
        host = f"https://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"Connection {conn_id!r}: host must be an http(s) URL like {module.DEFAULT_HOST}")
    url = module.webhook_url(host, token)
    secret = (
        _extra_text(conn_id, "secret", extra.get("secret"))
        if "secret" in CONNECTION_EXTRAS[conn_type]
        else None
    )
    _mask(url, secret)
    if secret and channel == "dingtalk" and not secret.startswith("SEC"):
        raise ConfigError(
            f"Connection {conn_id!r}: extra secret must be the robot's signing secret, which starts with SEC"
        )
    if channel == "dingtalk":
        mentions = _mobiles(conn_id, "at_mobiles", extra.get("at_mobiles"))
    elif channel == "wecom":
        mentions = _mobiles(conn_id, "mentioned_mobile_list", extra.get("mentioned_mobile_list"))
    elif "mention_ids" in CONNECTION_EXTRAS[conn_type]:
        mentions = _mention_ids(conn_id, module, extra.get("mention_ids"))
    else:
        mentions = ()
    return RobotSettings(
        channel=channel,
        url=url,
        secret=secret,
        mentions=mentions,
        at_all=_extra_bool(conn_id, "at_all", extra.get("at_all"))
        if "at_all" in CONNECTION_EXTRAS[conn_type]
        else False,
        keyword=_extra_text(conn_id, "keyword", extra.get("keyword"))
        if "keyword" in CONNECTION_EXTRAS[conn_type]
        else None,
        name=conn_id,
    )


def unknown_extras(conn: RobotConnection) -> list[str]:
    known = CONNECTION_EXTRAS.get((conn.conn_type or "").strip().lower(), ())
    return sorted(key for key in (conn.extra or {}) if key not in known and not key.startswith("__"))


def load_robot_settings(robot: str) -> RobotSettings:
    """A robot by name: a Connection id, or ``[dingding]`` for the section."""
    if robot == DINGDING_ROBOT:
        return load_dingtalk_settings()
    return robot_settings_from_connection(read_connection(robot))


def read_default_flag(conf, kind: str) -> bool:
    """``[dingbot] default_ding_on_failure`` / ``default_ding_on_retry``."""
    conf = conf or _conf()
    key = f"default_ding_on_{kind}"
    try:
        return conf.getboolean("dingbot", key, fallback=False)
    except Exception:
        raise ConfigError(f"[dingbot] {key} must be true or false") from None


def read_routes_text(conf=None) -> str:
    conf = conf or _conf()
    return (read_option(conf, "dingbot", "routes", "") or "").strip()


def conn_ids_of(value: Any, where: str) -> tuple[str, ...]:
    """A conn id, a comma-separated string of them or a list of them, as a tuple without repeats.

    Airflow conn ids never hold commas or spaces, so splitting on them cannot cut one in two.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        items: Sequence[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ConfigError(f"{where} must be a conn id or a list of conn ids, got {type(value).__name__}")
    ids: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{where} must hold conn ids (strings), got {item!r}")
        item = item.strip()
        if item and item not in ids:
            ids.append(item)
    return tuple(ids)


def read_default_conn_ids(conf=None) -> tuple[str, ...]:
    conf = conf or _conf()
    return conn_ids_of(read_option(conf, "dingbot", "default_conn_id", ""), "[dingbot] default_conn_id")
