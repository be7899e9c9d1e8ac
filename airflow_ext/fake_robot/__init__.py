"""``python -m airflow_ext.fake_robot`` (and ``airflow-ext fake-robot``): a local robot of any
channel, for the demo and the tests, printing what the group would see.

The robots themselves live with their channels (``airflow_ext.channels.<name>.fake``, on the shared
:mod:`airflow_ext.channels.base.fake`). This module keeps the names the demo, the benchmarks and
users' scripts import from it: the DingTalk robot (:class:`FakeRobot`, its limits and signing) and
the helpers for a messages file. Standard library only: it must stay importable without Airflow.

Run it on its own with ``python -m airflow_ext.fake_robot --help``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from airflow_ext.channels import FAKE_CLASSES, fake_class
from airflow_ext.channels.base.fake import message_appender, read_messages_file
from airflow_ext.channels.dingtalk.fake import (
    BLOCK_S,
    MAX_BODY_BYTES,
    RATE_LIMIT_PER_WINDOW,
    SIGN_SKEW_S,
    WINDOW_S,
    FakeRobot,
    compute_sign,
    render_message,
)

__all__ = [
    "BLOCK_S",
    "FakeRobot",
    "MAX_BODY_BYTES",
    "RATE_LIMIT_PER_WINDOW",
    "SIGN_SKEW_S",
    "WINDOW_S",
    "compute_sign",
    "main",
    "message_appender",
    "read_messages_file",
    "render_message",
]


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_ext.fake_robot",
        description="Run a local DingTalk-compatible custom robot (or, with --channel, a WeCom, Feishu "
        "or Slack one) that prints what the group would see.",
    )
    parser.add_argument(
        "--channel",
        choices=sorted(FAKE_CLASSES),
        default="dingtalk",
        help="which robot to be (default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind; 0 = any free port (default: %(default)s)"
    )
    parser.add_argument(
        "--token",
        default="demo-token",
        help="access_token (WeCom: key; Feishu, Slack: hook token) it accepts",
    )
    parser.add_argument("--secret", default=None, help="enable signature security with this secret")
    parser.add_argument("--keyword", default=None, help="enable keyword security with this keyword")
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help=f"accepted messages per window (default: the channel's; DingTalk {RATE_LIMIT_PER_WINDOW})",
    )
    parser.add_argument(
        "--window-s", type=float, default=WINDOW_S, help="rate-limit window in seconds (default: %(default)s)"
    )
    parser.add_argument(
        "--block-s",
        type=float,
        default=None,
        help="seconds to refuse everything once the limit is exceeded (default: the channel's; "
        f"DingTalk {BLOCK_S:g})",
    )
    parser.add_argument(
        "--messages-file",
        default=None,
        metavar="PATH",
        help="append each accepted message record to PATH as one JSON line; the records PATH already "
        "holds are loaded at start, so the inbox page shows them",
    )
    parser.add_argument(
        "--port-file", default=None, metavar="PATH", help="write the bound port number to PATH once listening"
    )
    parser.add_argument("--quiet", action="store_true", help="do not echo messages to stdout")
    parser.add_argument(
        "--keep-repeated-msguuid",
        action="store_true",
        help="store a message whose msgUuid was seen before instead of dropping it (shows duplicates)",
    )
    args = parser.parse_args(argv)

    if hasattr(sys.stdout, "reconfigure"):
        try:
            sys.stdout.reconfigure(errors="replace")
        except (AttributeError, ValueError):
            pass

    echo_lock = threading.Lock()

    def echo(text: str) -> None:
        with echo_lock:
            print(text, flush=True)

    robot_class = fake_class(args.channel)
    limits = {
        key: value
        for key, value in (("rate_limit", args.rate_limit), ("block_s", args.block_s))
        if value is not None
    }
    robot = robot_class(
        args.token,
        args.secret,
        args.keyword,
        host=args.host,
        port=args.port,
        window_s=args.window_s,
        echo=None if args.quiet else echo,
        on_message=message_appender(args.messages_file) if args.messages_file else None,
        dedup_msg_uuid=not args.keep_repeated_msguuid,
        **limits,
    )
    name = f"fake {robot_class.CHANNEL_NAME} robot"
    earlier = robot.load_messages(read_messages_file(args.messages_file)) if args.messages_file else 0

    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    try:
        robot.start()
    except OSError as exc:
        print(f"{name}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        if args.port_file:
            _write_atomically(args.port_file, f"{robot.port}\n")
        print(
            f"{name} listening on {robot.base_url} "
            f"(signature: {'on' if args.secret else 'off'}, keyword: {'on' if args.keyword else 'off'})",
            flush=True,
        )
        if earlier:
            print(f"{earlier} earlier message(s) loaded from {args.messages_file}", flush=True)
        print(f"inbox: {robot.base_url}/ (what the group received)", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        robot.stop()
    print(f"{name} stopped", flush=True)
    return 0
