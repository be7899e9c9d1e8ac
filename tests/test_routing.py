"""Choosing robots: ding_conn_id, then the first matching route, then default_conn_id, then [dingding]."""

from __future__ import annotations

import json

import airflow.configuration  # noqa: F401 - Airflow sets up logging on import: before caplog attaches
import pytest

from airflow_ext import routing
from airflow_ext.config import DINGDING_ROBOT
from airflow_ext.errors import ConfigError

ROUTES = routing.parse_routes(
    json.dumps(
        [
            {"tag": "team-payments", "conn_id": "payments_dingtalk"},
            {"dag_id": "ml_*", "conn_id": ["ml_wecom", "ml_feishu"]},
            {"owner": "alice", "conn_id": "alice_slack"},
            {"dag_id": "etl_*", "tag": "nightly", "conn_id": "etl_nightly"},
        ]
    )
)


@pytest.mark.parametrize(
    "facts, robots, reason",
    [
        # 1. the task's own ding_conn_id wins over everything
        (
            dict(dag_id="ml_train", tags=["team-payments"], task_conn_ids=("mine",)),
            ("mine",),
            "the task's ding_conn_id",
        ),
        (
            dict(dag_id="x", task_conn_ids=("a", "b")),
            ("a", "b"),
            "the task's ding_conn_id",
        ),
        # 2. routes, first match wins
        (
            dict(dag_id="orders", tags=["team-payments"]),
            ("payments_dingtalk",),
            "rule 1 (tag 'team-payments')",
        ),
        (
            dict(dag_id="ml_train", tags=["team-payments"]),
            ("payments_dingtalk",),
            "rule 1",
        ),
        (dict(dag_id="ml_train"), ("ml_wecom", "ml_feishu"), "rule 2 (dag_id 'ml_*')"),
        (dict(dag_id="xml_train"), (DINGDING_ROBOT,), "[dingding]"),  # a glob matches the whole id
        (dict(dag_id="reports", owner="data-eng, alice"), ("alice_slack",), "rule 3 (owner 'alice')"),
        (dict(dag_id="reports", owner="alicex"), (DINGDING_ROBOT,), "[dingding]"),
        # every key of a rule must match
        (dict(dag_id="etl_orders", tags=["nightly"]), ("etl_nightly",), "rule 4"),
        (dict(dag_id="etl_orders", tags=["hourly"]), (DINGDING_ROBOT,), "[dingding]"),
        # 3. default_conn_id, 4. [dingding]
        (dict(dag_id="other", default_conn_ids=("platform",)), ("platform",), "[dingbot] default_conn_id"),
        (dict(dag_id="other"), (DINGDING_ROBOT,), "the [dingding] section"),
    ],
)
def test_the_first_way_of_choosing_that_applies_wins(facts, robots, reason):
    choice = routing.choose(rules=ROUTES, **facts)

    assert choice.robots == robots
    assert reason in choice.reason


def test_a_rule_without_match_keys_matches_every_task():
    rules = routing.parse_routes('[{"conn_id": "catch_all"}, {"tag": "never", "conn_id": "x"}]')

    assert routing.choose(dag_id="anything", rules=rules).robots == ("catch_all",)
    assert rules[0].describe() == "[dingbot] routes rule 1 (matches every task)"


@pytest.mark.parametrize(
    "text, error",
    [
        ("{", "[dingbot] routes is not valid JSON"),
        ('{"conn_id": "x"}', "[dingbot] routes must be a JSON list of rules"),
        ('["x"]', "[dingbot] routes rule 1 must be an object"),
        ('[{"conn_id": "a"}, {"dag": "x", "conn_id": "b"}]', "[dingbot] routes rule 2: unknown key 'dag'"),
        ('[{"tag": "x"}]', "[dingbot] routes rule 1 has no conn_id"),
        ('[{"tag": "x", "conn_id": []}]', "[dingbot] routes rule 1 has no conn_id"),
        ('[{"tag": "x", "conn_id": 7}]', "[dingbot] routes rule 1 conn_id must be a conn id or a list"),
        ('[{"tag": "x", "conn_id": ["a", 7]}]', "[dingbot] routes rule 1 conn_id must hold conn ids"),
        ('[{"tag": "", "conn_id": "a"}]', "[dingbot] routes rule 1: tag must be a non-empty string"),
        ('[{"owner": 3, "conn_id": "a"}]', "[dingbot] routes rule 1: owner must be a non-empty string"),
    ],
)
def test_malformed_routes_name_the_rule_and_the_problem(text, error):
    with pytest.raises(ConfigError, match=None) as raised:
        routing.parse_routes(text)

    assert str(raised.value).startswith(error), str(raised.value)


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ()),
        ("", ()),
        ("a", ("a",)),
        (" a , b ,a", ("a", "b")),
        (["a", "b", "a"], ("a", "b")),
        (("x",), ("x",)),
    ],
)
def test_conn_ids_of(value, expected):
    assert routing.conn_ids_of(value, "ding_conn_id") == expected


def test_empty_routes_are_no_rules():
    assert routing.parse_routes("") == [] and routing.parse_routes("  ") == []


def test_malformed_routes_cost_the_rules_not_the_alert(monkeypatch, caplog):
    import logging

    from airflow_ext import problems
    from tests.test_render import make_alert

    problems.forget()
    caplog.set_level(logging.DEBUG, logger="airflow_ext")
    monkeypatch.setenv("AIRFLOW__DINGBOT__ROUTES", '[{"tag": "x"}]')
    monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "platform")

    choice = routing.choose_for_alert(make_alert(tags=("x",)))

    assert choice.robots == ("platform",)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors[0].startswith("[dingbot] routes are ignored: [dingbot] routes rule 1 has no"), errors
