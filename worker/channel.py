"""The worker's end of the worker channel: JSON over HTTP to the API, authenticated by the job's token.

Every call is retried with backoff while it fails transiently (connection refused or reset, a 5xx, 429);
a refusal (401, 403, 404, 409) is raised as ChannelRefusedError, and 410 (this attempt has ended: the job
was cancelled, timed out or given another attempt) as AttemptEndedError. A worker that cannot reach the
channel at all gives up after the backoff's budget and exits; the reaper then handles it as a lost worker.

The worker needs nothing but the standard library for this, and no AWS credentials (docs/security.md).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from pijobs.shared import errors
from pijobs.shared.channel import Operation
from pijobs.shared.retry import Backoff

CALL_TIMEOUT_SECONDS = 30

# (method, url, headers, body) -> (status, body): how a request reaches the API (urllib here; tests may
# call the handler in-process instead).
Send = Callable[[str, str, dict[str, str], bytes], "tuple[int, bytes]"]


class ChannelRefusedError(errors.PijobsError):
    """The platform refused a channel call (not transient): the status and the error envelope's code."""

    code = "channel_refused"

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"the worker channel answered {status} {code}: {message}")
        self.status = status
        self.code = code


class AttemptEndedError(errors.JobCancelledError):
    """410: the attempt this worker runs is over (cancelled, timed out, retried); it stops."""


class ChannelUnavailableError(Exception):
    """A 5xx or 429 answer: transient, retried by the backoff (is_transient reads ``response``)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the worker channel answered {status}")
        self.response = {"ResponseMetadata": {"HTTPStatusCode": 500 if status == 429 else status}}


def urllib_send(method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_SECONDS) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read() or b"")


class Channel:
    """The four operations of one job's attempt, as the worker calls them."""

    def __init__(
        self, api_url: str, job_id: str, token: str, *, backoff: Backoff, send: Send = urllib_send
    ) -> None:
        self._base = f"{api_url.rstrip('/')}/worker/jobs/{job_id}"
        self._token = token
        self._backoff = backoff
        self._send = send
        self.calls = 0  # how many calls were made (retries included), for the logs and the tests

    def __repr__(self) -> str:  # never the token
        return f"Channel({self._base!r})"

    def start(self, instance_id: str | None) -> dict[str, Any]:
        return self.call(Operation.START, {"instance_id": instance_id})

    def heartbeat(self, progress: float, *, retry: bool = True) -> dict[str, Any]:
        return self.call(Operation.HEARTBEAT, {"progress": progress}, retry=retry)

    def output(self, **declared: Any) -> dict[str, Any]:
        """``filename``, ``bytes``, ``sha256``, ``content_type``: a presigned POST for exactly that file."""
        return self.call(Operation.OUTPUT, declared)

    def finish(self, outcome: str, **fields: Any) -> dict[str, Any]:
        return self.call(Operation.FINISH, {"outcome": outcome, **fields})

    def call(self, operation: Operation, body: dict[str, Any], *, retry: bool = True) -> dict[str, Any]:
        data = json.dumps(body, allow_nan=False).encode()
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        url = f"{self._base}/{operation.value}"

        def once() -> dict[str, Any]:
            self.calls += 1
            status, raw = self._send("POST", url, headers, data)
            return _answer(status, raw)

        return self._backoff.call(f"channel_{operation.value}", once) if retry else once()


def _answer(status: int, raw: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw or b"{}")
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if 200 <= status < 300:
        return payload
    if status >= 500 or status == 429:
        raise ChannelUnavailableError(status)
    found = payload.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    code, message = str(error.get("code", "")), str(error.get("message", ""))[:300]
    if status == 410:
        raise AttemptEndedError(message or "this attempt has ended")
    raise ChannelRefusedError(status, code or "refused", message)
