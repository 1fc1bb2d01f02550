"""Every route of the API but its public document needs a valid key at the gateway: without one, or with a
wrong one, the answer is API Gateway's own 403 and the API itself is never reached (no job made, none
changed)."""

from __future__ import annotations

import time

import pytest
import requests

from pijobs.api_handler.routes import OPERATIONS, ROUTES, WORKER_OPERATIONS
from pijobs.local.stack import LocalStack

pytestmark = pytest.mark.e2e

# the customer's routes the table declares open: GET /openapi.json and GET /console
PUBLIC = frozenset((op.method, op.path) for op in OPERATIONS if not op.api_key)
# a job's worker calls with its attempt's token instead of a key (tests/e2e/test_zero_trust.py)
WORKER = frozenset((op.method, op.path) for op in WORKER_OPERATIONS)
BODIES = {
    "/jobs": {"digits": 5},
    "/PerRunExecute": {"StackName": "keyless", "CostCenter": "12345", "DigitsToCalculate": 5},
}
CALLS = sorted(
    (method, resource)
    for resource, methods in ROUTES.items()
    for method in methods
    if (method, resource) not in PUBLIC | WORKER
)
BAD_KEYS = {"no key": {}, "wrong key": {"x-api-key": "not-a-key-of-this-api"}}


@pytest.fixture(scope="module")
def finished_job(local_stack: LocalStack) -> str:
    """A job of the default key, for the routes that name one."""
    session = requests.Session()
    session.headers["x-api-key"] = local_stack.api_key
    job_id = str(session.post(local_stack.api_url + "/jobs", json={"digits": 5}, timeout=30).json()["job_id"])
    deadline = time.monotonic() + 120
    while session.get(f"{local_stack.api_url}/jobs/{job_id}", timeout=30).json()["status"] != "SUCCEEDED":
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.2)
    return job_id


def _jobs(local_stack: LocalStack) -> dict[str, str]:
    """Every job's status, by key (other tests' jobs may still be running: only their count matters)."""
    pages = (
        local_stack.client("dynamodb")
        .get_paginator("scan")
        .paginate(
            TableName=local_stack.outputs["TableName"],
            FilterExpression="begins_with(pk, :job)",
            ExpressionAttributeValues={":job": {"S": "job#"}},
            ConsistentRead=True,
        )
    )
    return {item["pk"]["S"]: item["status"]["S"] for page in pages for item in page.get("Items", [])}


def test_the_calls_cover_every_route_of_the_api() -> None:
    covered = {resource for _, resource in CALLS} | {resource for _, resource in PUBLIC | WORKER}
    assert covered == set(ROUTES)
    assert len(CALLS) >= 8
    assert set(PUBLIC) == {("GET", "/openapi.json"), ("GET", "/console")}


@pytest.mark.parametrize("headers", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_the_api_document_needs_no_key(local_stack: LocalStack, headers: dict[str, str]) -> None:
    response = requests.get(local_stack.api_url + "/openapi.json", headers=headers, timeout=30)

    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.") and "/jobs/{id}/result" in document["paths"]
    assert document["servers"] == [{"url": local_stack.api_url}]


@pytest.mark.parametrize("headers", BAD_KEYS.values(), ids=BAD_KEYS.keys())
@pytest.mark.parametrize(("method", "resource"), CALLS, ids=[f"{m} {r}" for m, r in CALLS])
def test_a_call_without_a_valid_key_is_refused_at_the_gateway(
    local_stack: LocalStack, finished_job: str, method: str, resource: str, headers: dict[str, str]
) -> None:
    jobs_before = _jobs(local_stack)
    path = resource.replace("{id}", finished_job).replace("{name}", "pi")

    response = requests.request(
        method,
        local_stack.api_url + path,
        json=BODIES.get(resource),
        headers=headers,
        allow_redirects=False,
        timeout=30,
    )

    assert response.status_code == 403
    # The gateway's answer (its error type header, the template's envelope): the API did not run.
    assert response.headers["x-amzn-ErrorType"] == "ForbiddenException"
    assert response.json()["error"]["code"] == "forbidden"
    jobs_after = _jobs(local_stack)
    assert jobs_after.keys() == jobs_before.keys()  # no job made
    assert jobs_after[f"job#{finished_job}"] == "SUCCEEDED"  # nor the named one changed
