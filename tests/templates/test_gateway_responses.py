"""API Gateway's own answers share the API's error envelope, on AWS and locally, from one set of resources."""

from __future__ import annotations

import json

import pytest

from pijobs.local.gateway import GatewayError, primary_gateway_responses

NEEDED = (
    "INVALID_API_KEY",
    "MISSING_AUTHENTICATION_TOKEN",
    "THROTTLED",
    "QUOTA_EXCEEDED",
    "REQUEST_TOO_LARGE",
    "DEFAULT_4XX",
    "DEFAULT_5XX",
)


@pytest.mark.parametrize("response_type", NEEDED)
def test_each_gateway_response_renders_the_error_envelope(response_type: str) -> None:
    responses = primary_gateway_responses()
    assert response_type in responses.templates

    error = GatewayError(response_type, 500 if "5XX" in response_type else 400, 'say "why"', "SomeException")
    rendered = responses.render(error, "req-1")

    body = json.loads(rendered.body)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    assert body["error"]["request_id"] == "req-1" and body["error"]["details"] == []
    assert body["error"]["code"].islower() and "$" not in rendered.body.decode()
