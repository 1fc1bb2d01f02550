"""What each answer of the worker channel means to the worker: a result, a wait-and-retry, a refusal or the
end of its attempt (pijobs.worker.channel, against a scripted API instead of HTTP)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pijobs.shared.retry import Backoff
from pijobs.worker.channel import (
    AttemptEndedError,
    Channel,
    ChannelRefusedError,
    ChannelUnavailableError,
    urllib_send,
)

JOB = "0123456789abcdef0123456789abcdef"
NO_WAIT = Backoff(base_seconds=0, cap_seconds=0, total_seconds=100, sleep=lambda _: None)


class Api:
    """Answers each call with the next of ``answers`` (status, body) and keeps what it was sent."""

    def __init__(self, *answers: tuple[int, bytes]) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, str, dict[str, str], Any]] = []

    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        self.sent.append((method, url, headers, json.loads(body)))
        return self.answers.pop(0)


def refusal(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


def channel(api: Api) -> Channel:
    return Channel("http://127.0.0.1:9/api/", JOB, "the-token", backoff=NO_WAIT, send=api)


def test_a_2xx_answer_is_the_result_of_a_call_that_names_the_job_the_operation_and_the_token() -> None:
    api = Api((200, b'{"inputs": {}}'), (299, b'{"ok": true}'), (204, b""), (200, b"[1, 2]"))
    worker = channel(api)

    assert worker.start("i-1") == {"inputs": {}}
    assert worker.heartbeat(0.5) == {"ok": True}
    assert worker.finish("succeeded") == {}  # an empty answer, or one that is no JSON object, is no fields
    assert worker.output(filename="r.txt", bytes=3) == {}
    method, url, headers, body = api.sent[0]
    assert (method, url, body) == (
        "POST",
        f"http://127.0.0.1:9/api/worker/jobs/{JOB}/start",
        {"instance_id": "i-1"},
    )
    assert headers["Authorization"] == "Bearer the-token"
    assert [sent[1].rsplit("/", 1)[1] for sent in api.sent] == ["start", "heartbeat", "finish", "output"]
    assert "the-token" not in repr(worker)


def test_a_server_error_or_429_is_waited_out_and_the_call_made_again() -> None:
    api = Api((500, b""), (503, b"<html>"), (429, b"{}"), (599, b""), (200, b'{"url": "u"}'))
    worker = channel(api)

    assert worker.output(filename="r.txt") == {"url": "u"}
    assert worker.calls == 5


@pytest.mark.parametrize("status", [199, 300, 400, 401, 403, 404, 409, 499])
def test_any_other_answer_is_a_refusal_raised_at_once_with_its_status_and_code(status: int) -> None:
    api = Api(refusal(status, "forbidden", "not your job"), (200, b"{}"))

    with pytest.raises(ChannelRefusedError) as refused:
        channel(api).start(None)

    assert (refused.value.status, refused.value.code) == (status, "forbidden")
    assert "not your job" in str(refused.value)
    assert len(api.sent) == 1


def test_a_refusal_without_an_envelope_is_still_a_refusal_and_its_message_is_kept_short() -> None:
    with pytest.raises(ChannelRefusedError) as bare:
        channel(Api((403, b"Forbidden"))).start(None)
    assert bare.value.code == "refused"

    long = "a" * 300 + "b" * 50
    with pytest.raises(ChannelRefusedError) as refused:
        channel(Api(refusal(404, "not_found", long))).start(None)
    assert "a" * 300 in str(refused.value) and "b" not in str(refused.value)


def test_410_ends_the_attempt_with_the_apis_reason() -> None:
    with pytest.raises(AttemptEndedError, match="the job was cancelled"):
        channel(Api(refusal(410, "attempt_ended", "the job was cancelled"))).heartbeat(0.2)
    with pytest.raises(AttemptEndedError, match="this attempt has ended"):
        channel(Api((410, b""))).heartbeat(0.2)


def test_a_heartbeat_without_retry_reports_an_outage_at_once_and_one_with_retry_waits_it_out() -> None:
    api = Api((503, b""), (200, b"{}"))

    with pytest.raises(ChannelUnavailableError):
        channel(api).heartbeat(0.3, retry=False)
    assert len(api.sent) == 1
    assert channel(Api((503, b""), (200, b'{"cancel": false}'))).heartbeat(0.3) == {"cancel": False}


def test_a_progress_that_is_not_a_number_is_never_sent() -> None:
    api = Api((200, b"{}"))

    with pytest.raises(ValueError):
        channel(api).heartbeat(float("nan"))
    assert api.sent == []


class ApiServer(http.server.ThreadingHTTPServer):
    answer: tuple[int, bytes]
    received: list[tuple[str, str, bytes]]


class ApiHandler(http.server.BaseHTTPRequestHandler):
    server: ApiServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers["Authorization"], body))
        status, answer = self.server.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    httpd = ApiServer(("127.0.0.1", 0), ApiHandler)
    httpd.received = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_over_http_an_answer_and_a_refusal_with_its_envelope_reach_the_worker(api_server: ApiServer) -> None:
    url = f"http://127.0.0.1:{api_server.server_address[1]}/api"
    worker = Channel(url, JOB, "the-token", backoff=NO_WAIT, send=urllib_send)

    api_server.answer = (200, b'{"status": "RUNNING"}')
    assert worker.heartbeat(0.25) == {"status": "RUNNING"}
    api_server.answer = refusal(403, "forbidden", "this token is not good for this job")
    with pytest.raises(ChannelRefusedError) as refused:
        worker.heartbeat(0.5)

    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert api_server.received[0] == (
        f"/api/worker/jobs/{JOB}/heartbeat",
        "Bearer the-token",
        b'{"progress": 0.25}',
    )
