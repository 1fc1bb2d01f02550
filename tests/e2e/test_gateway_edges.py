"""The local gateway as a hostile or clumsy client finds it: JSON answers for protocol errors, the payload
limit enforced before the body is read, links that never echo the client's Host, and bursts of connections."""

from __future__ import annotations

import json
import socket
import threading
from urllib.parse import urlsplit

import pytest

from pijobs.local.stack import LocalStack

pytestmark = pytest.mark.e2e


def _exchange(stack: LocalStack, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a new connection; read the whole answer (the server closes or sends its length)."""
    address = urlsplit(stack.api_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(raw)
        data = b""
        while b"\r\n\r\n" not in data:
            data += connection.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        while len(body) < int(headers.get("content-length", 0)):
            body += connection.recv(65536)
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_line", "status"),
    [(b"TRACE /jobs HTTP/1.1", 405), (b"BREW /jobs HTTP/1.1", 405), (b"GET /jobs HTTP/2.0", 505)],
)
def test_protocol_errors_are_json(local_stack: LocalStack, request_line: bytes, status: int) -> None:
    code, headers, body = _exchange(local_stack, request_line + b"\r\nHost: x\r\n\r\n")

    assert code == status and headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request" and error["message"] and error["details"] == []


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 1000000000000\r\n", b"Transfer-Encoding: chunked\r\n"],
    ids=["declared", "chunked"],
)
def test_an_oversized_body_is_refused_without_reading_it(local_stack: LocalStack, framing: bytes) -> None:
    head = b"POST /jobs HTTP/1.1\r\nHost: x\r\nx-api-key: " + local_stack.api_key.encode() + b"\r\n" + framing
    # chunked: a first chunk that declares more than the limit; the gateway answers before it arrives
    body = b"" if b"Length" in framing else b"%x\r\n" % (11 * 2**20) + b"0" * 1024

    code, headers, answer = _exchange(local_stack, head + b"\r\n" + body)

    assert code == 413 and json.loads(answer)["error"]["code"] == "payload_too_large"
    assert headers["connection"] == "close"


def test_links_come_from_the_gateway_never_from_the_host_header(local_stack: LocalStack) -> None:
    body = b'{"digits": 10}'
    raw = (
        b"POST /jobs HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n"
        b"x-api-key: " + local_stack.api_key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )

    code, headers, answer = _exchange(local_stack, raw)

    assert code == 202
    assert headers["location"].startswith(local_stack.api_url + "/jobs/")
    assert "evil" not in answer.decode()


def test_a_burst_of_new_connections_is_served_not_reset(local_stack: LocalStack) -> None:
    failures: list[str] = []
    request = b"GET /functions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-api-key: "
    request += local_stack.api_key.encode() + b"\r\n\r\n"

    def one() -> None:
        try:
            code, _, _ = _exchange(local_stack, request)
            if code != 200:
                failures.append(str(code))
        except OSError as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []


def test_an_encoded_slash_never_changes_the_route(local_stack: LocalStack) -> None:
    """``/jobs/<id>%2Fresult`` is the job ``<id>/result`` (none such), not the result of job ``<id>``."""
    key = local_stack.api_key.encode()
    post = b'{"digits": 20}'
    head = b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-api-key: " + key
    code, _, answer = _exchange(local_stack, head + b"\r\nContent-Length: %d\r\n\r\n" % len(post) + post)
    assert code == 202
    job_id = json.loads(answer)["job_id"].encode()

    for target in (b"/jobs/" + job_id + b"%2Fresult", b"/jobs/" + job_id + b"%2fresult"):
        code, headers, body = _exchange(
            local_stack, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nx-api-key: " + key + b"\r\n\r\n"
        )
        assert code == 404 and "location" not in headers, (target, body)
        assert json.loads(body)["error"]["code"] == "not_found"


def test_a_body_that_is_not_utf8_is_400_not_replaced(local_stack: LocalStack) -> None:
    body = b'{"digits": 20, "name": "\xff\xfe"}'
    head = b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-api-key: "
    raw = head + local_stack.api_key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    code, _, answer = _exchange(local_stack, raw)

    assert code == 400
    assert json.loads(answer)["error"]["details"] == [{"field": "body", "problem": "not UTF-8"}]


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 6_3\r\n\r\n" + b"x" * 63,
        b"Content-Length: +5\r\n\r\n12345",
        b"Content-Length: -1\r\n\r\n",
        b"Content-Length: 0x5\r\n\r\n12345",
        b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n123456",
        b"Transfer-Encoding: chunked\r\n\r\n-1\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n+5\r\n12345\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n 5\r\n12345\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n5_0\r\n12345\r\n0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\n123456789\r\n0\r\n\r\n",
    ],
    ids=[
        "cl-underscore",
        "cl-plus",
        "cl-negative",
        "cl-hex",
        "cl-twice",
        "chunk-negative",
        "chunk-plus",
        "chunk-space",
        "chunk-underscore",
        "chunk-overrun",
    ],
)
def test_only_plain_lengths_frame_a_body(local_stack: LocalStack, framing: bytes) -> None:
    head = b"POST /jobs HTTP/1.1\r\nHost: x\r\nx-api-key: " + local_stack.api_key.encode() + b"\r\n"

    code, headers, answer = _exchange(local_stack, head + framing)

    assert code == 400 and json.loads(answer)["error"]["code"] == "bad_request"
    assert headers["connection"] == "close" and headers["x-content-type-options"] == "nosniff"


def test_every_answer_says_nosniff(local_stack: LocalStack) -> None:
    key = b"x-api-key: " + local_stack.api_key.encode() + b"\r\n"
    body = b'{"digits": 10}'
    requests = [
        b"GET /functions HTTP/1.1\r\nHost: x\r\n" + key + b"\r\n",  # the API's JSON
        b"GET /jobs HTTP/1.1\r\nHost: x\r\n\r\n",  # the gateway's 403
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\n" + key + b"\r\n",  # the gateway's 404
        b"POST /jobs HTTP/1.1\r\nHost: x\r\n" + key + b"Content-Length: %d\r\n\r\n" % len(body) + body,
        b"GET /console HTTP/1.1\r\nHost: x\r\n\r\n",  # HTML
        b"BREW /jobs HTTP/1.1\r\nHost: x\r\n\r\n",  # a protocol error
    ]
    for raw in requests:
        code, headers, _ = _exchange(local_stack, raw)
        assert headers.get("x-content-type-options") == "nosniff", (raw, code)
