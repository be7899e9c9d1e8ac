"""The ``airflow-ext`` command line: patch apply/check/revert, send-test, fake-robot."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airflow_ext.errors import DingbotError


def _cmd_patch(args: argparse.Namespace) -> int:
    # Imported lazily: patching must work even when the installed Airflow cannot be imported.
    from airflow_ext import patching

    action = {
        "apply": patching.apply_series,
        "check": patching.check_series,
        "revert": patching.revert_series,
    }[args.action]
    print(action())
    return 0


def _cmd_send_test(args: argparse.Namespace) -> int:
    from airflow_ext.dingbot import send_test_alert

    print(send_test_alert())
    return 0


def _cmd_fake_robot(args: argparse.Namespace) -> int:
    from airflow_ext import fake_robot

    return fake_robot.main(args.robot_args) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-ext", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    patch = commands.add_parser("patch", help="apply, check or revert the Airflow core patch series")
    patch.add_argument(
        "action",
        choices=["apply", "check", "revert"],
        help="apply: dry run, then patch all files or none; check: exit 0 iff applied and intact; "
        "revert: restore the original files byte for byte",
    )
    patch.set_defaults(func=_cmd_patch)

    send_test = commands.add_parser(
        "send-test", help="send a test alert through [dingbot] ding_bot_backend and print the robot's answer"
    )
    send_test.set_defaults(func=_cmd_send_test)

    robot = commands.add_parser(
        "fake-robot",
        help="run a local DingTalk-compatible robot that prints each message (fake-robot --help)",
        add_help=False,
    )
    robot.set_defaults(func=_cmd_fake_robot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "fake-robot":  # its options belong to the robot's own parser
        args.robot_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except DingbotError as err:
        print(f"airflow-ext {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
