"""Lambda entry point for API Gateway REST proxy events."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pijobs.api_handler.routes import route_for
from pijobs.api_handler.service import ApiServices
from pijobs.api_handler.web import error_response, parse_event
from pijobs.shared import aws
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.compute import CloudFormationBackend
from pijobs.shared.errors import PijobsError
from pijobs.shared.hooks import WebhookStore
from pijobs.shared.logs import clear_context, configure_logging, get_logger
from pijobs.shared.queue import JobQueue
from pijobs.shared.settings import ApiSettings
from pijobs.shared.stacks import StackLauncher
from pijobs.shared.store import JobStore
from pijobs.shared.tenants import TenantStore
from pijobs.shared.uploads import UploadStore

log = get_logger(__name__)


@lru_cache(maxsize=1)
def services() -> ApiServices:
    settings = ApiSettings.from_env()
    ddb = aws.client("dynamodb")
    return ApiServices(
        settings=settings,
        store=JobStore(ddb, settings.table_name),
        tenants=TenantStore(ddb, settings.table_name),
        capacity=CapacityCounter(ddb, settings.table_name, default_limit=settings.max_active_stacks),
        queue=JobQueue(aws.client("sqs"), settings.queue_url),
        s3=aws.client("s3"),
        functions=settings.functions(),
        uploads=UploadStore(ddb, settings.table_name),
        presigner=aws.presigning_s3_client(),
        compute=CloudFormationBackend(StackLauncher(aws.client("cloudformation"))),
        hooks=WebhookStore(ddb, settings.table_name),
        sqs=aws.client("sqs"),
    )


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    configure_logging()
    clear_context()
    request_id = str((event.get("requestContext") or {}).get("requestId", ""))
    try:
        request = parse_event(event)
        return route_for(request).handler(services(), request)
    except PijobsError as exc:
        return error_response(exc, request_id)
    except Exception:
        log.exception("api_request_failed", request_id=request_id)
        return error_response(RuntimeError(), request_id)
