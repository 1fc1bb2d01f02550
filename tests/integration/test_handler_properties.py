"""Property test of the API handler itself: whatever arrives, the answer is a JSON envelope, never a 5xx and
never a traceback or an internal name (hypothesis generates the requests, moto serves the handler)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pijobs.api_handler.handler  # noqa: E402
from pijobs.api_handler.routes import OPERATIONS  # noqa: E402
from pijobs.local.gateway import DEFAULT_ROUTES, compile_route, match_route  # noqa: E402
from tests.integration.conftest import Cloud  # noqa: E402

ROUTES = [compile_route(resource) for resource in DEFAULT_ROUTES]
LEAKS = ("Traceback", "pijobs-", "arn:", "botocore", "Exception", 'File "', "bucket")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.none(),
    st.text(max_size=200),  # anything at all, JSON or not
    json_values.map(json.dumps),
    st.fixed_dictionaries(  # near-valid submissions, to reach the validation of each field
        {},
        optional={
            "function": st.sampled_from(["pi", "word-count", "", "PI", "x" * 70]) | st.text(max_size=8),
            "params": json_values,
            "digits": json_values,
            "DigitsToCalculate": json_values,
            "StackName": json_values,
            "CostCenter": json_values,
            "name": json_values,
            "cost_center": json_values,
            "filename": json_values,
            "bytes": json_values,
            "sha256": json_values,
        },
    ).map(json.dumps),
)
segment = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), max_size=40)
paths = st.one_of(
    st.sampled_from([op.path for op in OPERATIONS])
    .flatmap(
        lambda path: st.tuples(
            *[segment if part.startswith("{") else st.just(part) for part in path.split("/")]
        )
    )
    .map("/".join),
    st.lists(segment, max_size=4).map(lambda parts: "/" + "/".join(parts)),
)
headers = st.dictionaries(
    st.sampled_from(
        ["Content-Type", "content-type", "Idempotency-Key", "Accept", "X-Forwarded-Proto", "Host"]
    ),
    st.text(max_size=150) | st.sampled_from(["application/json", "text/plain", "application/x+json"]),
    max_size=4,
)
queries = st.none() | st.dictionaries(
    st.sampled_from(["limit", "next", "function", "status", "name_contains", "other"]),
    st.text(max_size=60),
    max_size=3,
)


def _event(
    method: str, path: str, body: str | None, head: dict[str, str], query: Any, key: str
) -> dict[str, Any]:
    resource, params = match_route(ROUTES, path) or (path, None)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": head,
        "queryStringParameters": query,
        "pathParameters": params,
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {"requestId": str(uuid.uuid4()), "stage": "test", "identity": {"apiKeyId": key}},
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]),
    path=paths,
    body=bodies,
    head=headers,
    query=queries,
    key=st.sampled_from(["key-a", "key-b", ""]),
)
def test_no_request_gets_a_server_error_or_a_leak(
    cloud: Cloud, method: str, path: str, body: str | None, head: dict[str, str], query: Any, key: str
) -> None:
    response = pijobs.api_handler.handler.lambda_handler(_event(method, path, body, head, query, key), None)

    status, text = response["statusCode"], response["body"]
    assert status < 500, text
    resource = match_route(ROUTES, path)
    operation = next(
        (op for op in OPERATIONS if resource and (op.method, op.path) == (method, resource[0])), None
    )
    if status < 400 and operation is not None and operation.media_type != "application/json":
        assert response["headers"]["Content-Type"].startswith(operation.media_type)  # the console's page
        return
    assert response["headers"]["Content-Type"] == "application/json"
    payload = json.loads(text)
    if status >= 400:
        error = payload["error"]
        assert (
            set(error) <= {"code", "message", "details", "request_id"} and error["code"] and error["message"]
        )
        assert len(text) < 16_000
    sent = json.dumps([path, body, head, query])  # an error may quote the request back, and only that
    assert not any(leak in text and leak not in sent for leak in LEAKS), text
