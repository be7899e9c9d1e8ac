"""The ``airflow-ext`` command line: patch, check, send-test, route, deliver, outbox, fake-robot."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airflow_ext.errors import ConfigError, DingbotError


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

    print(send_test_alert(getattr(args, "conn_id", None)))
    return 0


def _cmd_route(args: argparse.Namespace) -> int:
    from airflow_ext.route_explain import explain

    print(explain(args.dag_id, args.task_id))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from airflow_ext import checks

    try:
        from airflow.configuration import conf
    except Exception as err:  # a malformed airflow.cfg: Airflow itself cannot start either
        raise ConfigError(f"cannot read the Airflow configuration: {type(err).__name__}: {err}") from None
    from airflow_ext import lines

    adapter = lines.choose()
    dags_folder = adapter.load_dags() if args.dags else None
    problems = checks.find_problems(conf, dags_folder)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(
            f"airflow-ext check: {len(problems)} configuration "
            f"{'problem' if len(problems) == 1 else 'problems'}",
            file=sys.stderr,
        )
        return 1
    print(checks.summary(conf, dags_folder))
    if args.send:
        return _cmd_send_test(args)
    return 0


def _delivery_service():
    from airflow_ext import config
    from airflow_ext.dingbot import outbox_store, robot_named
    from airflow_ext.outbox.deliverer import DeliveryService

    return DeliveryService(
        outbox_store(),
        lambda robot_ref: robot_named(robot_ref or config.DINGDING_ROBOT),
        schedule=config.load_delivery_schedule(),
        policy=config.load_retry_policy(),
    )


def _cmd_deliver(args: argparse.Namespace) -> int:
    import signal
    import threading

    deliverer = _delivery_service()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    deliverer.run(stop)
    return 0


def _cmd_outbox(args: argparse.Namespace) -> int:
    from airflow_ext import config
    from airflow_ext.dingbot import outbox_store

    store = outbox_store()
    if args.action == "status":
        rows = store.status()
        if not rows:
            print("outbox is empty")
        for robot in rows:
            age = "-" if robot.oldest_pending_age_s is None else f"{robot.oldest_pending_age_s:.0f} s"
            names = ", ".join(robot.names) or "[dingding]"
            print(
                f"robot {names} ({robot.robot_key[:12]}): pending {robot.pending + robot.claimed} "
                f"(oldest {age}), sent {robot.sent}, dead {robot.dead}, "
                f"messages in the last minute {robot.sent_last_minute}"
            )
            if robot.pause_reason and robot.paused_until_ms:
                print(f"  paused: {robot.pause_reason}")
    elif args.action == "retry-dead":
        print(f"{store.retry_dead()} dead alerts queued again")
    elif args.action == "purge":
        days = args.older_than_days
        if days is None:
            days = config.load_delivery_schedule().purge_after_s / 86400
        print(f"{store.purge(days * 86400)} delivered alerts older than {days:g} days deleted")
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

    check = commands.add_parser(
        "check",
        help="validate [dingbot] and [dingding] offline: one line per problem naming the option; "
        "exit 1 if there is any",
    )
    check.add_argument(
        "--dags",
        action="store_true",
        help="also parse the DAGs folder and check every Connection a task names with ding_conn_id",
    )
    check.add_argument("--send", action="store_true", help="then send a test alert, as send-test does")
    check.set_defaults(func=_cmd_check)

    send_test = commands.add_parser(
        "send-test", help="send a test alert through [dingbot] ding_bot_backend and print the robot's answer"
    )
    send_test.add_argument(
        "--conn-id",
        default=None,
        help="send straight to this robot Connection (or [dingding]) instead, whatever the backend",
    )
    send_test.set_defaults(func=_cmd_send_test)

    route = commands.add_parser(
        "route", help="print where a task's alerts would go and which ding_conn_id, route or default chose it"
    )
    route.add_argument("dag_id")
    route.add_argument("task_id", nargs="?", default=None, help="default: every task of the DAG")
    route.set_defaults(func=_cmd_route)

    deliver = commands.add_parser(
        "deliver",
        help="deliver alerts from the outbox in the foreground, like `airflow triggerer` "
        "(several replicas may run; stops cleanly on SIGTERM)",
    )
    deliver.set_defaults(func=_cmd_deliver)

    outbox = commands.add_parser("outbox", help="inspect and operate the outbox")
    outbox.add_argument(
        "action",
        choices=["status", "retry-dead", "purge"],
        help="status: pending/sent/dead per robot; retry-dead: queue dead letters again; "
        "purge: delete delivered alerts older than --older-than-days "
        "(default [dingbot] outbox_purge_after_days)",
    )
    outbox.add_argument("--older-than-days", type=float, default=None)
    outbox.set_defaults(func=_cmd_outbox)

    robot = commands.add_parser(
        "fake-robot",
        help="run a local DingTalk-compatible robot (--channel wecom|feishu|slack for the others) "
        "that prints each message (fake-robot --help)",
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
        if args.command not in ("patch", "fake-robot", "check"):  # check chooses once the config reads
            from airflow_ext import lines

            lines.choose()
        return args.func(args)
    except DingbotError as err:
        print(f"airflow-ext {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
