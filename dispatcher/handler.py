"""Lambda entry point for the SQS event source mapping (partial batch responses)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypedDict

from pydantic import ValidationError

from pijobs.dispatcher.service import DispatchServices, dispatch
from pijobs.shared.functions import TEMPLATE_FILE, artifact_key
from pijobs.shared.logs import clear_context, configure_logging, get_logger
from pijobs.shared.models import JobMessage
from pijobs.shared.settings import DispatcherSettings
from pijobs.shared.wiring import Adapters

log = get_logger(__name__)


class BatchItemFailure(TypedDict):
    itemIdentifier: str


class PartialBatchResponse(TypedDict):
    batchItemFailures: list[BatchItemFailure]


@lru_cache(maxsize=1)
def services() -> DispatchServices:
    made = Adapters(DispatcherSettings.from_env())
    settings = made.settings
    return DispatchServices(
        settings=settings,
        store=made.store,
        queue=made.queue,
        capacity=made.capacity,
        compute=made.compute(
            role_arn=settings.cfn_role_arn,
            template_url=lambda function, version: settings.template_url(
                artifact_key(function, version, TEMPLATE_FILE)
            ),
        ),
        functions=settings.functions(),
        tenants=made.tenants,
        s3=made.presigner,
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
