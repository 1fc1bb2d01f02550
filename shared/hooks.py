"""Webhooks and their deliveries in the jobs table (docs/webhooks.md).

- A webhook: ``pk = webhook#<webhook_id>``, its owner in ``hook_owner`` (not ``owner``: the jobs' owner index
  must not list it), its secrets (the current one, and a rotated-out one until its ``until``).
- A delivery: ``pk = delivery#<target>#<event_id>``, one per event and target (a webhook's id, or
  ``job_<job_id>`` for a job's callback URL), made once (a conditional put: a repeated event makes no second
  delivery), with the body it sends on every attempt, its attempts, last answer and next retry; a TTL.

Both carry ``hook_scope`` + ``created_at``, the keys of the sparse hooks index: ``owner#<owner>`` lists a
key's webhooks, ``deliveries#<target>`` a target's deliveries, newest first.
"""

from __future__ import annotations

import json
import math
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from pydantic import BaseModel, ConfigDict, Field

from pijobs.shared.aws import conditional_write
from pijobs.shared.errors import NoSuchWebhookError
from pijobs.shared.models import from_dynamo, to_dynamo

HOOKS_INDEX = "hooks-index"
HOOK_SCOPE = "hook_scope"
WEBHOOK_PREFIX = "webhook#"
DELIVERY_PREFIX = "delivery#"
MAX_WEBHOOKS_PER_KEY = 20
DELIVERY_TTL_DAYS = 30
DELIVERIES_SHOWN = 50
SQS_MAX_DELAY = 900

_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


class SigningSecret(BaseModel):
    model_config = ConfigDict(extra="ignore")

    secret: str
    until: int | None = None  # epoch seconds; None: the current secret


class Webhook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    webhook_id: str
    hook_owner: str
    url: str
    events: list[str]
    description: str | None = None
    created_at: str
    secrets: list[SigningSecret]
    disabled_reason: str | None = None  # 410 Gone from the receiver
    failing_since: str | None = None  # a delivery used up its retries; cleared by the next success

    def signing_secrets(self, now: float) -> list[str]:
        return [s.secret for s in self.secrets if s.until is None or s.until > now]


class Delivery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    target: str
    event_id: str
    type: str
    job_id: str | None = None
    job_attempt: int | None = None
    hook_owner: str
    url: str
    body: str
    created_at: str
    state: str = "pending"  # pending, delivered, failed, gone
    attempts: int = 0
    response_status: int | None = None
    duration_ms: int | None = None
    last_attempt_at: str | None = None
    next_attempt_at: float | None = None  # epoch seconds
    error: str | None = None
    expires_at: int = Field(default=0)

    @property
    def key(self) -> str:
        return delivery_key(self.target, self.event_id)


def webhook_key(webhook_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{WEBHOOK_PREFIX}{webhook_id}"}}


def delivery_key(target: str, event_id: str) -> str:
    return f"{DELIVERY_PREFIX}{target}#{event_id}"


def callback_target(job_id: str) -> str:
    return f"job_{job_id}"


def _serialize(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _SERIALIZER.serialize(to_dynamo(v)) for k, v in data.items()}


def _python(item: dict[str, Any]) -> dict[str, Any]:
    return from_dynamo({k: _DESERIALIZER.deserialize(v) for k, v in item.items()})  # type: ignore[no-any-return]


class WebhookStore:
    def __init__(self, client: Any, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    # ---- webhooks ------------------------------------------------------------------------------------
    def create(self, hook: Webhook) -> Webhook:
        data = hook.model_dump(mode="json", exclude_none=True)
        item = _serialize({**data, HOOK_SCOPE: f"owner#{hook.hook_owner}"}) | webhook_key(hook.webhook_id)
        self._ddb.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        return hook

    def get(self, webhook_id: str) -> Webhook | None:
        response = self._ddb.get_item(TableName=self._table, Key=webhook_key(webhook_id), ConsistentRead=True)
        return Webhook.model_validate(_python(response["Item"])) if "Item" in response else None

    def get_for_owner(self, webhook_id: str, owner: str) -> Webhook:
        """Another key's webhook is indistinguishable from a missing one."""
        hook = self.get(webhook_id) if webhook_id.startswith("wh_") else None
        if hook is None or hook.hook_owner != owner:
            raise NoSuchWebhookError(f"no webhook {webhook_id}")
        return hook

    def list_for_owner(self, owner: str) -> list[Webhook]:
        items = self._query(f"owner#{owner}", MAX_WEBHOOKS_PER_KEY + 1)
        return [Webhook.model_validate(item) for item in items]

    def delete(self, webhook_id: str) -> None:
        self._ddb.delete_item(TableName=self._table, Key=webhook_key(webhook_id))

    def update(self, webhook_id: str, **fields: Any) -> bool:
        """Set ``fields`` (None removes one) on a webhook that still exists; False if it is gone."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets, removes = [], []
        for i, (name, value) in enumerate(fields.items()):
            names[f"#f{i}"] = name
            if value is None:
                removes.append(f"#f{i}")
            else:
                values[f":v{i}"] = _SERIALIZER.serialize(to_dynamo(value))
                sets.append(f"#f{i} = :v{i}")
        expression = ("SET " + ", ".join(sets) if sets else "") + (
            " REMOVE " + ", ".join(removes) if removes else ""
        )
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": webhook_key(webhook_id),
            "UpdateExpression": expression.strip(),
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeNames": names,
        }
        if values:
            request["ExpressionAttributeValues"] = values
        return conditional_write(lambda: self._ddb.update_item(**request)) is not None

    # ---- deliveries ----------------------------------------------------------------------------------
    def add_delivery(self, delivery: Delivery) -> bool:
        """Record a new delivery; False when this target already has this event (a repeated event)."""
        data = delivery.model_dump(mode="json", exclude_none=True)
        item = _serialize({**data, HOOK_SCOPE: f"deliveries#{delivery.target}", "pk": delivery.key})
        written = conditional_write(
            lambda: self._ddb.put_item(
                TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        )
        return written is not None

    def get_delivery(self, key: str) -> Delivery | None:
        response = self._ddb.get_item(TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True)
        return Delivery.model_validate(_python(response["Item"])) if "Item" in response else None

    def save_attempt(self, delivery: Delivery, previous_attempts: int) -> bool:
        """Write a delivery's attempt if nobody else recorded one since ``previous_attempts`` (two senders
        holding the same message: the second one's outcome is dropped)."""
        data = delivery.model_dump(mode="json", exclude_none=True)
        item = _serialize({**data, HOOK_SCOPE: f"deliveries#{delivery.target}", "pk": delivery.key})
        written = conditional_write(
            lambda: self._ddb.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="#attempts = :previous",
                ExpressionAttributeNames={"#attempts": "attempts"},
                ExpressionAttributeValues={":previous": {"N": str(previous_attempts)}},
            )
        )
        return written is not None

    def deliveries(self, target: str, limit: int = DELIVERIES_SHOWN) -> list[Delivery]:
        return [Delivery.model_validate(item) for item in self._query(f"deliveries#{target}", limit)]

    def _query(self, scope: str, limit: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": HOOKS_INDEX,
            "KeyConditionExpression": "#scope = :scope",
            "ExpressionAttributeNames": {"#scope": HOOK_SCOPE},
            "ExpressionAttributeValues": {":scope": {"S": scope}},
            "ScanIndexForward": False,
        }
        while len(found) < limit:
            response = self._ddb.query(**request, Limit=limit - len(found))
            found.extend(_python(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found


class DeliveryQueue:
    """The webhooks queue: a delivery's key, due after ``delay`` seconds (one hop is at most 15 minutes)."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._sqs = client
        self._url = queue_url

    def send(self, key: str, delay: float = 0.0) -> None:
        seconds = max(0, min(SQS_MAX_DELAY, math.ceil(delay)))
        self._sqs.send_message(
            QueueUrl=self._url, MessageBody=json.dumps({"delivery": key}), DelaySeconds=seconds
        )
