"""``airflow-ext check``: every configuration problem, one line each, found without sending anything.

Each check reads one option through the same function the alert path uses (``airflow_ext.config``),
so what the check accepts is exactly what failure handling accepts. The lines name the option and
what is wrong with it, and never repeat a value that may hold a secret.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Iterable
from typing import Any, Callable

from airflow_ext import config
from airflow_ext.airflow_port import airflow
from airflow_ext.config_description import CONFIG_DESCRIPTION, DEFAULT_BACKEND
from airflow_ext.errors import ConfigError

OUTBOX_BACKEND = "airflow_ext.dingbot.outbox_sender"
#: Backends of this package that send to the ``[dingding]`` robot, so need it configured.
DINGTALK_BACKENDS = frozenset({DEFAULT_BACKEND, OUTBOX_BACKEND})

#: Airflow's own variants of a sensitive option: ``bot_url_cmd``, ``bot_url_secret``.
_SENSITIVE_VARIANTS = ("_cmd", "_secret")


def _known_options(section: str) -> set[str]:
    options = CONFIG_DESCRIPTION[section]["options"]
    known = set(options)
    for key, description in options.items():
        if description.get("sensitive"):
            known.update(key + suffix for suffix in _SENSITIVE_VARIANTS)
    return known


def _set_options(conf: Any, section: str) -> dict[str, str]:
    """Option names set for ``section`` in airflow.cfg or the environment, and where."""
    found: dict[str, str] = {}
    if conf.has_section(section):
        for key in conf.options(section):  # the file's options; defaults live elsewhere in Airflow
            found[key] = "airflow.cfg"
    prefix = f"AIRFLOW__{section.upper()}__"
    for name in os.environ:
        if name.startswith(prefix):
            found[name[len(prefix) :].lower()] = name
    return found


def unknown_option_problems(conf: Any) -> list[str]:
    problems = []
    for section in CONFIG_DESCRIPTION:
        known = _known_options(section)
        for key, where in sorted(_set_options(conf, section).items()):
            if key in known:
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known options: {', '.join(sorted(known))}"
            problems.append(f"[{section}] {key}: unknown option (set in {where}){hint}")
    return problems


def check_backend(conf: Any) -> None:
    backend = config.load_backend(conf)
    try:
        inspect.signature(backend).bind(object())
    except TypeError:
        raise ConfigError(
            f"[dingbot] ding_bot_backend: {config.backend_path(conf)!r} cannot be called with one "
            "argument (the alert): backend(alert) -> result"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): the call itself will tell
        pass


def check_template(conf: Any) -> None:
    """Compile the template and render a sample alert with it: unknown names show up here."""
    from airflow_ext.channels.dingtalk.robot import DingTalkRobot
    from airflow_ext.dingbot import sample_alert
    from airflow_ext.render import render_markdown
    from airflow_ext.template import MessageTemplate

    source = config.text_option(conf, "message_template")
    if source:
        template = MessageTemplate(source)
        settings = config.DingTalkSettings(bot_url="http://robot.invalid/robot/send?access_token=x")
        render_markdown(sample_alert(), template=template, fits=DingTalkRobot(settings).fits)


def named_conn_ids(conf: Any) -> list[str]:
    """Every robot Connection the configuration names (routes, then default_conn_id), once each."""
    from airflow_ext import routing

    names: list[str] = []
    try:
        for rule in routing.parse_routes(config.read_routes_text(conf)):
            names += [name for name in rule.conn_ids if name not in names]
    except ConfigError:
        pass  # check_routes says why
    try:
        names += [name for name in config.read_default_conn_ids(conf) if name not in names]
    except ConfigError:
        pass
    return names


def connection_problems(conn_id: str) -> list[str]:
    """What is wrong with one robot Connection, one line each (empty if it can send)."""
    if conn_id == config.DINGDING_ROBOT:
        return []
    try:
        conn = config.read_connection(conn_id)
    except ConfigError as err:
        return [str(err)]
    problems = []
    try:
        config.robot_settings_from_connection(conn)
    except ConfigError as err:
        problems.append(str(err))
    unknown = config.unknown_extras(conn)
    if unknown and conn.conn_type in config.CONNECTION_EXTRAS:
        known = ", ".join(config.CONNECTION_EXTRAS[conn.conn_type]) or "none"
        problems.append(f"Connection {conn_id!r}: unknown extra {', '.join(unknown)} (known: {known})")
    return problems


#: How many of the tasks naming a Connection a problem line lists before "and N more".
TASKS_LISTED = 3


def task_conn_ids(dags: Iterable[Any]) -> dict[str, list[str]]:
    """Each Connection a task names with ``ding_conn_id``, with the tasks naming it ("dag.task"),
    read the way the alert path reads them (``default_args``, TaskGroups and mapped tasks alike)."""
    from airflow_ext.hooks import routing_facts

    named: dict[str, list[str]] = {}
    for dag in dags:
        for task in dag.tasks:
            for conn_id in routing_facts(task, task)["conn_ids"]:
                named.setdefault(conn_id, []).append(f"{dag.dag_id}.{task.task_id}")
    return named


def _tasks_naming(tasks: list[str]) -> str:
    listed = ", ".join(tasks[:TASKS_LISTED])
    more = len(tasks) - TASKS_LISTED
    return f"{listed} and {more} more" if more > 0 else listed


def dags_folder_problems(
    dags: dict[str, Any], import_errors: dict[str, str], checked: list[str]
) -> list[str]:
    """What ``check --dags`` adds: files it could not read, and each Connection a task names that
    is not among the ``checked`` ones (those the configuration names) and cannot be used."""
    problems = [
        f"DAG file {path} failed to import: its tasks' ding_conn_id are not checked"
        for path in sorted(import_errors)
    ]
    for conn_id, tasks in sorted(task_conn_ids(dags.values()).items()):
        if conn_id not in checked:
            naming = _tasks_naming(tasks)
            problems += [f"{problem} (ding_conn_id of {naming})" for problem in connection_problems(conn_id)]
    return problems


def check_routes(conf: Any) -> None:
    from airflow_ext import routing

    routing.parse_routes(config.read_routes_text(conf))
    config.read_default_conn_ids(conf)


def _uses_dingding_section(conf: Any) -> bool:
    """Whether some alert may still go to ``[dingding]``: when no default_conn_id catches the rest."""
    try:
        return not config.read_default_conn_ids(conf)
    except ConfigError:
        return True


def _checks(conf: Any) -> list[Callable[[Any], Any]]:
    """The checks that apply to ``conf``; each raises ConfigError naming its option."""
    checks: list[Callable[[Any], Any]] = [check_backend, check_routes]
    checks += [lambda conf, key=key: config.read_dingbot_number(conf, key) for key in config.DINGBOT_NUMBERS]
    checks += [lambda conf, kind=kind: config.read_default_flag(conf, kind) for kind in ("failure", "retry")]
    path = config.backend_path(conf)
    try:
        robot_set = bool(config.text_option(conf, "bot_url"))
    except ConfigError:
        robot_set = True  # set, but unreadable: its own check says why
    if (path in DINGTALK_BACKENDS and _uses_dingding_section(conf)) or robot_set:
        checks += [
            config.read_bot_url,
            config.read_secret,
            config.read_at_all,
            config.read_at_mobiles,
            check_template,
        ]
    if path == OUTBOX_BACKEND and airflow().OUTBOX_THROUGH_API_SERVER:
        checks.append(_outbox_url)
    return checks


def _outbox_url(conf: Any) -> str:
    """Where Airflow 3 workers post outbox alerts; a ConfigError if the Execution API's URL is not one."""
    from airflow_ext.outbox.api_client import outbox_url

    return outbox_url(config.read_execution_api_url(conf))


def find_problems(conf: Any = None, dags_folder: tuple[dict, dict] | None = None) -> list[str]:
    """Every configuration problem, one line each; empty when the configuration is usable.

    With ``dags_folder`` (the adapter's ``load_dags()``: DAGs by id, files that failed to import),
    also every Connection a task names with ``ding_conn_id``.
    """
    conf = conf or config._conf()
    problems = unknown_option_problems(conf)
    for check in _checks(conf):
        try:
            check(conf)
        except ConfigError as err:
            problems.append(str(err))
    named = named_conn_ids(conf)
    for conn_id in named:
        problems += connection_problems(conn_id)
    if dags_folder is not None:
        problems += dags_folder_problems(*dags_folder, checked=named)
    return problems


def summary(conf: Any = None, dags_folder: tuple[dict, dict] | None = None) -> str:
    """What the configuration will do, without any secret: for a check that found no problem."""
    conf = conf or config._conf()
    path = config.backend_path(conf)
    parts = [f"backend {path}"]
    named = named_conn_ids(conf)
    if named:
        parts.append(f"robots {', '.join(named)}")
    if dags_folder is not None:
        dags = dags_folder[0]
        by_task = sorted(name for name in task_conn_ids(dags.values()) if name not in named)
        parts.append(
            f"{len(dags)} {'DAG' if len(dags) == 1 else 'DAGs'} parsed"
            + (f", robots named by ding_conn_id {', '.join(by_task)}" if by_task else "")
        )
    if path in DINGTALK_BACKENDS and _uses_dingding_section(conf) and config.text_option(conf, "bot_url"):
        from airflow_ext.channels.dingtalk.robot import DingTalkRobot

        settings = config.load_dingtalk_settings(conf)
        parts += [
            f"robot {DingTalkRobot(settings).key[:12]}",
            "signed" if settings.secret else "not signed",
            f"keyword {settings.keyword!r}" if settings.keyword else "no keyword",
            settings.mentions_summary(),
            "own message template" if settings.message_template else "built-in layout",
        ]
    policy = config.load_retry_policy(conf)
    parts.append(f"deadline {policy.deadline_s:g} s, {policy.max_attempts} attempts")
    return "configuration OK: " + ", ".join(parts)
