"""The embedded default: moto's server as the local AWS, the primary stack deployed into it from
``infra/primary.yaml``, and the stand-ins for what moto cannot execute (gateway, event source mapping,
instance runner). The handlers are the same functions Lambda runs; only ``AWS_ENDPOINT_URL`` differs.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import sys
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodbstreams.models import dynamodbstreams_backends
from moto.events.models import events_backends

from pijobs.api_handler import handler as api_lambda
from pijobs.api_handler import notifier
from pijobs.deploy import PRIMARY_TEMPLATE, deploy_primary_local, template_path
from pijobs.dispatcher import handler as dispatcher_lambda
from pijobs.dispatcher import reaper as reaper_lambda
from pijobs.dispatcher import verifier as verifier_lambda
from pijobs.keys import create_api_key
from pijobs.local.cfn import load_template, resources_of_type
from pijobs.local.esm import LocalEventSourceMapping
from pijobs.local.gateway import LocalGateway
from pijobs.local.moto_server import LocalMotoServer
from pijobs.local.persist import DataDir, Keeper, Resources
from pijobs.local.runner import InstanceRunner
from pijobs.local.schedule import LocalSchedule
from pijobs.local.streams import LocalStreamMapping
from pijobs.ops import esm_settings
from pijobs.shared import aws
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.fairshare import HALF_THE_SLOTS
from pijobs.shared.functions import installed_functions
from pijobs.shared.hooks import DELIVERY_PREFIX, DeliveryQueue
from pijobs.shared.lifecycle import EVENT_PREFIX
from pijobs.shared.logs import configure_logging, get_logger

log = get_logger(__name__)

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
PRIMARY_STACK = "pijobs"
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}

# The calls after which the instance runner looks at EC2 again (job stacks launch and end instances).
RUNNER_WAKING_ACTIONS = frozenset(
    {"CreateStack", "DeleteStack", "UpdateStack", "RunInstances", "TerminateInstances", "StopInstances"}
)
MAPPING = "AWS::Lambda::EventSourceMapping"
# The lifecycle writes its state-change events (what the notifier's stream mapping passes) in transactions.
STREAM_WAKING_ACTIONS = frozenset({"TransactWriteItems"})

# A laptop's time scale: seconds where AWS needs minutes (instances boot in moto at once).
LOCAL_TIMINGS = {
    "PIJOBS_ADMISSION_TICK_SECONDS": "1",
    "PIJOBS_RETRY_BASE_SECONDS": "1",
    "PIJOBS_HEARTBEAT_SECONDS": "1",
    "PIJOBS_HEARTBEAT_TIMEOUT_SECONDS": "10",
    "PIJOBS_PROVISIONING_TIMEOUT_SECONDS": "30",
    "PIJOBS_VANISHED_GRACE_SECONDS": "5",
    "PIJOBS_REQUEUE_AFTER_SECONDS": "120",
    # Webhooks: the retry schedule compressed from hours to seconds (first retries within seconds); receivers
    # on this machine allowed (http and https to 127.0.0.1). Both settable with extra_env.
    "PIJOBS_WEBHOOK_RETRY_SCHEDULE": "1,2,4,8,15,30,60,120,300",
    "PIJOBS_WEBHOOK_ALLOW_LOOPBACK": "true",
    # Operators' events go to the default bus, as on AWS: route them with a rule (e.g. to an SQS queue).
    "PIJOBS_EVENT_BUS": "default",
}


UPLOADS_VISIBILITY_S = 60
LOCAL_VERIFIERS = 2  # uploads verified at once on the embedded stack (each reads its whole file)


@functools.cache
def _primary_template() -> dict[str, Any]:
    """infra/primary.yaml, read once: the stand-ins take several of its settings at each start."""
    return load_template(template_path(PRIMARY_TEMPLATE))


def _matches_no_event(*_: Any, **__: Any) -> None:
    """A scheduled rule's answer to an event: nothing (see ``_scheduled_rules_see_no_events``)."""


# A worker gets nothing of this process's environment that names AWS or pijobs: no credentials, no
# endpoint, no table; only what its instance's UserData exports (the runner adds it) and these timings.
_WORKER_ENV_EXCLUDED = ("AWS_", "PIJOBS_", "BOTO")


def worker_environment(environ: Mapping[str, str], heartbeat_seconds: str) -> dict[str, str]:
    """The environment every local worker starts from (and the fork server it is forked from)."""
    env = {k: v for k, v in environ.items() if not k.upper().startswith(_WORKER_ENV_EXCLUDED)}
    return {**env, "PIJOBS_HEARTBEAT_SECONDS": heartbeat_seconds}


def notification_configuration(declared: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """A bucket's NotificationConfiguration as the template declares it (CloudFormation's shape, its one
    queue being ``queue_arn``) in S3's API shape."""
    return {
        "QueueConfigurations": [
            {
                "QueueArn": queue_arn,
                "Events": [entry["Event"]],
                "Filter": {"Key": {"FilterRules": entry["Filter"]["S3Key"]["Rules"]}},
            }
            for entry in declared["QueueConfigurations"]
        ]
    }


def cors_configuration(declared: dict[str, Any], origin: str) -> dict[str, Any]:
    """A bucket's CorsConfiguration as the template declares it (CloudFormation's shape) in S3's API shape,
    each unconditional rule allowing ``origin``: here the console's origin is the local gateway's, where
    the template names the API's execute-api origin (the extra origins' rule is a deployment's choice)."""
    return {
        "CORSRules": [
            {
                "ID": rule["Id"],
                "AllowedOrigins": [origin],
                "AllowedMethods": list(rule["AllowedMethods"]),
                "MaxAgeSeconds": int(rule["MaxAge"]),
            }
            for rule in declared["CorsRules"]
            if rule  # the conditional rule (an !If) reads as None
        ]
    }


def visible_after(action: str, params: dict[str, Any]) -> list[float]:
    """Seconds after which the messages an SQS call sent or made visible can be received (queue-level
    delays and other queues included: a needless wake costs one empty receive)."""
    if action == "SendMessage":
        return [float(params.get("DelaySeconds") or 0)]
    if action == "SendMessageBatch":
        return sorted({float(e.get("DelaySeconds") or 0) for e in params.get("Entries", [])})
    if action == "ChangeMessageVisibility":
        return [float(params.get("VisibilityTimeout") or 0)]
    if action == "ChangeMessageVisibilityBatch":
        return sorted({float(e.get("VisibilityTimeout") or 0) for e in params.get("Entries", [])})
    return []


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now (SO_REUSEADDR, as servers set it: a port whose last
    connections are still closing counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _quiet_moto() -> None:
    """moto warns about every resource type its CloudFormation skips and about Docker it need not use."""
    warnings.filterwarnings("ignore", module=r"moto(\..*)?$")
    warnings.filterwarnings("ignore", message="No Moto CloudFormation support")
    for name in ("moto", "docker", "werkzeug"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


@dataclass
class LocalConfig:
    api_port: int = 0
    max_active_stacks: int = 4
    max_active_stacks_per_owner: int = HALF_THE_SLOTS  # half the slots; 0: no cap of a tenant's own
    batch_size: int = 5
    maximum_concurrency: int = 2
    throttle_rate: float = 50.0
    throttle_burst: int = 100
    log_dir: Path | None = None
    log_level: str | None = None
    reaper_interval: float = 2.0
    visibility_timeout: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    data_dir: Path | None = None  # None: ephemeral, everything is gone at the stop
    save_interval: float = 2.0  # seconds between copies into data_dir (what a SIGKILL can lose)


class LocalStack:
    """Start everything with ``start()`` (or ``with LocalStack() as stack``); ``stop()`` ends it all."""

    def __init__(self, config: LocalConfig | None = None) -> None:
        self.config = config or LocalConfig()
        self.outputs: dict[str, str] = {}
        self.api_key: str = ""
        self.api_key_id: str = ""
        self._moto: Any = None
        self._gateway: Any = None
        self._esm: Any = None
        self._verifier_esm: Any = None
        self._sender_esm: Any = None
        self._notifier: Any = None
        self._runner: Any = None
        self._reaper: Any = None
        self._data_dir: Any = None
        self._keeper: Any = None
        self.restored: dict[str, int] = {}
        self.port_note = ""  # why the API or AWS endpoint is not on the port of the last run, when it is not
        self._aws_port = 0  # the AWS endpoint's port: the last run's where it is free, else any
        self._saved_env: dict[str, str | None] = {}

    # ---- what a user needs --------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return str(self._gateway.url)

    @property
    def aws_endpoint(self) -> str:
        return str(self._moto.url)

    @property
    def runner(self) -> Any:
        return self._runner

    @property
    def esm(self) -> Any:
        return self._esm

    @property
    def verifier_esm(self) -> Any:
        return self._verifier_esm

    @property
    def reaper(self) -> Any:
        return self._reaper

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.aws_endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_api_key(self, name: str) -> tuple[str, str]:
        """A new API key on the usage plan: (id, value)."""

        return create_api_key(self.client("apigateway"), self.outputs["UsagePlanId"], name)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> LocalStack:

        _quiet_moto()
        configure_logging(self.config.log_level)
        installed_functions()  # a broken or duplicate plug-in stops the start here, with its name
        try:
            if self.config.data_dir is not None:
                self._open_data_dir(self.config.data_dir)
            self._moto = LocalMotoServer(port=self._aws_port).start()
            self._set_env({**LOCAL_CREDENTIALS, "AWS_ENDPOINT_URL": self._moto.url})
            self.outputs = self._deploy_primary()
            self._disable_moto_event_source_mappings()
            self._scheduled_rules_see_no_events()
            self._shorten_visibility_timeout()
            self._send_upload_events()
            self._set_env(self._handler_env())
            self._reset_handler_caches()
            if self._data_dir is not None:
                self.restored = self._keeper_for(self._data_dir).restore()
            self._set_capacity()
            self.api_key_id, self.api_key = self._default_key()
            self._start_standins()
            self._allow_console_uploads()
            if self._keeper is not None:
                self._data_dir.save_state(
                    api_port=self._gateway.port, aws_port=self._moto.port, default_key_id=self.api_key_id
                )
                self._keeper.start()
        except BaseException:
            self.stop()
            raise
        log.info("local_stack_started", api=self.api_url, aws=self.aws_endpoint)
        return self

    @property
    def data_dir(self) -> Path | None:
        return None if self._data_dir is None else Path(self._data_dir.path)

    def stop(self) -> None:
        # The keeper's last copy comes after everything that writes has stopped and before moto goes.
        parts = (
            self._gateway,
            self._notifier,
            self._sender_esm,
            self._esm,
            self._verifier_esm,
            self._reaper,
            self._runner,
            self._keeper,
            self._moto,
        )
        for part in parts:
            if part is not None:
                try:
                    part.stop()
                except Exception as exc:
                    log.warning("local_stack_stop_failed", part=type(part).__name__, error=str(exc))
        self._notifier = self._sender_esm = None
        self._gateway = self._esm = self._verifier_esm = self._reaper = self._runner = self._keeper = None
        self._moto = None
        if self._data_dir is not None:
            self._data_dir.unlock()
            self._data_dir = None
        self._restore_env()
        self._reset_handler_caches()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- steps --------------------------------------------------------------------------------------
    def _open_data_dir(self, path: Path) -> None:
        """Lock the directory (one ``pijobs up`` per directory) and take the last run's ports where free."""

        self._data_dir = DataDir(path).lock()
        state = self._data_dir.state()
        saved_port = int(state.get("api_port") or 0)
        moved = []
        if self.config.api_port == 0 and saved_port:
            if port_is_free(saved_port):
                self.config = replace(self.config, api_port=saved_port)
            else:
                moved.append(f"port {saved_port} of the last run is in use; the API moved")
        saved_aws = int(state.get("aws_port") or 0)
        if saved_aws and saved_aws != self.config.api_port:
            if port_is_free(saved_aws):
                self._aws_port = saved_aws  # the AWS_ENDPOINT_URL printed last time stays good
            else:
                moved.append(f"port {saved_aws} of the last run is in use; the AWS endpoint moved")
        self.port_note = "; ".join(moved)

    def _keeper_for(self, data_dir: Any) -> Any:

        resources = Resources(
            table=self.outputs["TableName"],
            results_bucket=self.outputs["ResultsBucket"],
            usage_plan_id=self.outputs["UsagePlanId"],
            queue_url=self.outputs["QueueUrl"],
        )
        self._keeper = Keeper(data_dir, resources, self.client, interval=self.config.save_interval)
        return self._keeper

    def _default_key(self) -> tuple[str, str]:
        """The key printed at start: the last run's (restored with the data) or a new one."""
        if self._data_dir is not None:
            saved_id = self._data_dir.state().get("default_key_id")
            for key in self._data_dir.saved_keys():
                if key.key_id == saved_id and key.enabled:
                    return key.key_id, key.value
        return self.create_api_key("local-default")

    def _deploy_primary(self) -> dict[str, str]:

        params = {
            "MaxActiveStacks": str(self.config.max_active_stacks),
            "MaxActiveStacksPerOwner": str(self.config.max_active_stacks_per_owner),
            "BatchSize": str(self.config.batch_size),
            "MaximumConcurrency": str(self.config.maximum_concurrency),
        }
        outputs = deploy_primary_local(
            self.client("cloudformation"),
            self.client("s3"),
            self.client("ec2"),
            stack_name=PRIMARY_STACK,
            params=params,
        )
        outputs["UsagePlanId"] = self._usage_plan(outputs)
        return outputs

    def _usage_plan(self, outputs: dict[str, str]) -> str:
        """moto's CloudFormation skips usage plans: make the primary stack's one with a direct call."""
        apigw = self.client("apigateway")
        plans = apigw.get_usage_plans().get("items", [])
        if any(plan["id"] == outputs.get("UsagePlanId") for plan in plans):
            return outputs["UsagePlanId"]
        plan = apigw.create_usage_plan(
            name=f"{PRIMARY_STACK}-usage-plan",
            throttle={"rateLimit": self.config.throttle_rate, "burstLimit": self.config.throttle_burst},
        )
        return str(plan["id"])

    def _disable_moto_event_source_mappings(self) -> None:
        """moto's own mappings would receive every message on send and, unable to run the Lambda without
        Docker, put it back with its receive count raised. The local stand-ins must be the only consumers."""
        for output in ("EventSourceMappingId", "VerifierEventSourceMappingId", "SenderEventSourceMappingId"):
            mapping_id = self.outputs.get(output)
            if mapping_id:
                self.client("lambda").update_event_source_mapping(UUID=mapping_id, Enabled=False)
        # moto runs a table's stream mapping on every write, whatever its Enabled says: detach it (the local
        # stream mapping reads the stream instead).
        table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(self.outputs["TableName"])
        table.lambda_event_source_mappings.clear()

    @staticmethod
    def _scheduled_rules_see_no_events() -> None:
        """On AWS a rule with a schedule matches no event. moto's matches every PutEvents (the rule has no
        pattern) and then fails on its Lambda target, which it cannot run: the notifier's state-change events
        got a 500. Here the reaper's schedule rule ignores events (the schedule stand-in fires the reaper)."""
        for bus in events_backends[DEFAULT_ACCOUNT_ID][REGION].event_buses.values():
            for rule in bus.rules.values():
                if rule.scheduled_expression:
                    rule.send_to_targets = _matches_no_event  # type: ignore[method-assign]

    @staticmethod
    def _declared(kind: str, name: str) -> dict[str, Any]:
        """The properties the template declares for its resource ``name`` of type ``kind``."""
        return resources_of_type(_primary_template(), kind)[name]

    def _results_bucket_declared(self) -> dict[str, Any]:
        return self._declared("AWS::S3::Bucket", "ResultsBucket")

    def _send_upload_events(self) -> None:
        """moto's CloudFormation skips a bucket's NotificationConfiguration: set the template's own with a
        direct call. moto's S3 then sends ObjectCreated events (presigned POSTs too) to the uploads queue
        as S3 does; it checks none of a POST policy's conditions, which is why the verifier exists."""
        declared = self._results_bucket_declared()["NotificationConfiguration"]
        queue_arn = self.client("sqs").get_queue_attributes(
            QueueUrl=self.outputs["UploadsQueueUrl"], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.client("s3").put_bucket_notification_configuration(
            Bucket=self.outputs["ResultsBucket"],
            NotificationConfiguration=notification_configuration(declared, queue_arn),
        )

    def _allow_console_uploads(self) -> None:
        """The template's CORS rule for the console's uploads, with the local gateway's origin (known once it
        listens) for the API's. moto's server answers a preflight by the bucket's rules (403 for an origin
        they do not allow); without any rules it would allow every origin."""
        declared = self._results_bucket_declared()["CorsConfiguration"]
        parts = urllib.parse.urlsplit(self.api_url)
        self.client("s3").put_bucket_cors(
            Bucket=self.outputs["ResultsBucket"],
            CORSConfiguration=cors_configuration(declared, f"{parts.scheme}://{parts.netloc}"),
        )

    def _shorten_visibility_timeout(self) -> None:
        """On AWS the visibility timeout is >= 6x the dispatcher's timeout (minutes); locally a dispatcher
        call takes milliseconds, so a failed message comes back in seconds, on the laptop's time scale."""
        sqs = self.client("sqs")
        sqs.set_queue_attributes(
            QueueUrl=self.outputs["QueueUrl"],
            Attributes={"VisibilityTimeout": str(self.config.visibility_timeout)},
        )
        # A verification reads the whole file (a second or two for hundreds of MB here): long enough not to
        # hand the same event to a second verifier meanwhile.
        sqs.set_queue_attributes(
            QueueUrl=self.outputs["UploadsQueueUrl"],
            Attributes={"VisibilityTimeout": str(UPLOADS_VISIBILITY_S)},
        )

    def _handler_env(self) -> dict[str, str]:
        """Exactly the environment the template gives the Lambdas, read back from moto's Lambda service."""
        cfn, lam = self.client("cloudformation"), self.client("lambda")
        resources = cfn.describe_stack_resources(StackName=PRIMARY_STACK)["StackResources"]
        env: dict[str, str] = {}
        for resource in resources:
            if resource.get("ResourceType") == "AWS::Lambda::Function":
                config = lam.get_function_configuration(FunctionName=resource["PhysicalResourceId"])
                variables = config.get("Environment", {}).get("Variables", {})
                env.update({key: str(value) for key, value in variables.items()})
        env.update(LOCAL_TIMINGS)
        env["PIJOBS_MAX_ACTIVE_STACKS"] = str(self.config.max_active_stacks)
        return {**env, **self.config.extra_env}

    def _set_capacity(self) -> None:

        counter = CapacityCounter(
            self.client("dynamodb"), self.outputs["TableName"], default_limit=self.config.max_active_stacks
        )
        counter.set_limit(self.config.max_active_stacks)

    def _start_standins(self) -> None:

        self._gateway = LocalGateway(
            api_lambda.lambda_handler,
            self.client("apigateway"),
            self.outputs["UsagePlanId"],
            port=self.config.api_port,
        ).start()
        self._point_workers_at(self._gateway.url)
        lam, mapping_id = self.client("lambda"), self.outputs["EventSourceMappingId"]
        self._esm = LocalEventSourceMapping(
            lambda: self.client("sqs"),
            self.outputs["QueueUrl"],
            dispatcher_lambda.lambda_handler,
            batch_size=self.config.batch_size,
            maximum_concurrency=self.config.maximum_concurrency,
            settings_provider=lambda: esm_settings(lam, mapping_id),  # `pijobs ops set` applies live
            woken=True,
        ).start()
        self._verifier_esm = self._declared_queue_mapping(
            "VerifierEventSourceMapping",
            "VerifierFunction",
            "UploadsQueueUrl",
            verifier_lambda.lambda_handler,
            function_name="verifier",
            most_at_once=LOCAL_VERIFIERS,
        )
        self._start_webhooks()
        self._reaper = LocalSchedule(
            reaper_lambda.lambda_handler, interval=self.config.reaper_interval, name="reaper"
        ).start()
        worker_env = {
            **worker_environment(os.environ, self._env_value("PIJOBS_HEARTBEAT_SECONDS")),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self._runner = InstanceRunner(
            self.client("ec2"),
            env=worker_env,
            python=sys.executable,
            log_dir=self.config.log_dir,
            fork_workers=True,
        ).start()
        self._moto.observe(self._on_aws_request)

    def _start_webhooks(self) -> None:
        """The sender on the webhooks queue and the notifier on the table's stream; deliveries that were
        pending at the last stop (kept in the data dir) are queued again first."""
        self._set_env({"PIJOBS_PUBLIC_API_URL": self._gateway.url})
        notifier.services.cache_clear()
        self._requeue_pending_deliveries()
        self._sender_esm = self._declared_queue_mapping(
            "SenderEventSourceMapping",
            "WebhookSenderFunction",
            "WebhooksQueueUrl",
            notifier.sender_handler,
            function_name="webhook-sender",
        )
        stream_arn = self.client("dynamodb").describe_table(TableName=self.outputs["TableName"])["Table"][
            "LatestStreamArn"
        ]
        streams_backend = dynamodbstreams_backends[DEFAULT_ACCOUNT_ID][REGION]
        # the notifier's mapping as the template made it in moto (its !GetAtt resolved to the DLQ's ARN)
        deployed = self.client("lambda").list_event_source_mappings(EventSourceArn=stream_arn)
        mapping = deployed["EventSourceMappings"][0]
        self._notifier = LocalStreamMapping(
            lambda: self.client("dynamodbstreams"),
            stream_arn,
            notifier.notifier_handler,
            prefix=EVENT_PREFIX,
            batch_size=int(mapping["BatchSize"]),
            max_retries=int(mapping["MaximumRetryAttempts"]),
            parallelization=int(mapping["ParallelizationFactor"]),
            function_arn=mapping["FunctionArn"],
            forget=lambda iterator: streams_backend.shard_iterators.pop(iterator, None),
            on_failure=self._send_to_queue(mapping["DestinationConfig"]["OnFailure"]["Destination"]),
            woken=True,
        ).start()

    def _send_to_queue(self, queue_arn: str) -> Callable[[dict[str, Any]], object]:
        """What a stream mapping does with a batch it gave up on: its on-failure queue gets the record."""
        sqs = self.client("sqs")
        queue_url = sqs.get_queue_url(QueueName=queue_arn.rsplit(":", 1)[-1])["QueueUrl"]
        return lambda record: sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))

    def _declared_queue_mapping(
        self,
        mapping: str,
        function: str,
        queue_output: str,
        handler: Any,
        *,
        function_name: str,
        most_at_once: int | None = None,
    ) -> Any:
        """A started stand-in for the template's SQS event source ``mapping`` of ``function``: its batch
        size, concurrency (at most ``most_at_once`` where given) and the function's timeout."""
        declared = self._declared(MAPPING, mapping)
        concurrency = int(declared["ScalingConfig"]["MaximumConcurrency"])
        return LocalEventSourceMapping(
            lambda: self.client("sqs"),
            self.outputs[queue_output],
            handler,
            batch_size=int(declared["BatchSize"]),
            maximum_concurrency=min(concurrency, most_at_once or concurrency),
            function_name=function_name,
            timeout_s=float(self._declared("AWS::Lambda::Function", function)["Timeout"]),
            woken=True,
        ).start()

    def _requeue_pending_deliveries(self) -> None:
        ddb, queue = (
            self.client("dynamodb"),
            DeliveryQueue(self.client("sqs"), self.outputs["WebhooksQueueUrl"]),
        )
        pages = ddb.get_paginator("scan").paginate(
            TableName=self.outputs["TableName"],
            FilterExpression="begins_with(pk, :delivery) AND #state = :pending",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":delivery": {"S": DELIVERY_PREFIX}, ":pending": {"S": "pending"}},
            ProjectionExpression="pk",
        )
        keys = [item["pk"]["S"] for page in pages for item in page.get("Items", [])]
        for key in keys:
            queue.send(key)
        if keys:
            log.info("webhook_deliveries_queued_again", deliveries=len(keys))

    def _point_workers_at(self, api_url: str) -> None:
        """Job stacks get the local gateway as their ApiUrl (the template's is API Gateway's): the worker
        channel is on the same API, here as there."""
        fixed = json.loads(os.environ.get("PIJOBS_STACK_PARAMETERS") or "{}")
        self._set_env({"PIJOBS_STACK_PARAMETERS": json.dumps({**fixed, "ApiUrl": api_url})})
        self._reset_handler_caches()

    def _on_aws_request(self, service: str, action: str, params: dict[str, Any]) -> None:
        """What moto just answered: wake the stand-in it concerns."""
        runner, esm, verifier, stream = self._runner, self._esm, self._verifier_esm, self._notifier
        if runner is not None and action in RUNNER_WAKING_ACTIONS:
            runner.wake()
        if stream is not None and service == "dynamodb" and action in STREAM_WAKING_ACTIONS:
            stream.notify()
        if service == "sqs":
            for delay in visible_after(action, params):
                for mapping in (esm, self._sender_esm):  # a wake for the other queue costs one empty look
                    if mapping is not None:
                        mapping.notify(delay)
        if verifier is not None and action == "PostObject":
            verifier.notify()  # moto's S3 put the file's event straight into the uploads queue

    def _env_value(self, key: str) -> str:
        return self.config.extra_env.get(key, LOCAL_TIMINGS[key])

    # ---- process environment: the handlers run in this process and read it ------------------------------
    def _set_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    @staticmethod
    def _reset_handler_caches() -> None:

        api_lambda.services.cache_clear()
        dispatcher_lambda.services.cache_clear()
        reaper_lambda.services.cache_clear()
        verifier_lambda.services.cache_clear()
        notifier.services.cache_clear()
        aws._cached_client.cache_clear()
