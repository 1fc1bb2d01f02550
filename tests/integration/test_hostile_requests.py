"""What a hostile client sent that once reached the handler's catch-all (a 500): each is now a clear 4xx."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

import pijobs.api_handler.handler
from tests.integration.conftest import Cloud

DEEP = "[" * 10_000 + "]" * 10_000


def _token(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _assert_clear_error(status: int, body: dict[str, Any], expected: int, field: str) -> None:
    assert status == expected, body
    error = body["error"]
    assert set(error) >= {"code", "message", "details"}
    assert field in {d["field"] for d in error["details"]}, error
    assert "Traceback" not in json.dumps(body) and "internal" not in error["code"]


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        ("/jobs", '{"digits": ' + DEEP + "}", "body"),
        ("/PerRunExecute", '{"DigitsToCalculate": ' + DEEP + "}", "body"),
        ("/jobs", '{"digits": ' + "1" * 5001 + "}", "body"),
        ("/jobs", '{"digits": 10, "digits": 20}', "body"),  # duplicate keys: which one was meant?
        ("/jobs", '{"digits": "x", "digits": 20}', "body"),  # not even the last one wins
        ("/jobs", '{"digits": NaN}', "body"),
        ("/jobs", '{"digits": Infinity}', "body"),
    ],
)
def test_bodies_the_strict_parser_refuses_are_400_naming_the_body(
    cloud: Cloud, path: str, raw: str, field: str
) -> None:
    status, body, _ = cloud.api("POST", path, raw)
    _assert_clear_error(status, body, 400, field)


ARABIC_INDIC_100 = "\u0661\u0660\u0660"


@pytest.mark.parametrize("digits", ["²", "①", "1" * 5000, ARABIC_INDIC_100, "\u0663"])
def test_digits_that_are_not_ascii_whole_numbers_are_422(cloud: Cloud, digits: str) -> None:
    status, body, _ = cloud.api("POST", "/PerRunExecute", {"DigitsToCalculate": digits})
    _assert_clear_error(status, body, 422, "DigitsToCalculate")
    status, body, _ = cloud.api("POST", "/jobs", {"digits": digits})
    assert status == 422 and body["error"]["code"] == "validation_error", body


@pytest.mark.parametrize("limit", ["²", "\u1370", "1" * 5000, "0", "101", "-1", " 5"])
def test_a_limit_that_is_not_1_to_100_in_ascii_digits_is_422(cloud: Cloud, limit: str) -> None:
    status, body, _ = cloud.api("GET", f"/jobs?limit={limit}")
    _assert_clear_error(status, body, 422, "limit")


@pytest.mark.parametrize(
    "token",
    [
        _token({"pk": {"S": "job#x"}, "owner": {"S": "key-a"}, "created_at": {"N": "1e999999"}}),
        _token({"pk": {"S": "job#x"}, "owner": {"S": "key-a"}, "created_at": {"N": "1" * 50}}),
        _token({"owner": {"S": "key-a"}}),  # the caller's own owner, and no key attributes
        _token({"pk": {"S": "job#x"}, "owner": {"S": "key-b"}, "created_at": {"S": "2026"}}),  # another's
        _token([1, 2]),
        "not base64 at all ✓",
        "A" * 5000,
    ],
)
def test_a_pagination_token_this_api_did_not_issue_is_422(cloud: Cloud, token: str) -> None:
    status, body, _ = cloud.api("GET", f"/jobs?next={token}")
    _assert_clear_error(status, body, 422, "next")


def test_a_token_this_api_issued_still_pages(cloud: Cloud) -> None:
    for _ in range(3):
        cloud.submit()
    status, first, _ = cloud.api("GET", "/jobs?limit=2")
    assert status == 200 and len(first["jobs"]) == 2 and first["next"]
    status, second, _ = cloud.api("GET", f"/jobs?limit=2&next={first['next']}")
    assert status == 200 and len(second["jobs"]) == 1


def test_a_megabyte_of_unknown_fields_gets_a_small_error(cloud: Cloud) -> None:
    body = {f"field_{n}": n for n in range(100_000)}
    for path, payload in (
        ("/jobs", body),
        ("/jobs", {"function": "pi", "params": body}),
        ("/PerRunExecute", body),
    ):
        raw = json.dumps(payload)
        assert len(raw) > 1_000_000
        status, answer, _ = cloud.api("POST", path, raw)
        assert status == 422, answer
        assert len(json.dumps(answer)) < 8_000
        assert any("more problems not listed" in d["problem"] for d in answer["error"]["details"])


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_declared_as_json_is_415(cloud: Cloud, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    event = {
        "resource": "/jobs",
        "path": "/jobs",
        "httpMethod": "POST",
        "headers": {"Host": "api.test", **headers},
        "body": '{"digits": 10}',
        "isBase64Encoded": False,
        "requestContext": {"requestId": "r", "stage": "test", "identity": {"apiKeyId": "key-a"}},
    }
    response = pijobs.api_handler.handler.lambda_handler(event, None)
    _assert_clear_error(response["statusCode"], json.loads(response["body"]), 415, "Content-Type")
    assert cloud.api("GET", "/jobs")[1]["jobs"] == []  # nothing was submitted


def test_invalid_utf8_is_400_not_silently_replaced(cloud: Cloud) -> None:
    event = {
        "resource": "/jobs",
        "path": "/jobs",
        "httpMethod": "POST",
        "headers": {"Host": "api.test", "Content-Type": "application/json"},
        "body": base64.b64encode(b'{"digits": 10, "name": "\xff\xfe"}').decode(),
        "isBase64Encoded": True,
        "requestContext": {"requestId": "r", "stage": "test", "identity": {"apiKeyId": "key-a"}},
    }
    response = pijobs.api_handler.handler.lambda_handler(event, None)
    _assert_clear_error(response["statusCode"], json.loads(response["body"]), 400, "body")


def test_a_validators_problem_reads_as_its_own_words(cloud: Cloud) -> None:
    status, body, _ = cloud.api("GET", "/jobs?limit=\u00b2")

    assert status == 422
    (detail,) = body["error"]["details"]
    assert detail == {"field": "limit", "problem": "must be a whole number (ASCII digits)"}
