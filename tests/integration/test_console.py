"""The console's page from the handler itself: served without a key, HTML with its security headers, the
CSP allowing exactly the inline script and style it sends; any other method a 405 in the error envelope.
And the list filters the console uses (status, name) on the real store under moto."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

import pijobs.api_handler.handler
from tests.integration.conftest import Cloud


def _call(method: str, *, key_id: str | None = None, query: dict[str, str] | None = None) -> dict[str, Any]:
    event = {
        "resource": "/console",
        "path": "/console",
        "httpMethod": method,
        "headers": {"Host": "api.test"},
        "queryStringParameters": query,
        "pathParameters": None,
        "body": None,
        "isBase64Encoded": False,
        "requestContext": {"requestId": str(uuid.uuid4()), "stage": "test", "identity": {"apiKeyId": key_id}},
    }
    return pijobs.api_handler.handler.lambda_handler(event, None)


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


@pytest.mark.parametrize("query", [None, {"x": "1"}, {"next": "<script>", "": ""}], ids=["bare", "q", "odd"])
def test_the_console_is_html_with_its_security_headers_and_needs_no_key(
    cloud: Cloud, query: dict[str, str] | None
) -> None:
    response = _call("GET", query=query)

    assert response["statusCode"] == 200
    headers = response["headers"]
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["connect-src"].startswith("'self' ")
    assert response["body"].startswith("<!doctype html>")


def test_the_page_may_connect_to_this_api_and_to_where_uploads_are_posted_only(cloud: Cloud) -> None:
    """The file picker sends a file to its presigned POST's URL (the results bucket's origin): that origin,
    as the API hands it out, is the one other place the page may connect to; no path, no wildcard."""
    status, created, _ = cloud.api("POST", "/uploads", {"filename": "t.csv", "bytes": 3, "sha256": "0" * 64})
    assert status == 201, created
    where = urlsplit(created["url"])

    policy = _call("GET")["headers"]["Content-Security-Policy"]
    csp = dict(part.strip().split(" ", 1) for part in policy.split(";"))

    assert csp["connect-src"].split() == ["'self'", f"{where.scheme}://{where.netloc}"]
    assert "*" not in csp["connect-src"]


def test_the_policy_allows_exactly_the_inline_script_and_style_sent(cloud: Cloud) -> None:
    response = _call("GET")
    html = response["body"]
    csp = response["headers"]["Content-Security-Policy"]

    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, flags=re.S)

    assert len(scripts) == len(styles) == 1 and len(scripts[0]) > 1000 and len(styles[0]) > 500
    assert f"script-src '{_sha256(scripts[0])}';" in csp
    assert f"style-src '{_sha256(styles[0])}';" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert html.count("<script") == 1 and " style=" not in html  # no other script, no style attribute


def test_the_page_loads_nothing_from_elsewhere(cloud: Cloud) -> None:
    html = _call("GET")["body"]

    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    assert ".innerHTML" not in html and "insertAdjacentHTML" not in html and "eval(" not in html


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"])
def test_any_other_method_is_a_405_in_the_error_envelope(cloud: Cloud, method: str) -> None:
    response = _call(method, key_id="key-a")

    assert response["statusCode"] == 405
    assert response["headers"]["Content-Type"] == "application/json"
    assert json.loads(response["body"])["error"]["code"] == "method_not_allowed"


def test_the_list_filters_by_status_and_by_part_of_the_name(cloud: Cloud) -> None:
    kept = cloud.submit(digits=10, name="nightly report 1")
    cancelled = cloud.submit(digits=11, name="nightly report 2")
    cloud.submit(digits=12, name="adhoc")
    assert cloud.api("DELETE", f"/jobs/{cancelled}")[0] == 202

    def listed(query: str) -> list[str]:
        status, body, _ = cloud.api("GET", f"/jobs?{query}")
        assert status == 200, body
        return [job["job_id"] for job in body["jobs"]]

    assert listed("status=CANCELLED") == [cancelled]
    assert listed("name_contains=nightly") == [cancelled, kept]
    assert listed("name_contains=nightly&status=QUEUED") == [kept]
    assert listed("name_contains=Nightly") == []  # case-sensitive, as documented
    assert listed("status=CANCELLED&function=sql") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=DONE", "status"), ("status=queued", "status"), ("name_contains=", "name_contains")],
)
def test_a_bad_filter_is_a_422_naming_it(cloud: Cloud, query: str, field: str) -> None:
    status, body, _ = cloud.api("GET", f"/jobs?{query}")

    assert status == 422
    assert [d["field"] for d in body["error"]["details"]] == [field]


def test_a_job_summary_carries_its_progress_for_the_console(cloud: Cloud) -> None:
    cloud.submit(digits=10)

    _, body, _ = cloud.api("GET", "/jobs")

    assert {"progress", "started_at"} <= set(body["jobs"][0])
