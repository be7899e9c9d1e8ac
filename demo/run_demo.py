"""The demo: a DAG that retries, then fails, and the DingTalk alerts its two failed tries send.

Runs in the environment `tox -e demo` builds (pinned Airflow 3.3.2; `tox -e demo-airflow2` for
2.11.2) with the patch series applied, SQLite in a local AIRFLOW_HOME. Alerts go to the local
DingTalk-compatible robot started here (it checks signatures and keywords like DingTalk and prints
each message as the group would see it), or to your real robot when AIRFLOW__DINGDING__BOT_URL
(and, if it signs, ..._SECRET) is set.

The local robot keeps what it received in robot-messages.jsonl beside AIRFLOW_HOME (emptied at each
run) and shows it on its inbox page, http://127.0.0.1:8765/ (another port if that one is taken). Run
from a terminal, the demo keeps serving the page until Enter is pressed; otherwise it ends at once.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

from airflow_ext.fake_robot import FakeRobot, message_appender

DEMO_DIR = Path(__file__).resolve().parent
DAG_ID = "dingbot_demo"
BIN = Path(sys.executable).parent
#: The inbox's port when it is free, so that a bookmark of the page keeps working between runs.
ROBOT_PORT = 8765


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def airflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True)


def start_robot(secret: str, messages_file: Path) -> FakeRobot:
    """The local robot on ROBOT_PORT, or on any free port if that one is taken."""

    def robot_on(port: int) -> FakeRobot:
        return FakeRobot(
            access_token=secrets.token_hex(16),
            secret=secret,
            keyword="Airflow",
            port=port,
            echo=print,
            on_message=message_appender(str(messages_file)),
        )

    try:
        return robot_on(ROBOT_PORT).start()
    except OSError:  # taken: by another demo still showing its inbox, say
        return robot_on(0).start()


def user_path(path: Path) -> str:
    """The path as the user would type it from where they ran the demo (the clone, usually)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def show_inbox(robot: FakeRobot, messages_file: Path) -> None:
    inbox = f"{robot.base_url}/"
    # The demo environment's own airflow-ext: it is not on the user's PATH (tox made the environment).
    again = (
        f"{shlex.quote(user_path(BIN / 'airflow-ext'))} fake-robot"
        f" --messages-file {shlex.quote(user_path(messages_file))} --port {robot.port}"
    )
    say(f"The local robot's inbox: {inbox}")
    print(f"    (to see it again later: {again})")
    if not sys.stdin.isatty():
        return
    try:
        input(f"\nOpen {inbox} to see what the group received; press Enter to stop\n")
    except (EOFError, KeyboardInterrupt):
        print()


def main() -> int:
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(DEMO_DIR.parent / ".demo" / "airflow-home")))
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(DEMO_DIR / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DINGBOT__TIMEOUT": env.get("AIRFLOW__DINGBOT__TIMEOUT", "10"),
        }
    )

    robot = None
    messages_file = home.parent / "robot-messages.jsonl"
    if env.get("AIRFLOW__DINGDING__BOT_URL") or env.get("AIRFLOW__DINGDING__BOT_URL_CMD"):
        say("Alerts go to the DingTalk robot in AIRFLOW__DINGDING__BOT_URL")
    else:
        secret = "SEC" + secrets.token_hex(16)
        messages_file.write_text("")  # this run's messages only
        robot = start_robot(secret, messages_file)
        env.update(
            {
                "AIRFLOW__DINGDING__BOT_URL": robot.url,
                "AIRFLOW__DINGDING__SECRET": secret,
                "AIRFLOW__DINGDING__KEYWORD": "Airflow",
                "AIRFLOW__DINGDING__AT_MOBILES": "13800000000",
            }
        )
        say(
            f"Local DingTalk-compatible robot on 127.0.0.1:{robot.port} "
            "(signature and keyword security on; set AIRFLOW__DINGDING__BOT_URL to use a real robot)"
        )

    try:
        say(f"Preparing the metadata database (SQLite in {home})")
        migrate = airflow(["db", "migrate"], env)
        if migrate.returncode != 0:
            print(migrate.stdout[-3000:], migrate.stderr[-3000:], sep="\n")
            return 1

        say(f"airflow dags test {DAG_ID}: load_orders fails, retries once, fails again")
        run = airflow(["dags", "test", DAG_ID], env)
        log_file = home / "dags-test.log"
        log_file.write_text(run.stdout + run.stderr)
        for line in (run.stdout + run.stderr).splitlines():
            # Airflow 2 says "Marking task as FAILED", Airflow 3 "Task instance state updated ... new_state=".
            if re.search(r"Marking task as|new_state=|DingTalk .* alert", line):
                print("   ", line.split(" - ", 1)[-1])
        print(f"    (full log: {log_file})")

        if robot is None:
            delivered = len(re.findall(r"DingTalk \w+ alert .* delivered", run.stdout + run.stderr))
            say(f"{delivered} of 2 alerts delivered to your robot")
            return 0 if delivered == 2 else 1

        messages = robot.wait_for_messages(2, timeout=15)
        say(f"The group received {len(messages)} messages (expected 2: the retry, then the final failure)")
        show_inbox(robot, messages_file)
        return 0 if len(messages) == 2 else 1
    finally:
        if robot is not None:
            robot.stop()


if __name__ == "__main__":
    sys.exit(main())
