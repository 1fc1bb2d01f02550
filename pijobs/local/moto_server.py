"""moto's server, run in this process on 127.0.0.1, with the atomicity AWS gives and moto does not.

moto's backends mutate plain Python dicts without locks, and its threaded server handles each request in its
own thread. Two conditional writes that race can therefore both pass their condition, and two ``CreateStack``
calls with the same name can both create a stack. AWS makes each such call atomic; the middleware below does
the same by serialising DynamoDB and CloudFormation requests behind one lock. SQS is never serialised: its
long polls would hold the lock for seconds.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import structlog
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

log = structlog.get_logger(__name__)

_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_SERIALISED_SERVICES = frozenset({"cloudformation", "dynamodb"})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def signed_service(environ: dict[str, Any]) -> str:
    """The service named in the SigV4 credential scope of a request ('' when unsigned)."""
    match = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return match.group(1) if match else ""


def is_serialised(environ: dict[str, Any]) -> bool:
    """True for requests AWS executes atomically and moto does not: DynamoDB and CloudFormation."""
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
        return True
    return signed_service(environ) in _SERIALISED_SERVICES


class SerialisingMiddleware:
    """Runs DynamoDB and CloudFormation requests one at a time; everything else passes straight through."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not is_serialised(environ):
            return self._app(environ, start_response)
        with self._lock:
            result = self._app(environ, start_response)
            try:
                return [b"".join(result)]  # the whole response is produced while the lock is held
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


class _QuietRequestHandler(WSGIRequestHandler):
    """werkzeug logs one line per request; a local stack makes thousands."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def _create_app() -> WsgiApp:
    from moto.server import DomainDispatcherApplication, create_backend_app  # heavy import, done late

    return SerialisingMiddleware(DomainDispatcherApplication(create_backend_app))


class LocalMotoServer:
    """moto's server on ``host:port`` (port 0 picks a free one) in a background thread of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalMotoServer is not started")
        return f"http://{self._host}:{self._server.server_port}"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalMotoServer is not started")
        return int(self._server.server_port)

    def start(self) -> LocalMotoServer:
        if self._server is not None:
            return self
        server = make_server(
            self._host, self._port, _create_app(), threaded=True, request_handler=_QuietRequestHandler
        )
        server.daemon_threads = True  # type: ignore[attr-defined]  # a ThreadedWSGIServer (threaded=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
        self._thread.start()
        log.info("moto_server_started", url=self.url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None
        log.info("moto_server_stopped")

    def __enter__(self) -> LocalMotoServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
