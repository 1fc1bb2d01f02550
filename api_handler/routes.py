"""One function per route: parse the request, call one service function, shape the response."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api_handler import service
from api_handler.service import ApiServices
from api_handler.views import job_links, job_summary, job_view
from api_handler.web import Request, json_response
from shared import errors

Route = Callable[[ApiServices, Request], dict[str, Any]]


def post_jobs(services: ApiServices, request: Request) -> dict[str, Any]:
    submission = service.parse_submission(services.functions, request.json_body())
    return _accepted(services, request, submission)


def post_per_run_execute(services: ApiServices, request: Request) -> dict[str, Any]:
    submission = service.parse_per_run_execute(services.functions, request.json_body())
    return _accepted(services, request, submission)


def _accepted(services: ApiServices, request: Request, submission: service.Submission) -> dict[str, Any]:
    job, created = service.submit_job(services, request.owner, submission, request.header("idempotency-key"))
    links = job_links(request.base_url, job.job_id)
    payload = {"job_id": job.job_id, "status": job.status.value, "links": links}
    headers = {"Location": links["self"]}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(202, payload, headers)


def get_job(services: ApiServices, request: Request) -> dict[str, Any]:
    job = service.get_job(services, request.owner, request.path_params.get("id", ""))
    url = service.result_link(services, job)
    expires_at = service.result_expires_at(services, job)
    view = job_view(job, base_url=request.base_url, result_url=url, result_expires_at=expires_at)
    return json_response(200, view)


def list_jobs(services: ApiServices, request: Request) -> dict[str, Any]:
    jobs, token = service.list_jobs(
        services,
        request.owner,
        limit=request.query.get("limit"),
        token=request.query.get("next"),
        function=request.query.get("function"),
    )
    return json_response(
        200, {"jobs": [job_summary(job, base_url=request.base_url) for job in jobs], "next": token}
    )


def delete_job(services: ApiServices, request: Request) -> dict[str, Any]:
    job = service.cancel_job(services, request.owner, request.path_params.get("id", ""))
    return json_response(202, job_view(job, base_url=request.base_url))


def get_result(services: ApiServices, request: Request) -> dict[str, Any]:
    job = service.get_job(services, request.owner, request.path_params.get("id", ""))
    url = service.result_url(services, job)
    return json_response(302, {"url": url}, {"Location": url})


def list_functions(services: ApiServices, request: Request) -> dict[str, Any]:
    return json_response(200, {"functions": services.functions.catalog()})


def get_function(services: ApiServices, request: Request) -> dict[str, Any]:
    return json_response(200, service.function_entry(services, request.path_params.get("name", "")))


ROUTES: dict[str, dict[str, Route]] = {
    "/functions": {"GET": list_functions},
    "/functions/{name}": {"GET": get_function},
    "/jobs": {"POST": post_jobs, "GET": list_jobs},
    "/jobs/{id}": {"GET": get_job, "DELETE": delete_job},
    "/jobs/{id}/result": {"GET": get_result},
    "/PerRunExecute": {"POST": post_per_run_execute},
}


def route_for(request: Request) -> Route:
    methods = ROUTES.get(request.resource)
    if methods is None:
        raise errors.RouteNotFoundError(f"no route {request.method} {request.path}")
    if request.method not in methods:
        raise errors.MethodNotAllowedError(
            f"{request.method} is not allowed on {request.resource}; use {', '.join(sorted(methods))}"
        )
    return methods[request.method]
