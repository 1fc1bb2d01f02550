"""HTTP plumbing: parsing proxy events, JSON responses, and the one table of errors to status codes."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from shared import errors

ERROR_STATUS: dict[type[errors.PijobsError], int] = {
    errors.MalformedRequestError: 400,
    errors.ValidationError: 422,
    errors.UnauthorizedError: 403,
    errors.NoSuchJobError: 404,
    errors.NoSuchFunctionError: 404,
    errors.RouteNotFoundError: 404,
    errors.MethodNotAllowedError: 405,
    errors.IdempotencyConflictError: 409,
    errors.JobNotCancellableError: 409,
    errors.StaleStatusError: 409,
    errors.InvalidTransitionError: 409,
    errors.ResultNotReadyError: 409,
    errors.ResultExpiredError: 410,
    errors.CapacityFullError: 429,
    errors.ServiceUnavailableError: 503,
}

JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


@dataclass(frozen=True)
class Request:
    method: str
    resource: str
    path: str
    owner: str
    headers: dict[str, str]
    query: dict[str, str]
    path_params: dict[str, str]
    body: str | None
    request_id: str = ""
    base_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json_body(self) -> dict[str, Any]:
        if self.body is None or not self.body.strip():
            raise errors.MalformedRequestError(
                "the request needs a JSON object body", details=[{"field": "body", "problem": "missing"}]
            )
        try:
            data = json.loads(self.body)
        except json.JSONDecodeError as exc:
            raise errors.MalformedRequestError(
                f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                details=[{"field": "body", "problem": "invalid JSON"}],
            ) from exc
        except RecursionError as exc:  # the parser's own limit: a body nested thousands deep
            raise errors.MalformedRequestError(
                "the body is nested too deeply", details=[{"field": "body", "problem": "nested too deeply"}]
            ) from exc
        if not isinstance(data, dict):
            raise errors.MalformedRequestError(
                "the body must be a JSON object", details=[{"field": "body", "problem": "not an object"}]
            )
        return data


def parse_event(event: dict[str, Any]) -> Request:
    context = event.get("requestContext") or {}
    identity = context.get("identity") or {}
    owner = identity.get("apiKeyId")
    if not owner:
        raise errors.UnauthorizedError("an API key is required")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    body = event.get("body")
    if body is not None and event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.MalformedRequestError("the body is not UTF-8 text") from exc
    host = headers.get("host", "")
    stage = context.get("stage", "")
    proto = headers.get("x-forwarded-proto", "https")
    base_url = f"{proto}://{host}" if host else ""
    if base_url and stage and host.endswith("amazonaws.com"):
        base_url += f"/{stage}"
    return Request(
        method=str(event.get("httpMethod", "GET")).upper(),
        resource=str(event.get("resource") or event.get("path") or "/"),
        path=str(event.get("path") or "/"),
        owner=str(owner),
        headers=headers,
        query={str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items()},
        path_params={str(k): str(v) for k, v in (event.get("pathParameters") or {}).items()},
        body=body,
        request_id=str(context.get("requestId", "")),
        base_url=base_url,
    )


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": json.dumps(payload, separators=(",", ":")),
    }


def error_response(exc: Exception, request_id: str = "") -> dict[str, Any]:
    """The one mapping from exceptions to HTTP: known errors by class, anything else a plain 500."""
    if isinstance(exc, errors.PijobsError):
        status = next((code for cls, code in ERROR_STATUS.items() if isinstance(exc, cls)), 500)
        body = {"code": exc.code, "message": exc.message, "details": exc.details}
    else:
        status = 500
        body = {"code": "internal_error", "message": "internal error", "details": []}
    if request_id:
        body["request_id"] = request_id
    return json_response(status, {"error": body})


def validation_error(exc: PydanticValidationError, *, prefix: str = "") -> errors.ValidationError:
    """A pydantic error as our 422, naming each bad field by its path (``prefix`` + the model's path)."""
    details = []
    for problem in exc.errors():
        location = ".".join(str(part) for part in problem["loc"])
        field = f"{prefix}{location}" if location else (prefix.rstrip(".") or "body")
        details.append({"field": field, "problem": problem["msg"]})
    fields = ", ".join(sorted({d["field"] for d in details}))
    return errors.ValidationError(f"invalid request: {fields}", details=details)
