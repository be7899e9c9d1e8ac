"""Robots as Airflow Connections: read through Airflow's secrets backends, every field checked.

The Connections come from ``AIRFLOW_CONN_<ID>`` JSON, the way a secrets backend hands them to Airflow;
the end-to-end tests also read them from the metadata database.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from airflow_ext import checks, config
from airflow_ext.errors import ConfigError

TOKEN = "tok-5d1e0c9b7a"
SECRET = "SECd0e1f2a3b4c5"


def conn_json(conn_type: str, password: str | None = TOKEN, host: str | None = None, **extra) -> str:
    data = {"conn_type": conn_type, "extra": extra}
    if password is not None:
        data["password"] = password
    if host is not None:
        data["host"] = host
    return json.dumps(data)


@pytest.fixture
def connections(monkeypatch):
    """Set robot Connections as AIRFLOW_CONN_<ID> JSON; nothing else of [dingbot]/[dingding] set."""
    import os

    for name in list(os.environ):
        if name.startswith(("AIRFLOW__DINGBOT__", "AIRFLOW__DINGDING__", "AIRFLOW_CONN_")):
            monkeypatch.delenv(name)

    def set_conn(**conns: str) -> None:
        for conn_id, value in conns.items():
            monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)

    return set_conn


@pytest.mark.parametrize(
    "conn, channel, url",
    [
        (conn_json("dingding"), "dingtalk", f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"),
        (
            conn_json("dingding", host="http://127.0.0.1:8765"),
            "dingtalk",
            f"http://127.0.0.1:8765/robot/send?access_token={TOKEN}",
        ),
        (
            conn_json("wecom"),
            "wecom",
            f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={TOKEN}",
        ),
        (conn_json("feishu"), "feishu", f"https://open.feishu.cn/open-apis/bot/v2/hook/{TOKEN}"),
        (
            conn_json("feishu", host="https://open.larksuite.com"),
            "feishu",
            f"https://open.larksuite.com/open-apis/bot/v2/hook/{TOKEN}",
        ),
        (
            conn_json("slackwebhook", password="T000/B000/XXXX"),
            "slack",
            "https://hooks.slack.com/services/T000/B000/XXXX",
        ),
    ],
)
def test_each_conn_type_is_its_channel_with_its_default_host(connections, conn, channel, url):
    connections(robot=conn)

    settings = config.load_robot_settings("robot")

    assert (settings.channel, settings.url, settings.name) == (channel, url, "robot")


def test_dingding_extras_are_read_like_the_section(connections):
    connections(
        robot=conn_json(
            "dingding", secret=SECRET, keyword="Airflow", at_mobiles="13800000000, 13900000000", at_all="true"
        ),
        listed=conn_json("dingding", at_mobiles=["13800000000"]),
    )

    settings = config.load_robot_settings("robot")

    assert settings.secret == SECRET and settings.keyword == "Airflow" and settings.at_all is True
    assert settings.mentions == ("13800000000", "13900000000")
    assert config.load_robot_settings("listed").mentions == ("13800000000",)
    assert TOKEN not in repr(settings) and SECRET not in repr(settings)


@pytest.mark.parametrize(
    "conn, mentions, at_all",
    [
        (
            conn_json("feishu", mention_ids="ou_7d8a6e6df7621556ce0d21922b676706, all"),
            ("ou_7d8a6e6df7621556ce0d21922b676706", "all"),
            False,
        ),
        (conn_json("feishu", mention_ids=["ou_1", "3ae4c8f1"], at_all=True), ("ou_1", "3ae4c8f1"), True),
        (conn_json("feishu"), (), False),
        (
            conn_json("slackwebhook", password="T000/B000/XXXX", mention_ids="U024BE7LH, W0123ABCD"),
            ("U024BE7LH", "W0123ABCD"),
            False,
        ),
        (
            conn_json("slackwebhook", password="T000/B000/XXXX", mention_ids=["!here"], at_all="true"),
            ("!here",),
            True,
        ),
    ],
)
def test_feishu_and_slack_connections_take_mention_ids_and_at_all(connections, conn, mentions, at_all):
    connections(robot=conn)

    settings = config.load_robot_settings("robot")

    assert (settings.mentions, settings.at_all) == (mentions, at_all)


def test_the_dingding_section_is_the_robot_named_dingding(connections, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW__DINGDING__BOT_URL", f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"
    )

    settings = config.load_robot_settings(config.DINGDING_ROBOT)

    assert (settings.channel, settings.name) == ("dingtalk", "[dingding]")


#: (Connection JSON, the start of the error naming it)
BAD_CONNECTIONS = [
    (None, "Connection 'robot' is not defined"),
    (conn_json("http"), "Connection 'robot' has conn type 'http'; a robot Connection is one of"),
    (conn_json("dingding", password=None), "Connection 'robot' (dingding) has no password"),
    (conn_json("dingding", password="  "), "Connection 'robot' (dingding) has no password"),
    (
        conn_json("dingding", password=f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"),
        "Connection 'robot' (dingding): the password must be the access_token alone",
    ),
    (
        conn_json("dingding", secret="not-a-sec"),
        "Connection 'robot': extra secret must be the robot's signing",
    ),
    (
        conn_json("dingding", at_mobiles="138, abc"),
        "Connection 'robot': extra at_mobiles: '138', 'abc' are not",
    ),
    (conn_json("dingding", at_mobiles={"a": 1}), "Connection 'robot': extra at_mobiles must be a list"),
    (conn_json("dingding", at_all="maybe"), "Connection 'robot': extra at_all must be true or false"),
    (conn_json("dingding", keyword=5), "Connection 'robot': extra keyword must be a string"),
    (conn_json("dingding", host="ftp://x"), "Connection 'robot': host must be an http(s) URL"),
    (
        conn_json("wecom", mentioned_mobile_list="12x"),
        "Connection 'robot': extra mentioned_mobile_list: '12x' is not a mobile number",
    ),
    (
        conn_json("feishu", mention_ids="ou_1></at><at id=all"),
        "Connection 'robot': extra mention_ids: 'ou_1></at><at id=all' is not a Feishu user id",
    ),
    (conn_json("feishu", at_all="sometimes"), "Connection 'robot': extra at_all must be true or false"),
    (
        conn_json("slackwebhook", password="T000/B000/XXXX", mention_ids="alice, <!channel>"),
        "Connection 'robot': extra mention_ids: 'alice', '<!channel>' are not each a Slack member id",
    ),
    (
        conn_json("slackwebhook", password="T000/B000/XXXX", mention_ids={"U1": 1}),
        "Connection 'robot': extra mention_ids must be a list",
    ),
]


@pytest.mark.parametrize("conn, error", BAD_CONNECTIONS)
def test_a_bad_connection_is_an_error_naming_it_and_no_secret(connections, conn, error):
    if conn is not None:
        connections(robot=conn)

    with pytest.raises(ConfigError) as raised:
        config.load_robot_settings("robot")

    assert str(raised.value).startswith(error), str(raised.value)
    assert TOKEN not in str(raised.value) and SECRET not in str(raised.value)


@pytest.mark.parametrize("conn, error", BAD_CONNECTIONS)
def test_check_names_each_bad_connection_in_one_line(connections, monkeypatch, conn, error):
    if conn is not None:
        connections(robot=conn)
    monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "robot")

    problems = checks.find_problems()

    assert len(problems) == 1 and problems[0].startswith(error), problems


def test_check_names_every_connection_of_routes_and_default(connections, monkeypatch):
    connections(good=conn_json("feishu"), wrong_type=conn_json("postgres"))
    monkeypatch.setenv(
        "AIRFLOW__DINGBOT__ROUTES",
        json.dumps([{"tag": "a", "conn_id": ["good", "missing"]}, {"dag_id": "x*", "conn_id": "wrong_type"}]),
    )
    monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "good,also_missing")

    problems = checks.find_problems()

    assert [p.split(" ")[1] for p in problems] == ["'missing'", "'wrong_type'", "'also_missing'"], problems
    assert "robots good, missing, wrong_type, also_missing" not in problems


@pytest.mark.parametrize(
    "host, shown",
    [
        ("https://bob:hunter2pass@robot.example:8443", "DingTalk at https://robot.example:8443,"),
        ("http://bob@127.0.0.1:8765/robot/send", "DingTalk at http://127.0.0.1:8765,"),
        ("http://[::1]:8765", "DingTalk at http://[::1]:8765,"),
        ("https://oapi.dingtalk.com", "DingTalk at https://oapi.dingtalk.com,"),
    ],
)
def test_a_robot_is_described_by_scheme_host_and_port_only(connections, host, shown):
    from airflow_ext.route_explain import describe_robot

    connections(robot=conn_json("dingding", host=host))

    described = describe_robot("robot")
    assert shown in described, described
    assert "hunter2pass" not in described and "bob" not in described and TOKEN not in described


def _dag(dag_id: str, *tasks: tuple[str, object]) -> SimpleNamespace:
    dag = SimpleNamespace(dag_id=dag_id, tags=[])
    dag.tasks = [SimpleNamespace(task_id=name, ding_conn_id=conn_id, dag=dag) for name, conn_id in tasks]
    return dag


def test_check_dags_names_the_tasks_of_each_unusable_connection(connections, monkeypatch):
    connections(good=conn_json("wecom"), configured=conn_json("postgres"))
    monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "configured")
    dags = {
        "etl": _dag("etl", *[(f"t{n}", "missing") for n in range(5)], ("fan", ["good", "configured"])),
        "ml": _dag("ml", ("fit", "missing"), ("quiet", None), ("both", ["good", "wrong"])),
    }
    import_errors = {"dags/broken.py": "SyntaxError: invalid syntax"}

    problems = checks.find_problems(dags_folder=(dags, import_errors))

    # (start, end) of each line: the configuration's own Connection once, without the tasks naming
    # it; the file it could not read; then each other unusable Connection with its tasks.
    expected = [
        ("Connection 'configured' has conn type 'postgres'", "wecom"),
        ("DAG file dags/broken.py failed to import: its tasks' ding_conn_id are not checked", ""),
        ("Connection 'missing' is not defined", "(ding_conn_id of etl.t0, etl.t1, etl.t2 and 3 more)"),
        ("Connection 'wrong' is not defined", "(ding_conn_id of ml.both)"),
    ]
    assert len(problems) == len(expected), problems
    for problem, (start, end) in zip(problems, expected):
        assert problem.startswith(start) and problem.endswith(end), problem
    assert "robots named by ding_conn_id good, missing, wrong" in checks.summary(dags_folder=(dags, {}))


def test_check_names_an_unknown_extra(connections, monkeypatch):
    connections(robot=conn_json("dingding", at_mobile="13800000000"))
    monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "robot")

    assert checks.find_problems() == [
        "Connection 'robot': unknown extra at_mobile (known: secret, keyword, at_mobiles, at_all)"
    ]


def test_with_a_default_conn_id_the_dingding_section_is_not_needed(connections, monkeypatch):
    connections(robot=conn_json("wecom"))
    monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "robot")

    assert checks.find_problems() == []
    assert "robots robot" in checks.summary()


def test_malformed_routes_are_a_check_problem(connections, monkeypatch):
    monkeypatch.setenv("AIRFLOW__DINGBOT__DEFAULT_CONN_ID", "")
    monkeypatch.setenv(
        "AIRFLOW__DINGDING__BOT_URL", f"https://oapi.dingtalk.com/robot/send?access_token={TOKEN}"
    )
    monkeypatch.setenv("AIRFLOW__DINGBOT__ROUTES", '[{"tag": "a"}]')

    assert checks.find_problems() == ["[dingbot] routes rule 1 has no conn_id"]
