"""Integration fixtures: the real adapters and handlers against moto's in-process AWS."""

from __future__ import annotations

import functools
import json
import sys
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws

from pijobs.api_handler import handler as api_handler
from pijobs.deploy import upload_function_templates
from pijobs.dispatcher import handler as dispatcher
from pijobs.dispatcher import verifier
from pijobs.local.cfn import load_template, resources_of_type
from pijobs.local.gateway import DEFAULT_ROUTES, compile_route, match_route
from pijobs.local.runner import shim_environment
from pijobs.shared import aws, errors
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.channel import TOKEN_ENV
from pijobs.shared.functions import installed_functions
from pijobs.shared.models import JobRecord
from pijobs.shared.settings import WorkerSettings
from pijobs.shared.store import JobStore
from pijobs.worker.channel import Channel
from pijobs.worker.job import WorkerServices, build_services, run_job

ROOT = Path(__file__).resolve().parents[2]
PRIMARY_TEMPLATE = ROOT / "infra" / "primary.yaml"
REGION = "us-east-1"


@dataclass
class Cloud:
    """Names of the primary resources made in moto, and clients to look at them."""

    table: str
    queue_url: str
    dlq_url: str
    bucket: str
    env: dict[str, str]
    ddb: Any = field(repr=False)
    sqs: Any = field(repr=False)
    s3: Any = field(repr=False)
    cfn: Any = field(repr=False)
    ec2: Any = field(repr=False)

    @property
    def store(self) -> JobStore:
        return JobStore(self.ddb, self.table)

    def capacity(self, limit: int = 2) -> CapacityCounter:
        return CapacityCounter(self.ddb, self.table, default_limit=limit)

    def live_stacks(self) -> list[dict[str, Any]]:
        stacks = self.cfn.describe_stacks()["Stacks"]
        return [s for s in stacks if s["StackName"].startswith("pijob-") and "DELETE" not in s["StackStatus"]]

    def running_instances(self) -> list[dict[str, Any]]:
        reservations = self.ec2.describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        )["Reservations"]
        return [i for r in reservations for i in r["Instances"]]

    # ---- the pipeline, driven in-process -------------------------------------------------------------
    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key_id: str = "key-a",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        resource, params = _resource_of(path)
        event = {
            "resource": resource,
            "path": path.split("?")[0],
            "httpMethod": method,
            "headers": {
                "Host": "api.test",
                **({"Content-Type": "application/json"} if body else {}),
                **(headers or {}),
            },
            "queryStringParameters": _query_of(path),
            "pathParameters": params,
            "body": body if isinstance(body, str) or body is None else json.dumps(body),
            "isBase64Encoded": False,
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "stage": "test",
                "identity": {"apiKeyId": key_id},
            },
        }
        response = api_handler.lambda_handler(event, None)
        return response["statusCode"], json.loads(response["body"]), response["headers"]

    def submit(self, digits: int = 50, **extra: Any) -> str:
        status, body, _ = self.api("POST", "/jobs", {"digits": digits, **extra})
        assert status == 202, body
        return str(body["job_id"])

    def receive(self, max_messages: int = 10, wait_seconds: int = 0) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max_messages,
            AttributeNames=["All"],
            WaitTimeSeconds=wait_seconds,
        )
        return [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "eventSource": "aws:sqs",
            }
            for m in response.get("Messages", [])
        ]

    def dispatch(self, records: list[dict[str, Any]]) -> list[str]:
        """Call the dispatcher like the event source mapping: delete what succeeded, return failures."""
        result = dispatcher.lambda_handler({"Records": records}, None)
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for record in records:
            if record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"])
        return sorted(failed)

    # ---- the job's instance: no credentials, only its worker token and the API -------------------------
    def instance_of(self, job_id: str) -> dict[str, Any] | None:
        """The job's live instance; else the last one it had (terminated with its stack)."""
        tagged = [
            i
            for r in self.ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
            if {"Key": "JobId", "Value": job_id} in i.get("Tags", [])
        ]
        live = [i for i in tagged if i["State"]["Name"] in ("pending", "running")]
        return (live or tagged or [None])[-1]

    def worker_token(self, job_id: str) -> str:
        """The token the job's current instance was given: what its UserData exports (as the instance, or
        locally the runner, reads it)."""
        instance = self.instance_of(job_id)
        assert instance is not None, f"job {job_id} never had an instance"
        attribute = self.ec2.describe_instance_attribute(
            InstanceId=instance["InstanceId"], Attribute="userData"
        )
        return shim_environment(attribute["UserData"]["Value"])[TOKEN_ENV]

    def worker_call(
        self, job_id: str, operation: str, body: Any = None, *, token: str | None
    ) -> tuple[int, dict[str, Any]]:
        """One worker channel call, through the API handler as the gateway would make it."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        status, raw = in_process_send(
            "POST",
            f"{API_URL}/worker/jobs/{job_id}/{operation}",
            headers,
            json.dumps({} if body is None else body).encode(),
        )
        return status, json.loads(raw)

    def run_worker(
        self,
        job_id: str,
        *,
        adapt: Callable[[WorkerServices], None] | None = None,
        **overrides: Any,
    ) -> int:
        """What the instance does: the real worker, with the token and instance id its stack gave it, over
        the worker channel (the API handler, in-process) and presigned URLs (moto answers requests).

        ``overrides`` are WorkerSettings fields; ``adapt`` may swap the services' parts (to make them fail).
        """
        instance = self.instance_of(job_id)
        settings = WorkerSettings(
            api_url=API_URL,
            worker_token=self.worker_token(job_id),
            instance_id=instance["InstanceId"] if instance else None,
            **{"heartbeat_seconds": 0.05, **overrides},
        )
        services = build_services(settings, job_id)
        services.channel = Channel(
            API_URL,
            job_id,
            settings.worker_token.get_secret_value(),
            backoff=settings.backoff(),
            send=in_process_send,
        )
        services.fetch = requests_fetch
        services.post = requests_post
        if adapt is not None:
            adapt(services)
        return run_job(job_id, services)

    def job(self, job_id: str) -> JobRecord:
        return self.store.get(job_id)


_ROUTES = [compile_route(resource) for resource in DEFAULT_ROUTES]
API_URL = "https://api.test"


def in_process_send(method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """A worker channel request as API Gateway hands it to the API handler: no API key, the headers as
    sent (the token among them)."""
    path = urllib.parse.urlsplit(url).path
    resource, params = _resource_of(path)
    event = {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Host": "api.test", **headers},
        "queryStringParameters": None,
        "pathParameters": params,
        "body": body.decode(),
        "isBase64Encoded": False,
        "requestContext": {"requestId": str(uuid.uuid4()), "stage": "test", "identity": {"apiKeyId": None}},
    }
    response = api_handler.lambda_handler(event, None)
    return int(response["statusCode"]), str(response["body"]).encode()


def requests_fetch(url: str, destination: Path) -> None:
    """A presigned GET, with requests (which moto answers in-process)."""
    response = requests.get(url, timeout=10)
    if response.status_code in (401, 403, 404, 410):
        raise errors.InputUnavailableError(f"the input's link was refused (HTTP {response.status_code})")
    response.raise_for_status()
    destination.write_bytes(response.content)


def requests_post(url: str, fields: Mapping[str, str], path: Path) -> None:
    """A presigned POST, with requests (which moto answers in-process)."""
    with path.open("rb") as stream:
        response = requests.post(url, data=dict(fields), files={"file": (path.name, stream)}, timeout=30)
    response.raise_for_status()


def _resource_of(path: str) -> tuple[str, dict[str, str] | None]:
    """The resource and path parameters the gateway would route ``path`` to (the route table's)."""
    return match_route(_ROUTES, path.split("?")[0]) or (path.split("?")[0], None)


def _query_of(path: str) -> dict[str, str] | None:
    if "?" not in path:
        return None
    pairs = [p.split("=", 1) for p in path.split("?", 1)[1].split("&") if p]
    return {k: v for k, v in pairs}


def jobs_table_schema() -> dict[str, Any]:
    """The jobs table's keys and indexes exactly as infra/primary.yaml declares them (one copy of them)."""
    properties = resources_of_type(load_template(PRIMARY_TEMPLATE), "AWS::DynamoDB::Table")["JobsTable"]
    return {
        name: properties[name] for name in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")
    }


def _make_primary(env_overrides: dict[str, str]) -> Cloud:
    ddb = boto3.client("dynamodb", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    cfn = boto3.client("cloudformation", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)

    table = "pijobs-jobs"
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **jobs_table_schema())
    dlq_url = sqs.create_queue(QueueName="pijobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName="pijobs-jobs",
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
        },
    )["QueueUrl"]
    bucket = "pijobs-results"
    s3.create_bucket(Bucket=bucket)
    s3.create_bucket(Bucket="pijobs-artifacts")
    upload_function_templates(s3, "pijobs-artifacts", installed_functions().values())
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnet_id = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"][0][
        "SubnetId"
    ]
    fixed = {
        "ApiUrl": API_URL,
        "SubnetId": subnet_id,
        "VpcId": vpc_id,
    }
    env = {
        "PIJOBS_TABLE_NAME": table,
        "PIJOBS_QUEUE_URL": queue_url,
        "PIJOBS_RESULTS_BUCKET": bucket,
        "PIJOBS_ARTIFACTS_BUCKET": "pijobs-artifacts",
        "PIJOBS_ARTIFACTS_URL": "https://pijobs-artifacts.s3.amazonaws.com/",
        "PIJOBS_STACK_PARAMETERS": json.dumps(fixed),
        "PIJOBS_MAX_ACTIVE_STACKS": "2",
        "PIJOBS_ADMISSION_TICK_SECONDS": "1",
        **env_overrides,
    }
    return Cloud(table, queue_url, dlq_url, bucket, env, ddb, sqs, s3, cfn, ec2)


# AWS executes each of these calls atomically; moto's backends do not (two racing conditional writes can both
# pass, two CreateStack calls with one name can both launch). The local server serialises them in a WSGI
# middleware (pijobs/local/moto_server.py); in-process, the same guarantee is a lock around the backend.
_ATOMIC_CALLS = {
    "moto.cloudformation.models:CloudFormationBackend": ("create_stack", "update_stack", "delete_stack"),
    # The whole DynamoDB request, not only the backend's write: UpdateItem's response deep-copies the item
    # before the backend call, and another thread's write could change it mid-copy.
    "moto.dynamodb.responses:DynamoHandler": ("call_action",),
    "moto.dynamodb.models:DynamoDBBackend": (
        "put_item",
        "update_item",
        "delete_item",
        "transact_write_items",
    ),
}


def _make_moto_atomic(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    lock = threading.RLock()
    for target, names in _ATOMIC_CALLS.items():
        module_name, class_name = target.split(":")
        backend = getattr(importlib.import_module(module_name), class_name)
        for name in names:
            monkeypatch.setattr(backend, name, _locked(getattr(backend, name), lock))


def _locked(method: Any, lock: threading.RLock) -> Any:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return call


def _clear_caches() -> None:
    api_handler.services.cache_clear()
    dispatcher.services.cache_clear()
    verifier.services.cache_clear()
    aws._cached_client.cache_clear()


@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Cloud]:
    """A fresh moto account with the primary resources and the handlers' environment pointing at them."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    overrides: dict[str, str] = getattr(request, "param", {}) or {}
    _make_moto_atomic(monkeypatch)
    with mock_aws():
        made = _make_primary(overrides)
        for key, value in made.env.items():
            monkeypatch.setenv(key, value)
        _clear_caches()
        yield made
        _clear_caches()


def run_racing(threads: list[threading.Thread]) -> None:
    """Start ``threads`` and wait for them, switching between them as often as the interpreter can: races
    show here as they do under load."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
