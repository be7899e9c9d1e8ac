"""``airflow-ext route DAG_ID [TASK_ID]``: where a task's alerts would go, and what chose it.

The command parses the DAG from the DAGs folder by the line's adapter, so the answer reflects the
DAG file as it is now (the Alerts page reads the serialized DAG instead); the robots are read the
way the alert path reads them (Connections through every secrets backend, the ``[dingding]``
section). Nothing printed holds a token or a secret.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow_ext import config, routing
from airflow_ext.errors import ConfigError
from airflow_ext.hooks import FLAG_FOR_KIND, routing_facts, task_flag


def explain(dag_id: str, task_id: str | None = None, *, from_database: bool = False) -> str:
    """The routing answer for every task of the DAG, or for one.

    The command line parses the DAG from the DAGs folder (the file as it is now); the Alerts page
    reads it ``from_database``, as the scheduler has it, since a webserver or api-server must never
    run DAG authors' code (and parsing a whole folder per page view would be a server's load).
    """
    dag = _dag_in_database(dag_id) if from_database else _dag_in_folder(dag_id)
    if task_id and task_id not in dag.task_dict:
        raise ConfigError(f"DAG {dag_id!r} has no task {task_id!r}")
    tasks = [dag.task_dict[task_id]] if task_id else list(dag.tasks)
    rules = routing.parse_routes(config.read_routes_text())
    default_conn_ids = config.read_default_conn_ids()
    return "\n".join(_explain_task(dag_id, task, rules, default_conn_ids) for task in tasks)


def _dag_in_folder(dag_id: str) -> Any:
    from airflow_ext.airflow_port import airflow

    dags, import_errors = airflow().load_dags()
    dag = dags.get(dag_id)
    if dag is None:
        broken = [path for path in import_errors if dag_id in path]
        hint = f" (files that failed to import: {', '.join(sorted(import_errors))})" if import_errors else ""
        if broken:
            hint = f" ({', '.join(broken)} failed to import)"
        raise ConfigError(f"no DAG {dag_id!r} in the DAGs folder{hint}")
    return dag


def _dag_in_database(dag_id: str) -> Any:
    """The DAG as the DAG processor last serialized it (the same call on both Airflow lines)."""
    from airflow.models.serialized_dag import SerializedDagModel

    dag = SerializedDagModel.get_dag(dag_id)
    if dag is None:
        raise ConfigError(
            f"no DAG {dag_id!r} in the metadata database (not parsed by the DAG processor yet, or removed)"
        )
    return dag


def _explain_task(dag_id: str, task: Any, rules, default_conn_ids) -> str:
    facts = routing_facts(task, task)
    choice = routing.choose(
        dag_id=dag_id,
        tags=facts["tags"],
        owner=facts["owner"],
        task_conn_ids=facts["conn_ids"],
        rules=rules,
        default_conn_ids=default_conn_ids,
    )
    flags = ", ".join(
        f"{flag} {'on' if task_flag(flag, task, task) else 'off'}" for flag in FLAG_FOR_KIND.values()
    )
    seen = [f"owner {facts['owner']!r}"] if facts["owner"] else []
    if facts["tags"]:
        seen.append(f"tags {', '.join(facts['tags'])}")
    lines = [f"{dag_id}.{task.task_id} ({'; '.join(seen) or 'no owner or tags'}): {flags}"]
    lines.append(f"  chosen by {choice.reason}")
    lines += [f"  -> {describe_robot(name)}" for name in choice.robots]
    return "\n".join(lines)


def describe_robot(name: str) -> str:
    """A robot in one line, with no secret: its channel, where it posts (host only), its security."""
    try:
        settings = config.load_robot_settings(name)
    except ConfigError as err:
        return f"{name}: cannot be used: {err}"
    from airflow_ext.channels import robot_for

    robot = robot_for(settings)
    features = [
        "signed" if settings.secret else "not signed",
        f"keyword {settings.keyword!r}" if settings.keyword else "no keyword",
    ]
    if settings.mentions or settings.at_all:
        features.append(settings.mentions_summary())
    return f"{name}: {robot.DISPLAY_NAME} at {_origin(settings.url)}, {', '.join(features)}"


def _origin(url: str) -> str:
    """Scheme, host and port of ``url``: never its path or query (the token) nor a user:password@."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # config rejects such a URL first; never let a description fail on one
        port = ""
    return f"{parts.scheme}://{host}{port}"
