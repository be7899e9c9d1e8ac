"""Which robots an alert goes to, and why: the first of these that applies.

1. the task's ``ding_conn_id`` (one Connection id or a list of them: one message on each);
2. ``[dingbot] routes``: a JSON list of rules, the first whose match keys all match wins;
3. ``[dingbot] default_conn_id``;
4. the ``[dingding]`` section, exactly as before Connections existed.

The facts a rule matches on (DAG id, DAG tags, the task's owner) travel in the
:class:`~airflow_ext.alert.Alert`, so the choice is the same wherever the alert is sent or queued.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow_ext.config import DINGDING_ROBOT, conn_ids_of
from airflow_ext.errors import ConfigError
from airflow_ext.problems import report_once

log = logging.getLogger(__name__)

#: The keys a rule matches on; every key a rule has must match.
MATCH_KEYS = ("dag_id", "tag", "owner")
RULE_KEYS = frozenset({*MATCH_KEYS, "conn_id"})


@dataclass(frozen=True)
class Rule:
    """One rule of ``[dingbot] routes`` (``number`` counts from 1, as the docs and messages do)."""

    number: int
    conn_ids: tuple[str, ...]
    dag_id: str | None = None
    tag: str | None = None
    owner: str | None = None

    def matches(self, dag_id: str, tags: Sequence[str], owner: str | None) -> bool:
        if self.dag_id is not None and not fnmatch.fnmatchcase(dag_id, self.dag_id):
            return False
        if self.tag is not None and self.tag not in tags:
            return False
        if self.owner is not None and self.owner not in owners_of(owner):
            return False
        return True

    def describe(self) -> str:
        keys = [f"{key} {getattr(self, key)!r}" for key in MATCH_KEYS if getattr(self, key) is not None]
        return f"[dingbot] routes rule {self.number} ({', '.join(keys) or 'matches every task'})"


def owners_of(owner: str | None) -> tuple[str, ...]:
    """Airflow's owner is a comma-separated list ("data-eng, alice"): each one counts."""
    return tuple(part.strip() for part in (owner or "").split(",") if part.strip())


def parse_routes(text: str | None) -> list[Rule]:
    """``[dingbot] routes``, every rule checked; the error names the rule and what is wrong."""
    if not text or not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"[dingbot] routes is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, list):
        raise ConfigError(
            '[dingbot] routes must be a JSON list of rules, like [{"tag": ..., "conn_id": ...}]'
        )
    rules = []
    for number, raw in enumerate(data, start=1):
        where = f"[dingbot] routes rule {number}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be an object with conn_id and optional {', '.join(MATCH_KEYS)}")
        unknown = sorted(set(raw) - RULE_KEYS)
        if unknown:
            known = ", ".join(("conn_id", *MATCH_KEYS))
            raise ConfigError(f"{where}: unknown key {', '.join(map(repr, unknown))} (known: {known})")
        conn_ids = conn_ids_of(raw.get("conn_id"), f"{where} conn_id")
        if not conn_ids:
            raise ConfigError(f"{where} has no conn_id")
        for key in MATCH_KEYS:
            value = raw.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{where}: {key} must be a non-empty string")
        rules.append(
            Rule(
                number=number,
                conn_ids=conn_ids,
                **{key: raw[key].strip() for key in MATCH_KEYS if raw.get(key) is not None},
            )
        )
    return rules


@dataclass(frozen=True)
class Choice:
    """The robots an alert goes to (Connection ids, or ``[dingding]``) and what chose them."""

    robots: tuple[str, ...]
    reason: str


def choose(
    *,
    dag_id: str,
    tags: Sequence[str] = (),
    owner: str | None = None,
    task_conn_ids: Sequence[str] = (),
    rules: Sequence[Rule] = (),
    default_conn_ids: Sequence[str] = (),
) -> Choice:
    """The first way of choosing that applies (see the module doc)."""
    if task_conn_ids:
        return Choice(tuple(task_conn_ids), "the task's ding_conn_id")
    for rule in rules:
        if rule.matches(dag_id, tags, owner):
            return Choice(rule.conn_ids, rule.describe())
    if default_conn_ids:
        return Choice(tuple(default_conn_ids), "[dingbot] default_conn_id")
    return Choice((DINGDING_ROBOT,), "no ding_conn_id, route or default_conn_id: the [dingding] section")


def choose_for_alert(alert: Any, conf: Any = None) -> Choice:
    """Where ``alert`` goes, by the configuration in this process.

    Malformed ``routes`` (or ``default_conn_id``) cost the rules, never the alert: they are logged
    once per process and the alert goes where the rest of the configuration sends it.
    """
    from airflow_ext import config

    try:
        rules = parse_routes(config.read_routes_text(conf))
    except ConfigError as err:
        report_once(log, "[dingbot] routes are ignored", str(err))
        rules = []
    try:
        default_conn_ids = config.read_default_conn_ids(conf)
    except ConfigError as err:
        report_once(log, "[dingbot] default_conn_id is ignored", str(err))
        default_conn_ids = ()
    return choose(
        dag_id=alert.dag_id,
        tags=alert.tags,
        owner=alert.owner,
        task_conn_ids=alert.conn_ids,
        rules=rules,
        default_conn_ids=default_conn_ids,
    )
