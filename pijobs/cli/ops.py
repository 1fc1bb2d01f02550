"""The operator's commands: ``pijobs ops status|set|tenants|tenant`` and ``pijobs dlq list|redrive|purge``
(``ops status --watch``, the live view, is :mod:`pijobs.cli.watch`). Parsing here, the work in
:mod:`pijobs.ops`, the printing in :mod:`pijobs.cli.render`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from pijobs import ops
from pijobs.cli.args import number_in
from pijobs.cli.failure import EXIT_OK
from pijobs.cli.render import Output, message_columns, status_table, stdout_console, tenant_columns
from pijobs.cli.watch import WATCH_INTERVAL, WATCH_INTERVAL_RANGE, watch_status
from pijobs.errors import OperationError, UsageError
from pijobs.shared import aws
from pijobs.shared.fairshare import WEIGHT_RANGE


def register(subparsers: Any, output: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False, parents=[output])
    common.add_argument(
        "--stack-name",
        default=None,
        help=f"primary stack (default: ${ops.STACK_ENV} or {ops.DEFAULT_STACK})",
    )

    actions = subparsers.add_parser(
        "ops", help="operators: queue, capacity, event source mapping"
    ).add_subparsers(metavar="ACTION")
    status = actions.add_parser("status", parents=[common], help="queue, DLQ, live jobs, capacity, mapping")
    status.add_argument(
        "--watch", action="store_true", help="a live view, redrawn every --interval seconds (Ctrl-C ends it)"
    )
    status.add_argument(
        "--interval",
        type=number_in(*WATCH_INTERVAL_RANGE, kind=float),
        default=WATCH_INTERVAL,
        help=f"with --watch: seconds between redraws (default {WATCH_INTERVAL:g}; 0.1..3600)",
    )
    status.add_argument(
        "--iterations", type=number_in(1, None), help="with --watch: stop after this many views"
    )
    status.set_defaults(run=cmd_ops_status)
    change = actions.add_parser("set", parents=[common], help="change MaxActiveStacks and the mapping")
    change.add_argument(
        "--max-active-stacks",
        type=number_in(ops.MAX_ACTIVE_STACKS_MIN, ops.MAX_LIVE_JOBS),
        help=f"live stacks at most ({ops.MAX_ACTIVE_STACKS_MIN}..{ops.MAX_LIVE_JOBS})",
    )
    change.add_argument(
        "--maximum-concurrency",
        type=number_in(*ops.MAXIMUM_CONCURRENCY_RANGE),
        help="the mapping's ScalingConfig.MaximumConcurrency (2..1000)",
    )
    change.add_argument(
        "--batch-size", type=number_in(*ops.BATCH_SIZE_RANGE), help="the mapping's BatchSize (1..10000)"
    )
    change.set_defaults(run=cmd_ops_set)
    tenants = actions.add_parser(
        "tenants", parents=[common], help="fair share: each tenant's weight, cap, live and waiting jobs"
    )
    tenants.set_defaults(run=cmd_ops_tenants)
    tenant = actions.add_parser("tenant", parents=[common], help="set one tenant's weight or cap")
    tenant.add_argument("key_id", metavar="KEY_ID", help="the tenant's API key id (pijobs keys list)")
    tenant.add_argument(
        "--weight",
        type=number_in(*WEIGHT_RANGE, kind=float),
        help="its share relative to others (default 1; 0.01..100)",
    )
    cap = tenant.add_mutually_exclusive_group()
    cap.add_argument("--max-active", type=number_in(1, None), help="its own cap on live stacks (>= 1)")
    cap.add_argument("--default-cap", action="store_true", help="back to MaxActiveStacksPerOwner")
    tenant.set_defaults(run=cmd_ops_tenant)

    dlq = subparsers.add_parser("dlq", help="operators: the dead-letter queue").add_subparsers(
        metavar="ACTION"
    )
    peek = dlq.add_parser("list", parents=[common], help="peek at the messages (they stay)")
    peek.add_argument("--max", type=number_in(1, 1000), default=ops.PEEK_LIMIT, help="at most this many")
    peek.set_defaults(run=cmd_dlq_list)
    redrive = dlq.add_parser("redrive", parents=[common], help="move every message to the jobs queue")
    redrive.set_defaults(run=cmd_dlq_redrive)
    purge = dlq.add_parser("purge", parents=[common], help="delete every message (asks first)")
    purge.add_argument("--yes", action="store_true", help="do not ask (required without a terminal)")
    purge.set_defaults(run=cmd_dlq_purge)


def _resources(args: argparse.Namespace) -> ops.StackResources:
    return ops.stack_resources(aws.client("cloudformation"), ops.stack_name(args.stack_name))


# ---- commands ----------------------------------------------------------------------------------------------
def cmd_ops_status(args: argparse.Namespace, out: Output) -> int:
    if not args.watch and args.iterations is not None:
        raise UsageError("--iterations goes with --watch")
    if args.watch and out.json_mode:
        raise UsageError("--watch draws a view for a person; without it, --json prints the status once")
    resources = _resources(args)
    if args.watch:
        return watch_status(resources, interval=args.interval, iterations=args.iterations)
    _show_status(out, ops.gather_status(resources))
    return EXIT_OK


def cmd_ops_set(args: argparse.Namespace, out: Output) -> int:
    resources = _resources(args)
    ops.apply_settings(
        resources,
        max_active_stacks=args.max_active_stacks,
        maximum_concurrency=args.maximum_concurrency,
        batch_size=args.batch_size,
    )
    _show_status(out, ops.gather_status(resources))
    return EXIT_OK


def cmd_ops_tenants(args: argparse.Namespace, out: Output) -> int:
    resources = _resources(args)
    rows = ops.tenant_rows(resources)
    out.either(
        {"max_active_stacks_per_owner": resources.owner_cap_setting, "tenants": rows},
        lambda: out.table(
            rows, tenant_columns, empty="no tenant has a setting, a live stack or a waiting job"
        ),
    )
    return EXIT_OK


def cmd_ops_tenant(args: argparse.Namespace, out: Output) -> int:
    row = ops.set_tenant(
        _resources(args),
        args.key_id,
        weight=args.weight,
        max_active=args.max_active,
        default_cap=args.default_cap,
    )
    out.either(row, lambda: out.table([row], tenant_columns, empty=""))
    return EXIT_OK


def _show_status(out: Output, status: dict[str, Any]) -> None:
    if out.json_mode:
        out.json(status)
        return
    stdout_console().print(status_table(status))
    if status["event_source_mapping"]["state"] == "Disabled" and os.environ.get("AWS_ENDPOINT_URL"):
        out.line("(local stack: the local stand-in polls the queue; the mapping's own state stays Disabled)")


def cmd_dlq_list(args: argparse.Namespace, out: Output) -> int:
    resources = _resources(args)
    messages = ops.peek_messages(aws.client("sqs"), resources.dlq_url, limit=args.max)
    out.either(
        {"queue_url": resources.dlq_url, "messages": messages},
        lambda: out.table(messages, message_columns, empty="the DLQ is empty"),
    )
    return EXIT_OK


def cmd_dlq_redrive(args: argparse.Namespace, out: Output) -> int:
    resources = _resources(args)
    moved, failed = ops.redrive_messages(aws.client("sqs"), resources.dlq_url, resources.queue_url)
    out.either(
        {"moved": moved, "failed": failed},
        lambda: out.line(f"moved {moved} message(s) from the DLQ to the jobs queue"),
    )
    if failed:
        raise OperationError(f"{failed} message(s) could not be sent and stay in the DLQ")
    return EXIT_OK


def cmd_dlq_purge(args: argparse.Namespace, out: Output) -> int:
    resources = _resources(args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to purge the DLQ without --yes when not on a terminal")
        count = ops.dlq_size(resources)
        if not confirm(f"Delete all {count} message(s) in {resources.dlq_url}? [y/N] "):
            raise OperationError("not purged")
    purged = ops.purge_dlq(resources)
    out.either({"purged": purged}, lambda: out.line(f"purged the DLQ ({purged} message(s))"))
    return EXIT_OK


def confirm(prompt: str, *, stdin: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """Ask on stderr (stdout stays clean), read one line; only 'y' or 'yes' is a yes."""
    stdin, stderr = stdin or sys.stdin, stderr or sys.stderr
    stderr.write(prompt)
    stderr.flush()
    return stdin.readline().strip().lower() in ("y", "yes")
