"""moto's server, run in this process on 127.0.0.1, with the atomicity AWS gives and moto does not.

moto's backends mutate plain Python dicts without locks, and its threaded server handles each request in its
own thread. Two conditional writes that race can therefore both pass their condition, and two ``CreateStack``
calls with the same name can both create a stack. AWS makes each such call atomic; the middleware below does
the same by serialising DynamoDB requests behind one lock and CloudFormation requests behind another (a
``CreateStack`` can take a second in moto: DynamoDB does not wait for it). SQS is never serialised: its long
polls would hold the lock for seconds. Nor are DynamoDB Streams reads: they only read a shard's record list,
which writes only append to.

moto also keeps every model object it ever made in a list per class (for its dashboard): every item
written, every item a transaction saved for its rollback and, before pijobs.local.moto_transactions, a
copy of the whole table per transaction (the server grew past 5 GB with 10,000 jobs parked). After each
serialised request the middleware empties DynamoDB's lists (``forget_model_copies``); the tables
themselves keep what they hold.

The middleware also tells observers about each SQS, EC2 and CloudFormation request, each DynamoDB request (its
action only: its body is not parsed) and each presigned S3 POST once moto has answered it (service, action,
parameters), so the stand-ins wake on the calls that concern them instead of polling.
"""

from __future__ import annotations

import functools
import io
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import structlog
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

log = structlog.get_logger(__name__)

_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_SERIALISED_SERVICES = frozenset({"cloudformation", "dynamodb"})
_OBSERVED_SERVICES = frozenset({"cloudformation", "ec2", "sqs"})
_SQS_TARGET = "AmazonSQS."
_DYNAMODB_TARGET = "DynamoDB_"  # DynamoDB_20120810.PutItem; DynamoDB Streams' is DynamoDBStreams_...
# moto's services whose model objects it need not list (S3's lists let its reset close the files of keys).
_UNLISTED_SERVICES = ("dynamodb", "dynamodbstreams")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: Called after moto answered a request: (service, action, parameters), e.g. ("sqs", "SendMessage", {...})
#: or ("dynamodb", "TransactWriteItems", {}) (a DynamoDB request's parameters are not read).
RequestObserver = Callable[[str, str, dict[str, Any]], None]


def signed_service(environ: dict[str, Any]) -> str:
    """The service named in the SigV4 credential scope of a request ('' when unsigned)."""
    match = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return match.group(1) if match else ""


def serialised_service(environ: dict[str, Any]) -> str | None:
    """The service of a request AWS executes atomically and moto does not (DynamoDB, CloudFormation): the
    requests of one such service run one at a time. None for the others (DynamoDB Streams included: it is
    signed as ``dynamodb`` but only reads)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("DynamoDB_"):
        return "dynamodb"
    if target.startswith("DynamoDBStreams_"):
        return None
    service = signed_service(environ)
    return service if service in _SERIALISED_SERVICES else None


def forget_model_copies() -> None:
    """Empty the lists in which moto keeps every DynamoDB model object it made (copies of whole tables
    among them); the backends' own state is untouched."""
    from moto.core.model_instances import model_data

    for service in _UNLISTED_SERVICES:
        for model in model_data.get(service, {}).values():
            model.instances_tracked = []  # type: ignore[attr-defined]


def is_presigned_post(environ: dict[str, Any]) -> bool:
    """An S3 POST of a form (a presigned POST: unsigned, its policy and signature are form fields)."""
    return (
        environ.get("REQUEST_METHOD") == "POST"
        and not environ.get("HTTP_AUTHORIZATION")
        and environ.get("CONTENT_TYPE", "").startswith("multipart/form-data")
    )


def observed_request(environ: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """(service, action, parameters) of an SQS, EC2 or CloudFormation request, of a DynamoDB request (no
    parameters) or of a presigned S3 POST, None for the others.

    Reads the body (SQS's JSON protocol or the query protocol's form) and puts it back for moto.
    """
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    service = "sqs" if target.startswith(_SQS_TARGET) else signed_service(environ)
    if is_presigned_post(environ):
        return "s3", "PostObject", {}  # a file, maybe large: its body is moto's alone to read
    if target.startswith(_DYNAMODB_TARGET):
        return "dynamodb", target.partition(".")[2], {}
    if service not in _OBSERVED_SERVICES:
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    params: dict[str, Any] = {}
    if target.startswith(_SQS_TARGET):
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
        return service, target[len(_SQS_TARGET) :], params if isinstance(params, dict) else {}
    form = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")) | urllib.parse.parse_qs(body.decode())
    params = {key: values[-1] for key, values in form.items()}
    return service, str(params.pop("Action", "")), params


def _drain(result: Iterable[bytes]) -> list[bytes]:
    """The whole response, so that what it reports has happened before anyone is told."""
    try:
        return [b"".join(result)]
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


class SerialisingMiddleware:
    """Runs DynamoDB requests one at a time, and CloudFormation requests one at a time; everything else
    passes straight through. Observers hear of SQS, EC2, CloudFormation and DynamoDB requests after moto
    answered them."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._locks = {service: threading.Lock() for service in _SERIALISED_SERVICES}
        self._observers: list[RequestObserver] = []

    def observe(self, observer: RequestObserver) -> None:
        self._observers.append(observer)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = observed_request(environ) if self._observers else None
        serialised = serialised_service(environ)
        if serialised is not None:
            with self._locks[serialised]:
                response = _drain(self._app(environ, start_response))
                forget_model_copies()
        elif request is not None:
            response = _drain(self._app(environ, start_response))
        else:
            return self._app(environ, start_response)
        if request is not None:
            self._notify(*request)
        return response

    def _notify(self, service: str, action: str, params: dict[str, Any]) -> None:
        for observer in list(self._observers):
            try:
                observer(service, action, params)
            except Exception as exc:  # an observer's bug must not fail the AWS call
                log.warning("moto_observer_failed", action=action, error=repr(exc))


class _QuietRequestHandler(WSGIRequestHandler):
    """werkzeug logs one line per request; a local stack makes thousands."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def _create_app() -> SerialisingMiddleware:
    from moto.server import DomainDispatcherApplication, create_backend_app  # heavy import, done late

    from pijobs.local import (  # lazy: import moto, only when a server starts
        moto_dynamodb,
        moto_sqs,
        moto_transactions,
    )

    moto_transactions.install()
    moto_dynamodb.install()
    moto_sqs.install()
    _list_moto_modules_once()

    return SerialisingMiddleware(DomainDispatcherApplication(create_backend_app))


def _list_moto_modules_once() -> None:
    """moto's server finds the backend of each request under one lock of its own, and on the way lists
    its package's folders (some 200 ``isdir`` calls) to compare with the request's host: every request,
    the jobs table's included, waited on that listing. The folders do not change while it runs: list them
    once."""
    from moto import backends

    if not isinstance(backends.list_of_moto_modules, functools.partial):
        modules = tuple(backends.list_of_moto_modules())
        backends.list_of_moto_modules = functools.partial(iter, modules)


class LocalMotoServer:
    """moto's server on ``host:port`` (port 0 picks a free one) in a background thread of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._app: SerialisingMiddleware | None = None

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

    def observe(self, observer: RequestObserver) -> None:
        """Call ``observer`` after each request this server answered that ``observed_request`` describes."""
        if self._app is None:
            raise RuntimeError("LocalMotoServer is not started")
        self._app.observe(observer)

    def start(self) -> LocalMotoServer:
        if self._server is not None:
            return self
        self._app = _create_app()
        server = make_server(
            self._host, self._port, self._app, threaded=True, request_handler=_QuietRequestHandler
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
