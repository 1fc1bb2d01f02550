"""The Python client of the pijobs API (standard library only, so a customer install needs nothing more).

    from pijobs.client import PijobsClient

    client = PijobsClient("https://<api>", "<api key>")
    job = client.submit("pi", {"digits": 100_000})      # 202: the job's id at once
    job = client.wait(job["job_id"], timeout=600)      # polls GET /jobs/{id} until it is terminal
    client.download_result(job, Path("pi.txt"))        # checked against the recorded bytes and sha256

    upload = client.upload_file(Path("scores.csv"))    # declare, send, wait until AVAILABLE or REJECTED

One method per operation of the API's OpenAPI document (``OPERATION_METHODS``; a test keeps the two in
step). Every call returns the API's JSON as a dict; a non-2xx answer raises :class:`ApiError` carrying
the error envelope ``{"error": {"code", "message", "details"}}`` (``exc.code``, ``exc.details``).
GETs and DELETEs are retried on 429/502/503/504 and network errors; a POST only with an idempotency key.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pijobs.errors import OperationError
from pijobs.shared import digest as digests
from pijobs.shared.status import TERMINAL_STATES
from pijobs.shared.webhooks import verify

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
USER_AGENT = "pijobs-cli"
_CHUNK = 1 << 16
_UPLOAD_CHUNK = 1 << 20


class PijobsClientError(OperationError):
    """Base of the client's errors (an OperationError of pijobs.errors: the API or the transfer said no)."""


class TransportError(PijobsClientError):
    """The API could not be reached or answered with something that is not HTTP."""


class ApiError(PijobsClientError):
    """A non-2xx answer. ``body`` is the API's JSON (or ``{}`` when the answer was not JSON)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.body = body or {}


class WaitTimeoutError(PijobsClientError):
    def __init__(self, job: dict[str, Any], timeout: float) -> None:
        super().__init__(f"job {job.get('job_id')} is still {job.get('status')} after {timeout:g} s")
        self.job = job


class IntegrityError(PijobsClientError):
    """A downloaded result does not match the byte count or sha256 the job recorded."""


class UploadRefusedError(PijobsClientError):
    """The storage refused the file sent with an upload's presigned POST, or pijobs REJECTED it."""

    def __init__(self, message: str, upload: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.upload = upload or {}


Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes in all)


@dataclass(frozen=True)
class Download:
    path: Path
    bytes: int
    sha256: str


def api_error(status: int, raw: bytes, headers: Any = None) -> ApiError:
    """Turn an error answer into an ApiError: the API's envelope, API Gateway's, or plain text."""
    try:
        body = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    envelope = body.get("error")
    if isinstance(envelope, dict):
        details = envelope.get("details")
        return ApiError(
            status=status,
            code=str(envelope.get("code") or f"http_{status}"),
            message=str(envelope.get("message") or ""),
            details=details if isinstance(details, list) else [],
            body=body,
        )
    gateway_type = headers.get("x-amzn-ErrorType") if headers is not None else None
    # Not an answer of the API (a proxy's HTML page, an S3 XML error): say so rather than print it.
    message = body.get("message") or (
        "the answer is not from the pijobs API: check the API URL" if raw else "no message"
    )
    code = str(gateway_type).split(":")[0] if gateway_type else f"http_{status}"
    return ApiError(status=status, code=code, message=str(message), body=body)


def is_terminal(job: dict[str, Any]) -> bool:
    return job.get("status") in TERMINAL_STATES


# operationId in the OpenAPI document -> the method that calls it
OPERATION_METHODS = {
    "submitJob": "submit",
    "listJobs": "list_jobs",
    "getJob": "get",
    "cancelJob": "cancel",
    "getJobResult": "result_url",
    "listFunctions": "functions",
    "getFunction": "function",
    "perRunExecute": "per_run_execute",
    "getOpenApi": "openapi",
    "createUpload": "create_upload",
    "listUploads": "list_uploads",
    "getUpload": "get_upload",
    "deleteUpload": "delete_upload",
    "getConsole": "console_url",
    "createWebhook": "add_webhook",
    "listWebhooks": "list_webhooks",
    "getWebhook": "get_webhook",
    "deleteWebhook": "remove_webhook",
    "testWebhook": "test_webhook",
    "listWebhookDeliveries": "webhook_deliveries",
    "rotateWebhookSecret": "rotate_webhook_secret",
}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the redirect is the answer (a presigned URL), not something to follow


class PijobsClient:
    """``PijobsClient(base_url, api_key)``; one method per operation of the API (``OPERATION_METHODS``),
    plus ``wait``, ``iter_jobs``, ``download_result`` and ``stream_result``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._retries = retries
        self._sleep = sleep

    # ---- the API -----------------------------------------------------------------------------------------
    def submit(
        self,
        function: str = "pi",
        params: dict[str, Any] | None = None,
        *,
        cost_center: str | None = None,
        name: str | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> dict[str, Any]:
        """Submit a job of ``function`` with its ``params`` (see ``functions()`` for each one's schema). With
        ``callback_url``, the job's events go there too, signed with the answer's ``callback_secret``."""
        body: dict[str, Any] = {"function": function, "params": params or {}}
        if cost_center is not None:
            body["cost_center"] = cost_center
        if name is not None:
            body["name"] = name
        if callback_url is not None:
            body["callback_url"] = callback_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        # A POST is retried only when it carries an idempotency key: a repeat then returns the same job.
        return self._call("POST", "/jobs", body, headers=headers, retry=bool(idempotency_key))

    def per_run_execute(
        self,
        digits: int,
        *,
        stack_name: str | None = None,
        cost_center: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """The original service's call (``POST /PerRunExecute``): N digits of pi."""
        body: dict[str, Any] = {"DigitsToCalculate": digits}
        if stack_name is not None:
            body["StackName"] = stack_name
        if cost_center is not None:
            body["CostCenter"] = cost_center
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/PerRunExecute", body, headers=headers, retry=bool(idempotency_key))

    def get(self, job_id: str) -> dict[str, Any]:
        """The job: status, progress, timestamps, error and history, and its result with a download URL."""
        return self._call("GET", f"/jobs/{_quote(job_id)}")

    def result_url(self, job_id: str) -> str:
        """The short-lived download URL of the job's result (``GET /jobs/{id}/result``, a redirect);
        ApiError 409 while it has none, 410 once it expired."""
        request = self._request("GET", f"/jobs/{_quote(job_id)}/result", None, {})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302, 303, 307) and exc.headers.get("Location"):
                return str(exc.headers["Location"])
            raise api_error(exc.code, exc.read(), exc.headers) from None
        except (urllib.error.URLError, OSError) as exc:
            raise TransportError(f"cannot reach {self.base_url}: {getattr(exc, 'reason', exc)}") from None
        raise TransportError(f"the result route answered without a redirect ({len(raw)} bytes)")

    def openapi(self) -> dict[str, Any]:
        """The API's OpenAPI document (needs no key)."""
        return self._call("GET", "/openapi.json")

    def console_url(self) -> str:
        """The customer console's address, to open in a browser (a web page: it asks for the key itself)."""
        return f"{self.base_url}/console"

    def functions(self) -> list[dict[str, Any]]:
        """The business functions this API offers, each with its parameter schema and limits."""
        return list(self._call("GET", "/functions")["functions"])

    def function(self, name: str) -> dict[str, Any]:
        """One business function: its parameter schema and this deployment's limits."""
        return self._call("GET", f"/functions/{_quote(name)}")

    def list_jobs(
        self,
        *,
        limit: int | None = None,
        next_token: str | None = None,
        function: str | None = None,
        status: str | None = None,
        name_contains: str | None = None,
    ) -> dict[str, Any]:
        """One page of your jobs, newest first: ``{"jobs": [...], "next": <token or None>}``; ``function``,
        ``status`` and ``name_contains`` keep only the jobs that match them all."""
        pairs = (
            ("limit", limit),
            ("next", next_token),
            ("function", function),
            ("status", status),
            ("name_contains", name_contains),
        )
        query = {k: str(v) for k, v in pairs if v is not None}
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return self._call("GET", f"/jobs{suffix}")

    def iter_jobs(
        self,
        *,
        limit: int | None = None,
        function: str | None = None,
        status: str | None = None,
        name_contains: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every job, newest first, following ``next`` page by page (``limit`` is the page size)."""
        token: str | None = None
        while True:
            page = self.list_jobs(
                limit=limit, next_token=token, function=function, status=status, name_contains=name_contains
            )
            yield from page.get("jobs", [])
            token = page.get("next")
            if not token:
                return

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job that has not finished (ApiError 409 once it has); returns the job."""
        return self._call("DELETE", f"/jobs/{_quote(job_id)}")

    def wait(
        self,
        job_id: str,
        *,
        interval: float = 1.0,
        timeout: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job is terminal (``on_update`` sees each reading); WaitTimeoutError on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(job)
            if is_terminal(job):
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(job, timeout or 0.0)
            self._sleep(interval)

    def download_result(self, job: dict[str, Any], destination: Path) -> Download:
        """Fetch the job's result through its presigned URL into ``destination``, checked against the record.

        The bytes go to ``<destination>.part`` first and are renamed only when byte count and sha256 match;
        on a mismatch the partial file is removed and IntegrityError raised.
        """
        result = job.get("result") or {}
        url = result.get("url")
        if not url:
            raise IntegrityError(f"job {job.get('job_id')} has no result URL (status {job.get('status')})")
        partial = destination.with_name(destination.name + ".part")
        try:
            size, digest = self._fetch_to(url, partial)
            problem = integrity_problem(size, digest, result)
            if problem:
                raise IntegrityError(problem)
            partial.replace(destination)
        finally:
            partial.unlink(missing_ok=True)
        return Download(destination, size, digest)

    # ---- uploads -----------------------------------------------------------------------------------------
    def create_upload(self, filename: str, bytes: int, sha256: str) -> dict[str, Any]:
        """Declare a file (``POST /uploads``): ``{upload_id, url, fields, expires_at}``, a presigned POST that
        takes exactly that file (see ``send_upload``)."""
        return self._call("POST", "/uploads", {"filename": filename, "bytes": bytes, "sha256": sha256})

    # ---- webhooks (docs/webhooks.md) -----------------------------------------------------------------
    def add_webhook(
        self, url: str, *, events: list[str] | None = None, description: str | None = None
    ) -> dict[str, Any]:
        """Register ``url`` for your jobs' events (all types unless ``events``); the answer's ``secret``
        signs every delivery and is shown this once."""
        body: dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = events
        if description is not None:
            body["description"] = description
        return self._call("POST", "/webhooks", body)

    def list_webhooks(self) -> dict[str, Any]:
        """Your webhooks: ``{"webhooks": [...]}``, each active, failing or disabled."""
        return self._call("GET", "/webhooks")

    def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        """One webhook (never its secret)."""
        return self._call("GET", f"/webhooks/{_quote(webhook_id)}")

    def remove_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Remove a webhook; answers it as it was."""
        return self._call("DELETE", f"/webhooks/{_quote(webhook_id)}")

    def test_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Send a ``webhook.test`` event to the webhook (see ``webhook_deliveries`` for how it went)."""
        return self._call("POST", f"/webhooks/{_quote(webhook_id)}/test")

    def webhook_deliveries(self, webhook_id: str) -> dict[str, Any]:
        """The webhook's recent deliveries: ``{"deliveries": [...]}``, newest first."""
        return self._call("GET", f"/webhooks/{_quote(webhook_id)}/deliveries")

    def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        """A new signing secret, shown once; the old one also signs for 24 hours."""
        return self._call("POST", f"/webhooks/{_quote(webhook_id)}/rotate-secret")

    def get_upload(self, upload_id: str) -> dict[str, Any]:
        """An upload: PENDING until pijobs checked the file, then AVAILABLE or REJECTED (with a reason)."""
        return self._call("GET", f"/uploads/{_quote(upload_id)}")

    def list_uploads(self, *, limit: int | None = None, next_token: str | None = None) -> dict[str, Any]:
        """One page of your uploads, newest first: ``{"uploads": [...], "next": <token or None>}``."""
        query = {k: str(v) for k, v in (("limit", limit), ("next", next_token)) if v is not None}
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        return self._call("GET", f"/uploads{suffix}")

    def iter_uploads(self, *, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Every upload, newest first, following ``next`` page by page."""
        token: str | None = None
        while True:
            page = self.list_uploads(limit=limit, next_token=token)
            yield from page.get("uploads", [])
            token = page.get("next")
            if not token:
                return

    def delete_upload(self, upload_id: str) -> dict[str, Any]:
        """Delete an upload, its record and its file; returns it as it was."""
        return self._call("DELETE", f"/uploads/{_quote(upload_id)}")

    def send_upload(
        self, created: dict[str, Any], path: Path, *, on_progress: Progress | None = None
    ) -> None:
        """POST the file at ``path`` to a created upload's presigned URL: a multipart form of its ``fields``
        and then the file, streamed (no API key: the URL is the authority)."""
        size = path.stat().st_size
        boundary = uuid.uuid4().hex
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in created["fields"].items()
        )
        safe_name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            sent = 0
            with path.open("rb") as source:
                while chunk := source.read(_UPLOAD_CHUNK):
                    sent += len(chunk)
                    if on_progress is not None:
                        on_progress("send", sent, size)
                    yield chunk
            yield tail

        request = urllib.request.Request(str(created["url"]), data=body(), method="POST")
        request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        request.add_header("Content-Length", str(len(head) + size + len(tail)))
        request.add_header("User-Agent", USER_AGENT)
        try:
            with urllib.request.urlopen(request, timeout=max(self._timeout, 300.0)) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:2000].decode("utf-8", "replace")
            code = detail.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in detail else ""
            raise UploadRefusedError(f"the storage refused the file: {exc.code} {code}".rstrip()) from None
        except (urllib.error.URLError, OSError) as exc:
            raise TransportError(f"cannot send the file: {getattr(exc, 'reason', exc)}") from None

    def wait_upload(
        self, upload_id: str, *, interval: float = 0.5, timeout: float | None = None
    ) -> dict[str, Any]:
        """Poll until pijobs has checked the file: AVAILABLE, or REJECTED (UploadRefusedError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            upload = self.get_upload(upload_id)
            if upload.get("status") == "AVAILABLE":
                return upload
            if upload.get("status") == "REJECTED":
                raise UploadRefusedError(f"upload {upload_id} was REJECTED: {upload.get('reason')}", upload)
            if deadline is not None and time.monotonic() >= deadline:
                raise PijobsClientError(
                    f"upload {upload_id} is still {upload.get('status')} after {timeout:g} s"
                )
            self._sleep(interval)

    def upload_file(
        self,
        path: Path,
        *,
        filename: str | None = None,
        wait: bool = True,
        timeout: float | None = 600.0,
        on_progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Upload a file whole: its sha256 computed while reading it, declared, sent, and (``wait``) checked
        by pijobs. Returns the upload (AVAILABLE); UploadRefusedError when it is REJECTED."""
        size, sha256 = file_digest(path, on_progress=on_progress)
        created = self.create_upload(filename or path.name, size, sha256)
        self.send_upload(created, path, on_progress=on_progress)
        if not wait:
            return self.get_upload(str(created["upload_id"]))
        return self.wait_upload(str(created["upload_id"]), timeout=timeout)

    # ---- plumbing ----------------------------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        retry: bool | None = None,
    ) -> dict[str, Any]:
        retry = method in ("GET", "DELETE") if retry is None else retry
        attempts = self._retries if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._send(method, path, body, headers or {})
            except ApiError as exc:
                if exc.status not in RETRYABLE_STATUS or attempt == attempts:
                    raise
            except TransportError:
                if attempt == attempts:
                    raise
            self._sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> dict[str, Any]:
        request = self._request(method, path, body, headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise api_error(exc.code, exc.read(), exc.headers) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransportError(f"cannot reach {self.base_url}: {reason}") from None
        try:
            answer = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TransportError(f"{method} {path}: the answer is not JSON") from exc
        return answer if isinstance(answer, dict) else {"value": answer}

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> urllib.request.Request:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("x-api-key", self._api_key)
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in headers.items():
            request.add_header(name, value)
        return request

    def stream_result(self, job: dict[str, Any], out: BinaryIO) -> tuple[int, str]:
        """Write the job's result to ``out`` as it arrives (e.g. stdout), then check it against the record.

        Unlike ``download_result`` the bytes are out before the check: a mismatch raises IntegrityError
        after the fact, and the caller must say that what was written is not the result.
        """
        result = job.get("result") or {}
        url = result.get("url")
        if not url:
            raise IntegrityError(f"job {job.get('job_id')} has no result URL (status {job.get('status')})")
        size, digest = self._fetch_into(url, out)
        problem = integrity_problem(size, digest, result)
        if problem:
            raise IntegrityError(problem)
        return size, digest

    def _fetch_to(self, url: str, path: Path) -> tuple[int, str]:
        """Stream ``url`` (a presigned URL: no API key) into ``path``; return (bytes, sha256)."""
        with path.open("wb") as out:
            return self._fetch_into(url, out)

    def _fetch_into(self, url: str, out: BinaryIO) -> tuple[int, str]:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                received = digests.digest_chunks(digests.read_chunks(response, _CHUNK), sink=out.write)
        except urllib.error.HTTPError as exc:
            raise api_error(exc.code, exc.read(), exc.headers) from None
        except urllib.error.URLError as exc:
            raise TransportError(f"cannot download the result: {exc.reason}") from None
        return received.bytes, received.sha256


def file_digest(path: Path, *, on_progress: Progress | None = None) -> tuple[int, str]:
    """(bytes, sha256 hex) of a file, read once in chunks."""
    size = os.path.getsize(path)
    report = None if on_progress is None else (lambda done: on_progress("hash", done, size))
    hashed = digests.file_digest(path, chunk=_UPLOAD_CHUNK, on_progress=report)
    return hashed.bytes, hashed.sha256


def integrity_problem(size: int, sha256: str, expected: dict[str, Any]) -> str | None:
    """None when ``size`` and ``sha256`` match the job's result record, else what differs."""
    problems = []
    if expected.get("bytes") is not None and int(expected["bytes"]) != size:
        problems.append(f"{size} bytes, expected {expected['bytes']}")
    if expected.get("sha256") and str(expected["sha256"]).lower() != sha256:
        problems.append(f"sha256 {sha256}, expected {expected['sha256']}")
    return "download does not match the job's result: " + "; ".join(problems) if problems else None


def _quote(job_id: str) -> str:
    return urllib.parse.quote(job_id, safe="")


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes | str) -> dict[str, Any]:
    """A delivery's payload, once its Standard Webhooks signature (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``) is ``secret``'s and its timestamp within five minutes; else WebhookSignatureError.
    ``body`` is the request's body exactly as received."""
    raw = body.encode() if isinstance(body, str) else body
    if not verify(secret, dict(headers), raw, now=time.time()):
        raise WebhookSignatureError("the webhook's signature does not verify (or its timestamp is stale)")
    return dict(json.loads(raw))


class WebhookSignatureError(PijobsClientError):
    """A webhook delivery whose signature is not the secret's, or whose timestamp is too old."""
