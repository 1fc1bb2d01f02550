"""The local stand-ins against a real in-process moto server: gateway, event source mapping, instance runner,
and the server's serialisation of DynamoDB and CloudFormation requests."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from structlog.testing import capture_logs

from pijobs.local import streams
from pijobs.local.esm import EsmSettings, LocalEventSourceMapping, failed_ids, settings_from
from pijobs.local.gateway import LocalGateway
from pijobs.local.moto_server import LocalMotoServer, SerialisingMiddleware
from pijobs.local.runner import InstanceRunner
from pijobs.local.stack import STREAM_WAKING_ACTIONS
from pijobs.local.streams import LocalStreamMapping

REGION = "us-east-1"
ClientFactory = Callable[[str], Any]


# --- helpers (kept in this file: the lead owns the conftest files) ------------------------------------------


def wait_for(condition: Callable[[], Any], timeout_s: float = 5.0, interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


class Calls:
    """How many ``operation`` calls the clients it watches have had answered (botocore's after-call event):
    the evidence that a poller has looked, where a test would otherwise sleep and hope it had."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.count = 0
        self._lock = threading.Lock()

    def watch(self, client: Any) -> Any:
        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f"after-call.{service}.{self.operation}", self._answered)
        return client

    def _answered(self, **_: Any) -> None:
        with self._lock:
            self.count += 1

    def wait_for_more(self, more: int, timeout_s: float = 15.0) -> None:
        """Until ``more`` calls were answered after this one: each looked at what is there now."""
        seen = self.count
        wait_for(lambda: self.count >= seen + more, timeout_s=timeout_s)


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie or a missing process is not alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Concurrency:
    """Counts how many calls are inside ``track()`` at once, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0

    def enter(self) -> None:
        with self._lock:
            self.current += 1
            self.peak = max(self.peak, self.current)

    def leave(self) -> None:
        with self._lock:
            self.current -= 1


@pytest.fixture(scope="module")
def moto_server() -> Iterator[LocalMotoServer]:
    with LocalMotoServer() as server:
        yield server


@pytest.fixture(scope="module")
def aws(moto_server: LocalMotoServer) -> ClientFactory:
    config = Config(retries={"mode": "standard", "max_attempts": 1}, read_timeout=30)
    session = boto3.session.Session()
    lock = threading.Lock()  # a session is not thread-safe while it creates clients

    def client(service: str) -> Any:
        with lock:
            return session.client(
                service,
                endpoint_url=moto_server.url,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=config,
            )

    return client


def test_server_serves_on_loopback_and_stops(aws: ClientFactory) -> None:
    """Probed with an AWS call (moto's own dashboard, /moto-api/data.json, answers 500 in a process that
    has deployed a Lambda function: listing it asks for a Docker client)."""

    def sqs(url: str) -> Any:
        config = Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5)
        return boto3.client("sqs", endpoint_url=url, region_name=REGION, config=config)

    with LocalMotoServer() as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert sqs(server.url).list_queues()["ResponseMetadata"]["HTTPStatusCode"] == 200
        url = server.url
    server.stop()  # idempotent
    with pytest.raises(EndpointConnectionError):
        sqs(url).list_queues()


def test_the_server_does_not_keep_every_item_moto_made(aws: ClientFactory) -> None:
    """moto lists every object it makes (each item written, each copy a transaction saves): the server must
    not grow by them."""
    from moto.dynamodb.models.dynamo_type import Item

    ddb, name = aws("dynamodb"), f"copies-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for n in range(20):
        ddb.transact_write_items(
            TransactItems=[{"Put": {"TableName": name, "Item": {"pk": {"S": f"item{n}"}}}}]
        )

    assert len(Item.instances_tracked) <= 2  # type: ignore[attr-defined]
    assert ddb.scan(TableName=name, Select="COUNT")["Count"] == 20


# --- gateway ------------------------------------------------------------------------------------------------


def echo_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event["path"] == "/PerRunExecute":
        raise RuntimeError("boom")
    return {
        "statusCode": 201,
        "headers": {"X-Echo": "yes"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
        "body": json.dumps({"event": event, "remaining_ms": context.get_remaining_time_in_millis()}),
    }


def make_key(apigw: Any, plan_id: str | None, *, enabled: bool = True) -> tuple[str, str]:
    key = apigw.create_api_key(name=f"k-{uuid.uuid4().hex[:8]}", enabled=enabled)
    if plan_id:
        apigw.create_usage_plan_key(usagePlanId=plan_id, keyId=key["id"], keyType="API_KEY")
    return key["id"], key["value"]


@pytest.fixture(scope="module")
def plan(aws: ClientFactory) -> str:
    return str(aws("apigateway").create_usage_plan(name=f"plan-{uuid.uuid4().hex[:8]}")["id"])


@pytest.fixture(scope="module")
def gateway(aws: ClientFactory, plan: str) -> Iterator[LocalGateway]:
    with LocalGateway(echo_handler, aws("apigateway"), plan) as gw:
        yield gw


def _envelope(response: requests.Response) -> dict[str, Any]:
    """The API's error envelope, which the template's GatewayResponses give API Gateway's own answers."""
    body = response.json()
    assert set(body) == {"error"} and response.headers["Content-Type"] == "application/json", body
    assert set(body["error"]) == {"code", "message", "details", "request_id"}
    return dict(body["error"])


def test_gateway_rejects_missing_wrong_disabled_and_foreign_keys(
    aws: ClientFactory, plan: str, gateway: LocalGateway
) -> None:
    apigw = aws("apigateway")
    _, disabled = make_key(apigw, plan, enabled=False)
    _, foreign = make_key(apigw, None)  # enabled, but on no plan
    for headers in ({}, {"x-api-key": "wrong"}, {"x-api-key": disabled}, {"x-api-key": foreign}):
        response = requests.get(f"{gateway.url}/jobs", headers=headers, timeout=5)
        assert response.status_code == 403
        assert _envelope(response)["code"] == "forbidden"


def test_gateway_builds_the_rest_proxy_event(aws: ClientFactory, plan: str, gateway: LocalGateway) -> None:
    key_id, key = make_key(aws("apigateway"), plan)

    response = requests.post(
        f"{gateway.url}/jobs/abc-123/result?x=1&y=2&y=3",
        headers={"X-Api-Key": key, "Idempotency-Key": "idem"},
        json={"digits": 10},
        timeout=5,
    )

    assert response.status_code == 201
    assert response.headers["X-Echo"] == "yes"
    assert response.headers["Content-Type"] == "application/json"
    assert "a=1" in response.headers["Set-Cookie"]
    event = response.json()["event"]
    assert response.json()["remaining_ms"] > 0
    assert event["resource"] == "/jobs/{id}/result"
    assert event["path"] == "/jobs/abc-123/result"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"id": "abc-123"}
    assert event["queryStringParameters"] == {"x": "1", "y": "3"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1"], "y": ["2", "3"]}
    assert json.loads(event["body"]) == {"digits": 10}
    assert event["isBase64Encoded"] is False
    assert event["headers"]["Idempotency-Key"] == "idem"
    assert event["multiValueHeaders"]["Idempotency-Key"] == ["idem"]
    context = event["requestContext"]
    assert context["resourcePath"] == "/jobs/{id}/result"
    assert context["path"] == "/local/jobs/abc-123/result"
    assert context["stage"] == "local"
    assert context["identity"]["apiKeyId"] == key_id
    assert context["identity"]["apiKey"] == key
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert response.headers["x-amzn-RequestId"] == context["requestId"]


def test_gateway_event_without_query_body_or_parameters(
    aws: ClientFactory, plan: str, gateway: LocalGateway
) -> None:
    _, key = make_key(aws("apigateway"), plan)

    event = requests.get(f"{gateway.url}/jobs", headers={"x-api-key": key}, timeout=5).json()["event"]

    assert event["resource"] == "/jobs"
    assert event["queryStringParameters"] is None
    assert event["pathParameters"] is None
    assert event["body"] is None


def test_gateway_reads_chunked_bodies(aws: ClientFactory, plan: str, gateway: LocalGateway) -> None:
    _, key = make_key(aws("apigateway"), plan)

    response = requests.post(
        f"{gateway.url}/jobs", headers={"x-api-key": key}, data=iter([b'{"digits":', b" 5}"]), timeout=5
    )

    assert json.loads(response.json()["event"]["body"]) == {"digits": 5}


def test_gateway_head_and_options_reach_the_handler(
    aws: ClientFactory, plan: str, gateway: LocalGateway
) -> None:
    _, key = make_key(aws("apigateway"), plan)

    head = requests.head(f"{gateway.url}/jobs/x", headers={"x-api-key": key}, timeout=5)
    options = requests.options(f"{gateway.url}/jobs/x", headers={"x-api-key": key}, timeout=5)

    assert head.status_code == 201
    assert head.content == b""
    assert options.json()["event"]["httpMethod"] == "OPTIONS"


def test_gateway_unknown_route_is_the_templates_not_found(
    aws: ClientFactory, plan: str, gateway: LocalGateway
) -> None:
    _, key = make_key(aws("apigateway"), plan)
    for path in ("/nope", "/jobs/a/b/c", "/"):
        response = requests.get(gateway.url + path, headers={"x-api-key": key}, timeout=5)
        assert response.status_code == 404  # the template's GatewayResponse turns API Gateway's 403 into 404
        assert _envelope(response)["code"] == "not_found"


def test_gateway_handler_error_is_502(aws: ClientFactory, plan: str, gateway: LocalGateway) -> None:
    _, key = make_key(aws("apigateway"), plan)

    response = requests.post(f"{gateway.url}/PerRunExecute", headers={"x-api-key": key}, json={}, timeout=5)

    assert response.status_code == 502
    assert _envelope(response) == {
        "code": "internal_error",
        "message": "internal error",
        "details": [],
        "request_id": response.headers["x-amzn-RequestId"],
    }


def test_gateway_accepts_a_new_key_within_seconds(
    aws: ClientFactory, plan: str, gateway: LocalGateway
) -> None:
    requests.get(f"{gateway.url}/jobs", headers={"x-api-key": "warm-the-cache"}, timeout=5)
    _, key = make_key(aws("apigateway"), plan)

    wait_for(
        lambda: requests.get(f"{gateway.url}/jobs", headers={"x-api-key": key}, timeout=5).status_code == 201,
        timeout_s=5,
        interval_s=0.3,
    )


def test_gateway_throttles_per_key_with_the_usage_plan(aws: ClientFactory) -> None:
    apigw = aws("apigateway")
    plan_id = apigw.create_usage_plan(name="throttled", throttle={"rateLimit": 1.0, "burstLimit": 2})["id"]
    _, key = make_key(apigw, plan_id)

    with LocalGateway(echo_handler, apigw, plan_id) as gw, requests.Session() as session:
        responses = [session.get(f"{gw.url}/jobs", headers={"x-api-key": key}, timeout=5) for _ in range(6)]

    codes = [response.status_code for response in responses]
    assert codes[:2] == [201, 201]
    assert 429 in codes
    assert _envelope(next(r for r in responses if r.status_code == 429))["code"] == "throttled"


def _request(sock: socket.socket, key: str) -> None:
    sock.sendall(b"GET /jobs HTTP/1.1\r\nHost: x\r\nx-api-key: " + key.encode() + b"\r\n\r\n")


def _response_status(sock: socket.socket) -> int | None:
    """The status of the response read from ``sock``; None when the gateway closed it without one."""
    reader = http.client.HTTPResponse(sock)
    try:
        reader.begin()
    except (http.client.RemoteDisconnected, ConnectionError):
        return None
    reader.read()
    return reader.status


def test_a_kept_alive_connection_is_answered_however_long_it_was_idle(aws: ClientFactory, plan: str) -> None:
    """The flake behind "Connection aborted: RemoteDisconnected" under load: a gateway that ended idle
    connections on a timer closed one just as a client (urllib3, which had found it open) sent a request on
    it. Here the client sends only after the gateway had many times its request timeout to do so."""
    _, key = make_key(aws("apigateway"), plan)
    with (
        LocalGateway(echo_handler, aws("apigateway"), plan, request_timeout_s=0.1) as gw,
        socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock,
    ):
        _request(sock, key)
        assert _response_status(sock) == 201
        # Idle for 20 times the timeout, or until the gateway closes it (readable at once: EOF).
        closed_early = select.select([sock], [], [], 2.0)[0]

        _request(sock, key)
        assert _response_status(sock) == 201, "closed while idle" if closed_early else "no answer"


def test_a_request_that_stalls_once_begun_is_dropped_at_the_timeout(aws: ClientFactory, plan: str) -> None:
    """Only the wait between requests is the client's to take: half a request does not hold a thread."""
    with (
        LocalGateway(echo_handler, aws("apigateway"), plan, request_timeout_s=0.1) as gw,
        socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock,
    ):
        sock.sendall(b"GET /jobs HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        assert select.select([sock], [], [], 10.0)[0], "the gateway kept waiting for the rest"
        assert _response_status(sock) is None


# --- event source mapping -----------------------------------------------------------------------------------


def make_queue(aws: ClientFactory, visibility_timeout_s: int) -> str:
    sqs = aws("sqs")
    name = f"q-{uuid.uuid4().hex[:8]}"
    return str(
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout_s)})[
            "QueueUrl"
        ]
    )


def send(aws: ClientFactory, queue_url: str, bodies: list[str]) -> dict[str, str]:
    """Send ``bodies``; returns body -> message id."""
    sqs = aws("sqs")
    ids: dict[str, str] = {}
    for body in bodies:
        ids[body] = sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=body,
            MessageAttributes={
                "kind": {"DataType": "String", "StringValue": "job"},
                "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
            },
        )["MessageId"]
    return ids


def queue_depth(aws: ClientFactory, queue_url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = aws("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(attrs[name]) for name in names)


def test_esm_batches_deletes_successes_and_redelivers_reported_failures(aws: ClientFactory) -> None:
    queue_url = make_queue(aws, visibility_timeout_s=1)
    ids = send(aws, queue_url, [f"m{i}" for i in range(12)])
    failing = ids["m3"]
    batches: list[list[dict[str, Any]]] = []
    concurrency = Concurrency()
    lock = threading.Lock()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        concurrency.enter()
        try:
            time.sleep(0.05)
            with lock:
                batches.append(event["Records"])
            first_try = any(
                r["messageId"] == failing and r["attributes"]["ApproximateReceiveCount"] == "1"
                for r in event["Records"]
            )
            return {"batchItemFailures": [{"itemIdentifier": failing}] if first_try else []}
        finally:
            concurrency.leave()

    receives = Calls("ReceiveMessage")
    esm = LocalEventSourceMapping(
        lambda: receives.watch(aws("sqs")), queue_url, handler, batch_size=4, maximum_concurrency=2
    )
    with esm:
        # Empty counts the in-flight messages too: only deletes empty it, of the successes and of m3's retry.
        wait_for(lambda: queue_depth(aws, queue_url) == 0, timeout_s=15, interval_s=0.2)
        delivered = len([r for batch in batches for r in batch])
        time.sleep(1.5)  # longer than the visibility timeout: anything kept back would be visible again
        receives.wait_for_more(2)  # and the pollers have looked since: nothing came again
        assert queue_depth(aws, queue_url) == 0
        stats = esm.stats
    esm.stop()  # idempotent

    records = [r for batch in batches for r in batch]
    assert len(records) == delivered
    assert all(len(batch) <= 4 for batch in batches)
    assert concurrency.peak <= 2
    assert stats.max_in_flight <= 2
    assert stats.in_flight == 0
    # A loaded machine may let a slow batch's visibility lapse and deliver a success twice; so every message
    # arrives at least once, and the reported failure at least twice, its second time with a higher count.
    assert {r["body"] for r in records} == {f"m{i}" for i in range(12)}
    tries = [int(r["attributes"]["ApproximateReceiveCount"]) for r in records if r["messageId"] == failing]
    assert tries[0] == 1 and len(tries) >= 2 and tries[-1] >= 2
    assert stats.records_failed == 1  # only m3's first delivery is reported
    assert stats.records_deleted == len(records) - 1
    record = records[0]
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(":" + queue_url.rsplit("/", 1)[1])
    assert record["awsRegion"] == REGION
    assert record["md5OfBody"]
    assert record["messageAttributes"]["kind"]["stringValue"] == "job"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="
    assert {"SentTimestamp", "ApproximateReceiveCount"} <= set(record["attributes"])


def test_esm_reads_failures_like_lambda() -> None:
    batch = {"a", "b"}
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "a"}]}, batch) == {"a"}
    assert failed_ids({"batchItemFailures": []}, batch) == set()
    assert failed_ids(None, batch) == set()
    assert failed_ids({}, batch) == set()
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, batch) is None
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, batch) is None
    assert failed_ids("ok", batch) is None


def test_esm_settings_accept_snake_case_and_aws_names() -> None:
    current = EsmSettings(batch_size=10, maximum_concurrency=2, batching_window_s=0)
    assert settings_from({"MaximumConcurrency": 5, "BatchSize": "3"}, current) == EsmSettings(3, 5, 0)
    assert settings_from({"maximum_concurrency": 0, "unknown": 1}, current) == EsmSettings(10, 1, 0)


def test_esm_deletes_nothing_when_the_handler_raises(aws: ClientFactory) -> None:
    queue_url = make_queue(aws, visibility_timeout_s=1)
    send(aws, queue_url, ["a", "b"])
    receive_counts: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        receive_counts.extend(int(r["attributes"]["ApproximateReceiveCount"]) for r in event["Records"])
        if len(receive_counts) <= 2:
            raise RuntimeError("the first batch fails")

    with LocalEventSourceMapping(lambda: aws("sqs"), queue_url, handler, batch_size=10) as esm:
        wait_for(lambda: queue_depth(aws, queue_url) == 0, timeout_s=10, interval_s=0.2)
        stats = esm.stats

    assert stats.handler_errors >= 1
    assert max(receive_counts) >= 2


def test_esm_concurrency_follows_the_settings_at_run_time(aws: ClientFactory) -> None:
    queue_url = make_queue(aws, visibility_timeout_s=30)
    send(aws, queue_url, [f"m{i}" for i in range(14)])
    settings: dict[str, Any] = {"batch_size": 1, "maximum_concurrency": 1}
    concurrency = Concurrency()
    peaks_before_change: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        assert len(event["Records"]) <= settings["batch_size"]
        concurrency.enter()
        time.sleep(0.3)
        concurrency.leave()

    esm = LocalEventSourceMapping(
        lambda: aws("sqs"),
        queue_url,
        handler,
        batch_size=1,
        maximum_concurrency=1,
        settings_provider=lambda: settings,
    )
    with esm:
        wait_for(lambda: esm.stats.invocations >= 3, timeout_s=10)
        peaks_before_change.append(concurrency.peak)
        settings["maximum_concurrency"] = 3
        wait_for(lambda: queue_depth(aws, queue_url) == 0, timeout_s=15, interval_s=0.2)

    assert peaks_before_change == [1]
    assert concurrency.peak == 3
    assert esm.settings.maximum_concurrency == 3


# --- moto's server: atomic DynamoDB and CloudFormation requests ---------------------------------------------


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads far more often than usual: without the server's lock the races below then show."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_middleware_serialises_dynamodb_and_cloudformation_each_apart_but_not_sqs_or_streams() -> None:
    concurrency = Concurrency()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        concurrency.enter()
        time.sleep(0.05)
        concurrency.leave()
        start_response("200 OK", [])
        return [b"ok"]

    middleware = SerialisingMiddleware(app)
    scope = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{}/aws4_request, SignedHeaders=host"
    requests_by_kind = {
        "dynamodb": {"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.UpdateItem"},
        "cloudformation": {"HTTP_AUTHORIZATION": scope.format("cloudformation")},
        "sqs": {"HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage", "HTTP_AUTHORIZATION": scope.format("sqs")},
        "streams": {
            "HTTP_X_AMZ_TARGET": "DynamoDBStreams_20120810.GetRecords",
            "HTTP_AUTHORIZATION": scope.format("dynamodb"),
        },
    }
    peaks = {}
    for kind, environ in requests_by_kind.items():
        concurrency.peak = 0
        run_together(5, lambda _, environ=environ: middleware(environ, lambda *a: None) == [b"ok"])
        peaks[kind] = concurrency.peak
    concurrency.peak = 0
    mixed = [requests_by_kind["dynamodb"], requests_by_kind["cloudformation"]]
    run_together(2, lambda i: middleware(mixed[i], lambda *a: None) == [b"ok"])
    peaks["dynamodb beside cloudformation"] = concurrency.peak

    assert peaks == {
        "dynamodb": 1,
        "cloudformation": 1,
        "sqs": 5,
        "streams": 5,
        "dynamodb beside cloudformation": 2,  # a slow CreateStack does not hold up the jobs table
    }


def run_together(count: int, action: Callable[[int], bool]) -> list[bool]:
    """Run ``action(i)`` in ``count`` threads released at the same moment."""
    barrier = threading.Barrier(count)
    results: list[bool] = [False] * count

    def run(index: int) -> None:
        barrier.wait()
        results[index] = action(index)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_conditional_updates_are_atomic(aws: ClientFactory, frequent_thread_switches: None) -> None:
    ddb = aws("dynamodb")
    table = f"t-{uuid.uuid4().hex[:8]}"
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName=table, Item={"pk": {"S": "counter"}, "n": {"N": "0"}})
    clients = [aws("dynamodb") for _ in range(20)]

    def increment(index: int) -> bool:
        try:
            clients[index].update_item(
                TableName=table,
                Key={"pk": {"S": "counter"}},
                UpdateExpression="SET n = n + :one",
                ConditionExpression="n < :max",
                ExpressionAttributeValues={":one": {"N": "1"}, ":max": {"N": "5"}},
            )
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
            return False
        return True

    results = run_together(20, increment)

    item = ddb.get_item(TableName=table, Key={"pk": {"S": "counter"}}, ConsistentRead=True)["Item"]
    assert item["n"] == {"N": "5"}
    assert results.count(True) == 5


def test_create_stack_with_one_name_creates_one_stack(
    aws: ClientFactory, frequent_thread_switches: None
) -> None:
    name = f"pijob-{uuid.uuid4().hex[:8]}"
    template = json.dumps({"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}})
    clients = [aws("cloudformation") for _ in range(10)]

    def create(index: int) -> bool:
        try:
            clients[index].create_stack(StackName=name, TemplateBody=template)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "AlreadyExistsException"
            return False
        return True

    results = run_together(10, create)

    summaries = aws("cloudformation").list_stacks()["StackSummaries"]
    assert results.count(True) == 1
    assert [s["StackName"] for s in summaries].count(name) == 1
    resources = aws("cloudformation").describe_stack_resources(StackName=name)["StackResources"]
    assert len(resources) == 1


def test_the_server_finds_each_requests_backend_without_listing_motos_folders(
    aws: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto listed its package's folders for every request, under its own lock; listed once at the start,
    a request reads no folder."""

    ddb, sqs = aws("dynamodb"), aws("sqs")  # botocore lists its own data folders for a new client
    ddb.list_tables(), sqs.list_queues()  # and moto for a service's first request (it loads its backend)

    def listing(path: str) -> list[str]:
        raise AssertionError(f"a request listed {path}")

    monkeypatch.setattr(os, "listdir", listing)
    assert "TableNames" in ddb.list_tables()
    sqs.list_queues()


def _event_stream(aws: ClientFactory) -> tuple[Any, str, str]:
    """A new table keyed by ``pk`` with a stream of new images: its client, name and stream ARN."""
    ddb = aws("dynamodb")
    table = f"s-{uuid.uuid4().hex[:8]}"
    arn = ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )["TableDescription"]["LatestStreamArn"]
    return ddb, table, arn


def _stream_table(aws: ClientFactory) -> tuple[Any, str, Callable[[], list[dict[str, Any]]]]:
    """A table with a stream and an item ``a`` (n = 1); a function reading its stream from the start."""
    ddb, table, arn = _event_stream(aws)
    streams = aws("dynamodbstreams")
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "n": {"N": "1"}})

    def records() -> list[dict[str, Any]]:
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
        return list(streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"])

    return ddb, table, records


def _items(ddb: Any, table: str) -> dict[str, dict[str, Any]]:
    return {item["pk"]["S"]: item for item in ddb.scan(TableName=table, ConsistentRead=True)["Items"]}


def test_a_cancelled_transaction_leaves_the_table_and_its_stream_as_they_were(aws: ClientFactory) -> None:
    ddb, table, records = _stream_table(aws)
    before, seen = _items(ddb, table), len(records())
    with pytest.raises(ClientError) as refused:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"pk": {"S": "b"}, "n": {"N": "2"}}}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": "a"}},
                        "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {"ConditionCheck": {"TableName": table, "Key": {"pk": {"S": "c"}},
                                    "ConditionExpression": "attribute_exists(pk)"}},
            ]
        )  # fmt: skip

    error = refused.value.response["Error"]
    assert error["Code"] == "TransactionCanceledException"
    assert "[None, None, ConditionalCheckFailed]" in error["Message"]
    assert _items(ddb, table) == before  # no b, a's n still 1, no c
    assert len(records()) == seen  # no record of the writes that were undone


def test_a_transaction_naming_one_item_twice_writes_nothing(aws: ClientFactory) -> None:
    ddb, table, records = _stream_table(aws)
    before, seen = _items(ddb, table), len(records())
    with pytest.raises(ClientError) as refused:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"pk": {"S": "b"}}}},
                {"Put": {"TableName": table, "Item": {"pk": {"S": "a"}, "n": {"N": "7"}}}},
                {"Delete": {"TableName": table, "Key": {"pk": {"S": "a"}}}},
            ]
        )
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert (_items(ddb, table), len(records())) == (before, seen)


def test_a_transaction_that_passes_writes_every_item_and_its_records(aws: ClientFactory) -> None:
    ddb, table, records = _stream_table(aws)
    seen = len(records())
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": "b"}, "n": {"N": "2"}},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
            {"Update": {"TableName": table, "Key": {"pk": {"S": "a"}}, "UpdateExpression": "SET n = :five",
                        "ExpressionAttributeValues": {":five": {"N": "5"}}}},
        ]
    )  # fmt: skip
    assert {k: v["n"]["N"] for k, v in _items(ddb, table).items()} == {"a": "5", "b": "2"}
    assert [r["eventName"] for r in records()[seen:]] == ["INSERT", "MODIFY"]


def _long_polling() -> bool:
    """True while a thread of this process (the in-process server's) is inside moto's ReceiveMessage."""
    for frame in sys._current_frames().values():
        while frame is not None:
            code = frame.f_code
            if code.co_name == "receive_message" and code.co_filename.endswith(
                os.path.join("sqs", "models.py")
            ):
                return True
            frame = frame.f_back
    return False


def test_sqs_long_polls_do_not_block_dynamodb(aws: ClientFactory) -> None:
    queue_url = make_queue(aws, visibility_timeout_s=30)
    sqs = aws("sqs")
    polled: list[dict[str, Any]] = []
    poll = threading.Thread(
        target=lambda: polled.extend(
            sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=20).get("Messages", [])
        )
    )
    poll.start()
    wait_for(_long_polling, timeout_s=15)  # the server is waiting for a message to arrive

    aws("dynamodb").list_tables()  # held up until the poll ends if the server serialised them

    ended_first = not poll.is_alive()
    aws("sqs").send_message(QueueUrl=queue_url, MessageBody="ends the poll")
    poll.join(timeout=30)
    assert not ended_first, "DynamoDB waited for the SQS long poll to end"
    assert [m["Body"] for m in polled] == ["ends the poll"]


# --- instance runner ----------------------------------------------------------------------------------------

FAKE_WORKER = """\
import json, os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
record = {
    "argv": sys.argv[1:],
    "env": {k: v for k, v in os.environ.items() if k.startswith(("PIJOBS_", "AWS_", "FAKE_"))},
    "pid": os.getpid(),
    "child": child.pid,
}
out = os.path.join(os.environ["FAKE_RECORD_DIR"], f"{os.getpid()}.json")
with open(out + ".tmp", "w") as f:
    json.dump(record, f)
os.replace(out + ".tmp", out)
print("fake worker started", flush=True)
if os.environ.get("FAKE_EXIT_AT_ONCE"):
    child.kill()
    sys.exit(0)
time.sleep(60)
"""

WORKER_STACK = {
    "Parameters": {
        "JobId": {"Type": "String"},
        "ApiUrl": {"Type": "String"},
        "WorkerToken": {"Type": "String", "NoEcho": True},
    },
    "Resources": {
        "Instance": {
            "Type": "AWS::EC2::Instance",
            "Properties": {
                "ImageId": "ami-12c6146b",
                "InstanceType": "t3.micro",
                "Tags": [{"Key": "JobId", "Value": {"Ref": "JobId"}}],
                # The shim's exports, as the function templates write them.
                "UserData": {
                    "Fn::Base64": {
                        "Fn::Sub": "#!/bin/bash\n"
                        'export PIJOBS_API_URL="${ApiUrl}"\n'
                        'export PIJOBS_WORKER_TOKEN="${WorkerToken}"\n'
                        'export PIJOBS_INSTANCE_ID="$(cat /var/lib/cloud/data/instance-id)"\n'
                        'python3.11 -m pijobs.worker --job-id "${JobId}"\n'
                    }
                },
            },
        }
    },
}
TOKEN = "t0k3n_" + "x" * 40


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """An executable standing in for ``python``: it records how it was started, then sleeps."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{script}" "$@"\n')
    fake.chmod(0o755)
    return fake


@pytest.fixture
def records(tmp_path: Path) -> Path:
    directory = tmp_path / "records"
    directory.mkdir()
    return directory


@pytest.fixture
def instances(aws: ClientFactory) -> Iterator[list[str]]:
    """Instance ids a test launched; terminated afterwards so later runners do not see them."""
    launched: list[str] = []
    yield launched
    if launched:
        aws("ec2").terminate_instances(InstanceIds=launched)


def starts(events: list[dict[str, Any]]) -> list[str]:
    """The instances whose worker the runner started, in order, from its log events."""
    return [e["instance_id"] for e in events if e["event"] == "worker_started"]


def read_records(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def make_runner(
    aws: ClientFactory,
    moto_server: LocalMotoServer,
    fake_python: Path,
    records: Path,
    looks: Calls | None = None,
    **env: str,
) -> InstanceRunner:
    """A runner of ``fake_python``; ``looks`` counts its looks at EC2 (one per round)."""
    worker_env = {"FAKE_RECORD_DIR": str(records), **env}
    return InstanceRunner(
        (looks or Calls("DescribeInstances")).watch(aws("ec2")),
        env=worker_env,
        poll_interval=0.2,
        python=str(fake_python),
        log_dir=records.parent / "logs",
    )


def launch_job_stack(aws: ClientFactory, job_id: str, api_url: str = "http://127.0.0.1:9") -> str:
    cfn = aws("cloudformation")
    parameters = {"JobId": job_id, "ApiUrl": api_url, "WorkerToken": TOKEN}
    cfn.create_stack(
        StackName=f"pijob-{job_id}",
        TemplateBody=json.dumps(WORKER_STACK),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )
    resources = cfn.describe_stack_resources(StackName=f"pijob-{job_id}")["StackResources"]
    return str(resources[0]["PhysicalResourceId"])


def test_runner_runs_the_worker_of_a_stack_instance_once_and_kills_it_on_termination(
    aws: ClientFactory, moto_server: LocalMotoServer, fake_python: Path, records: Path, instances: list[str]
) -> None:
    job_id = uuid.uuid4().hex[:12]
    instance_id = launch_job_stack(aws, job_id)
    instances.append(instance_id)

    looks = Calls("DescribeInstances")
    with capture_logs() as events, make_runner(aws, moto_server, fake_python, records, looks) as runner:
        (record,) = wait_for(lambda: read_records(records))
        assert runner.running() == {instance_id: record["pid"]}
        assert record["argv"] == ["--job-id", job_id]
        # What the instance's UserData exports (the NoEcho token as CloudFormation substituted it), the
        # instance id, and nothing of AWS.
        assert record["env"] == {
            "PIJOBS_API_URL": "http://127.0.0.1:9",
            "PIJOBS_WORKER_TOKEN": TOKEN,
            "PIJOBS_INSTANCE_ID": instance_id,
            "FAKE_RECORD_DIR": str(records),
        }

        aws("ec2").terminate_instances(InstanceIds=[instance_id])

        wait_for(lambda: not runner.running(), timeout_s=5)
        wait_for(lambda: not is_alive(record["child"]), timeout_s=5)
        looks.wait_for_more(2)  # two more rounds, the first of them done: nothing restarts
        assert starts(events) == [instance_id]
        assert len(read_records(records)) == 1
        assert runner.started() == {instance_id}
    log_file = records.parent / "logs" / f"{instance_id}.log"
    assert "fake worker started" in log_file.read_text()


def test_runner_passes_the_worker_argv(
    aws: ClientFactory, moto_server: LocalMotoServer, tmp_path: Path, records: Path, instances: list[str]
) -> None:
    argv_file = tmp_path / "argv.txt"
    fake = tmp_path / "argv-python"
    fake.write_text(f'#!/bin/sh\necho "$@" > "{argv_file}"\n')
    fake.chmod(0o755)
    job_id = uuid.uuid4().hex[:12]
    instances.append(launch_job_stack(aws, job_id))

    with make_runner(aws, moto_server, fake, records):
        wait_for(argv_file.exists)

    assert wait_for(lambda: argv_file.read_text().strip()) == f"-m pijobs.worker --job-id {job_id}"


def test_runner_gives_an_instance_without_a_shim_no_token_and_does_not_restart_exited_workers(
    aws: ClientFactory, moto_server: LocalMotoServer, fake_python: Path, records: Path, instances: list[str]
) -> None:
    job_id = uuid.uuid4().hex[:12]
    reservation = aws("ec2").run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "JobId", "Value": job_id}]}],
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    instances.append(instance_id)

    looks = Calls("DescribeInstances")
    with (
        capture_logs() as events,
        make_runner(aws, moto_server, fake_python, records, looks, FAKE_EXIT_AT_ONCE="1") as runner,
    ):
        (record,) = wait_for(lambda: read_records(records))
        wait_for(lambda: not runner.running())
        looks.wait_for_more(2)  # two more rounds, the first of them done: the exited worker is not restarted
        assert starts(events) == [instance_id]
        assert len(read_records(records)) == 1

    assert {k for k in record["env"] if k.startswith(("PIJOBS_", "AWS_"))} == {"PIJOBS_INSTANCE_ID"}


def test_runner_reaps_a_killed_worker_and_stop_kills_the_rest(
    aws: ClientFactory, moto_server: LocalMotoServer, fake_python: Path, records: Path, instances: list[str]
) -> None:
    first, second = (launch_job_stack(aws, uuid.uuid4().hex[:12]) for _ in range(2))
    instances.extend([first, second])
    looks = Calls("DescribeInstances")
    runner = make_runner(aws, moto_server, fake_python, records, looks)
    with capture_logs() as events:
        runner.start()
        try:
            started = wait_for(lambda: len(read_records(records)) == 2 and read_records(records))
            pids = runner.running()
            assert set(pids) == {first, second}

            os.kill(pids[first], signal.SIGKILL)  # as a test of the reaper would
            wait_for(lambda: set(runner.running()) == {second})
            looks.wait_for_more(
                2
            )  # two more rounds, the first of them done: the killed worker is not restarted
            assert sorted(starts(events)) == sorted([first, second])
            assert len(read_records(records)) == 2
        finally:
            runner.stop()
    runner.stop()  # idempotent

    assert runner.running() == {}
    for record in started:
        assert not is_alive(record["pid"])
        assert wait_for(lambda record=record: not is_alive(record["child"]), timeout_s=5)


def test_server_tells_observers_of_sqs_ec2_and_dynamodb_calls_after_answering_them() -> None:
    heard: list[tuple[str, str, dict[str, Any]]] = []
    with LocalMotoServer() as server:
        server.observe(lambda service, action, params: heard.append((service, action, params)))

        def client(service: str) -> Any:
            return boto3.client(
                service,
                endpoint_url=server.url,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )

        sqs = client("sqs")
        queue_url = sqs.create_queue(QueueName="observed")["QueueUrl"]
        sqs.send_message(QueueUrl=queue_url, MessageBody="x", DelaySeconds=1)
        client("ec2").run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
        client("dynamodb").list_tables()  # by its action only
        client("s3").list_buckets()  # not observed

    actions = [(service, action) for service, action, _ in heard]
    assert actions == [
        ("sqs", "CreateQueue"),
        ("sqs", "SendMessage"),
        ("ec2", "RunInstances"),
        ("dynamodb", "ListTables"),
    ]
    assert heard[1][2]["DelaySeconds"] == 1 and heard[1][2]["QueueUrl"] == queue_url
    assert heard[2][2]["ImageId"] == "ami-12c6146b"
    assert heard[3][2] == {}


def test_runner_woken_forks_the_real_worker_from_a_warm_interpreter(
    aws: ClientFactory, moto_server: LocalMotoServer, tmp_path: Path, instances: list[str]
) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {
        "PYTHONPATH": str(root),
        "PATH": os.environ.get("PATH", ""),
        "PIJOBS_TRANSIENT_TOTAL_SECONDS": "0",  # no API listens: give the channel up at once
    }
    looks = Calls("DescribeInstances")
    runner = InstanceRunner(
        looks.watch(aws("ec2")), env=env, poll_interval=60, log_dir=tmp_path, fork_workers=True
    )
    log_file = tmp_path / "unknown.log"
    with capture_logs() as events, runner:
        wait_for(lambda: looks.count >= 1)  # the first look is done: only a wake finds the next instance
        job_id = uuid.uuid4().hex[:12]
        instance_id = launch_job_stack(aws, job_id)
        instances.append(instance_id)
        runner.wake()
        wait_for(lambda: runner.started() == {instance_id}, timeout_s=5)
        # No API at its ApiUrl: the worker cannot start its job and exits 1, which the runner hears.
        log_file = tmp_path / f"{instance_id}.log"
        wait_for(lambda: log_file.exists() and "channel_unreachable" in log_file.read_text(), 30)

        def exited() -> list[dict[str, Any]]:
            runner.wake()
            return [e for e in events if e["event"] == "worker_exited" and e["instance_id"] == instance_id]

        (event,) = wait_for(exited, timeout_s=10, interval_s=0.2)
    assert event["returncode"] == 1 and event["job_id"] == job_id
    assert job_id in log_file.read_text()


@contextlib.contextmanager
def _woken_queue(
    name: str, handler: Callable[..., Any], *, concurrency: int, **attributes: str
) -> Iterator[tuple[Any, str, Calls, LocalEventSourceMapping]]:
    """A moto server of the test's own (its observers go with it), a queue on it, the count of the receives,
    and a woken mapping on the queue (its recheck a minute away) that each send and visibility change moto
    answers notifies, as the local stack wires it: (client, queue URL, receives, the running mapping)."""
    from pijobs.local.stack import visible_after

    with LocalMotoServer() as server:
        sqs = boto3.client(
            "sqs",
            endpoint_url=server.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        queue_url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        receives = Calls("ReceiveMessage")
        receives.watch(sqs)
        esm = LocalEventSourceMapping(
            lambda: sqs,
            queue_url,
            handler,
            batch_size=10,
            maximum_concurrency=concurrency,
            woken=True,
            recheck_s=60,
        )
        server.observe(
            lambda _service, action, params: [esm.notify(d) for d in visible_after(action, params)]
        )
        with esm:
            yield sqs, queue_url, receives, esm


def test_woken_esm_receives_on_notify_and_not_before_a_delay_or_visibility_timeout_ends() -> None:
    """With the recheck a minute away, each message can only come through the wake its case calls for (a
    notify, a delay's end, a visibility timeout's end), and the batches show in which order they came."""
    received: dict[str, list[tuple[int, float]]] = {}  # body -> (batch number, when) per delivery
    batches = itertools.count()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        batch = next(batches)
        failures = []
        for record in event["Records"]:
            received.setdefault(record["body"], []).append((batch, time.monotonic()))
            if record["body"] == "fails-once" and record["attributes"]["ApproximateReceiveCount"] == "1":
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    queue = _woken_queue("woken", handler, concurrency=2, VisibilityTimeout="1")
    with queue as (sqs, queue_url, receives, esm):
        wait_for(lambda: receives.count >= 2, timeout_s=15)  # both pollers found it empty: asleep
        sent = time.monotonic()
        sqs.send_message(QueueUrl=queue_url, MessageBody="now")
        sqs.send_message(QueueUrl=queue_url, MessageBody="fails-once")
        sqs.send_message(QueueUrl=queue_url, MessageBody="delayed", DelaySeconds=3)
        wait_for(lambda: len(received.get("fails-once", [])) == 2 and "delayed" in received, timeout_s=15)
        wait_for(lambda: esm.stats.records_deleted == 3, timeout_s=5)

    (now,), (delayed,), (failed, again) = received["now"], received["delayed"], received["fails-once"]
    # The send woke a poller: "now" came long before the delayed message was due (not with it, at its wake).
    assert now[0] < delayed[0]
    # The failed batch's visibility timeout woke one: "fails-once" came back before the delayed message was
    # due, not with it.
    assert failed[0] < again[0] < delayed[0]
    # SQS's delay, then woken by its end: never received before it.
    assert delayed[1] - sent >= 3.0


def test_a_send_wakes_one_sleeping_poller_not_all_of_them() -> None:
    """Four pollers asleep on an empty queue: one message costs the poller it woke two receives (the
    message, then an empty look before it sleeps again); the other three stay asleep."""
    handled: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        handled.extend(record["body"] for record in event["Records"])

    with _woken_queue("one-wake", handler, concurrency=4) as (sqs, queue_url, receives, esm):
        wait_for(lambda: receives.count >= 4, timeout_s=15)  # each poller found it empty: all asleep
        time.sleep(0.2)
        before = receives.count
        sqs.send_message(QueueUrl=queue_url, MessageBody="one")
        wait_for(lambda: esm.stats.records_deleted == 1, timeout_s=10)
        time.sleep(0.5)
        assert receives.count - before == 2
    assert handled == ["one"]


def _pk(n: int) -> str:
    return f"p{n * 11 % 30:02d}"  # partitions first written out of order, as random ids are


def _indexed_table(aws: ClientFactory) -> tuple[Any, str]:
    """A table keyed (pk, sk) with a GSI on (owner, at): 30 partitions of 10 items, owners spread across."""
    ddb = aws("dynamodb")
    table = f"q-{uuid.uuid4().hex[:8]}"
    strings = [{"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "owner", "at")]
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=strings,
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-owner",
                "KeySchema": [
                    {"AttributeName": "owner", "KeyType": "HASH"},
                    {"AttributeName": "at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    for n in range(300):
        item = {"pk": {"S": _pk(n)}, "sk": {"S": f"s{n:03d}"}, "at": {"S": f"t{n % 7}"}}
        if n % 4:  # one item in four is not in the index (no owner)
            item["owner"] = {"S": f"o{n % 3}"}
        ddb.put_item(TableName=table, Item=item)
    return ddb, table


def _query_pages(ddb: Any, **query: Any) -> list[list[str]]:
    pages, start = [], None
    while True:
        answer = ddb.query(**query, **({"ExclusiveStartKey": start} if start else {}))
        pages.append([item["sk"]["S"] for item in answer["Items"]])
        start = answer.get("LastEvaluatedKey")
        if not start:
            return pages


def test_queries_answer_in_key_order_page_by_page(aws: ClientFactory) -> None:
    ddb, table = _indexed_table(aws)
    on_key = {
        "TableName": table,
        "KeyConditionExpression": "pk = :p",
        "ExpressionAttributeValues": {":p": {"S": "p07"}},
    }
    in_p07 = [f"s{n:03d}" for n in range(300) if _pk(n) == "p07"]  # s017, s047, ... in key order
    assert _query_pages(ddb, **on_key, Limit=4) == [in_p07[:4], in_p07[4:8], in_p07[8:]]
    assert _query_pages(ddb, **on_key, ScanIndexForward=False) == [in_p07[::-1]]
    assert _query_pages(
        ddb,
        TableName=table,
        KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "nobody"}},
    ) == [[]]

    by_owner = {
        "TableName": table,
        "IndexName": "by-owner",
        "KeyConditionExpression": "#o = :o AND #a >= :a",
        "ExpressionAttributeNames": {"#o": "owner", "#a": "at"},
        "ExpressionAttributeValues": {":o": {"S": "o1"}, ":a": {"S": "t5"}},
    }
    matches = {f"s{n:03d}" for n in range(300) if n % 4 and n % 3 == 1 and n % 7 >= 5}
    pages = _query_pages(ddb, **by_owner, Limit=7)
    found = [sk for page in pages for sk in page]
    assert sorted(found) == sorted(matches)  # each match once across the pages
    at = [int(sk[1:]) % 7 for sk in found]
    assert at == sorted(at)  # in the index's key order (equal keys in no order, as on AWS)
    assert all(len(page) == 7 for page in pages[:-1])
    # a scan still pages through the table in moto's order of keys
    scanned = [item["sk"]["S"] for item in ddb.scan(TableName=table)["Items"]]
    assert scanned == [f"s{n:03d}" for n in sorted(range(300), key=lambda n: (_pk(n), n))]


def test_a_query_compares_only_its_matches_not_the_whole_table(
    aws: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto sorted every item of the table on each query (pijobs.local.moto_dynamodb): a quarter of the
    embedded stack's time at 200 jobs. A query's comparisons now follow its matches, not the table."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    ddb, table = _indexed_table(aws)
    compared = itertools.count()
    less_than = DynamoType.__lt__
    monkeypatch.setattr(
        DynamoType, "__lt__", lambda self, other: next(compared) is None or less_than(self, other)
    )

    def comparisons(**query: Any) -> int:
        before = next(compared)
        ddb.query(TableName=table, **query)
        return next(compared) - before - 1

    on_key = comparisons(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p07"}})
    on_index = comparisons(
        IndexName="by-owner",
        KeyConditionExpression="#o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": {"S": "o1"}},
    )
    # sorting the table's 300 items takes some 2,000 comparisons; its 10 and 75 matches far fewer
    assert on_key < 60, on_key
    assert on_index < 700, on_index


def test_an_index_query_compares_only_the_items_of_its_key(
    aws: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto compared every item's index key with the query's (``DynamoType`` objects, each comparison
    recomputing both values): an index query now hands it only the items whose key strings match."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    ddb, table = _indexed_table(aws)
    compared = itertools.count()
    differs = DynamoType.__ne__
    monkeypatch.setattr(
        DynamoType, "__ne__", lambda self, other: next(compared) is None or differs(self, other)
    )
    before = next(compared)
    found = ddb.query(
        TableName=table,
        IndexName="by-owner",
        KeyConditionExpression="#o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": {"S": "o1"}},
    )["Items"]
    key_comparisons = next(compared) - before - 1
    assert found and {item["owner"]["S"] for item in found} == {"o1"}
    assert key_comparisons <= len(found), key_comparisons  # not one per item of the table's 300


def test_a_message_past_its_queues_retention_period_is_not_received(aws: ClientFactory) -> None:
    """moto's check, which pijobs.local.moto_sqs makes without building every attribute of the queue."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    sqs = aws("sqs")
    name = f"retained-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="old")
    (old,) = sqs_backends[DEFAULT_ACCOUNT_ID][REGION].get_queue(name)._messages
    old.sent_timestamp -= 61_000  # sent 61 s ago, as the queue's clock sees it
    sqs.send_message(QueueUrl=url, MessageBody="new")

    bodies = [  # moto ends a receive at an expired message: the next one goes on
        message["Body"]
        for _ in range(2)
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    ]
    assert bodies == ["new"]


def _every_kind_of_value(n: int) -> dict[str, Any]:
    return {
        "pk": {"S": "every"},
        "sk": {"S": f"s{n:03d}"},
        "owner": {"S": "o1"},
        "at": {"S": "t1"},
        "text": {"S": 'déjà "quoted" \\ \n'},
        "number": {"N": "-12.50"},
        "big": {"N": "123456789012345678901234567890"},
        "strings": {"SS": ["a", "b"]},
        "numbers": {"NS": ["1", "2.5"]},
        "nothing": {"NULL": True},
        "yes": {"BOOL": True},
        "no": {"BOOL": False},
        "list": {"L": [{"S": "x"}, {"N": "1"}, {"M": {"deep": {"L": []}}}, {"BOOL": False}]},
        "map": {"M": {"a": {"S": ""}, "b": {"M": {}}, "c": {"NULL": True}}},
    }


def _item_operations(aws: ClientFactory) -> list[Any]:
    """Every item operation's answer, as the SDK reads it, on a table holding every kind of value."""
    ddb, table = _indexed_table(aws)
    for n in range(3):
        ddb.put_item(TableName=table, Item=_every_kind_of_value(n))
    key = {"pk": {"S": "every"}, "sk": {"S": "s000"}}
    binary = {"pk": {"S": "bin"}, "sk": {"S": "b"}, "blob": {"B": b"\x00\xff"}, "blobs": {"BS": [b"a", b"b"]}}
    total = {"ReturnConsumedCapacity": "TOTAL"}
    answers = [
        ddb.get_item(TableName=table, Key=key, **total),
        ddb.get_item(TableName=table, Key={"pk": {"S": "none"}, "sk": {"S": "none"}}),
        ddb.get_item(
            TableName=table,
            Key=key,
            ProjectionExpression="#m.b, #l",
            ExpressionAttributeNames={"#m": "map", "#l": "list"},
        ),
        ddb.put_item(TableName=table, Item=binary, ReturnValues="ALL_OLD"),
        ddb.get_item(TableName=table, Key={"pk": {"S": "bin"}, "sk": {"S": "b"}}),
        ddb.put_item(
            TableName=table,
            Item={**_every_kind_of_value(0), "extra": {"N": "1"}},
            ReturnValues="ALL_OLD",
            ReturnConsumedCapacity="INDEXES",
        ),
        ddb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET #n = #n + :one",
            ExpressionAttributeNames={"#n": "number"},
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="ALL_NEW",
        ),
        ddb.update_item(
            TableName=table, Key=key, UpdateExpression="REMOVE extra", ReturnValues="UPDATED_OLD"
        ),
        ddb.query(
            TableName=table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "every"}},
            Limit=2,
            **total,
        ),
        ddb.query(
            TableName=table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "every"}},
            Select="COUNT",
        ),
        ddb.query(
            TableName=table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": "nobody"}},
        ),
        ddb.query(
            TableName=table,
            IndexName="by-owner",
            KeyConditionExpression="#o = :o",
            ExpressionAttributeNames={"#o": "owner"},
            ExpressionAttributeValues={":o": {"S": "o1"}},
            Limit=5,
        ),
        ddb.scan(TableName=table, Limit=4),
        ddb.batch_get_item(RequestItems={table: {"Keys": [key, {"pk": {"S": "bin"}, "sk": {"S": "b"}}]}}),
        ddb.batch_get_item(RequestItems={table: {"Keys": [key]}}, ReturnConsumedCapacity="TOTAL"),
        ddb.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": key}}]),
        ddb.transact_write_items(
            TransactItems=[{"Put": {"TableName": table, "Item": _every_kind_of_value(9)}}]
        ),
        ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": _every_kind_of_value(8)}}]}),
        ddb.delete_item(
            TableName=table, Key={"pk": {"S": "every"}, "sk": {"S": "s008"}}, ReturnValues="ALL_OLD"
        ),
        ddb.delete_item(TableName=table, Key={"pk": {"S": "every"}, "sk": {"S": "s009"}}),
    ]
    for answer in answers:
        answer.pop("ResponseMetadata", None)
    # each call makes a table of its own: its name aside, the answers must be the same
    return [json.loads(json.dumps(answer, default=repr).replace(table, "TABLE")) for answer in answers]


def test_item_operations_answer_as_moto_s_serializer_wrote_them(
    aws: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.core.serialize import JSONSerializer
    from moto.dynamodb.responses import DynamoResult

    from pijobs.local import moto_dynamodb

    serialized: list[str] = []
    moto_serialize = JSONSerializer.serialize

    def serialize(self: JSONSerializer, result: Any) -> Any:
        serialized.append(self.operation_model.name)
        return moto_serialize(self, result)

    monkeypatch.setattr(JSONSerializer, "serialize", serialize)
    written_directly = _item_operations(aws)
    by_moto_s_serializer = list(serialized)

    monkeypatch.setattr(DynamoResult, "execute_result", moto_dynamodb._MOTO_EXECUTE_RESULT)
    assert _item_operations(aws) == written_directly
    # moto's serializer wrote only the table's description (its times), the answers holding binary values
    # and the two small answers moto does not build from items
    assert by_moto_s_serializer == [
        "CreateTable", "GetItem", "Scan", "BatchGetItem", "TransactWriteItems", "BatchWriteItem"
    ]  # fmt: skip


def _stream_mapping(aws: ClientFactory, arn: str, handler: Any, **settings: Any) -> LocalStreamMapping:
    """A stream mapping on ``arn`` for the ``ev#`` items, as the tests set it."""
    return LocalStreamMapping(lambda: aws("dynamodbstreams"), arn, handler, prefix="ev#", **settings)


def _written(record: dict[str, Any]) -> tuple[str, int]:
    image = record["dynamodb"]["NewImage"]
    return image["pk"]["S"], int(image["n"]["N"])


def test_a_slow_stream_batch_holds_up_only_its_own_lane(aws: ClientFactory) -> None:
    ddb, table, arn = _event_stream(aws)
    handled: list[str] = []
    held, release = threading.Event(), threading.Event()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        for record in event["Records"]:
            key, _ = _written(record)
            if key == "ev#slow":
                held.set()
                release.wait(10)
            handled.append(key)
        return {"batchItemFailures": []}

    keys = ["ev#slow", *(f"ev#{n:02d}" for n in range(16))]
    mapping = _stream_mapping(
        aws,
        arn,
        handler,
        batch_size=2,
        max_retries=1,
        parallelization=4,
    )
    with mapping.start():
        for key in keys:
            ddb.put_item(TableName=table, Item={"pk": {"S": key}, "n": {"N": "0"}})
        ddb.put_item(TableName=table, Item={"pk": {"S": "other#x"}, "n": {"N": "0"}})  # not the filter's
        ddb.put_item(TableName=table, Item={"pk": {"S": "ev#00"}, "n": {"N": "1"}})  # a MODIFY: not either
        assert held.wait(10)
        wait_for(lambda: len(handled) >= 8, timeout_s=10)  # the other lanes go on meanwhile
        assert "ev#slow" not in handled
        release.set()
        wait_for(lambda: len(handled) == len(keys), timeout_s=10)
        time.sleep(0.3)  # nothing more comes
    assert sorted(handled) == sorted(keys)  # each INSERT of the prefix once
    assert mapping.handled == len(keys)


def test_a_stream_record_the_handler_fails_is_retried_with_those_after_it(aws: ClientFactory) -> None:
    ddb, table, arn = _event_stream(aws)
    seen: list[str] = []
    failed_once: set[str] = set()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        failures = []
        for record in event["Records"]:
            key, _ = _written(record)
            seen.append(key)
            if key == "ev#b" and key not in failed_once:
                failed_once.add(key)
                failures.append({"itemIdentifier": record["dynamodb"]["SequenceNumber"]})
        return {"batchItemFailures": failures}

    for key in ("ev#a", "ev#b", "ev#c"):
        ddb.put_item(TableName=table, Item={"pk": {"S": key}, "n": {"N": "0"}})
    mapping = _stream_mapping(
        aws,
        arn,
        handler,
        batch_size=10,
        max_retries=2,
        parallelization=1,
    )
    with mapping.start():
        wait_for(lambda: mapping.handled == 3, timeout_s=10)
    # one lane: the stream's order, then b and what came after it again, as Lambda retries a stream batch
    assert seen == ["ev#a", "ev#b", "ev#c", "ev#b", "ev#c"]


def test_a_stream_record_that_keeps_failing_is_described_to_the_on_failure_destination_and_the_rest_go_on(
    aws: ClientFactory,
) -> None:
    """As Lambda does with the template's on-failure queue: after the retries the batch's place in the
    stream (not the records) goes to ``on_failure``, and the records after it are handled."""
    ddb, table, arn = _event_stream(aws)
    calls: list[str] = []
    poisoned: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        for record in event["Records"]:
            key, _ = _written(record)
            calls.append(key)
            if key == "ev#bad":
                poisoned.append(record["dynamodb"]["SequenceNumber"])
                raise RuntimeError("this record breaks the handler")
        return {"batchItemFailures": []}

    for key in ("ev#bad", "ev#next"):
        ddb.put_item(TableName=table, Item={"pk": {"S": key}, "n": {"N": "0"}})
    discarded: list[dict[str, Any]] = []
    function_arn = "arn:aws:lambda:us-east-1:123456789012:function:notifier"
    mapping = _stream_mapping(
        aws,
        arn,
        handler,
        batch_size=1,
        max_retries=1,
        parallelization=1,  # one lane: the next record waits behind the poisoned one
        function_arn=function_arn,
        on_failure=discarded.append,
    )
    with mapping.start():
        wait_for(lambda: "ev#next" in calls, timeout_s=15)
    assert calls == ["ev#bad", "ev#bad", "ev#next"]  # tried, retried once, given up; then the next
    [record] = discarded
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestContext"]["functionArn"] == function_arn
    assert record["responseContext"]["functionError"] == "Unhandled"
    info = record["DDBStreamBatchInfo"]
    assert info["startSequenceNumber"] == info["endSequenceNumber"] == poisoned[0]
    assert info["batchSize"] == 1 and info["streamArn"] == arn and info["shardId"]
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    assert "Records" not in json.dumps(record) and "ev#bad" not in json.dumps(record)  # where, not what


def test_a_woken_stream_mapping_reads_when_moto_answers_a_transaction(
    aws: ClientFactory, moto_server: LocalMotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Woken, as the local stack runs the notifier's: after an empty read the poller sleeps until moto has
    answered a transaction (the lifecycle writes its events in them), and it follows the stream past the
    renewal of its iterator: each record once, in order."""
    monkeypatch.setattr(streams, "_WOKEN_RECHECK_S", 60.0)  # here nothing but a wake makes it look again
    ddb, table, arn = _event_stream(aws)
    handled: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        handled.extend(_written(record)[0] for record in event["Records"])
        return {"batchItemFailures": []}

    def transaction(key: str) -> None:
        item = {"pk": {"S": key}, "n": {"N": "0"}}
        ddb.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": item}}])

    mapping = _stream_mapping(
        aws,
        arn,
        handler,
        batch_size=10,
        max_retries=0,
        parallelization=1,
        woken=True,
    )
    moto_server.observe(
        lambda service, action, params: (
            mapping.notify() if service == "dynamodb" and action in STREAM_WAKING_ACTIONS else None
        )
    )
    ddb.put_item(TableName=table, Item={"pk": {"S": "ev#before"}, "n": {"N": "0"}})
    with mapping.start():
        wait_for(lambda: handled == ["ev#before"], timeout_s=10)  # the first read, from the trim horizon
        transaction("ev#woken")
        wait_for(lambda: handled == ["ev#before", "ev#woken"], timeout_s=10)
        time.sleep(streams._ITERATOR_AGE_S + 0.2)
        transaction("ev#renewed")
        wait_for(lambda: handled == ["ev#before", "ev#woken", "ev#renewed"], timeout_s=10)
        time.sleep(0.3)
    assert handled == ["ev#before", "ev#woken", "ev#renewed"]
