"""The ``pijobs`` command: the embedded stack (up, demo), API keys, and (where present) deploy."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    from shared.functions import FunctionRegistryError

    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except FunctionRegistryError as exc:  # a broken plug-in: say which, not a traceback
        print(f"pijobs: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pijobs", description="On-demand compute behind one REST call (business functions such as pi)."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    up = commands.add_parser("up", help="run the embedded stack (moto + stand-ins) until Ctrl-C")
    _local_options(up)
    up.set_defaults(run=cmd_up)

    demo = commands.add_parser("demo", help="start the embedded stack, run one job end to end, stop")
    _local_options(demo)
    demo.add_argument("--digits", type=int, default=15000, help="digits to compute (default 15000)")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the job")
    demo.set_defaults(run=cmd_demo)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(metavar="ACTION")
    create = keys.add_parser("create", help="create an API key on the usage plan; prints its value last")
    create.add_argument("name")
    create.add_argument("--usage-plan-id", help="default: the usage plan named pijobs*")
    create.set_defaults(run=cmd_keys_create)

    from pijobs import customer, ops

    customer.register(commands)
    ops.register(commands)

    try:
        from pijobs import deploy
    except ImportError:  # packaging and deploy are optional extras of the command
        deploy = None  # type: ignore[assignment]
    if deploy is not None and hasattr(deploy, "register"):
        deploy.register(commands)
    return parser


def _local_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="port of the local API (default: a free one)")
    parser.add_argument("--max-active-stacks", type=int, default=4, help="MaxActiveStacks (default 4)")
    parser.add_argument("--log-dir", type=Path, default=None, help="where workers' output goes")


def _local_stack(args: argparse.Namespace, log_level: str = "INFO") -> Any:
    from pijobs.local.stack import LocalConfig, LocalStack

    if args.max_active_stacks < 1:
        raise SystemExit("pijobs: --max-active-stacks must be at least 1")
    config = LocalConfig(
        api_port=args.port,
        max_active_stacks=args.max_active_stacks,
        log_dir=args.log_dir,
        log_level=log_level,
    )
    return LocalStack(config)


def cmd_up(args: argparse.Namespace) -> int:
    stack = _local_stack(args)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with stack:
        print(f"API: {stack.api_url}")
        print(f"API key: {stack.api_key}")
        print(f"AWS endpoint: {stack.aws_endpoint}")
        print("For the command line in another shell:")
        print(f"  export PIJOBS_API_URL={stack.api_url} PIJOBS_API_KEY={stack.api_key}")
        print(
            f"  export AWS_ENDPOINT_URL={stack.aws_endpoint} AWS_ACCESS_KEY_ID=testing"
            " AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
        )
        print("Running; Ctrl-C stops everything.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
    print("Stopped.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pijobs.demo import run_demo

    if args.digits < 1:
        raise SystemExit("pijobs: --digits must be at least 1")
    print("Starting the embedded stack (moto + local gateway, event source mapping, instance runner)...")
    with _local_stack(args, log_level="WARNING") as stack:
        print(f"API: {stack.api_url}  AWS endpoint: {stack.aws_endpoint}")
        return run_demo(stack.api_url, stack.api_key, digits=args.digits, timeout=args.timeout)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from pijobs.keys import create_api_key, find_usage_plan
    from shared import aws

    apigw = aws.client("apigateway")
    usage_plan = args.usage_plan_id or find_usage_plan(apigw)
    key_id, value = create_api_key(apigw, usage_plan, args.name)
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    where = f" at {endpoint}" if endpoint else ""
    print(f"Created API key {args.name} (id {key_id}) on usage plan {usage_plan}{where}", file=sys.stderr)
    print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
