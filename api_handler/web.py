"""HTTP plumbing: parsing proxy events, JSON responses, and the one table of errors to status codes."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from pijobs.shared import errors

ERROR_STATUS: dict[type[errors.PijobsError], int] = {
    errors.MalformedRequestError: 400,
    errors.ValidationError: 422,
    errors.UnauthorizedError: 403,
    errors.WorkerUnauthenticatedError: 401,
    errors.WorkerForbiddenError: 403,
    errors.AttemptEndedError: 410,
    errors.WorkerConflictError: 409,
    errors.ResultMismatchError: 409,
    errors.NoSuchJobError: 404,
    errors.NoSuchFunctionError: 404,
    errors.NoSuchUploadError: 404,
    errors.NoSuchWebhookError: 404,
    errors.RouteNotFoundError: 404,
    errors.MethodNotAllowedError: 405,
    errors.UnsupportedMediaTypeError: 415,
    errors.IdempotencyConflictError: 409,
    errors.JobNotCancellableError: 409,
    errors.StaleStatusError: 409,
    errors.InvalidTransitionError: 409,
    errors.ResultNotReadyError: 409,
    errors.ResultExpiredError: 410,
    errors.CapacityFullError: 429,
    errors.ServiceUnavailableError: 503,
}

JSON_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Request:
    method: str
    resource: str
    path: str
    owner: str  # the API key's id; "" on a route that needs none
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
        """The body as a JSON object, parsed strictly (see ``parse_json``); 415 unless it says it is JSON."""
        media_type = (self.header("content-type") or "").split(";", 1)[0].strip().lower()
        if self.body is None or not self.body.strip():
            raise errors.MalformedRequestError(
                "the request needs a JSON object body", details=[{"field": "body", "problem": "missing"}]
            )
        if media_type != "application/json" and not (
            media_type.startswith("application/") and media_type.endswith("+json")
        ):
            raise errors.UnsupportedMediaTypeError(
                "send the body as JSON with Content-Type: application/json",
                details=[
                    {"field": "Content-Type", "problem": f"{media_type or 'missing'}, not application/json"}
                ],
            )
        data = parse_json(self.body)
        if not isinstance(data, dict):
            raise errors.MalformedRequestError(
                "the body must be a JSON object", details=[{"field": "body", "problem": "not an object"}]
            )
        return data


MAX_JSON_DEPTH = 32  # objects and arrays inside each other; a request body needs a handful
MAX_INTEGER_DIGITS = 300


def parse_json(text: str) -> Any:
    """JSON as a client may send it: no duplicate keys, no NaN or Infinity, integers of at most
    MAX_INTEGER_DIGITS digits, nesting at most MAX_JSON_DEPTH deep; anything else a 400 naming ``body``."""

    def refuse(problem: str, message: str) -> errors.MalformedRequestError:
        return errors.MalformedRequestError(message, details=[{"field": "body", "problem": problem}])

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in pairs:
            if key in data:
                raise refuse("duplicate key", f"the body has the key {key[:64]!r} twice")
            data[key] = value
        return data

    def integer(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
            raise refuse(
                "number too long", f"the body has an integer of more than {MAX_INTEGER_DIGITS} digits"
            )
        return int(digits)

    def constant(name: str) -> Any:
        raise refuse("not JSON", f"{name} is not a JSON number")

    if _depth_exceeds(text, MAX_JSON_DEPTH):
        raise refuse("nested too deeply", f"the body is nested more than {MAX_JSON_DEPTH} deep")
    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_int=integer, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise refuse(
            "invalid JSON", f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:  # the parser's own limit, should the scan above ever miss one
        raise refuse("nested too deeply", "the body is nested too deeply") from exc


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit`` (a scan, before the parser recurses)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_event(event: dict[str, Any]) -> Request:
    context = event.get("requestContext") or {}
    identity = context.get("identity") or {}
    owner = identity.get("apiKeyId") or ""  # the gateway's key check; routes needing one refuse ""
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    body = event.get("body")
    if body is not None and event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.MalformedRequestError(
                "the body is not UTF-8 text", details=[{"field": "body", "problem": "not UTF-8"}]
            ) from exc
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
    """``payload``: a model from api_handler/contract.py (or plain JSON data)."""
    data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": json.dumps(data, separators=(",", ":")),
    }


def text_response(status: int, body: str, headers: dict[str, str]) -> dict[str, Any]:
    """A response that is not JSON (the console's HTML): ``headers`` carry its Content-Type."""
    return {"statusCode": status, "headers": dict(headers), "body": body}


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
    """A pydantic error as our 422, naming each bad field by its path (``prefix`` + the model's path);
    the error keeps the first MAX_DETAILS of them."""
    details = []
    problems = exc.errors(include_url=False, include_input=False, include_context=False)
    for problem in problems[: errors.MAX_DETAILS + 1]:
        location = ".".join(str(part)[:64] for part in problem["loc"])
        field = f"{prefix}{location}" if location else (prefix.rstrip(".") or "body")
        # pydantic prefixes a validator's own message ("Value error, must be ..."): show only the message
        details.append({"field": field, "problem": problem["msg"].removeprefix("Value error, ")})
    fields = ", ".join(sorted({d["field"] for d in details[: errors.MAX_DETAILS]}))
    if len(problems) > errors.MAX_DETAILS:
        fields += f" and {len(problems) - errors.MAX_DETAILS} more"
        details += [{}] * (len(problems) - len(details))  # counted, not listed
    return errors.ValidationError(f"invalid request: {fields}", details=details)
