"""A local API Gateway (REST API, Lambda proxy integration) in front of a plain handler function.

It does what API Gateway does before and after the Lambda: matches the request to a resource, checks
``x-api-key`` against the enabled keys of a usage plan held in moto's API Gateway, applies the plan's
throttle per key, builds the proxy event (format 1.0) and turns the handler's answer back into HTTP, with
API Gateway's own error bodies (403 ``Forbidden``, 403 ``Missing Authentication Token``, 429, 502).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog

from pijobs.api_handler.routes import KEYLESS, ROUTES
from pijobs.deploy import template_path
from pijobs.local.cfn import load_template, resources_of_type
from pijobs.local.lambda_context import LambdaContext

log = structlog.get_logger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
DEFAULT_ROUTES: tuple[str, ...] = tuple(ROUTES)  # the API's resources, as the primary template declares them
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request payload limit
_KEY_CACHE_TTL_S = 2.0
_MAX_UNKNOWN_KEYS = 1000
_REQUEST_TIMEOUT_S = 5.0  # for each read of a request's line, headers and body
_STOP_JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class GatewayResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class GatewayRequest:
    method: str
    target: str  # path and query string as sent
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str


@dataclass(frozen=True)
class GatewayError:
    """One of API Gateway's own answers: its response type, default status, message and error type."""

    response_type: str
    status: int
    message: str
    error_type: str


FORBIDDEN = GatewayError("INVALID_API_KEY", 403, "Forbidden", "ForbiddenException")
MISSING_TOKEN = GatewayError(
    "MISSING_AUTHENTICATION_TOKEN", 403, "Missing Authentication Token", "MissingAuthenticationTokenException"
)
TOO_MANY_REQUESTS = GatewayError("THROTTLED", 429, "Too Many Requests", "TooManyRequestsException")
INTERNAL_ERROR = GatewayError("DEFAULT_5XX", 502, "Internal server error", "InternalServerErrorException")
TOO_LARGE = GatewayError("REQUEST_TOO_LARGE", 413, "Request Too Long", "RequestEntityTooLargeException")


@dataclass(frozen=True)
class GatewayResponses:
    """The ``AWS::ApiGateway::GatewayResponse`` resources of a template: response type -> (status, body
    template), rendered like API Gateway renders them; without one, API Gateway's ``{"message": ...}``."""

    templates: dict[str, tuple[int | None, str]] = field(default_factory=dict)

    @classmethod
    def from_template(cls, path: Path) -> GatewayResponses:

        found: dict[str, tuple[int | None, str]] = {}
        for props in resources_of_type(load_template(path), "AWS::ApiGateway::GatewayResponse").values():
            body = (props.get("ResponseTemplates") or {}).get("application/json")
            status = props.get("StatusCode")
            if props.get("ResponseType") and body:
                found[props["ResponseType"]] = (int(status) if status else None, body)
        return cls(found)

    def render(self, error: GatewayError, request_id: str, message: str | None = None) -> GatewayResponse:
        message = message or error.message
        default = "DEFAULT_5XX" if error.status >= 500 else "DEFAULT_4XX"
        status, template = (
            self.templates.get(error.response_type) or self.templates.get(default) or (None, "")
        )
        if template:
            body = (
                template.replace("$context.error.messageString", json.dumps(message))
                .replace("$context.error.responseType", error.response_type)
                .replace("$context.requestId", request_id)
                .encode()
            )
        else:
            body = json.dumps({"message": message}).encode()
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error.error_type)]
        return GatewayResponse(status or error.status, headers, body)


def primary_gateway_responses() -> GatewayResponses:
    """The responses the primary template declares (the checkout's infra/, or the package's copy)."""

    return GatewayResponses.from_template(template_path("primary.yaml"))


# --- routes -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    resource: str
    pattern: re.Pattern[str]
    literal_segments: int


def compile_route(resource: str) -> Route:
    """``/jobs/{id}`` -> a regex capturing ``id``; ``{name+}`` is a greedy proxy parameter."""
    parts: list[str] = []
    literals = 0
    for segment in resource.strip("/").split("/") if resource != "/" else []:
        greedy = re.fullmatch(r"\{(\w+)\+\}", segment)
        param = re.fullmatch(r"\{(\w+)\}", segment)
        if greedy:
            parts.append(f"(?P<{greedy.group(1)}>.+)")
        elif param:
            parts.append(f"(?P<{param.group(1)}>[^/]+)")
        else:
            parts.append(re.escape(segment))
            literals += 1
    return Route(resource, re.compile("/" + "/".join(parts)), literals)


def _event_body(body: bytes) -> dict[str, Any]:
    """Text as text; bytes that are not UTF-8 base64-encoded (never silently replaced), for the handler
    to refuse."""
    if not body:
        return {"body": None, "isBase64Encoded": False}
    try:
        return {"body": body.decode("utf-8"), "isBase64Encoded": False}
    except UnicodeDecodeError:
        return {"body": base64.b64encode(body).decode("ascii"), "isBase64Encoded": True}


def match_route(routes: Sequence[Route], path: str) -> tuple[str, dict[str, str] | None] | None:
    """The resource serving ``path`` and its path parameters; literal segments win over parameters."""
    for route in sorted(routes, key=lambda r: -r.literal_segments):
        match = route.pattern.fullmatch(path)
        if match:
            params = {name: unquote(value) for name, value in match.groupdict().items()}
            return route.resource, params or None
    return None


# --- API keys and throttling --------------------------------------------------------------------------------


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class UsagePlanKeys:
    """The enabled API keys of one usage plan and its throttle, read from API Gateway and cached briefly."""

    def __init__(self, apigw_client: Any, usage_plan_id: str, *, ttl_s: float = _KEY_CACHE_TTL_S) -> None:
        self._apigw = apigw_client
        self._plan_id = usage_plan_id
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}  # key value -> key id, enabled keys only
        self._throttle: tuple[float, float] | None = None
        self._loaded_at = float("-inf")
        self._buckets: dict[str, _Bucket] = {}
        self._unknown: dict[str, float] = {}  # bad key value -> when it was last checked

    def key_id(self, value: str) -> str | None:
        """The id of the enabled key with this value, attached to the plan; None otherwise.

        A value not seen lately re-reads the plan at once, so a key made a moment ago works; a bad value
        repeated within the cache lifetime does not.
        """
        self._refresh_if_stale(self._ttl_s)
        key_id = self._keys.get(value)
        if key_id is None and self._is_new_unknown(value):
            self._refresh_if_stale(0.0)
            key_id = self._keys.get(value)
        return key_id

    def _is_new_unknown(self, value: str) -> bool:
        now = time.monotonic()
        with self._lock:
            checked_at = self._unknown.get(value)
            if checked_at is not None and now - checked_at < self._ttl_s:
                return False
            if len(self._unknown) > _MAX_UNKNOWN_KEYS:
                self._unknown.clear()
            self._unknown[value] = now
            return True

    def allow(self, key_id: str) -> bool:
        """Token bucket per key with the plan's rateLimit/burstLimit; no throttle set allows all."""
        self._refresh_if_stale(self._ttl_s)
        throttle = self._throttle
        if throttle is None:
            return True
        rate, burst = throttle
        with self._lock:
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = _Bucket(rate, burst, burst)
            bucket.rate, bucket.burst = rate, burst
            return bucket.take()

    def _refresh_if_stale(self, max_age_s: float) -> None:
        with self._lock:
            if time.monotonic() - self._loaded_at < max_age_s:
                return
            try:
                self._keys = self._load_keys()
                self._throttle = self._load_throttle()
            except Exception as exc:  # keep serving with what we had; moto may be restarting
                log.warning("usage_plan_refresh_failed", usage_plan_id=self._plan_id, error=repr(exc))
            self._loaded_at = time.monotonic()

    def _load_keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for item in self._plan_key_items():
            try:
                key = self._apigw.get_api_key(apiKey=item["id"], includeValue=True)
            except self._apigw.exceptions.NotFoundException:
                continue  # deleted while still listed on the plan (moto keeps the plan's entry): not valid
            if key.get("enabled") and key.get("value"):
                keys[str(key["value"])] = str(key["id"])
        return keys

    def _plan_key_items(self) -> Iterable[dict[str, Any]]:
        kwargs: dict[str, Any] = {"usagePlanId": self._plan_id, "limit": 500}
        while True:
            page = self._apigw.get_usage_plan_keys(**kwargs)
            yield from page.get("items", [])
            if not page.get("position"):
                return
            kwargs["position"] = page["position"]

    def _load_throttle(self) -> tuple[float, float] | None:
        throttle = self._apigw.get_usage_plan(usagePlanId=self._plan_id).get("throttle") or {}
        if "rateLimit" not in throttle and "burstLimit" not in throttle:
            return None
        rate = float(throttle.get("rateLimit", 0.0))
        burst = float(throttle.get("burstLimit", 0) or max(1.0, rate))
        return rate, burst


# --- events -------------------------------------------------------------------------------------------------


def _multi(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        multi.setdefault(name, []).append(value)
    return multi


def build_proxy_event(
    request: GatewayRequest,
    *,
    resource: str,
    path_parameters: dict[str, str] | None,
    stage: str,
    api_key: str | None,
    api_key_id: str | None,
    request_id: str,
) -> dict[str, Any]:
    """The REST API Lambda proxy event (payload format 1.0) for ``request``."""
    split = urlsplit(request.target)
    path = unquote(split.path)
    headers = [*request.headers, ("X-Forwarded-For", request.source_ip), ("X-Forwarded-Proto", "http")]
    multi_headers = _multi(headers)
    multi_query = _multi(parse_qsl(split.query, keep_blank_values=True))
    user_agent = next((v for k, v in request.headers if k.lower() == "user-agent"), None)
    now = time.time()
    return {
        "resource": resource,
        "path": path,
        "httpMethod": request.method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        **_event_body(request.body),
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "resourceId": "local",
            "resourcePath": resource,
            "httpMethod": request.method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "protocol": "HTTP/1.1",
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTime": formatdate(now, usegmt=True),
            "requestTimeEpoch": int(now * 1000),
            "domainName": "localhost",
            "identity": {
                "sourceIp": request.source_ip,
                "userAgent": user_agent,
                "apiKey": api_key,
                "apiKeyId": api_key_id,
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "user": None,
                "userArn": None,
            },
        },
    }


def proxy_response(result: Any) -> GatewayResponse:
    """Turn a handler's proxy result into HTTP; a malformed result is API Gateway's 502."""
    if not isinstance(result, dict):
        raise ValueError("malformed Lambda proxy response: not an object")
    status = int(result.get("statusCode", 200))
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        raise ValueError("malformed Lambda proxy response: body is not a string")
    raw = b""
    if body:
        raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    headers: list[tuple[str, str]] = []
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((name, str(value)) for value in values)
    for name, value in (result.get("headers") or {}).items():
        if not any(existing.lower() == name.lower() for existing, _ in headers):
            headers.append((name, str(value)))
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return GatewayResponse(status, headers, raw)


# --- the gateway --------------------------------------------------------------------------------------------


class LocalGateway:
    """An HTTP server on ``host:port`` that serves ``handler`` the way API Gateway would, at the root URL."""

    def __init__(
        self,
        handler: Handler,
        apigw_client: Any,
        usage_plan_id: str,
        *,
        stage: str = "local",
        host: str = "127.0.0.1",
        port: int = 0,
        routes: Sequence[str] = DEFAULT_ROUTES,
        keyless: frozenset[tuple[str, str]] = KEYLESS,
        function_name: str = "api_handler",
        timeout_s: float = 29.0,
        responses: GatewayResponses | None = None,
        request_timeout_s: float = _REQUEST_TIMEOUT_S,
    ) -> None:
        self._handler = handler
        self.responses = responses if responses is not None else primary_gateway_responses()
        self._keys = UsagePlanKeys(apigw_client, usage_plan_id)
        self._stage = stage
        self._host = host
        self._port = port
        self._routes = [compile_route(resource) for resource in routes]
        self._keyless = keyless
        self._function_name = function_name
        self._timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s
        self._server: _GatewayHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalGateway is not started")
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalGateway is not started")
        return int(self._server.server_port)

    def start(self) -> LocalGateway:
        if self._server is not None:
            return self
        self._server = _GatewayHTTPServer((self._host, self._port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-gateway", daemon=True)
        self._thread.start()
        log.info("gateway_started", url=self.url, stage=self._stage)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.join_connections(_STOP_JOIN_TIMEOUT_S)
        if thread is not None:
            thread.join(timeout=_STOP_JOIN_TIMEOUT_S)
        self._server = None
        self._thread = None
        log.info("gateway_stopped")

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def respond(self, request: GatewayRequest) -> GatewayResponse:
        """API Gateway's pipeline for one request: route, API key, throttle, handler."""
        request_id = str(uuid.uuid4())
        outcome = self._respond(request, request_id)
        response = (
            self.responses.render(outcome, request_id) if isinstance(outcome, GatewayError) else outcome
        )
        return GatewayResponse(
            response.status, [*response.headers, ("x-amzn-RequestId", request_id)], response.body
        )

    def _respond(self, request: GatewayRequest, request_id: str) -> GatewayResponse | GatewayError:
        # Routing reads the path as sent: an encoded slash (%2F) is part of a segment, never a separator.
        matched = match_route(self._routes, urlsplit(request.target).path)
        if matched is None:
            return MISSING_TOKEN
        if len(request.body) > MAX_PAYLOAD_BYTES:
            return TOO_LARGE
        resource, path_parameters = matched
        api_key = key_id = None  # a method without ApiKeyRequired: no key is read, none is passed on
        if (request.method.upper(), resource) not in self._keyless:
            api_key = next((v for k, v in request.headers if k.lower() == "x-api-key"), None)
            key_id = self._keys.key_id(api_key) if api_key else None
            if key_id is None:
                return FORBIDDEN
            if not self._keys.allow(key_id):
                log.info("gateway_throttled", api_key_id=key_id)
                return TOO_MANY_REQUESTS
        # Links the API builds come from the gateway's own address, never from what the client sent as Host
        # (on AWS, API Gateway sets Host to its own domain the same way).
        own_host = urlsplit(self.url).netloc
        headers = [(k, v) for k, v in request.headers if k.lower() != "host"] + [("Host", own_host)]
        event = build_proxy_event(
            replace(request, headers=headers),
            resource=resource,
            path_parameters=path_parameters,
            stage=self._stage,
            api_key=api_key,
            api_key_id=key_id,
            request_id=request_id,
        )
        return self._invoke(event, request_id)

    def _invoke(self, event: dict[str, Any], request_id: str) -> GatewayResponse | GatewayError:
        context = LambdaContext(self._function_name, timeout_s=self._timeout_s, aws_request_id=request_id)
        try:
            return proxy_response(self._handler(event, context))
        except Exception:
            log.exception("gateway_handler_failed", request_id=request_id, resource=event["resource"])
            return INTERNAL_ERROR


class _GatewayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the listen backlog: a burst of new connections waits instead of being reset

    def __init__(self, address: tuple[str, int], gateway: LocalGateway) -> None:
        self.gateway = gateway
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="gateway-connection",
            daemon=True,
        )
        with self._connections_lock:
            self._connections[thread] = request
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)

    def join_connections(self, timeout_s: float) -> None:
        """End idle keep-alive connections at once, then wait (bounded) for requests in progress."""
        deadline = time.monotonic() + timeout_s
        with self._connections_lock:
            connections = list(self._connections.items())
        for _, sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        for thread, _ in connections:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("gateway_connection_error", client=str(client_address), exc_info=True)


_DECIMAL = re.compile(r"[0-9]{1,20}")
_HEX = re.compile(r"[0-9A-Fa-f]{1,16}")
_CHUNK_LINE_LIMIT = 1024  # a chunk size and its extensions


def _framing_number(text: str, pattern: re.Pattern[str], base: int) -> int:
    """A Content-Length (decimal) or chunk size (hex) as HTTP/1.1 writes it: digits only. Python's int()
    also takes ``6_3``, ``+5``, `` 5`` and ``-1``; a server that does reads a body other than the one sent."""
    if not pattern.fullmatch(text):
        raise ValueError(f"not a valid length: {text!r}")
    return int(text, base)


class _TooLargeError(Exception):
    """The request body is over MAX_PAYLOAD_BYTES."""


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pijobs-local-gateway"
    sys_version = ""
    timeout = _REQUEST_TIMEOUT_S
    server: _GatewayHTTPServer

    def handle_one_request(self) -> None:
        """Between requests the client alone ends a kept-alive connection (or the gateway's stop does): one
        closed on an idle timer races a client that has just chosen to reuse it, which then sees the
        connection close without an answer. Once a request has begun, each read must come within the
        request timeout."""
        self.connection.settimeout(None)
        try:
            begun = cast(io.BufferedReader, self.rfile).peek(1)  # what is buffered, or waits for it
        except OSError:
            begun = b""
        if not begun:  # the client closed it, or stop() shut it down
            self.close_connection = True
            return
        self.connection.settimeout(self.server.gateway.request_timeout_s)
        super().handle_one_request()

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except _TooLargeError:
            self.close_connection = True  # the rest of the body is never read
            self._write(self.server.gateway.responses.render(TOO_LARGE, str(uuid.uuid4())))
            return
        except ValueError:
            self.send_error(400, "Bad request body")
            return
        request = GatewayRequest(
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body=body,
            source_ip=str(self.client_address[0]),
        )
        self._write(self.server.gateway.respond(request))

    def _read_body(self) -> bytes:
        """The body, refused before it is read (or, chunked, as soon as it grows) past the payload limit.

        Framing is read strictly: a Content-Length is plain decimal digits and given once, a chunk size plain
        hex digits; anything else (``6_3``, ``+5``, ``-1``, `` 5``, a body shorter than it said) is a 400,
        never a guess at what the client meant.
        """
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            raise ValueError("more than one Content-Length")
        length = _framing_number(lengths[0], _DECIMAL, 10) if lengths else 0
        if length > MAX_PAYLOAD_BYTES:
            raise _TooLargeError
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            raise ValueError("the body is shorter than its Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(_CHUNK_LINE_LIMIT)
            if not line.endswith(b"\r\n"):
                raise ValueError("a chunk size line without its CRLF")
            size = _framing_number(line[:-2].split(b";")[0].decode("latin-1"), _HEX, 16)
            if size == 0:
                while self.rfile.readline(8192).strip():  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_PAYLOAD_BYTES:
                raise _TooLargeError
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(_CHUNK_LINE_LIMIT) != b"\r\n":
                raise ValueError("a chunk shorter than its size, or not followed by CRLF")
            chunks.append(chunk)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (unknown method, bad request line, HTTP/2.0) as JSON, like every other answer."""
        self.close_connection = True
        if code == 501:  # a method no route has: the client's fault, not a server error
            code, message = 405, f"the method {self.command!r} is not allowed"
        text = message or self.responses.get(code, ("Error",))[0]
        # The client's fault whatever the status (405 unknown method, 505 version): DEFAULT_4XX's envelope.
        error = GatewayError("DEFAULT_4XX", code, text, "BadRequestException")
        response = self.server.gateway.responses.render(error, str(uuid.uuid4()))
        if self.command is None or self.request_version in ("HTTP/0.9", None):
            self.request_version = "HTTP/1.1"
        self._write(replace(response, status=code))

    def _write(self, response: GatewayResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if not any(name.lower() == "x-content-type-options" for name, _ in response.headers):
            self.send_header("X-Content-Type-Options", "nosniff")  # every answer, errors included
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve
