"""The ``pijobs`` command: the embedded stack (up, demo), API keys, and (where present) deploy."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_FAILED, EXIT_USAGE = 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): nothing left to say. Point stdout at /dev/null so that the
        # interpreter's final flush does not fail a second time.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        print(f"pijobs: {describe_failure(exc)}", file=sys.stderr)
        return EXIT_FAILED


def describe_failure(exc: BaseException) -> str:
    """One line for a failure: what went wrong and what to do, without a traceback."""
    import errno

    from botocore import exceptions as boto

    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return (
            "no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(for the local stack, the exports that pijobs up prints)"
        )
    if isinstance(exc, boto.EndpointConnectionError | boto.ConnectTimeoutError):
        endpoint = getattr(exc, "kwargs", {}).get("endpoint_url", "?")
        return f"cannot reach AWS at {endpoint}: check AWS_ENDPOINT_URL and the network"
    if isinstance(exc, boto.ClientError):
        error = exc.response.get("Error", {})
        operation = getattr(exc, "operation_name", "the call")
        return f"AWS refused {operation}: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(exc, boto.NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION (or AWS_REGION, or a region in your AWS profile)"
    if isinstance(exc, boto.ParamValidationError):
        return f"invalid AWS request: {exc}".replace("\n", " ")
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        named = str(exc.strerror or "")
        return named if "--port" in named else "a port is in use: choose another with --port (0: a free one)"
    if isinstance(exc, ValueError | LookupError | RuntimeError | OSError) or type(exc).__module__.startswith(
        "pijobs"
    ):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc} (pijobs --debug ... shows where)"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """``--digit`` is not ``--digits``: every parser and subparser matches options exactly."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pijobs",
        description="On-demand compute behind one REST call (business functions such as pi).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"pijobs {_version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=os.environ.get("PIJOBS_DEBUG") == "1",
        help="show the traceback of a failure (also PIJOBS_DEBUG=1)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    up = commands.add_parser("up", help="run the embedded stack (moto + stand-ins) until Ctrl-C")
    _local_options(up)
    keep = up.add_mutually_exclusive_group()
    keep.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where jobs, results and API keys are kept across restarts"
        " (default: ~/.local/share/pijobs/local, or under $XDG_DATA_HOME)",
    )
    keep.add_argument("--ephemeral", action="store_true", help="keep nothing: everything is gone at the stop")
    up.set_defaults(run=cmd_up)

    demo = commands.add_parser("demo", help="start the embedded stack, run one job end to end, stop")
    _local_options(demo)
    demo.add_argument("--digits", type=_positive, default=15000, help="digits to compute (default 15000)")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the job")
    demo.set_defaults(run=cmd_demo)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(metavar="ACTION")
    create = keys.add_parser("create", help="create an API key on the usage plan; prints its value last")
    create.add_argument("name")
    create.add_argument("--usage-plan-id", help="default: the usage plan named pijobs*")
    create.set_defaults(run=cmd_keys_create)
    listing = keys.add_parser("list", help="the keys on the usage plan (ids and names, never values)")
    listing.add_argument("--usage-plan-id", help="default: the usage plan named pijobs*")
    listing.add_argument("--json", dest="json_output", action="store_true", help="print JSON")
    listing.set_defaults(run=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="delete an API key (it stops working within seconds)")
    revoke.add_argument("key_id", metavar="ID", help="the key's id, from pijobs keys list")
    revoke.add_argument("--usage-plan-id", help="default: the usage plan named pijobs*")
    revoke.set_defaults(run=cmd_keys_revoke)

    openapi = commands.add_parser(
        "openapi", help="the API's OpenAPI document (pijobs' own functions): print it, write it or check it"
    )
    where = openapi.add_mutually_exclusive_group()
    where.add_argument("--write", type=Path, metavar="FILE", help="write it to FILE (docs/openapi.json)")
    where.add_argument("--check", type=Path, metavar="FILE", help="exit 1 unless FILE holds it as it is")
    openapi.set_defaults(run=cmd_openapi)

    from pijobs import customer, ops

    customer.register(commands)
    ops.register(commands)

    try:
        from pijobs import deploy
    except ImportError:  # packaging and deploy are optional extras of the command
        deploy = None  # type: ignore[assignment]
    if deploy is not None and hasattr(deploy, "register"):
        deploy.register(commands)
    _no_abbreviations(parser)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pijobs")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _local_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="port of the local API (default: a free one)")
    parser.add_argument("--max-active-stacks", type=_positive, default=4, help="MaxActiveStacks (default 4)")
    parser.add_argument(
        "--max-active-stacks-per-owner",
        type=_positive,
        default=None,
        help="MaxActiveStacksPerOwner: each API key's own cap (default: half the slots, at least 1)",
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="where workers' output goes")


def _local_stack(args: argparse.Namespace, log_level: str = "INFO", data_dir: Path | None = None) -> Any:
    from pijobs.local.stack import LocalConfig, LocalStack
    from pijobs.shared.fairshare import HALF_THE_SLOTS

    _check_port_free(args.port)  # at once, not after the stack has started
    config = LocalConfig(
        api_port=args.port,
        max_active_stacks=args.max_active_stacks,
        max_active_stacks_per_owner=args.max_active_stacks_per_owner or HALF_THE_SLOTS,
        log_dir=args.log_dir,
        log_level=log_level,
        data_dir=data_dir,
    )
    return LocalStack(config)


def _check_port_free(port: int) -> None:
    from pijobs.local.stack import port_is_free

    if port and not port_is_free(port):
        problem = f"port {port} is in use: choose another with --port (0 picks a free one)"
        raise OSError(errno.EADDRINUSE, problem)


def cmd_up(args: argparse.Namespace) -> int:
    from pijobs.local.persist import default_data_dir

    data_dir = None if args.ephemeral else (args.data_dir or default_data_dir())
    stack = _local_stack(args, data_dir=data_dir)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, _stop_handler(stopped))
    with stack:
        # Ctrl-C too, from here on, even where the shell that started `up` had SIGINT ignored (a script's
        # background job): `up` says Ctrl-C stops it, and a second one while it stops ends it at once.
        signal.signal(signal.SIGINT, _stop_handler(stopped))
        if stack.data_dir is None:
            print("Data: ephemeral (nothing is kept after the stop)")
        else:
            kept = ", ".join(f"{n} {what}" for what, n in stack.restored.items() if n)
            print(f"Data: {stack.data_dir} (kept across restarts; restored {kept or 'nothing'})")
        if stack.port_note:
            print(f"Note: {stack.port_note}")
        print(f"API: {stack.api_url}")
        print(f"API key: {stack.api_key}")
        print(f"Console: {stack.api_url}/console (in a browser; sign in with the API key)")
        print(f"AWS endpoint: {stack.aws_endpoint}")
        print("For the command line in another shell:")
        print(f"  export PIJOBS_API_URL={stack.api_url} PIJOBS_API_KEY={stack.api_key}")
        print(
            f"  export AWS_ENDPOINT_URL={stack.aws_endpoint} AWS_ACCESS_KEY_ID=testing"
            " AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
        )
        print("Running; Ctrl-C stops everything.", flush=True)
        # A timed wait, not stopped.wait(): Python runs a signal's handler in the main thread only, and a
        # signal that the kernel delivers to another thread would not wake a main thread blocked for good.
        while not stopped.wait(0.5):
            pass
    print("Stopped.")
    return 0


def _stop_handler(stopped: threading.Event) -> Callable[[int, Any], None]:
    def handle(signum: int, frame: Any) -> None:
        if stopped.is_set():
            raise KeyboardInterrupt  # asked again while stopping: stop at once
        stopped.set()

    return handle


def cmd_demo(args: argparse.Namespace) -> int:
    from pijobs.demo import run_demo

    print("Starting the embedded stack (moto + local gateway, event source mapping, instance runner)...")
    with _local_stack(args, log_level="WARNING") as stack:
        print(f"API: {stack.api_url}  AWS endpoint: {stack.aws_endpoint}")
        return run_demo(stack.api_url, stack.api_key, digits=args.digits, timeout=args.timeout)


def cmd_openapi(args: argparse.Namespace) -> int:
    from pijobs.api_handler.openapi import render, shipped_registry
    from pijobs.api_handler.routes import openapi_document

    text = render(openapi_document(shipped_registry()))
    if args.write is not None:
        args.write.write_text(text, encoding="utf-8")
        print(f"wrote {args.write}")
    elif args.check is not None:
        current = args.check.read_text(encoding="utf-8") if args.check.is_file() else ""
        if current != text:
            print(f"{args.check} is not current: run pijobs openapi --write {args.check}", file=sys.stderr)
            return 1
        print(f"{args.check} is current")
    else:
        sys.stdout.write(text)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from pijobs.keys import create_api_key, find_usage_plan
    from pijobs.shared import aws

    apigw = aws.client("apigateway")
    usage_plan = args.usage_plan_id or find_usage_plan(apigw)
    key_id, value = create_api_key(apigw, usage_plan, args.name)
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    where = f" at {endpoint}" if endpoint else ""
    print(f"Created API key {args.name} (id {key_id}) on usage plan {usage_plan}{where}", file=sys.stderr)
    print(value)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    import json

    from pijobs.keys import find_usage_plan, list_api_keys
    from pijobs.shared import aws

    apigw = aws.client("apigateway")
    keys = list_api_keys(apigw, args.usage_plan_id or find_usage_plan(apigw))
    if args.json_output:
        print(json.dumps({"keys": keys}, indent=2))
    else:
        for key in keys:
            state = "enabled" if key["enabled"] else "disabled"
            print(f"{key['id']}  {key['name']}  {state}  {key['created'] or ''}".rstrip())
        if not keys:
            print("no API keys on the usage plan", file=sys.stderr)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from pijobs.keys import find_usage_plan, revoke_api_key
    from pijobs.shared import aws

    apigw = aws.client("apigateway")
    revoke_api_key(apigw, args.usage_plan_id or find_usage_plan(apigw), args.key_id)
    print(f"Revoked API key {args.key_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
