"""The console's Content-Security-Policy: connections to this API ('self') and to the uploads' origin only,
which must be an origin (scheme, host, port) and nothing broader: no wildcard, no path, no other scheme."""

from __future__ import annotations

import pytest

from pijobs.api_handler.console import page


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


@pytest.mark.parametrize(
    "origin",
    [
        "https://results-bucket.s3.amazonaws.com",
        "https://b.s3.eu-west-1.amazonaws.com",
        "http://127.0.0.1:4566",
    ],
)
def test_the_page_may_connect_to_itself_and_to_the_uploads_origin_only(origin: str) -> None:
    policy = directives(page(origin).headers["Content-Security-Policy"])

    assert policy["connect-src"] == f"'self' {origin}"
    assert policy["default-src"] == "'none'" and policy["form-action"] == "'none'"


@pytest.mark.parametrize(
    "wider",
    [
        "*",
        "https:",
        "https://*.amazonaws.com",
        "https://b.s3.amazonaws.com/uploads/",
        "data:",
        "'self' https://x",
        "",
    ],
)
def test_anything_broader_than_an_origin_is_refused(wider: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        page(wider)
