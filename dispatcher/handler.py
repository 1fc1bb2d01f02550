"""Lambda entry point for the SQS event source mapping (partial batch responses)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypedDict

from pijobs.dispatcher.service import DispatchServices, dispatch
from pijobs.shared import aws
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.compute import CloudFormationBackend
from pijobs.shared.functions import TEMPLATE_FILE, artifact_key
from pijobs.shared.logs import clear_context, configure_logging, get_logger
from pijobs.shared.models import JobMessage
from pijobs.shared.queue import JobQueue
from pijobs.shared.settings import DispatcherSettings
from pijobs.shared.stacks import StackLauncher
from pijobs.shared.store import JobStore
from pijobs.shared.tenants import TenantStore
from pydantic import ValidationError

log = get_logger(__name__)


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class PartialBatchResponse(TypedDict):
    batchItemFailures: list[BatchItemFailure]


@lru_cache(maxsize=1)
def services() -> DispatchServices:
    settings = DispatcherSettings.from_env()
    ddb = aws.client("dynamodb")
    return DispatchServices(
        settings=settings,
        store=JobStore(ddb, settings.table_name),
        queue=JobQueue(aws.client("sqs"), settings.queue_url),
        capacity=CapacityCounter(ddb, settings.table_name, default_limit=settings.max_active_stacks),
        compute=CloudFormationBackend(
            StackLauncher(aws.client("cloudformation"), role_arn=settings.cfn_role_arn),
            template_url=lambda function, version: settings.template_url(
                artifact_key(function, version, TEMPLATE_FILE)
            ),
        ),
        functions=settings.functions(),
        tenants=TenantStore(ddb, settings.table_name),
        s3=aws.presigning_s3_client(),
    )


def lambda_handler(event: dict[str, Any], context: Any) -> PartialBatchResponse:
    configure_logging()
    failures = [
        BatchItemFailure(itemIdentifier=record["messageId"])
        for record in event.get("Records", [])
        if not process_record(record)
    ]
    return {"batchItemFailures": failures}


def process_record(record: dict[str, Any]) -> bool:
    """True when the record is done with (dispatched, skipped or deferred); False to retry it."""
    clear_context()
    try:
        message = JobMessage.model_validate_json(record.get("body", ""))
    except ValidationError as exc:
        log.error("message_invalid", message_id=record.get("messageId"), errors=exc.errors(include_url=False))
        return False  # left to reach the DLQ after maxReceiveCount
    try:
        dispatch(services(), message)
    except Exception:
        log.exception("dispatch_failed", message_id=record.get("messageId"), job_id=message.job_id)
        return False
    return True
