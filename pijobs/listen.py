"""A local webhook receiver (``pijobs listen``): verifies each delivery's Standard Webhooks signature with
the secrets it was given and hands the verified events on (the CLI prints them; the benchmark counts them).

It answers 204 to a verified delivery, 401 to one no secret verifies (pijobs retries it: a receiver started
with the wrong secret loses nothing once restarted with the right one), 400 to a body that is not JSON.
It binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pijobs.shared.webhooks import verify

SECRET_ENV = "PIJOBS_WEBHOOK_SECRET"


@dataclass(frozen=True)
class Received:
    """One delivery: whether a secret verified it, its headers and payload, and when it arrived."""

    verified: bool
    message_id: str
    headers: dict[str, str]
    payload: dict[str, Any] | None
    received_at: float


class Listener:
    """``with Listener(secrets, on_event) as listener: listener.url``; ``answer`` decides each status."""

    def __init__(
        self,
        secrets: Sequence[str],
        on_event: Callable[[Received], None],
        *,
        port: int = 0,
        answer: Callable[[Received], int] | None = None,
    ) -> None:
        # the caller's list itself: a secret added later (a webhook registered once the URL is known) counts
        self.secrets = secrets if isinstance(secrets, list) else list(secrets)
        self._on_event = on_event
        self._answer = answer or (lambda received: 204 if received.verified else 401)
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                listener._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="listen", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in request.headers.items()}
        now = time.time()
        verified = any(verify(secret, headers, body, now=now) for secret in self.secrets)
        try:
            payload = json.loads(body) if verified else None
        except ValueError:
            payload = None
        received = Received(verified, headers.get("webhook-id", ""), headers, payload, now)
        status = self._answer(received)
        request.send_response(status)
        request.send_header("content-length", "0")
        request.end_headers()
        self._on_event(received)


def describe(received: Received) -> str:
    """One line for a terminal: the event's type, job, status and id."""
    if not received.verified or received.payload is None:
        return f"REFUSED  {received.message_id or '-'}  (no secret verifies its signature)"
    data = received.payload.get("data") or {}
    return "  ".join(
        str(part)
        for part in (
            received.payload.get("timestamp", ""),
            received.payload.get("type", ""),
            data.get("job_id") or data.get("webhook_id") or "",
            data.get("status") or "",
            received.message_id,
        )
        if part
    )
