"""The embedded stack's commands (``pijobs up``, ``pijobs demo``) and ``pijobs openapi``."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pijobs.cli.args import number_in
from pijobs.cli.render import Output
from pijobs.errors import OperationError
from pijobs.local.logs import default_log_dir, job_logs
from pijobs.local.persist import default_data_dir
from pijobs.shared.capacity import MAX_LIVE_JOBS
from pijobs.shared.fairshare import HALF_THE_SLOTS


def register(subparsers: Any, output: argparse.ArgumentParser) -> None:
    up = subparsers.add_parser("up", help="run the embedded stack (moto + stand-ins) until Ctrl-C")
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

    demo = subparsers.add_parser("demo", help="start the embedded stack, run one job end to end, stop")
    _local_options(demo)
    demo.add_argument("--digits", type=number_in(1), default=15000, help="digits to compute (default 15000)")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the job")
    demo.set_defaults(run=cmd_demo)

    logs = subparsers.add_parser(
        "logs", help="print a job's worker log (the embedded stack: one file per attempt)"
    )
    logs.add_argument("job_id", metavar="ID", help="the job's id, or a unique prefix of it")
    logs.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="the workers' log directory that pijobs up printed (default: the default data directory's)",
    )
    logs.set_defaults(run=cmd_logs)

    openapi = subparsers.add_parser(
        "openapi", help="the API's OpenAPI document (pijobs' own functions): print it, write it or check it"
    )
    where = openapi.add_mutually_exclusive_group()
    where.add_argument("--write", type=Path, metavar="FILE", help="write it to FILE (docs/openapi.json)")
    where.add_argument("--check", type=Path, metavar="FILE", help="exit 1 unless FILE holds it as it is")
    openapi.set_defaults(run=cmd_openapi)


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pijobs")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _local_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="port of the local API (default: a free one)")
    parser.add_argument(
        "--max-active-stacks",
        type=number_in(1, MAX_LIVE_JOBS),
        default=4,
        help=f"MaxActiveStacks (default 4; 1..{MAX_LIVE_JOBS})",
    )
    parser.add_argument(
        "--max-active-stacks-per-owner",
        type=number_in(1),
        default=None,
        help="MaxActiveStacksPerOwner: each API key's own cap (default: half the slots, at least 1)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="where workers' output goes, a file per instance (up: DATA_DIR/logs, or a temporary folder)",
    )


def _local_stack(args: argparse.Namespace, log_level: str = "INFO", data_dir: Path | None = None) -> Any:
    from pijobs.local.stack import (  # lazy: the embedded stack needs the [local] extra (moto)
        LocalConfig,
        LocalStack,
    )

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
    from pijobs.local.stack import port_is_free  # lazy: the embedded stack needs the [local] extra (moto)

    if port and not port_is_free(port):
        problem = f"port {port} is in use: choose another with --port (0 picks a free one)"
        raise OSError(errno.EADDRINUSE, problem)


def cmd_up(args: argparse.Namespace, out: Output) -> int:

    data_dir = None if args.ephemeral else (args.data_dir or default_data_dir())
    if args.log_dir is None:  # each worker's output goes to a file, one per instance, and up says where
        args.log_dir = (
            default_log_dir(data_dir)
            if data_dir is not None
            else Path(tempfile.mkdtemp(prefix="pijobs-worker-logs-"))
        )
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
        logs_arg = "" if args.log_dir == _default_logs(data_dir) else f" --log-dir {args.log_dir}"
        print(f"Worker logs: {args.log_dir}/<instance>.log (pijobs logs JOB{logs_arg} prints a job's)")
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


def _default_logs(data_dir: Path | None) -> Path | None:
    """The log directory ``pijobs logs`` reads without --log-dir: the default data directory's."""

    return default_log_dir(default_data_dir()) if data_dir == default_data_dir() else None


def _stop_handler(stopped: threading.Event) -> Callable[[int, Any], None]:
    def handle(signum: int, frame: Any) -> None:
        if stopped.is_set():
            raise KeyboardInterrupt  # asked again while stopping: stop at once
        stopped.set()

    return handle


def cmd_logs(args: argparse.Namespace, out: Output) -> int:

    paths = job_logs(args.log_dir or default_log_dir(default_data_dir()), args.job_id)
    for attempt, path in enumerate(paths, start=1):
        out.note(f"== {path} (attempt {attempt} of {len(paths)})")
        sys.stdout.write(path.read_text(encoding="utf-8", errors="replace"))
        sys.stdout.flush()
    return 0


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from pijobs.demo import run_demo  # lazy: the demo's HTTP client (requests) is in the [local] extra

    print("Starting the embedded stack (moto + local gateway, event source mapping, instance runner)...")
    with _local_stack(args, log_level="WARNING") as stack:
        print(f"API: {stack.api_url}  AWS endpoint: {stack.aws_endpoint}")
        return run_demo(stack.api_url, stack.api_key, digits=args.digits, timeout=args.timeout)


def cmd_openapi(args: argparse.Namespace, out: Output) -> int:
    from pijobs.api_handler import openapi, routes  # lazy: start-up time (only this command needs the API)

    text = openapi.render(routes.openapi_document(openapi.shipped_registry()))
    if args.write is not None:
        args.write.write_text(text, encoding="utf-8")
        print(f"wrote {args.write}")
    elif args.check is not None:
        current = args.check.read_text(encoding="utf-8") if args.check.is_file() else ""
        if current != text:
            raise OperationError(f"{args.check} is not current: run pijobs openapi --write {args.check}")
        print(f"{args.check} is current")
    else:
        sys.stdout.write(text)
    return 0
