"""Lambda entry point for API Gateway REST proxy events."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pijobs.api_handler.routes import route_for
from pijobs.api_handler.service import ApiServices
from pijobs.api_handler.web import error_response, parse_event
from pijobs.shared.errors import PijobsError
from pijobs.shared.logs import clear_context, configure_logging, get_logger
from pijobs.shared.settings import ApiSettings
from pijobs.shared.wiring import Adapters

log = get_logger(__name__)


@lru_cache(maxsize=1)
def services() -> ApiServices:
    made = Adapters(ApiSettings.from_env())
    return ApiServices(
        settings=made.settings,
        store=made.store,
        tenants=made.tenants,
        capacity=made.capacity,
        queue=made.queue,
        s3=made.s3,
        functions=made.settings.functions(),
        uploads=made.uploads,
        presigner=made.presigner,
        compute=made.compute(),
        hooks=made.hooks,
        sqs=made.sqs,
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
