"""The one table of the API's operations: each route once, with what it reads and what it answers.

Everything else derives from it: the handler's routing, the OpenAPI document (api_handler/openapi.py, from
the customer's ``OPERATIONS``), the local gateway's route matching and keyless routes, and the tests that
check the primary template declares the same methods (``ALL_OPERATIONS``). ``WORKER_OPERATIONS`` are the
worker channel's (api_handler/channel.py): no API key, authenticated by a job's worker token, and outside the
customer's OpenAPI document and usage plan. Each handler parses the request, calls one service
function and shapes the response from the models in api_handler/contract.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from pijobs.api_handler import channel, console, contract, openapi, service, webhooks
from pijobs.api_handler.operation import Operation
from pijobs.api_handler.service import ApiServices
from pijobs.api_handler.views import job_links, job_summary, job_view, upload_view
from pijobs.api_handler.web import Request, json_response, text_response
from pijobs.shared import errors
from pijobs.shared.channel import WORKER_ROUTE
from pijobs.shared.functions import Registry
from pijobs.shared.models import isoformat


def post_jobs(services: ApiServices, request: Request) -> dict[str, Any]:
    body = request.json_body()
    callback = (
        webhooks.checked_url(services, body.pop("callback_url"), "callback_url")
        if "callback_url" in body
        else None
    )
    submission = service.parse_submission(services.functions, body)
    return _accepted(services, request, replace(submission, callback_url=callback))


def post_per_run_execute(services: ApiServices, request: Request) -> dict[str, Any]:
    submission = service.parse_per_run_execute(services.functions, request.json_body())
    return _accepted(services, request, submission)


def _accepted(services: ApiServices, request: Request, submission: service.Submission) -> dict[str, Any]:
    job, created = service.submit_job(services, request.owner, submission, request.header("idempotency-key"))
    links = job_links(request.base_url, job.job_id)
    headers = {"Location": links.self}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    secret = job.callback_secret if created else None  # shown once
    accepted = contract.Accepted(job_id=job.job_id, status=job.status, links=links, callback_secret=secret)
    return json_response(202, accepted, headers)


def get_job(services: ApiServices, request: Request) -> dict[str, Any]:
    job = service.get_job(services, request.owner, request.path_params.get("id", ""))
    url = service.result_link(services, job)
    expires_at = service.result_expires_at(services, job)
    view = job_view(job, base_url=request.base_url, result_url=url, result_expires_at=expires_at)
    return json_response(200, view)


def list_jobs(services: ApiServices, request: Request) -> dict[str, Any]:
    query = service.parse_query(contract.ListJobsQuery, request.query)
    jobs, token = service.list_jobs(services, request.owner, query)
    page = contract.JobPage(jobs=[job_summary(job, base_url=request.base_url) for job in jobs], next=token)
    return json_response(200, page)


def delete_job(services: ApiServices, request: Request) -> dict[str, Any]:
    job = service.cancel_job(services, request.owner, request.path_params.get("id", ""))
    return json_response(202, job_view(job, base_url=request.base_url))


def get_result(services: ApiServices, request: Request) -> dict[str, Any]:
    job = service.get_job(services, request.owner, request.path_params.get("id", ""))
    url = service.result_url(services, job)
    return json_response(302, contract.ResultRedirect(url=url), {"Location": url})


def list_functions(services: ApiServices, request: Request) -> dict[str, Any]:
    return json_response(
        200, contract.FunctionCatalog.model_validate({"functions": services.functions.catalog()})
    )


def get_function(services: ApiServices, request: Request) -> dict[str, Any]:
    entry = service.function_entry(services, request.path_params.get("name", ""))
    return json_response(200, contract.FunctionEntry.model_validate(entry))


def post_uploads(services: ApiServices, request: Request) -> dict[str, Any]:
    declared = service.parse_upload_request(request.json_body())
    upload, post = service.create_upload(services, request.owner, declared)
    created = contract.UploadCreated(
        upload_id=upload.upload_id, url=post.url, fields=post.fields, expires_at=isoformat(post.expires_at)
    )
    return json_response(201, created, {"Location": f"{request.base_url}/uploads/{upload.upload_id}"})


def list_uploads(services: ApiServices, request: Request) -> dict[str, Any]:
    query = service.parse_query(contract.ListUploadsQuery, request.query)
    uploads, token = service.list_uploads(services, request.owner, query)
    return json_response(200, contract.UploadPage(uploads=[upload_view(u) for u in uploads], next=token))


def get_upload(services: ApiServices, request: Request) -> dict[str, Any]:
    upload = service.get_upload(services, request.owner, request.path_params.get("id", ""))
    return json_response(200, upload_view(upload))


def delete_upload(services: ApiServices, request: Request) -> dict[str, Any]:
    upload = service.delete_upload(services, request.owner, request.path_params.get("id", ""))
    return json_response(200, upload_view(upload))


def get_openapi(services: ApiServices, request: Request) -> dict[str, Any]:
    return json_response(200, openapi_document(services.functions, server_url=request.base_url or None))


def post_worker_call(services: ApiServices, request: Request) -> dict[str, Any]:
    answer = channel.handle(
        services,
        request.path_params.get("id", ""),
        request.path_params.get("operation", ""),
        request.header("authorization"),
        request.json_body(),
    )
    return json_response(200, answer)


def post_webhooks(services: ApiServices, request: Request) -> dict[str, Any]:
    hook = webhooks.create_webhook(services, request.owner, webhooks.parse_webhook(request.json_body()))
    created = contract.WebhookCreated(**webhooks.webhook_view(hook), secret=hook.secrets[0].secret)
    return json_response(201, created, {"Location": f"{request.base_url}/webhooks/{hook.webhook_id}"})


def list_webhooks(services: ApiServices, request: Request) -> dict[str, Any]:
    hooks = webhooks.list_webhooks(services, request.owner)
    return json_response(
        200, contract.WebhookPage.model_validate({"webhooks": [webhooks.webhook_view(h) for h in hooks]})
    )


def get_webhook(services: ApiServices, request: Request) -> dict[str, Any]:
    hook = webhooks.get_webhook(services, request.owner, request.path_params.get("id", ""))
    return json_response(200, contract.WebhookView.model_validate(webhooks.webhook_view(hook)))


def delete_webhook(services: ApiServices, request: Request) -> dict[str, Any]:
    hook = webhooks.delete_webhook(services, request.owner, request.path_params.get("id", ""))
    return json_response(200, contract.WebhookView.model_validate(webhooks.webhook_view(hook)))


def post_webhook_test(services: ApiServices, request: Request) -> dict[str, Any]:
    delivery = webhooks.test_webhook(services, request.owner, request.path_params.get("id", ""))
    return json_response(202, contract.TestQueued(event_id=delivery.event_id, state=delivery.state))


def list_deliveries(services: ApiServices, request: Request) -> dict[str, Any]:
    found = webhooks.list_deliveries(services, request.owner, request.path_params.get("id", ""))
    return json_response(200, contract.DeliveryPage(deliveries=[webhooks.delivery_view(d) for d in found]))


def post_rotate_secret(services: ApiServices, request: Request) -> dict[str, Any]:
    hook, secret, until = webhooks.rotate_secret(services, request.owner, request.path_params.get("id", ""))
    previous = isoformat(datetime.fromtimestamp(until, tz=timezone.utc))
    return json_response(
        200, contract.WebhookSecret(webhook_id=hook.webhook_id, secret=secret, previous_until=previous)
    )


def get_console(services: ApiServices, request: Request) -> dict[str, Any]:
    page = console.page(service.upload_origin(services))
    return text_response(200, page.html, page.headers)


JOB_LINKS = {"GetJob": "getJob", "CancelJob": "cancelJob", "GetJobResult": "getJobResult"}
SUBMITTED = {"Location": "the job's URL"}
REPLAYED = {
    **SUBMITTED,
    "Idempotent-Replayed": "`true` when an earlier request with this Idempotency-Key made it",
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", "/jobs", operation_id="submitJob", handler=post_jobs,
        summary="Submit a job: one of the enabled functions and its parameters",
        status=202, response=contract.Accepted, errors=(400, 409, 415, 422),
        body="submission", idempotency_key=True, headers=REPLAYED, links=JOB_LINKS,
    ),
    Operation(
        "GET", "/jobs", operation_id="listJobs", handler=list_jobs,
        summary="Your jobs, newest first, a page at a time",
        status=200, response=contract.JobPage, errors=(422,), query=contract.ListJobsQuery,
    ),
    Operation(
        "GET", "/jobs/{id}", operation_id="getJob", handler=get_job,
        summary="A job: its status, progress, errors and result",
        status=200, response=contract.JobView, errors=(404,),
    ),
    Operation(
        "DELETE", "/jobs/{id}", operation_id="cancelJob", handler=delete_job,
        summary="Cancel a job that has not finished",
        status=202, response=contract.JobView, errors=(404, 409),
    ),
    Operation(
        "GET", "/jobs/{id}/result", operation_id="getJobResult", handler=get_result,
        summary="A redirect to the job's result file",
        status=302, response=contract.ResultRedirect, errors=(404, 409, 410),
        headers={"Location": "the download link"},
    ),
    Operation(
        "GET", "/functions", operation_id="listFunctions", handler=list_functions, tag="functions",
        summary="The enabled business functions and their parameters",
        status=200, response=contract.FunctionCatalog, errors=(),
    ),
    Operation(
        "GET", "/functions/{name}", operation_id="getFunction", handler=get_function, tag="functions",
        summary="One business function: its parameters and limits",
        status=200, response=contract.FunctionEntry, errors=(404,),
    ),
    Operation(
        "POST", "/PerRunExecute", operation_id="perRunExecute", handler=post_per_run_execute,
        summary="The original service's call: N digits of pi", tag="original API",
        status=202, response=contract.Accepted, errors=(400, 409, 415, 422),
        body="per_run_execute", idempotency_key=True, headers=REPLAYED, links=JOB_LINKS,
    ),
    Operation(
        "POST", "/uploads", operation_id="createUpload", handler=post_uploads, tag="uploads",
        summary="Declare a file (name, size, sha256) and get a presigned POST that takes exactly it",
        status=201, response=contract.UploadCreated, errors=(400, 415, 422),
        body=contract.CreateUploadRequest, headers={"Location": "the upload's URL"},
    ),
    Operation(
        "GET", "/uploads", operation_id="listUploads", handler=list_uploads, tag="uploads",
        summary="Your uploads, newest first, a page at a time",
        status=200, response=contract.UploadPage, errors=(422,), query=contract.ListUploadsQuery,
    ),
    Operation(
        "GET", "/uploads/{id}", operation_id="getUpload", handler=get_upload, tag="uploads",
        summary="An upload: PENDING, then AVAILABLE once pijobs checked the file, or REJECTED",
        status=200, response=contract.UploadView, errors=(404,),
    ),
    Operation(
        "DELETE", "/uploads/{id}", operation_id="deleteUpload", handler=delete_upload, tag="uploads",
        summary="Delete an upload (its record and its file); answers it as it was",
        status=200, response=contract.UploadView, errors=(404,),
    ),
    Operation(
        "POST", "/webhooks", operation_id="createWebhook", handler=post_webhooks, tag="webhooks",
        summary="Register a URL for your jobs' events; answers its signing secret this once",
        status=201, response=contract.WebhookCreated, errors=(400, 415, 422),
        body=contract.CreateWebhookRequest, headers={"Location": "the webhook's URL"},
    ),
    Operation(
        "GET", "/webhooks", operation_id="listWebhooks", handler=list_webhooks, tag="webhooks",
        summary="Your webhooks, newest first, each active, failing or disabled",
        status=200, response=contract.WebhookPage, errors=(),
    ),
    Operation(
        "GET", "/webhooks/{id}", operation_id="getWebhook", handler=get_webhook, tag="webhooks",
        summary="A webhook (never its secret)",
        status=200, response=contract.WebhookView, errors=(404,),
    ),
    Operation(
        "DELETE", "/webhooks/{id}", operation_id="deleteWebhook", handler=delete_webhook, tag="webhooks",
        summary="Remove a webhook (its pending deliveries are dropped); answers it as it was",
        status=200, response=contract.WebhookView, errors=(404,),
    ),
    Operation(
        "POST", "/webhooks/{id}/test", operation_id="testWebhook", handler=post_webhook_test, tag="webhooks",
        summary="Send a webhook.test event to the webhook, delivered and logged like any other",
        status=202, response=contract.TestQueued, errors=(404,),
    ),
    Operation(
        "GET", "/webhooks/{id}/deliveries", operation_id="listWebhookDeliveries", handler=list_deliveries,
        tag="webhooks", summary="The webhook's recent deliveries: answer, duration and next retry",
        status=200, response=contract.DeliveryPage, errors=(404,),
    ),
    Operation(
        "POST", "/webhooks/{id}/rotate-secret", operation_id="rotateWebhookSecret",
        handler=post_rotate_secret, tag="webhooks",
        summary="A new signing secret, shown once; the old one also signs for 24 hours",
        status=200, response=contract.WebhookSecret, errors=(404,),
    ),
    Operation(
        "GET", "/openapi.json", operation_id="getOpenApi", handler=get_openapi, tag="meta", api_key=False,
        summary="This document (no API key needed)",
        status=200, response=None, errors=(),
    ),
    Operation(
        "GET", "/console", operation_id="getConsole", handler=get_console, tag="meta", api_key=False,
        summary="The customer console: a web page that asks for your API key (no key needed to load it)",
        status=200, response=None, errors=(), media_type="text/html",
        headers=console.header_descriptions(),
    ),
)  # fmt: skip

WORKER_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", WORKER_ROUTE, operation_id="workerCall", handler=post_worker_call, tag="worker",
        api_key=False, summary="A job's worker: start, heartbeat, output or finish its attempt",
        status=200, response=None, errors=(400, 401, 403, 404, 409, 410, 415, 422),
    ),
)  # fmt: skip
ALL_OPERATIONS = OPERATIONS + WORKER_OPERATIONS

ROUTES: dict[str, dict[str, Operation]] = {}
for _operation in ALL_OPERATIONS:
    ROUTES.setdefault(_operation.path, {})[_operation.method] = _operation
KEYLESS: frozenset[tuple[str, str]] = frozenset(
    (op.method, op.path) for op in ALL_OPERATIONS if not op.api_key
)


def route_for(request: Request) -> Operation:
    methods = ROUTES.get(request.resource)
    if methods is None:
        raise errors.RouteNotFoundError(f"no route {request.method} {request.path}")
    if request.method not in methods:
        raise errors.MethodNotAllowedError(
            f"{request.method} is not allowed on {request.resource}; use {', '.join(sorted(methods))}"
        )
    operation = methods[request.method]
    if operation.api_key and not request.owner:
        raise errors.UnauthorizedError("an API key is required")
    return operation


def openapi_document(registry: Registry, *, server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI document of this table and the enabled functions (``GET /openapi.json``)."""
    return openapi.document(OPERATIONS, registry, server_url=server_url)
