"""What one operation of the API is: the type of the route table's rows (api_handler/routes.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from pijobs.api_handler.service import ApiServices
from pijobs.api_handler.web import Request

Handler = Callable[[ApiServices, Request], dict[str, Any]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    status: int  # the success status
    response: type[BaseModel] | None  # its body (None: any JSON, e.g. the OpenAPI document, or not JSON)
    errors: tuple[int, ...]  # the error statuses it may answer besides those every route may
    tag: str = "jobs"
    # "submission" (built from the enabled functions), "per_run_execute", or the body's model
    body: str | type[BaseModel] | None = None
    idempotency_key: bool = False  # reads an Idempotency-Key header
    query: type[BaseModel] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # response headers: name -> description
    api_key: bool = True
    links: Mapping[str, str] = field(default_factory=dict)  # link name -> operation id, given the job id
    media_type: str = "application/json"  # of the success response (errors are always JSON)
