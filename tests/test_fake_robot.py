"""Tests for the local DingTalk robot (airflow_ext.fake_robot), over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from airflow_ext import fake_robot
from airflow_ext.fake_robot import FakeRobot, compute_sign

pytestmark = pytest.mark.version_free

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok-7f3a9c"
SECRET = "SECabc123secret"


def signed_url(
    robot: FakeRobot, secret: str = SECRET, *, ts_ms: int | None = None, sign: str | None = None
) -> str:
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    sign = compute_sign(secret, ts_ms) if sign is None else sign
    return f"{robot.url}&timestamp={ts_ms}&sign={urllib.parse.quote_plus(sign)}"


def md(title: str = "Airflow task failed", text: str = "### dag.task failed\n\nlog: http://x/log", **extra):
    body = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
    body.update(extra)
    return body


def txt(content: str = "hello", **extra):
    body = {"msgtype": "text", "text": {"content": content}}
    body.update(extra)
    return body


def post(url: str, body, timeout=5.0) -> requests.Response:
    if isinstance(body, (bytes, str)):
        data = body.encode("utf-8") if isinstance(body, str) else body
        return requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=timeout)
    return requests.post(url, json=body, timeout=timeout)


def errcode_of(resp: requests.Response) -> int:
    assert resp.status_code == 200, resp.text
    return resp.json()["errcode"]


@pytest.fixture
def robot():
    with FakeRobot(TOKEN) as r:
        yield r


@pytest.fixture
def signed_robot():
    with FakeRobot(TOKEN, secret=SECRET) as r:
        yield r


# --- happy path -----------------------------------------------------------------------------


def test_accepts_valid_signed_markdown(signed_robot):
    resp = post(signed_url(signed_robot), md())
    assert resp.status_code == 200
    assert resp.json() == {"errcode": 0, "errmsg": "ok"}
    msgs = signed_robot.wait_for_messages(1, timeout=2)
    assert len(msgs) == 1
    m = msgs[0]
    assert m["body"] == md()
    assert m["signed"] is True
    assert m["pinged"] == [] and m["at_all"] is False
    assert abs(m["received_at"] - time.time()) < 5
    reqs = signed_robot.requests
    assert [(r["errcode"], r["http_status"]) for r in reqs] == [(0, 200)]
    assert reqs[0]["bytes"] == len(json.dumps(md()).encode())


def test_url_and_port(robot):
    assert robot.url == f"http://127.0.0.1:{robot.port}/robot/send?access_token={TOKEN}"
    assert TOKEN not in repr(robot)


def test_unsigned_robot_accepts_without_sign(robot):
    assert errcode_of(post(robot.url, txt())) == 0
    assert robot.messages[0]["signed"] is False


# --- security -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["", "?access_token=", "?access_token=nope", "?access_token=" + TOKEN.upper(), "?token=" + TOKEN],
    ids=["missing", "empty", "wrong", "case", "wrong-param"],
)
def test_bad_token(robot, query):
    resp = post(f"http://127.0.0.1:{robot.port}/robot/send{query}", txt())
    assert resp.status_code == 200
    assert resp.json() == {"errcode": 300001, "errmsg": "token is not exist"}
    assert robot.messages == []


@pytest.mark.parametrize(
    "make_url",
    [
        lambda r: signed_url(r, secret="some-other-secret"),
        lambda r: signed_url(r, ts_ms=int(time.time() * 1000) - 3601 * 1000),
        lambda r: signed_url(r, ts_ms=int(time.time() * 1000) + 3601 * 1000),
        lambda r: r.url,
        lambda r: f"{r.url}&timestamp={int(time.time() * 1000)}",
        lambda r: signed_url(r, sign=""),
        lambda r: f"{r.url}&timestamp=abc&sign=xyz",
    ],
    ids=["wrong-sign", "stale", "future", "no-sign-no-ts", "no-sign", "empty-sign", "bad-ts"],
)
def test_signature_refused(signed_robot, make_url):
    resp = post(make_url(signed_robot), md())
    assert errcode_of(resp) == 310000
    assert resp.json()["errmsg"].startswith("sign not match")
    assert SECRET not in resp.text
    assert signed_robot.messages == []


def test_signature_within_skew_accepted(signed_robot):
    url = signed_url(signed_robot, ts_ms=int(time.time() * 1000) - 3500 * 1000)
    assert errcode_of(post(url, md())) == 0


@pytest.mark.parametrize(
    "body, expected",
    [
        (txt("nothing here"), 310000),
        (txt("[Airflow] task failed"), 0),
        (md(title="x", text="y"), 310000),
        (md(title="Airflow alert", text="y"), 0),
        (md(title="x", text="see Airflow log"), 0),
        ({"msgtype": "link", "link": {"title": "Airflow", "text": "t", "messageUrl": "http://x"}}, 0),
        ({"msgtype": "link", "link": {"title": "a", "text": "b", "messageUrl": "http://Airflow"}}, 310000),
    ],
    ids=["text-missing", "text-ok", "md-missing", "md-title", "md-text", "link-ok", "link-url-only"],
)
def test_keyword(body, expected):
    with FakeRobot(TOKEN, keyword="Airflow") as r:
        resp = post(r.url, body)
        assert errcode_of(resp) == expected
        if expected:
            assert resp.json()["errmsg"] == "keywords not in content"
        assert len(r.messages) == (1 if expected == 0 else 0)


# --- body size and validation ---------------------------------------------------------------


def _body_of_size(n_bytes: int) -> bytes:
    base = json.dumps(txt(""), ensure_ascii=False).encode("utf-8")
    room = n_bytes - len(base)
    cjk, ascii_pad = divmod(room, 3)
    content = "告" * cjk + "a" * ascii_pad
    body = json.dumps(txt(content), ensure_ascii=False).encode("utf-8")
    assert len(body) == n_bytes
    assert len(body.decode("utf-8")) < n_bytes  # bytes, not characters, are what count
    return body


@pytest.mark.parametrize("n_bytes, expected", [(20000, 0), (20001, 460101)])
def test_body_size_limit_in_bytes(robot, n_bytes, expected):
    resp = post(robot.url, _body_of_size(n_bytes))
    assert errcode_of(resp) == expected
    if expected:
        assert resp.json()["errmsg"] == "message too long"
    assert len(robot.messages) == (1 if expected == 0 else 0)
    assert robot.requests[-1]["bytes"] == n_bytes
    assert fake_robot.MAX_BODY_BYTES == 20000


@pytest.mark.parametrize(
    "body, errmsg_part",
    [
        (b"not json", "invalid json"),
        (b'{"msgtype": ', "invalid json"),
        (b"\xff\xfe{}", "invalid json"),
        (b"", "invalid json"),
        (b"[1, 2]", "invalid json"),
        ({"text": {"content": "x"}}, "msgtype"),
        ({"msgtype": "bogus", "bogus": {}}, "bogus"),
        ({"msgtype": "markdown", "markdown": {"title": "t"}}, "markdown.text"),
        ({"msgtype": "markdown", "markdown": {"text": "t"}}, "markdown.title"),
        ({"msgtype": "markdown"}, "markdown"),
        ({"msgtype": "text", "text": {}}, "text.content"),
        ({"msgtype": "text", "text": {"content": 5}}, "text.content"),
    ],
    ids=[
        "garbage",
        "truncated",
        "not-utf8",
        "empty",
        "array",
        "no-msgtype",
        "unknown-msgtype",
        "md-no-text",
        "md-no-title",
        "md-no-object",
        "text-no-content",
        "text-content-not-str",
    ],
)
def test_invalid_bodies(robot, body, errmsg_part):
    resp = post(robot.url, body)
    assert errcode_of(resp) == 40035
    assert errmsg_part in resp.json()["errmsg"]
    assert robot.messages == []


# --- rate limit -----------------------------------------------------------------------------


def test_rate_limit_then_block_then_recovery():
    with FakeRobot(TOKEN, rate_limit=3, window_s=60, block_s=1.0) as r:
        codes = [errcode_of(post(r.url, txt(f"m{i}"))) for i in range(4)]
        assert codes == [0, 0, 0, 130101]
        blocked = post(r.url, txt("during block"))
        assert blocked.json() == {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
        # everything is refused during the block, even an invalid body
        assert errcode_of(post(r.url, b"not json")) == 130101
        time.sleep(1.1)
        assert errcode_of(post(r.url, txt("after block"))) == 0
        assert [m["body"]["text"]["content"] for m in r.messages] == ["m0", "m1", "m2", "after block"]


def test_rate_limit_counts_only_accepted_messages():
    with FakeRobot(TOKEN, rate_limit=3, window_s=60, block_s=1.0) as r:
        for _ in range(5):
            assert errcode_of(post(r.url, b"nope")) == 40035
        assert [errcode_of(post(r.url, txt())) for _ in range(4)] == [0, 0, 0, 130101]


def test_rate_limit_window_rolls():
    with FakeRobot(TOKEN, rate_limit=2, window_s=0.5, block_s=60) as r:
        assert [errcode_of(post(r.url, txt())) for _ in range(2)] == [0, 0]
        time.sleep(0.6)
        assert [errcode_of(post(r.url, txt())) for _ in range(2)] == [0, 0]
        assert errcode_of(post(r.url, txt())) == 130101


def test_rate_limit_defaults():
    assert (fake_robot.RATE_LIMIT_PER_WINDOW, fake_robot.WINDOW_S, fake_robot.BLOCK_S) == (20, 60.0, 600.0)
    assert fake_robot.SIGN_SKEW_S == 3600
    with FakeRobot(TOKEN) as r:
        assert [errcode_of(post(r.url, txt())) for _ in range(21)] == [0] * 20 + [130101]


# --- msgUuid and mentions -------------------------------------------------------------------


def test_msg_uuid_dedup(robot):
    assert errcode_of(post(robot.url, txt("a", msgUuid="u-1"))) == 0
    assert errcode_of(post(robot.url, txt("a again", msgUuid="u-1"))) == 0
    assert errcode_of(post(robot.url, txt("b", msgUuid="u-2"))) == 0
    assert errcode_of(post(robot.url, txt("c"))) == 0
    assert errcode_of(post(robot.url, txt("c"))) == 0  # no uuid: not deduplicated
    assert [m["body"]["text"]["content"] for m in robot.messages] == ["a", "b", "c", "c"]
    assert len(robot.requests) == 5


def test_refused_msg_uuid_is_not_remembered():
    with FakeRobot(TOKEN, keyword="Airflow") as r:
        assert errcode_of(post(r.url, txt("x", msgUuid="u-1"))) == 310000
        assert errcode_of(post(r.url, txt("Airflow x", msgUuid="u-1"))) == 0
        assert len(r.messages) == 1


@pytest.mark.parametrize(
    "body, pinged, at_all",
    [
        (txt("task failed", at={"atMobiles": ["13800000000"]}), [], False),
        (txt("task failed @13800000000", at={"atMobiles": ["13800000000"]}), ["13800000000"], False),
        (txt("@13800000000 @13900000000", at={"atMobiles": ["13800000000"]}), ["13800000000"], False),
        (
            md(text="fail @13900000000", at={"atMobiles": ["13800000000", "13900000000"]}),
            ["13900000000"],
            False,
        ),
        (md(title="@13800000000", text="fail", at={"atMobiles": ["13800000000"]}), [], False),
        (txt("everyone", at={"isAtAll": True}), [], True),
        (txt("no at"), [], False),
    ],
    ids=[
        "mobile-not-in-text",
        "mobile-in-text",
        "not-listed",
        "markdown",
        "title-does-not-count",
        "all",
        "none",
    ],
)
def test_mentions(robot, body, pinged, at_all):
    assert errcode_of(post(robot.url, body)) == 0
    (m,) = robot.messages
    assert m["pinged"] == pinged
    assert m["at_all"] is at_all


# --- failure modes --------------------------------------------------------------------------


def test_hang_mode_times_out_client_and_stop_is_prompt():
    r = FakeRobot(TOKEN).start()
    try:
        r.set_mode("hang")
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.post(r.url, json=txt(), timeout=(2.0, 0.5))
        # a second hanging client that is still waiting when stop() is called
        outcome = {}

        def waiting_client():
            try:
                requests.post(r.url, json=txt(), timeout=(2.0, 10.0))
                outcome["r"] = "answered"
            except requests.exceptions.RequestException as exc:
                outcome["r"] = type(exc).__name__

        t = threading.Thread(target=waiting_client, daemon=True)
        t.start()
        deadline = time.monotonic() + 2
        while len(r.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [(q["errcode"], q["http_status"]) for q in r.requests] == [(None, None), (None, None)]
    finally:
        t0 = time.monotonic()
        r.stop()
        assert time.monotonic() - t0 < 2.0
    t.join(timeout=3)
    assert outcome.get("r") not in (None, "answered")
    assert r.messages == []


def test_slow_mode(robot):
    robot.set_mode("slow", delay_s=0.3)
    t0 = time.monotonic()
    assert errcode_of(post(robot.url, txt())) == 0
    assert time.monotonic() - t0 >= 0.3
    assert len(robot.messages) == 1


def test_http500_mode(robot):
    robot.set_mode("http500")
    resp = post(robot.url, txt())
    assert resp.status_code == 500
    assert len(resp.content) < 100
    assert robot.messages == []
    assert robot.requests[-1]["errcode"] is None and robot.requests[-1]["http_status"] == 500


def test_garbage_mode(robot):
    robot.set_mode("garbage")
    resp = post(robot.url, txt())
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        json.loads(resp.text)
    assert robot.messages == []
    assert robot.requests[-1]["errcode"] is None


def test_errcode_mode_applies_to_every_request(robot):
    robot.set_mode("errcode", errcode=310000, errmsg="错误描述:ip 1.2.3.4 not in whitelist")
    for url in (robot.url, f"http://127.0.0.1:{robot.port}/robot/send?access_token=bad"):
        resp = post(url, txt())
        assert resp.status_code == 200
        assert resp.json() == {"errcode": 310000, "errmsg": "错误描述:ip 1.2.3.4 not in whitelist"}
    assert robot.messages == []
    robot.set_mode("ok")
    assert errcode_of(post(robot.url, txt())) == 0


@pytest.mark.parametrize(
    "mode, kw",
    [("bogus", {}), ("errcode", {}), ("slow", {"delay_s": -1}), ("ok", {"extra": 1})],
)
def test_set_mode_rejects_bad_arguments(robot, mode, kw):
    with pytest.raises(ValueError):
        robot.set_mode(mode, **kw)


def test_reset(robot):
    post(robot.url, txt())
    robot.set_mode("http500")
    robot.reset()
    assert robot.messages == [] and robot.requests == []
    assert errcode_of(post(robot.url, txt())) == 0


def test_wait_for_messages_times_out_and_returns_what_it_has(robot):
    t0 = time.monotonic()
    assert robot.wait_for_messages(1, timeout=0.2) == []
    assert 0.15 <= time.monotonic() - t0 < 2
    threading.Timer(0.1, lambda: post(robot.url, txt("late"))).start()
    msgs = robot.wait_for_messages(1, timeout=3)
    assert [m["body"]["text"]["content"] for m in msgs] == ["late"]


def test_messages_is_a_copy(robot):
    post(robot.url, txt("orig"))
    robot.messages[0]["body"]["text"]["content"] = "mutated"
    assert robot.messages[0]["body"]["text"]["content"] == "orig"


# --- echo -----------------------------------------------------------------------------------


def test_echo_renders_what_the_group_sees():
    seen: list[str] = []
    with FakeRobot(TOKEN, secret=SECRET, echo=seen.append) as r:
        body = md(
            title="任务失败 dag.t",
            text="### 失败\n@13800000000 please look",
            at={"atMobiles": ["13800000000", "13900000000"]},
        )
        assert errcode_of(post(signed_url(r), body)) == 0
        assert errcode_of(post(signed_url(r), txt("all hands", at={"isAtAll": True}))) == 0
        assert errcode_of(post(signed_url(r), txt("quiet"))) == 0
        assert errcode_of(post(r.url, txt("refused"))) == 310000
    assert len(seen) == 3
    first = seen[0]
    assert "任务失败 dag.t" in first and "### 失败" in first
    assert "@13800000000" in first.splitlines()[-2] and "13900000000" not in first
    assert "@all" in seen[1]
    assert "nobody" in seen[2]
    for text in seen:
        assert TOKEN not in text and SECRET not in text and "http://127.0.0.1" not in text


# --- control endpoints ----------------------------------------------------------------------


def test_control_endpoints(robot):
    base = f"http://127.0.0.1:{robot.port}"
    assert errcode_of(post(robot.url, txt("one", at={"atMobiles": ["1"]}))) == 0
    assert errcode_of(post(robot.url, b"bad")) == 40035

    msgs = requests.get(base + "/_messages", timeout=5).json()
    assert [m["body"]["text"]["content"] for m in msgs] == ["one"]
    assert set(msgs[0]) == {"body", "received_at", "pinged", "at_all", "signed"}
    reqs = requests.get(base + "/_requests", timeout=5).json()
    assert [q["errcode"] for q in reqs] == [0, 40035]
    assert set(reqs[0]) == {"received_at", "errcode", "http_status", "bytes"}

    control = {"mode": "errcode", "errcode": 130101, "errmsg": "slow down"}
    resp = requests.post(base + "/_control", json=control, timeout=5)
    assert resp.status_code == 200
    assert robot.mode == "errcode"
    assert post(robot.url, txt()).json() == {"errcode": 130101, "errmsg": "slow down"}

    assert requests.post(base + "/_control", json={"mode": "nope"}, timeout=5).status_code == 400
    assert requests.post(base + "/_control", data=b"{", timeout=5).status_code == 400
    assert robot.mode == "errcode"

    assert requests.post(base + "/_reset", timeout=5).status_code == 200
    assert robot.mode == "ok"
    assert requests.get(base + "/_messages", timeout=5).json() == []
    assert requests.get(base + "/_requests", timeout=5).json() == []
    assert requests.get(base + "/nope", timeout=5).status_code == 404


def test_control_endpoints_work_while_hanging():
    with FakeRobot(TOKEN) as r:
        base = f"http://127.0.0.1:{r.port}"
        assert requests.post(base + "/_control", json={"mode": "hang"}, timeout=5).status_code == 200
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.post(r.url, json=txt(), timeout=(2.0, 0.3))
        assert requests.post(base + "/_reset", timeout=5).status_code == 200
        assert errcode_of(post(r.url, txt())) == 0


# --- CLI ------------------------------------------------------------------------------------


def test_cli_subprocess(tmp_path):
    port_file = tmp_path / "port"
    messages_file = tmp_path / "messages.jsonl"
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        PYTHONIOENCODING="utf-8",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_ext.fake_robot",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--token",
            TOKEN,
            "--secret",
            SECRET,
            "--messages-file",
            str(messages_file),
        ],
        cwd=str(REPO_ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        port = int(port_file.read_text())
        url = f"http://127.0.0.1:{port}/robot/send?access_token={TOKEN}"
        ts = int(time.time() * 1000)
        signed = f"{url}&timestamp={ts}&sign={urllib.parse.quote_plus(compute_sign(SECRET, ts))}"
        assert errcode_of(post(signed, md(at={"atMobiles": ["13800000000"]}, text="x @13800000000"))) == 0
        assert errcode_of(post(url, md())) == 310000
        assert errcode_of(post(f"http://127.0.0.1:{port}/robot/send?access_token=x", md())) == 300001

        lines = messages_file.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 1
        rec = json.loads(lines[0])
        assert rec["signed"] is True and rec["pinged"] == ["13800000000"]
        assert rec["body"]["markdown"]["title"] == "Airflow task failed"
        assert len(requests.get(f"http://127.0.0.1:{port}/_messages", timeout=5).json()) == 1

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    stdout = out.decode("utf-8")
    assert stdout.splitlines()[0] == (
        f"fake DingTalk robot listening on http://127.0.0.1:{port} (signature: on, keyword: off)"
    )
    assert "Airflow task failed" in stdout and "@13800000000" in stdout
    for secret_thing in (TOKEN, SECRET):
        assert secret_thing not in stdout
        assert secret_thing not in err.decode("utf-8")


def test_repeated_msg_uuid_kept_when_dedup_is_off():
    with FakeRobot(TOKEN, dedup_msg_uuid=False) as r:
        assert errcode_of(post(r.url, txt("a", msgUuid="u-1"))) == 0
        assert errcode_of(post(r.url, txt("a again", msgUuid="u-1"))) == 0
        assert [m["body"]["msgUuid"] for m in r.messages] == ["u-1", "u-1"]


#: Loads every fake robot in a Python where requests cannot be imported, as the benchmarks' driver
#: (any Python 3.11 with uv) loads them; prints each fake class's name.
_FAKES_WITHOUT_REQUESTS = """
import importlib, importlib.abc, sys

class NoRequests(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "requests" or name.startswith("requests."):
            raise ModuleNotFoundError("No module named 'requests' (blocked)", name=name)
        return None

sys.meta_path.insert(0, NoRequests())
for module, name in [
    ("airflow_ext.fake_robot", "FakeRobot"),
    ("airflow_ext.channels.wecom.fake", "FakeWeComRobot"),
    ("airflow_ext.channels.feishu.fake", "FakeFeishuRobot"),
    ("airflow_ext.channels.slack.fake", "FakeSlackWebhook"),
]:
    print(getattr(importlib.import_module(module), name).__name__)
"""


def test_the_fake_robots_need_nothing_beyond_the_standard_library():
    result = subprocess.run(
        [sys.executable, "-c", _FAKES_WITHOUT_REQUESTS],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["FakeRobot", "FakeWeComRobot", "FakeFeishuRobot", "FakeSlackWebhook"]
