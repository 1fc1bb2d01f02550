"""An input's download over plain HTTP, the way the instance fetches its presigned GET: server errors and
dropped connections waited out, a refused link (expired, denied, gone) reported at once."""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from pijobs.shared import errors
from pijobs.shared.retry import Backoff, is_transient
from pijobs.worker.inputs import InputGrant, download_inputs, fetch_url

BODY = b"a,b\n1,2\n"
KEY = "uploads/key-a/" + "a" * 32


class Server(http.server.ThreadingHTTPServer):
    answers: list[int]
    requests: int = 0


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        self.server.requests += 1
        status = self.server.answers.pop(0) if self.server.answers else 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(BODY) if status == 200 else 0))
        self.end_headers()
        if status == 200:
            self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.answers = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def job(url: str, body: bytes = BODY) -> dict[str, InputGrant]:
    """The inputs as the worker channel's start answers them: the pinned size and sha256, a fresh GET."""
    sha256 = hashlib.sha256(body).hexdigest()
    return {"t": InputGrant(upload_id="a" * 32, bytes=len(body), sha256=sha256, url=url)}


def url_of(server: Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/bucket/{KEY}?X-Amz-Expires=900"


BACKOFF = Backoff(base_seconds=0.001, cap_seconds=0.01, total_seconds=5)


def test_server_errors_are_waited_out_and_the_file_is_checked(server: Server, tmp_path: Path) -> None:
    server.answers = [503, 500]

    paths = download_inputs(job(url_of(server)), tmp_path, fetch=fetch_url, backoff=BACKOFF)

    assert paths == {"t": tmp_path / "inputs" / "t"} and paths["t"].read_bytes() == BODY
    assert server.requests == 3


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_a_refused_link_is_reported_at_once(server: Server, tmp_path: Path, status: int) -> None:
    server.answers = [status]

    with pytest.raises(errors.InputUnavailableError, match=rf"refused \(HTTP {status}\)"):
        download_inputs(job(url_of(server)), tmp_path, fetch=fetch_url, backoff=BACKOFF)
    assert server.requests == 1


def test_a_server_error_past_the_backoff_is_input_unavailable(server: Server, tmp_path: Path) -> None:
    """What the backoff gave up on is the job's input_unavailable (a retry), never a raw HTTP error."""
    server.answers = [503] * 1000
    brief = Backoff(base_seconds=0.001, cap_seconds=0.01, total_seconds=0.3)

    with pytest.raises(errors.InputUnavailableError, match="input t could not be downloaded"):
        download_inputs(job(url_of(server)), tmp_path, fetch=fetch_url, backoff=brief)
    assert server.requests > 1


def test_another_size_or_checksum_is_input_corrupt(server: Server, tmp_path: Path) -> None:
    with pytest.raises(errors.InputCorruptError, match="input t"):
        download_inputs(job(url_of(server), body=BODY + b"3,4\n"), tmp_path, fetch=fetch_url, backoff=BACKOFF)


def test_plain_http_errors_are_transient_only_when_they_pass() -> None:
    def http_error(code: int) -> urllib.error.HTTPError:
        return urllib.error.HTTPError("http://x", code, "", {}, None)  # type: ignore[arg-type]

    assert is_transient(http_error(503)) and is_transient(http_error(429))
    assert is_transient(urllib.error.URLError(ConnectionRefusedError())) and is_transient(TimeoutError())
    assert not is_transient(http_error(403)) and not is_transient(http_error(404))


def test_the_pinned_size_with_other_bytes_is_input_corrupt(server: Server, tmp_path: Path) -> None:
    """The size alone proves nothing: one changed byte is caught by the sha256."""
    pinned = b"a,b\n1,3\n"
    assert len(pinned) == len(BODY) and pinned != BODY
    with pytest.raises(errors.InputCorruptError, match="input t"):
        download_inputs(job(url_of(server), body=pinned), tmp_path, fetch=fetch_url, backoff=BACKOFF)


@pytest.mark.parametrize("body", [BODY, b"a,b\n1,3\n"], ids=["same", "same-size-other-bytes"])
def test_a_fetch_that_computes_nothing_has_its_file_checked(tmp_path: Path, body: bytes) -> None:
    """A fetch may leave the check to the file it wrote: the file's size and sha256 decide, not the pin."""

    def write_only(url: str, destination: Path) -> None:
        destination.write_bytes(body)

    grants = job("http://127.0.0.1:9/unused")
    if body == BODY:
        paths = download_inputs(grants, tmp_path, fetch=write_only, backoff=BACKOFF)
        assert paths["t"].read_bytes() == BODY
    else:
        with pytest.raises(errors.InputCorruptError, match="input t"):
            download_inputs(grants, tmp_path, fetch=write_only, backoff=BACKOFF)
