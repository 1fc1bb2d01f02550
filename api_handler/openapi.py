"""The OpenAPI 3.1 document, generated from the route table and the models, with each enabled function's
parameter schema (served at ``GET /openapi.json``; ``pijobs openapi`` writes docs/openapi.json).

OpenAPI 3.1 because its schemas are JSON Schema 2020-12, which is what pydantic writes: the document is the
models' own schemas, not a translation. (API Gateway's import takes 3.0; the template declares its
resources itself, and tests check they match the route table, so nothing is imported.)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from pydantic import BaseModel

from pijobs.api_handler import contract
from pijobs.api_handler.operation import Operation
from pijobs.api_handler.service import PI_SHORTHAND
from pijobs.shared import errors
from pijobs.shared.functions import ENTRY_POINT_GROUP, NAME_PATTERN, Registry, load_registry
from pijobs.shared.models import JobRequest

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
# Every route may answer these: a missing or wrong key (403), throttling or quota (429), a body over the
# gateway's limit (413), and the service's own trouble (500, 503).
EVERY_ROUTE = (413, 429, 500, 503)
KEYED_ROUTE = (403,)
JOB_ID = {"type": "string", "pattern": contract.JOB_ID_PATTERN, "description": "the job's id"}
UPLOAD_ID = {"type": "string", "pattern": contract.UPLOAD_ID_PATTERN, "description": "the upload's id"}
PATH_PARAMETERS = {
    "id": JOB_ID,
    "name": {
        "type": "string",
        "pattern": f"^(?:{NAME_PATTERN.pattern})$",
        "description": "a function's name",
    },
}
PATH_PARAMETERS_BY_TAG = {"uploads": {"id": UPLOAD_ID}}  # where a name means something else
DESCRIPTIONS = {
    400: "the request is not well-formed (the body is not a JSON object, for one)",
    403: "a missing or unknown API key",
    404: "no such job, upload or function, or no such route",
    409: "the job's state does not allow it",
    410: "the result expired",
    413: "the request is too large",
    415: "the body is not sent as JSON",
    422: "a field is invalid: `details` names each",
    429: "too many requests for this key (or its quota is used up)",
    500: "an internal error (with a request id to quote)",
    503: "a dependency is briefly unavailable: try again",
}


class _Schemas:
    """components/schemas, filled as models are referenced."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], *, prefix: str = "", mode: str = "serialization") -> dict[str, str]:
        name = f"{prefix}{model.__name__}"
        template = f"#/components/schemas/{prefix}{{model}}"
        schema = model.model_json_schema(ref_template=template, mode=mode)  # type: ignore[arg-type]
        for def_name, definition in schema.pop("$defs", {}).items():
            self.components.setdefault(f"{prefix}{def_name}", definition)
        self.components[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}


def document(
    operations: Sequence[Operation], registry: Registry, *, server_url: str | None = None
) -> dict[str, Any]:
    """The document of ``operations`` (the route table) with the parameter schemas of ``registry``."""
    schemas = _Schemas()
    schemas.ref(contract.ErrorEnvelope)
    paths: dict[str, Any] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, registry, schemas
        )
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "pijobs",
            "version": API_VERSION,
            "description": "Submit a job, get its id at once, poll it until its result is ready. Every error "
            'is `{"error": {"code", "message", "details"}}`, from the API and from the gateway in '
            f"front of it; `details` names at most {errors.MAX_DETAILS} problems, then counts the rest.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
        "security": [{"apiKey": []}],
        "tags": [{"name": name} for name in dict.fromkeys(op.tag for op in operations)],
    }
    _job_error_codes(doc["components"]["schemas"], registry)
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def _job_error_codes(components: dict[str, Any], registry: Registry) -> None:
    """A job's ``error.code`` (and a failed attempt's) is one of a known set: the platform's codes and the
    enabled functions' own, as an enum of its own."""
    components["JobErrorCode"] = {
        "type": "string",
        "enum": registry.error_codes(),
        "description": "why a job did not succeed: the platform's codes and each enabled function's own",
    }
    for name in ("ErrorInfo", "AttemptInfo"):
        if name in components:
            components[name]["properties"]["code"] = {"$ref": "#/components/schemas/JobErrorCode"}


def _operation(operation: Operation, registry: Registry, schemas: _Schemas) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "responses": {str(operation.status): _success(operation, schemas)},
    }
    if not operation.api_key:
        spec["security"] = []
    path_schemas = {**PATH_PARAMETERS, **PATH_PARAMETERS_BY_TAG.get(operation.tag, {})}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": path_schemas[name]}
        for name in _path_names(operation.path)
    ]
    if operation.query is not None:
        query_schema = operation.query.model_json_schema(
            mode="validation", ref_template="#/components/schemas/{model}"
        )
        for def_name, definition in query_schema.pop("$defs", {}).items():  # an enum's, e.g. JobStatus
            schemas.components.setdefault(def_name, definition)
        for name, schema in query_schema["properties"].items():
            parameters.append({"name": name, "in": "query", "required": False, "schema": _non_null(schema)})
    if operation.idempotency_key:
        parameters.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "the same key with the same request returns the first job, not a new one",
                "schema": {"type": "string", "minLength": 1, "maxLength": 128},
            }
        )
    if operation.body is not None:
        spec["requestBody"] = _request_body(operation, registry, schemas)
    if parameters:
        spec["parameters"] = parameters
    statuses = sorted({*operation.errors, *EVERY_ROUTE, *(KEYED_ROUTE if operation.api_key else ())})
    for status in statuses:
        spec["responses"][str(status)] = {
            "description": DESCRIPTIONS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
        }
    return spec


def _success(operation: Operation, schemas: _Schemas) -> dict[str, Any]:
    if operation.response:
        schema = schemas.ref(operation.response)
    else:
        schema = {"type": "object"} if operation.media_type == "application/json" else {"type": "string"}
    response: dict[str, Any] = {
        "description": operation.summary,
        "content": {operation.media_type: {"schema": schema}},
    }
    if operation.headers:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in operation.headers.items()
        }
    if operation.links:
        response["links"] = {
            name: {"operationId": target, "parameters": {"id": "$response.body#/job_id"}}
            for name, target in operation.links.items()
        }
    return response


def _request_body(operation: Operation, registry: Registry, schemas: _Schemas) -> dict[str, Any]:
    if isinstance(operation.body, type):
        schema = schemas.ref(operation.body, mode="validation")
        example = _example(operation.body)
    elif operation.body == "per_run_execute":
        schema = schemas.ref(contract.PerRunExecuteRequest, mode="validation")
        example = {"DigitsToCalculate": 1000, "CostCenter": "research"}
    else:
        schema, example = _submission_schema(registry, schemas)
    return {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}


def _submission_schema(registry: Registry, schemas: _Schemas) -> tuple[dict[str, Any], dict[str, Any]]:
    """``oneOf``: for each enabled function, ``{"function": <name>, "params": <its schema>, ...}``; and the
    pi shorthand (pi's parameters at the top level) when pi is enabled."""
    labels = JobRequest.model_json_schema()["properties"]
    label_schemas = {name: _non_null(labels[name]) for name in ("cost_center", "name")}
    label_schemas["callback_url"] = {
        "type": "string",
        "maxLength": 2048,
        "description": "this job's events also go here (docs/webhooks.md), signed with the callback_secret "
        "the answer shows once; https on a public address",
    }
    choices: list[dict[str, Any]] = []
    for function in registry:
        params = schemas.ref(function.request_model, prefix=f"{function.name}.", mode="validation")
        component = schemas.components[f"{function.name}.{function.request_model.__name__}"]
        for name, keywords in function.parameter_bounds(registry.limits[function.name]).items():
            component["properties"][name].update(keywords)  # the deployment's bounds, not the model's
        choices.append(
            {
                "title": function.name,
                "type": "object",
                "description": function.title,
                "properties": {"function": {"const": function.name}, "params": params, **label_schemas},
                "required": ["function", "params"],
                "additionalProperties": False,
            }
        )
    if PI_SHORTHAND in registry:
        pi_model = registry.get(PI_SHORTHAND).request_model
        pi_params = copy.deepcopy(schemas.components[f"{PI_SHORTHAND}.{pi_model.__name__}"])
        pi_params["properties"] = {**pi_params.get("properties", {}), **label_schemas}
        pi_params["title"] = f"{PI_SHORTHAND} (shorthand)"
        choices.append(pi_params)
    first = next(iter(registry), None)
    example = {"function": first.name, "params": _example(first.request_model)} if first else {}
    return {"oneOf": choices}, example


def _example(model: type[BaseModel]) -> dict[str, Any]:
    """Parameters from the fields' own ``examples``."""
    return {name: info.examples[0] for name, info in model.model_fields.items() if info.examples}


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter's schema without its ``null`` branch (absent, not null, on the wire)."""
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        return {**options[0], **rest}
    return {k: v for k, v in schema.items() if k != "default"}


def shipped_registry() -> Registry:
    """pijobs' own functions, with their default limits: what docs/openapi.json documents, whatever
    plug-ins this environment has installed."""
    own = [
        e.name for e in metadata.entry_points(group=ENTRY_POINT_GROUP) if e.dist and e.dist.name == "pijobs"
    ]
    return load_registry(own)


def render(doc: dict[str, Any]) -> str:
    """A document as docs/openapi.json holds it."""
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"
