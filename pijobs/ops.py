"""The operator's commands: ``pijobs ops status|set|tenants|tenant`` and ``pijobs dlq list|redrive|purge``
(``ops status --watch``, the live view, is ``pijobs/watch.py``).

Resource names come from the primary stack's outputs (QueueUrl, DeadLetterQueueUrl, TableName,
EventSourceMappingId), so the same commands work on AWS and, with ``AWS_ENDPOINT_URL`` set, on the local
stack.
Exit codes: 0 done, 1 an AWS call failed, 2 a usage problem (bad value, purge refused).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TextIO, TypedDict

from pijobs.customer import stdout_console
from pijobs.shared import aws
from pijobs.shared.fairshare import HALF_THE_SLOTS
from pijobs.shared.status import UNFINISHED_STATES

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

STACK_ENV = "PIJOBS_STACK_NAME"
DEFAULT_STACK = "pijobs"

MAX_ACTIVE_STACKS_MIN = 1
MAXIMUM_CONCURRENCY_RANGE = (2, 1000)
BATCH_SIZE_RANGE = (1, 10000)
UNBATCHED_MAX = 10  # AWS: a standard queue's BatchSize above 10 needs MaximumBatchingWindowInSeconds >= 1

PEEK_HOLD_SECONDS = 10
REDRIVE_HOLD_SECONDS = 30
PEEK_LIMIT = 100
WATCH_INTERVAL = 2.0  # ops status --watch (pijobs/watch.py)
WATCH_INTERVAL_RANGE = (0.1, 3600.0)


class OpsUsageError(Exception):
    """A bad request from the operator (exit 2)."""


class OpsError(Exception):
    """Something about the deployment is wrong or an AWS call failed (exit 1)."""


class EsmSettingsDict(TypedDict):
    batch_size: int
    maximum_concurrency: int | None  # None: the mapping has no ScalingConfig (no cap of its own)


@dataclass(frozen=True)
class StackResources:
    stack_name: str
    queue_url: str
    dlq_url: str
    table_name: str
    mapping_id: str
    max_active_stacks_default: int  # the stack's MaxActiveStacks parameter, before anyone changed it
    owner_cap_setting: int = HALF_THE_SLOTS  # MaxActiveStacksPerOwner (0: no cap of a tenant's own)


# ---- registration ------------------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--stack-name",
        default=None,
        help=f"primary stack (default: ${STACK_ENV} or {DEFAULT_STACK})",
    )
    common.add_argument("--json", dest="json_output", action="store_true", help="machine-readable output")

    ops = subparsers.add_parser("ops", help="operators: queue, capacity, event source mapping")
    actions = ops.add_subparsers(metavar="ACTION")
    status = actions.add_parser("status", parents=[common], help="queue, DLQ, live jobs, capacity, mapping")
    status.add_argument(
        "--watch", action="store_true", help="a live view, redrawn every --interval seconds (Ctrl-C ends it)"
    )
    status.add_argument(
        "--interval",
        type=_interval,
        default=WATCH_INTERVAL,
        help=f"with --watch: seconds between redraws (default {WATCH_INTERVAL:g}; 0.1..3600)",
    )
    status.add_argument(
        "--iterations", type=bounded_int(1, None), help="with --watch: stop after this many views"
    )
    status.set_defaults(run=_runner(cmd_ops_status))
    change = actions.add_parser("set", parents=[common], help="change MaxActiveStacks and the mapping")
    change.add_argument(
        "--max-active-stacks",
        type=bounded_int(MAX_ACTIVE_STACKS_MIN, None),
        help="live stacks at most (>= 1)",
    )
    change.add_argument(
        "--maximum-concurrency",
        type=bounded_int(*MAXIMUM_CONCURRENCY_RANGE),
        help="the mapping's ScalingConfig.MaximumConcurrency (2..1000)",
    )
    change.add_argument(
        "--batch-size", type=bounded_int(*BATCH_SIZE_RANGE), help="the mapping's BatchSize (1..10000)"
    )
    change.set_defaults(run=_runner(cmd_ops_set))
    tenants = actions.add_parser(
        "tenants", parents=[common], help="fair share: each tenant's weight, cap, live and waiting jobs"
    )
    tenants.set_defaults(run=_runner(cmd_ops_tenants))
    tenant = actions.add_parser("tenant", parents=[common], help="set one tenant's weight or cap")
    tenant.add_argument("key_id", metavar="KEY_ID", help="the tenant's API key id (pijobs keys list)")
    tenant.add_argument("--weight", type=_weight, help="its share relative to others (default 1; 0.01..100)")
    cap = tenant.add_mutually_exclusive_group()
    cap.add_argument("--max-active", type=bounded_int(1, None), help="its own cap on live stacks (>= 1)")
    cap.add_argument("--default-cap", action="store_true", help="back to MaxActiveStacksPerOwner")
    tenant.set_defaults(run=_runner(cmd_ops_tenant))

    dlq = subparsers.add_parser("dlq", help="operators: the dead-letter queue")
    dlq_actions = dlq.add_subparsers(metavar="ACTION")
    peek = dlq_actions.add_parser("list", parents=[common], help="peek at the messages (they stay)")
    peek.add_argument("--max", type=bounded_int(1, 1000), default=PEEK_LIMIT, help="at most this many")
    peek.set_defaults(run=_runner(cmd_dlq_list))
    redrive = dlq_actions.add_parser("redrive", parents=[common], help="move every message to the jobs queue")
    redrive.set_defaults(run=_runner(cmd_dlq_redrive))
    purge = dlq_actions.add_parser("purge", parents=[common], help="delete every message (asks first)")
    purge.add_argument("--yes", action="store_true", help="do not ask (required without a terminal)")
    purge.set_defaults(run=_runner(cmd_dlq_purge))


def bounded_int(low: int, high: int | None) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            wanted = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({wanted})")
        return value

    return parse


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not WATCH_INTERVAL_RANGE[0] <= value <= WATCH_INTERVAL_RANGE[1]:
        low, high = WATCH_INTERVAL_RANGE
        raise argparse.ArgumentTypeError(f"{value:g} is out of range ({low:g}..{high:g})")
    return value


def _weight(text: str) -> float:
    from pijobs.shared.fairshare import WEIGHT_RANGE

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not WEIGHT_RANGE[0] <= value <= WEIGHT_RANGE[1]:
        raise argparse.ArgumentTypeError(f"{value} is out of range ({WEIGHT_RANGE[0]}..{WEIGHT_RANGE[1]})")
    return value


def _runner(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except OpsUsageError as exc:
            _error(str(exc))
            return EXIT_USAGE
        except OpsError as exc:
            _error(str(exc))
            return EXIT_FAILED
        # AWS errors (credentials, endpoint, refusals) are said in one place for every command: pijobs.cli

    return run


# ---- commands ----------------------------------------------------------------------------------------------
def cmd_ops_status(args: argparse.Namespace) -> int:
    if not args.watch and args.iterations is not None:
        raise OpsUsageError("--iterations goes with --watch")
    if args.watch and args.json_output:
        raise OpsUsageError("--watch draws a view for a person; without it, --json prints the status once")
    resources = stack_resources(aws.client("cloudformation"), _stack_name(args))
    if args.watch:
        from pijobs.watch import watch_status

        return watch_status(resources, interval=args.interval, iterations=args.iterations)
    status = gather_status(resources)
    _show_status(args, status)
    return EXIT_OK


def cmd_ops_set(args: argparse.Namespace) -> int:
    if args.max_active_stacks is None and args.maximum_concurrency is None and args.batch_size is None:
        raise OpsUsageError(
            "nothing to change: give --max-active-stacks, --maximum-concurrency or --batch-size"
        )
    resources = stack_resources(aws.client("cloudformation"), _stack_name(args))
    lam = aws.client("lambda")
    update = mapping_update(args.batch_size, args.maximum_concurrency)
    if update:
        check_batch_window(args.batch_size, lam.get_event_source_mapping(UUID=resources.mapping_id))
    if args.max_active_stacks is not None:
        _capacity(resources).set_limit(args.max_active_stacks)
    if update:
        lam.update_event_source_mapping(UUID=resources.mapping_id, **update)
    status = gather_status(resources)
    _show_status(args, status)
    return EXIT_OK


def cmd_ops_tenants(args: argparse.Namespace) -> int:
    resources = stack_resources(aws.client("cloudformation"), _stack_name(args))
    rows = tenant_rows(resources)
    if args.json_output:
        _json({"max_active_stacks_per_owner": resources.owner_cap_setting, "tenants": rows})
    else:
        _print_tenants(rows)
    return EXIT_OK


def cmd_ops_tenant(args: argparse.Namespace) -> int:
    from pijobs.shared.tenants import TenantStore

    if args.weight is None and args.max_active is None and not args.default_cap:
        raise OpsUsageError("nothing to change: give --weight, --max-active or --default-cap")
    resources = stack_resources(aws.client("cloudformation"), _stack_name(args))
    TenantStore(aws.client("dynamodb"), resources.table_name).set_policy(
        args.key_id, weight=args.weight, max_active=args.max_active, clear_cap=args.default_cap
    )
    rows = [row for row in tenant_rows(resources) if row["tenant"] == args.key_id]
    if args.json_output:
        _json(rows[0])
    else:
        _print_tenants(rows)
    return EXIT_OK


def tenant_rows(
    resources: StackResources, *, waiting: dict[str, int] | None = None, busy_only: bool = False
) -> list[dict[str, Any]]:
    """Every tenant with a setting, a live stack or a waiting job: weight, cap, live, waiting.

    ``waiting`` (jobs parked per tenant) when the caller has read it already: it is the whole waiting index.
    ``busy_only``: only the tenants with a live stack or a waiting job, their settings read by key; finding
    every tenant with a setting scans the table, which is fine for ``ops tenants``, not for a redraw every
    few seconds.
    """
    from pijobs.shared.fairshare import TenantPolicy, default_owner_cap, owner_limit
    from pijobs.shared.store import JobStore
    from pijobs.shared.tenants import TenantStore

    ddb = aws.client("dynamodb")
    tenants = TenantStore(ddb, resources.table_name)
    capacity = _capacity(resources).state() or {}
    live = capacity.get("owners", {})
    default_cap = default_owner_cap(
        resources.owner_cap_setting, capacity.get("limit", resources.max_active_stacks_default)
    )
    if waiting is None:
        waiting = JobStore(ddb, resources.table_name).waiting_by_owner()
    if busy_only:
        configured = tenants.policies(set(live) | set(waiting))
    else:
        configured = {t.owner: t.policy for t in tenants.all()}
    rows = []
    for owner in sorted(set(configured) | set(live) | set(waiting)):
        policy = configured.get(owner, TenantPolicy())
        rows.append(
            {
                "tenant": owner,
                "weight": policy.weight,
                "max_active": owner_limit(policy, default_cap),
                "own_cap": policy.max_active is not None,
                "live_stacks": int(live.get(owner, 0)),
                "waiting": int(waiting.get(owner, 0)),
            }
        )
    return rows


def _show_status(args: argparse.Namespace, status: Any) -> None:
    if args.json_output:
        _json(status)
    else:
        _print_status(status)


def cmd_dlq_list(args: argparse.Namespace) -> int:
    resources = stack_resources(aws.client("cloudformation"), _stack_name(args))
    messages = peek_messages(aws.client("sqs"), resources.dlq_url, limit=args.max)
    if args.json_output:
        _json({"queue_url": resources.dlq_url, "messages": messages})
    else:
        _print_messages(messages)
    return EXIT_OK


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    resources = stack_resources(aws.client("cloudformation"), _stack_name(args))
    moved, failed = redrive_messages(aws.client("sqs"), resources.dlq_url, resources.queue_url)
    if args.json_output:
        _json({"moved": moved, "failed": failed})
    else:
        print(f"moved {moved} message(s) from the DLQ to the jobs queue")
    if failed:
        _error(f"{failed} message(s) could not be sent and stay in the DLQ")
        return EXIT_FAILED
    return EXIT_OK


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    resources = stack_resources(aws.client("cloudformation"), _stack_name(args))
    sqs = aws.client("sqs")
    count = sum(queue_counts(sqs, resources.dlq_url).values())
    if not args.yes:
        if not sys.stdin.isatty():
            raise OpsUsageError("refusing to purge the DLQ without --yes when not on a terminal")
        if not confirm(f"Delete all {count} message(s) in {resources.dlq_url}? [y/N] "):
            _error("not purged")
            return EXIT_FAILED
    sqs.purge_queue(QueueUrl=resources.dlq_url)
    if args.json_output:
        _json({"purged": count})
    else:
        print(f"purged the DLQ ({count} message(s))")
    return EXIT_OK


# ---- reading the deployment --------------------------------------------------------------------------------
def stack_resources(cfn: Any, stack_name: str) -> StackResources:
    """Names of the primary stack's queue, DLQ, table and mapping, from its outputs."""
    stacks = cfn.describe_stacks(StackName=stack_name).get("Stacks", [])
    if not stacks:
        raise OpsError(f"no stack {stack_name}")
    stack = stacks[0]
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    wanted = ("QueueUrl", "DeadLetterQueueUrl", "TableName", "EventSourceMappingId")
    missing = [name for name in wanted if not outputs.get(name)]
    if missing:
        raise OpsError(
            f"stack {stack_name} has no output {', '.join(missing)}: is it the pijobs primary stack?"
        )
    default_limit = parameters.get("MaxActiveStacks", "")
    owner_cap = parameters.get("MaxActiveStacksPerOwner", "")
    return StackResources(
        stack_name=stack_name,
        queue_url=outputs["QueueUrl"],
        dlq_url=outputs["DeadLetterQueueUrl"],
        table_name=outputs["TableName"],
        mapping_id=outputs["EventSourceMappingId"],
        max_active_stacks_default=int(default_limit) if default_limit.isdigit() else 1,
        owner_cap_setting=int(owner_cap) if owner_cap.lstrip("-").isdigit() else HALF_THE_SLOTS,
    )


def esm_settings(lambda_client: Any, mapping_id: str) -> EsmSettingsDict:
    """The mapping's ``{"batch_size", "maximum_concurrency"}`` as the local event source mapping reads them.

    ``maximum_concurrency`` is None when the mapping has no ScalingConfig (the local mapping then keeps
    its own value).
    """
    mapping = lambda_client.get_event_source_mapping(UUID=mapping_id)
    scaling = mapping.get("ScalingConfig") or {}
    concurrency = scaling.get("MaximumConcurrency")
    return {
        "batch_size": int(mapping["BatchSize"]),
        "maximum_concurrency": int(concurrency) if concurrency is not None else None,
    }


def esm_settings_provider(mapping_id: str) -> Callable[[], EsmSettingsDict]:
    """A ``settings_provider`` for ``LocalEventSourceMapping``: the mapping's settings, read on every call."""
    return lambda: esm_settings(aws.client("lambda"), mapping_id)


def queue_counts(sqs: Any, queue_url: str) -> dict[str, int]:
    """``visible`` (ApproximateNumberOfMessages), ``in_flight`` (...NotVisible), ``delayed`` (...Delayed)."""
    names = {
        "visible": "ApproximateNumberOfMessages",
        "in_flight": "ApproximateNumberOfMessagesNotVisible",
        "delayed": "ApproximateNumberOfMessagesDelayed",
    }
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=list(names.values()))[
        "Attributes"
    ]
    return {key: int(attributes.get(name, 0)) for key, name in names.items()}


def live_jobs_by_state(statuses: Iterable[str]) -> dict[str, int]:
    counts = Counter(statuses)
    return {state.value: counts.get(state.value, 0) for state in UNFINISHED_STATES}


def gather_status(resources: StackResources, *, waiting: dict[str, int] | None = None) -> dict[str, Any]:
    """Queues, live jobs by state, capacity, jobs waiting for a slot and the mapping (``ops status --json``);
    ``waiting`` as in ``tenant_rows``."""
    from pijobs.shared.store import JobStore

    sqs, ddb, lam = aws.client("sqs"), aws.client("dynamodb"), aws.client("lambda")
    store = JobStore(ddb, resources.table_name)
    live = store.live_jobs()
    if waiting is None:
        waiting = store.waiting_by_owner()
    capacity = _capacity(resources).state()
    mapping = lam.get_event_source_mapping(UUID=resources.mapping_id)
    return {
        "stack": resources.stack_name,
        "queue": {"url": resources.queue_url, **queue_counts(sqs, resources.queue_url)},
        "dead_letter_queue": {"url": resources.dlq_url, **queue_counts(sqs, resources.dlq_url)},
        "live_jobs": live_jobs_by_state(str(_status_value(job.status)) for job in live),
        "capacity": capacity_view(capacity, resources.max_active_stacks_default),
        "waiting_for_capacity": {"jobs": sum(waiting.values()), "tenants": len(waiting)},
        "event_source_mapping": mapping_view(mapping),
    }


def capacity_view(state: dict[str, Any] | None, default_limit: int) -> dict[str, int]:
    if state is None:  # no job has taken a slot yet, and nobody set the limit
        return {"active_stacks": 0, "max_active_stacks": default_limit, "holders": 0}
    return {
        "active_stacks": int(state["active"]),
        "max_active_stacks": int(state["limit"]),
        "holders": len(state["holders"]),
    }


def mapping_view(mapping: dict[str, Any]) -> dict[str, Any]:
    scaling = mapping.get("ScalingConfig") or {}
    return {
        "id": mapping.get("UUID"),
        "state": mapping.get("State"),
        "batch_size": mapping.get("BatchSize"),
        "maximum_concurrency": scaling.get("MaximumConcurrency"),
        "maximum_batching_window_s": mapping.get("MaximumBatchingWindowInSeconds", 0),
    }


# ---- changing it -------------------------------------------------------------------------------------------
def mapping_update(batch_size: int | None, maximum_concurrency: int | None) -> dict[str, Any]:
    """The keyword arguments of ``update_event_source_mapping`` for what changes (empty: nothing)."""
    update: dict[str, Any] = {}
    if batch_size is not None:
        update["BatchSize"] = batch_size
    if maximum_concurrency is not None:
        update["ScalingConfig"] = {"MaximumConcurrency": maximum_concurrency}
    return update


def check_batch_window(batch_size: int | None, mapping: dict[str, Any]) -> None:
    """AWS refuses a standard queue's BatchSize above 10 without a batching window; say so before trying."""
    window = mapping.get("MaximumBatchingWindowInSeconds") or 0
    if batch_size is not None and batch_size > UNBATCHED_MAX and window < 1:
        raise OpsUsageError(
            f"BatchSize {batch_size} needs MaximumBatchingWindowInSeconds >= 1 (the mapping has {window}); "
            "raise the stack's MaximumBatchingWindowInSeconds parameter first, or keep BatchSize <= 10"
        )


def _capacity(resources: StackResources) -> Any:
    from pijobs.shared.capacity import CapacityCounter

    return CapacityCounter(
        aws.client("dynamodb"), resources.table_name, default_limit=resources.max_active_stacks_default
    )


# ---- the DLQ -----------------------------------------------------------------------------------------------
def peek_messages(sqs: Any, queue_url: str, *, limit: int = PEEK_LIMIT) -> list[dict[str, Any]]:
    """Up to ``limit`` messages, made visible again at once: each peek adds one to their receive count."""
    received: dict[str, dict[str, Any]] = {}
    try:
        while len(received) < limit:
            batch = _receive(sqs, queue_url, min(10, limit - len(received)), PEEK_HOLD_SECONDS)
            fresh = [m for m in batch if m["MessageId"] not in received]
            if not fresh:
                break
            received.update((m["MessageId"], m) for m in fresh)
    finally:
        _make_visible(sqs, queue_url, list(received.values()))
    return [message_summary(m) for m in received.values()]


def redrive_messages(sqs: Any, dlq_url: str, queue_url: str) -> tuple[int, int]:
    """Move every DLQ message to the jobs queue (send, then delete); returns (moved, failed to send)."""
    moved = failed = 0
    while True:
        batch = _receive(sqs, dlq_url, 10, REDRIVE_HOLD_SECONDS)
        if not batch:
            return moved, failed
        entries = [
            {"Id": str(i), "MessageBody": m["Body"], "MessageAttributes": resend_attributes(m)}
            for i, m in enumerate(batch)
        ]
        response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        sent = {entry["Id"] for entry in response.get("Successful", [])}
        _delete(sqs, dlq_url, [m for i, m in enumerate(batch) if str(i) in sent])
        unsent = [m for i, m in enumerate(batch) if str(i) not in sent]
        moved += len(sent)
        if unsent:  # leave them in the DLQ, visible, and stop rather than loop on them
            _make_visible(sqs, dlq_url, unsent)
            return moved, failed + len(unsent)


def resend_attributes(message: dict[str, Any]) -> dict[str, Any]:
    """A received message's attributes in the shape ``SendMessage`` accepts."""
    attributes: dict[str, Any] = {}
    for name, attr in (message.get("MessageAttributes") or {}).items():
        value = {"DataType": attr["DataType"]}
        for key in ("StringValue", "BinaryValue"):
            if key in attr:
                value[key] = attr[key]
        attributes[name] = value
    return attributes


def message_summary(message: dict[str, Any]) -> dict[str, Any]:
    attributes = message.get("Attributes") or {}
    job_attr = (message.get("MessageAttributes") or {}).get("job_id") or {}
    return {
        "message_id": message["MessageId"],
        "job_id": job_attr.get("StringValue"),
        "receive_count": int(attributes.get("ApproximateReceiveCount", 0)),
        "sent_at": _millis_to_iso(attributes.get("SentTimestamp")),
        "body": message.get("Body", ""),
    }


def _receive(sqs: Any, queue_url: str, count: int, hold_seconds: int) -> list[dict[str, Any]]:
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=count,
        VisibilityTimeout=hold_seconds,
        WaitTimeSeconds=1,  # a short poll samples few servers and can miss messages on AWS
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    return list(response.get("Messages", []))


def _make_visible(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(chunk)
        ]
        sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)


def _delete(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)


def confirm(prompt: str, *, stdin: TextIO | None = None, stderr: TextIO | None = None) -> bool:
    """Ask on stderr (stdout stays clean), read one line; only 'y' or 'yes' is a yes."""
    stdin, stderr = stdin or sys.stdin, stderr or sys.stderr
    stderr.write(prompt)
    stderr.flush()
    return stdin.readline().strip().lower() in ("y", "yes")


# ---- output ------------------------------------------------------------------------------------------------
def _print_status(status: dict[str, Any]) -> None:
    stdout_console().print(status_table(status))
    if status["event_source_mapping"]["state"] == "Disabled" and os.environ.get("AWS_ENDPOINT_URL"):
        print("(local stack: the local stand-in polls the queue; the mapping's own state stays Disabled)")


def status_table(status: dict[str, Any], *, title: str | None = None) -> Any:
    """``ops status`` as a table, from what ``gather_status`` read."""
    from rich.table import Table

    queue, dlq = status["queue"], status["dead_letter_queue"]
    jobs, capacity, mapping = status["live_jobs"], status["capacity"], status["event_source_mapping"]
    title = title or f"pijobs stack {status['stack']}"
    table = Table(title=title, show_header=False, box=None, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("jobs queue", _queue_text(queue))
    table.add_row("dead-letter queue", _queue_text(dlq))
    table.add_row("live jobs", ", ".join(f"{state} {count}" for state, count in jobs.items()))
    table.add_row(
        "active stacks",
        f"{capacity['active_stacks']} of MaxActiveStacks {capacity['max_active_stacks']}",
    )
    waiting = status["waiting_for_capacity"]
    table.add_row("waiting for a slot", f"{waiting['jobs']} jobs of {waiting['tenants']} tenants")
    table.add_row("event source mapping", f"{mapping['id']} ({mapping['state']})")
    table.add_row("  BatchSize", str(mapping["batch_size"]))
    concurrency = mapping["maximum_concurrency"]
    table.add_row("  MaximumConcurrency", "not set (no cap)" if concurrency is None else str(concurrency))
    table.add_row("  MaximumBatchingWindowInSeconds", str(mapping["maximum_batching_window_s"]))
    return table


def _print_tenants(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no tenant has a setting, a live stack or a waiting job")
        return
    stdout_console().print(tenants_table(rows))


def tenants_table(rows: list[dict[str, Any]], *, title: str | None = None) -> Any:
    from rich.table import Table

    columns = ("tenant", "weight", "cap", "live stacks", "waiting")
    table = Table(*columns, box=None, title=title, title_justify="left")
    for row in rows:
        cap = "none" if row["max_active"] is None else str(row["max_active"])
        if not row["own_cap"]:
            cap += " (default)"
        table.add_row(row["tenant"], f"{row['weight']:g}", cap, str(row["live_stacks"]), str(row["waiting"]))
    return table


def _queue_text(counts: dict[str, Any]) -> str:
    return f"{counts['visible']} waiting, {counts['in_flight']} in flight, {counts['delayed']} delayed"


def _print_messages(messages: list[dict[str, Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    if not messages:
        print("the DLQ is empty")
        return
    table = Table("message_id", "sent_at", "receives", "body", box=None)
    for m in messages:
        body = m["body"] if len(m["body"]) <= 120 else m["body"][:117] + "..."
        table.add_row(
            m["message_id"], str(m["sent_at"]), str(m["receive_count"]), Text(body, overflow="fold")
        )
    stdout_console().print(table)


def _json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _error(text: str) -> None:
    print(f"pijobs: {text}", file=sys.stderr, flush=True)


def _stack_name(args: argparse.Namespace) -> str:
    return str(args.stack_name or os.environ.get(STACK_ENV) or DEFAULT_STACK)


def _status_value(status: Any) -> str:
    return str(getattr(status, "value", status))


def _millis_to_iso(millis: Any) -> str | None:
    if millis in (None, ""):
        return None
    stamp = datetime.fromtimestamp(int(millis) / 1000, tz=timezone.utc)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
