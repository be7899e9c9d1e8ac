"""`airflow-ext` argument handling (the commands themselves are tested end to end)."""

from __future__ import annotations

import signal
import subprocess
import time

import requests

from tests.conftest import BIN


def test_fake_robot_takes_its_own_options(tmp_path):
    port_file = tmp_path / "port"
    robot = subprocess.Popen(
        [
            str(BIN / "airflow-ext"),
            "fake-robot",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--token",
            "t",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}/robot/send?access_token=t"
        body = {"msgtype": "text", "text": {"content": "hello"}}
        assert requests.post(url, json=body, timeout=5).json()["errcode"] == 0
    finally:
        robot.send_signal(signal.SIGTERM)
        out, _ = robot.communicate(timeout=20)
    assert robot.returncode == 0 and "hello" in out


def test_unknown_option_is_refused():
    result = subprocess.run(
        [str(BIN / "airflow-ext"), "patch", "check", "--bogus"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
