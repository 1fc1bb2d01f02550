"""The console's page through the local gateway, as a browser gets it: no key, HTML passed on unchanged
with its headers; whatever a client sends to /console, never a 500."""

from __future__ import annotations

import pytest
import requests

from pijobs.local.stack import LocalStack

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("suffix", ["", "?", "?key=x&key=y", "?%ff=%00"])
def test_the_gateway_serves_the_console_page_without_a_key(local_stack: LocalStack, suffix: str) -> None:
    response = requests.get(f"{local_stack.api_url}/console{suffix}", timeout=30)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.text.startswith("<!doctype html>") and "</html>" in response.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_other_methods_on_the_console_are_refused_in_json(local_stack: LocalStack, method: str) -> None:
    """With a key the API itself answers 405; without one the gateway's 403 comes first (a method the
    route does not declare needs a key, as every undeclared method does): JSON either way, never a 5xx."""
    url = f"{local_stack.api_url}/console"
    keyed = requests.request(method, url, data=b"<x>", headers={"x-api-key": local_stack.api_key}, timeout=30)
    keyless = requests.request(method, url, data=b"<x>", timeout=30)

    assert (keyed.status_code, keyless.status_code) == (405, 403)
    for response in (keyed, keyless):
        assert response.headers["Content-Type"] == "application/json"
    if method != "HEAD":
        assert keyed.json()["error"]["code"] == "method_not_allowed"
        assert keyless.json()["error"]["code"] == "forbidden"


def test_the_python_client_points_at_the_same_page(local_stack: LocalStack) -> None:
    from pijobs.client import PijobsClient

    url = PijobsClient(local_stack.api_url, local_stack.api_key).console_url()

    assert requests.get(url, timeout=30).headers["Content-Type"].startswith("text/html")
