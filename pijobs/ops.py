"""The operator's operations on a deployment, for ``pijobs ops`` / ``pijobs dlq`` and for a Python caller:
read its queues, capacity and event source mapping; change MaxActiveStacks, the mapping and tenants' shares;
peek at, redrive and purge the dead-letter queue.

    from pijobs import ops

    resources = ops.stack_resources(aws.client("cloudformation"), ops.stack_name())
    ops.gather_status(resources)["capacity"]      # {"active_stacks": 1, "max_active_stacks": 4, ...}
    ops.apply_settings(resources, max_active_stacks=8)

Resource names come from the primary stack's outputs (QueueUrl, DeadLetterQueueUrl, TableName,
EventSourceMappingId), so the same calls work on AWS and, with ``AWS_ENDPOINT_URL`` set, on the local stack.
Errors follow :mod:`pijobs.errors`; AWS's own errors (botocore's) pass through.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypedDict

from pijobs.errors import OperationError, UsageError
from pijobs.shared import aws
from pijobs.shared.capacity import MAX_LIVE_JOBS, CapacityCounter
from pijobs.shared.fairshare import HALF_THE_SLOTS, TenantPolicy, default_owner_cap, owner_limit
from pijobs.shared.status import UNFINISHED_STATES
from pijobs.shared.store import JobStore
from pijobs.shared.tenants import TenantStore

STACK_ENV = "PIJOBS_STACK_NAME"
DEFAULT_STACK = "pijobs"

MAX_ACTIVE_STACKS_MIN = 1
MAXIMUM_CONCURRENCY_RANGE = (2, 1000)
BATCH_SIZE_RANGE = (1, 10000)
UNBATCHED_MAX = 10  # AWS: a standard queue's BatchSize above 10 needs MaximumBatchingWindowInSeconds >= 1

PEEK_HOLD_SECONDS = 10
REDRIVE_HOLD_SECONDS = 30
PEEK_LIMIT = 100


def stack_name(given: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The primary stack: ``given``, else ``$PIJOBS_STACK_NAME``, else ``pijobs``."""
    env = os.environ if env is None else env
    return str(given or env.get(STACK_ENV) or DEFAULT_STACK)


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


# ---- reading the deployment --------------------------------------------------------------------------------
def stack_resources(cfn: Any, stack_name: str) -> StackResources:
    """Names of the primary stack's queue, DLQ, table and mapping, from its outputs."""
    stacks = cfn.describe_stacks(StackName=stack_name).get("Stacks", [])
    if not stacks:
        raise OperationError(f"no stack {stack_name}")
    stack = stacks[0]
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    wanted = ("QueueUrl", "DeadLetterQueueUrl", "TableName", "EventSourceMappingId")
    missing = [name for name in wanted if not outputs.get(name)]
    if missing:
        raise OperationError(
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


def tenant_rows(
    resources: StackResources, *, waiting: dict[str, int] | None = None, busy_only: bool = False
) -> list[dict[str, Any]]:
    """Every tenant with a setting, a live stack or a waiting job: weight, cap, live, waiting.

    ``waiting`` (jobs parked per tenant) when the caller has read it already: it is the whole waiting index.
    ``busy_only``: only the tenants with a live stack or a waiting job, their settings read by key; finding
    every tenant with a setting scans the table, which is fine for ``ops tenants``, not for a redraw every
    few seconds.
    """

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
def apply_settings(
    resources: StackResources,
    *,
    max_active_stacks: int | None = None,
    maximum_concurrency: int | None = None,
    batch_size: int | None = None,
) -> None:
    """Change MaxActiveStacks and the mapping's MaximumConcurrency and BatchSize (None: leave it)."""
    if max_active_stacks is None and maximum_concurrency is None and batch_size is None:
        raise UsageError("nothing to change: give --max-active-stacks, --maximum-concurrency or --batch-size")
    if max_active_stacks is not None and not MAX_ACTIVE_STACKS_MIN <= max_active_stacks <= MAX_LIVE_JOBS:
        raise UsageError(f"MaxActiveStacks must be {MAX_ACTIVE_STACKS_MIN}..{MAX_LIVE_JOBS}")
    lam = aws.client("lambda")
    update = mapping_update(batch_size, maximum_concurrency)
    if update:
        check_batch_window(batch_size, lam.get_event_source_mapping(UUID=resources.mapping_id))
    if max_active_stacks is not None:
        _capacity(resources).set_limit(max_active_stacks)
    if update:
        lam.update_event_source_mapping(UUID=resources.mapping_id, **update)


def set_tenant(
    resources: StackResources,
    key_id: str,
    *,
    weight: float | None = None,
    max_active: int | None = None,
    default_cap: bool = False,
) -> dict[str, Any]:
    """Set one tenant's weight or own cap (``default_cap``: back to MaxActiveStacksPerOwner); its new row."""

    if weight is None and max_active is None and not default_cap:
        raise UsageError("nothing to change: give --weight, --max-active or --default-cap")
    TenantStore(aws.client("dynamodb"), resources.table_name).set_policy(
        key_id, weight=weight, max_active=max_active, clear_cap=default_cap
    )
    return next(row for row in tenant_rows(resources) if row["tenant"] == key_id)


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
        raise UsageError(
            f"BatchSize {batch_size} needs MaximumBatchingWindowInSeconds >= 1 (the mapping has {window}); "
            "raise the stack's MaximumBatchingWindowInSeconds parameter first, or keep BatchSize <= 10"
        )


def _capacity(resources: StackResources) -> Any:

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


def purge_dlq(resources: StackResources) -> int:
    """Delete every message of the dead-letter queue; returns how many there were (approximately)."""
    sqs = aws.client("sqs")
    count = dlq_size(resources)
    sqs.purge_queue(QueueUrl=resources.dlq_url)
    return count


def dlq_size(resources: StackResources) -> int:
    return sum(queue_counts(aws.client("sqs"), resources.dlq_url).values())


def _status_value(status: Any) -> str:
    return str(getattr(status, "value", status))


def _millis_to_iso(millis: Any) -> str | None:
    if millis in (None, ""):
        return None
    stamp = datetime.fromtimestamp(int(millis) / 1000, tz=timezone.utc)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")
