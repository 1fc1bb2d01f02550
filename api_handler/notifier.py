"""The webhook notifier and sender Lambdas (docs/webhooks.md), beside the API whose job view they send.

- The notifier reads the lifecycle's state-change events (the jobs table's stream, filtered to ``event#``
  items) and makes one delivery per target: each of the job owner's webhooks that wants the event's type,
  and the job's own callback URL. A delivery is written once (a repeated event makes none) and its key sent
  to the webhooks queue. Records it could not handle are answered as batch item failures.
- The sender takes a delivery's key from the queue, signs its body (Standard Webhooks) and POSTs it to the
  address it resolved and checked (no redirects, a timeout). A 2xx delivers it; a 410 disables the webhook;
  anything else schedules the next attempt (the queue's delay, at most 15 minutes a hop, until it is due)
  until the schedule is used up: then the delivery is failed and the webhook shows as failing.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, TypeVar

from boto3.dynamodb.types import TypeDeserializer

from pijobs.api_handler.views import job_view
from pijobs.shared import aws
from pijobs.shared.errors import NoSuchJobError
from pijobs.shared.hooks import (
    DELIVERY_TTL_DAYS,
    Delivery,
    DeliveryQueue,
    Webhook,
    WebhookStore,
    callback_target,
)
from pijobs.shared.lifecycle import EVENT_PREFIX
from pijobs.shared.logs import bind_job, clear_context, configure_logging, get_logger
from pijobs.shared.models import JobRecord, isoformat, utcnow
from pijobs.shared.settings import WebhookSettings
from pijobs.shared.store import JobStore
from pijobs.shared.webhooks import (
    DELIVERY_TIMEOUT_SECONDS,
    PAYLOAD_MAX_BYTES,
    RETRY_SCHEDULE,
    Target,
    UrlPolicy,
    UrlRefused,
    check_url,
    event_payload,
    event_type,
    parse_schedule,
    retry_delay,
    signed_headers,
)

log = get_logger(__name__)
_DESERIALIZER = TypeDeserializer()


@dataclass(frozen=True)
class WebhookServices:
    settings: WebhookSettings
    jobs: JobStore
    hooks: WebhookStore
    queue: DeliveryQueue
    events: Any = None  # an EventBridge client (with settings.event_bus)

    @property
    def policy(self) -> UrlPolicy:
        return UrlPolicy(allow_loopback_http=self.settings.webhook_allow_loopback)

    @property
    def schedule(self) -> tuple[float, ...]:
        text = self.settings.webhook_retry_schedule
        return parse_schedule(text) if text else RETRY_SCHEDULE


@lru_cache(maxsize=1)
def services() -> WebhookServices:
    settings = WebhookSettings.from_env()
    ddb = aws.client("dynamodb")
    return WebhookServices(
        settings=settings,
        jobs=JobStore(ddb, settings.table_name),
        hooks=WebhookStore(ddb, settings.table_name),
        queue=DeliveryQueue(aws.client("sqs"), settings.webhooks_queue_url),
        events=aws.client("events") if settings.event_bus else None,
    )


# ---- the notifier --------------------------------------------------------------------------------------
def event_id(event: dict[str, Any]) -> str:
    """The event's id: the same for every delivery and retry of it (``webhook-id``)."""
    return f"evt_{event['job_id']}_{event['attempt']}_{str(event['status']).lower()}"


def job_data(job: JobRecord, event: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The job as GET /jobs/{id} shows it (no download link), as of the event: its status and time."""
    data = job_view(job, base_url=base_url).model_dump(mode="json")
    if data.get("result"):
        data["result"].pop("url", None)
    data.update(status=event["status"], previous_status=event["previous"], updated_at=event["at"])
    data["event_attempt"] = event["attempt"]
    if event.get("error_code") is None and event["status"] != "SUCCEEDED":
        data["error"] = None if event["status"] in ("PROVISIONING", "RUNNING") else data.get("error")
    return data


def payload_body(type_: str, timestamp: str, data: dict[str, Any]) -> str:
    body = json.dumps(event_payload(type_, timestamp, data), separators=(",", ":"), sort_keys=True)
    if len(body.encode()) > PAYLOAD_MAX_BYTES:  # large params or history: the links lead to the whole job
        data = {**data, "params": None, "history": [], "truncated": True}
        body = json.dumps(event_payload(type_, timestamp, data), separators=(",", ":"), sort_keys=True)
    return body


OwnersHooks = dict[str, list[Webhook]]


def targets_for(
    services: WebhookServices, job: JobRecord, type_: str, known: OwnersHooks | None = None
) -> list[tuple[str, str]]:
    """(target, url) for the job's owner's webhooks that want ``type_``, and the job's callback URL.
    ``known`` holds the owners' webhooks read already for this batch: each owner's are read once a batch."""
    known = {} if known is None else known
    if job.owner not in known:
        known[job.owner] = services.hooks.list_for_owner(job.owner)
    hooks = known[job.owner]
    found = [(h.webhook_id, h.url) for h in hooks if not h.disabled_reason and type_ in h.events]
    if job.callback_url:
        found.append((callback_target(job.job_id), job.callback_url))
    return found


EVENT_SOURCE = "pijobs"
EVENT_DETAIL_TYPE = "pijobs Job State Change"


def operator_detail(job: JobRecord, event: dict[str, Any]) -> dict[str, Any]:
    """The EventBridge event's detail: the change, its job's identity and result (no link), its times."""
    result = None
    if job.result is not None and event["status"] == "SUCCEEDED":
        result = {"filename": job.result.filename, "bytes": job.result.bytes, "sha256": job.result.sha256}
    return {
        "job_id": job.job_id,
        "owner_key_id": job.owner,
        "function": job.function,
        "version": job.version,
        "status": event["status"],
        "previous_status": event["previous"],
        "attempt": event["attempt"],
        "error_code": event.get("error_code"),
        "result": result,
        "at": event["at"],
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at if event["status"] == job.status.value else None,
    }


def publish(services: WebhookServices, job: JobRecord, event: dict[str, Any]) -> None:
    """One EventBridge event per state change (raises when EventBridge refused it: the record is retried)."""
    if services.events is None or not services.settings.event_bus:
        return
    response = services.events.put_events(
        Entries=[
            {
                "Source": EVENT_SOURCE,
                "DetailType": EVENT_DETAIL_TYPE,
                "Detail": json.dumps(operator_detail(job, event)),
                "EventBusName": services.settings.event_bus,
                "Resources": [],
            }
        ]
    )
    if response.get("FailedEntryCount"):
        raise RuntimeError("EventBridge refused the state-change event")


def fan_out(services: WebhookServices, event: dict[str, Any], known: OwnersHooks | None = None) -> int:
    """One delivery per target of one state-change event; how many were new."""
    bind_job(str(event["job_id"]))
    try:
        job = services.jobs.get(str(event["job_id"]))
    except NoSuchJobError:
        return 0
    type_ = event_type(str(event["status"]))
    body = payload_body(type_, str(event["at"]), job_data(job, event, services.settings.public_api_url))
    made = 0
    now = utcnow()
    for target, url in targets_for(services, job, type_, known):
        delivery = Delivery(
            target=target,
            event_id=event_id(event),
            type=type_,
            job_id=job.job_id,
            job_attempt=int(event["attempt"]),
            hook_owner=job.owner,
            url=url,
            body=body,
            created_at=isoformat(now),
            next_attempt_at=now.timestamp(),
            expires_at=int((now + timedelta(days=DELIVERY_TTL_DAYS)).timestamp()),
        )
        if services.hooks.add_delivery(delivery):
            services.queue.send(delivery.key)
            made += 1
    publish(
        services, job, event
    )  # last: if EventBridge refuses, the record is retried (deliveries are made once)
    log.info("webhook_event_fanned_out", type=type_, deliveries=made)
    return made


def stream_event(record: dict[str, Any]) -> dict[str, Any] | None:
    """The state-change event in a stream record; None for any other item or change."""
    image = (record.get("dynamodb") or {}).get("NewImage")
    if record.get("eventName") not in ("INSERT", "MODIFY") or not image:
        return None
    item = {k: _DESERIALIZER.deserialize(v) for k, v in image.items()}
    if not str(item.get("pk", "")).startswith(EVENT_PREFIX):
        return None
    return {k: (int(v) if k == "attempt" else v) for k, v in item.items()}


FAN_OUT_THREADS = 8  # jobs fanned out at once within a batch (each a few round trips to DynamoDB and SQS)
SEND_THREADS = 10  # a batch's deliveries attempted at once (the sender's mapping hands over 10 at most)

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


def side_by_side(work: Callable[[Item], Outcome], items: list[Item], threads: int) -> list[Outcome]:
    """``work`` done on each item, at most ``threads`` at once; the outcomes in the items' order."""
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(work, items))


def notifier_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The stream's batch: each record's event fanned out; the ones that failed answered for a retry.

    Records of different jobs are fanned out side by side (deliveries are unordered anyway: each payload
    carries its status and time); one job's events stay in the stream's order."""
    configure_logging()
    known: OwnersHooks = {}
    by_job: dict[str, list[tuple[dict[str, Any], dict[str, Any] | Exception | None]]] = {}
    for record in event.get("Records", []):
        try:
            found: dict[str, Any] | Exception | None = stream_event(record)
        except Exception as exc:  # answered for a retry in its own group, below
            found = exc
        key = str(found["job_id"]) if isinstance(found, dict) else ""
        by_job.setdefault(key, []).append((record, found))

    def fan_out_in_order(group: list[tuple[dict[str, Any], dict[str, Any] | Exception | None]]) -> list[str]:
        failed = []
        for record, found in group:
            clear_context()
            try:
                if isinstance(found, Exception):
                    raise found
                if found is not None:
                    fan_out(services(), found, known)
            except Exception:
                log.exception("webhook_fan_out_failed")
                failed.append(str((record.get("dynamodb") or {}).get("SequenceNumber", "")))
        return failed

    outcomes = side_by_side(fan_out_in_order, list(by_job.values()), FAN_OUT_THREADS)
    failed = [number for numbers in outcomes for number in numbers]
    return {"batchItemFailures": [{"itemIdentifier": n} for n in failed]}


# ---- the sender ----------------------------------------------------------------------------------------
class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address checked, whatever the host name would resolve to now."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._address = target.address
        self._context = ssl.create_default_context()

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # the name's certificate


def post(target: Target, headers: dict[str, str], body: bytes, timeout: float) -> int:
    """POST once to the checked address; the answer's status (a redirect is an answer, not followed)."""
    kind = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = kind(target, timeout)
    try:
        connection.request(
            "POST", target.path, body=body, headers={**headers, "user-agent": "pijobs-webhooks"}
        )
        response = connection.getresponse()
        response.read(64 * 1024)
        return int(response.status)
    finally:
        connection.close()


def signing_secrets(
    services: WebhookServices, delivery: Delivery, now: float
) -> tuple[list[str] | None, Webhook | None]:
    """The secrets that sign this delivery now (None when its target is gone or disabled), and the
    webhook it goes to (None for a job's callback URL, or when the webhook is gone)."""
    if delivery.target.startswith("job_"):
        try:
            job = services.jobs.get(delivery.target.removeprefix("job_"))
        except NoSuchJobError:
            return None, None
        return ([job.callback_secret] if job.callback_secret else None), None
    hook = services.hooks.get(delivery.target)
    if hook is None or hook.disabled_reason:
        return None, hook
    return hook.signing_secrets(now), hook


def attempt(services: WebhookServices, key: str, *, now: float | None = None) -> Delivery | None:
    """One attempt of the delivery ``key`` if it is due (else it goes back to the queue until it is)."""
    clear_context()
    delivery = services.hooks.get_delivery(key)
    if delivery is None or delivery.state != "pending":
        return delivery
    if delivery.job_id:
        bind_job(delivery.job_id)
    now = time.time() if now is None else now
    if delivery.next_attempt_at and delivery.next_attempt_at > now + 0.05:
        services.queue.send(key, delivery.next_attempt_at - now)
        return delivery
    secrets, hook = signing_secrets(services, delivery, now)
    previous = delivery.attempts
    changes: dict[str, Any] = {"attempts": previous + 1, "last_attempt_at": isoformat(utcnow())}
    if not secrets:
        changes.update(state="gone", error="the webhook was removed or disabled", next_attempt_at=None)
        services.hooks.save_attempt(delivery.model_copy(update=changes), previous)
        return None
    body = delivery.body.encode()
    headers = signed_headers(secrets, delivery.event_id, int(now), body)
    started = time.monotonic()
    status: int | None = None
    try:
        target = check_url(delivery.url, services.policy)
        status = post(
            target, headers, body, min(services.settings.webhook_timeout_seconds, DELIVERY_TIMEOUT_SECONDS)
        )
        changes["error"] = None if 200 <= status < 300 else f"answered {status}"
    except UrlRefused as exc:
        changes["error"] = f"refused: {exc}"
    except (OSError, http.client.HTTPException) as exc:
        changes["error"] = f"no answer: {type(exc).__name__}"
    changes.update(response_status=status, duration_ms=int((time.monotonic() - started) * 1000))
    if status is not None and 200 <= status < 300:
        changes.update(state="delivered", next_attempt_at=None)
    elif status == 410:
        changes.update(state="gone", next_attempt_at=None)
    else:
        delay = retry_delay(previous + 1, services.schedule)
        changes.update(
            state="pending" if delay is not None else "failed",
            next_attempt_at=None if delay is None else now + delay,
        )
    updated = delivery.model_copy(update=changes)
    if not services.hooks.save_attempt(updated, previous):
        return services.hooks.get_delivery(key)  # another sender recorded this attempt
    _after(services, updated, hook, now=now)
    log.info(
        "webhook_delivery_attempted",
        target=delivery.target,
        event_id=delivery.event_id,
        type=delivery.type,
        attempt=updated.attempts,
        state=updated.state,
        response_status=status,
        duration_ms=updated.duration_ms,
    )
    return updated


def _after(services: WebhookServices, delivery: Delivery, hook: Webhook | None, *, now: float) -> None:
    """What an attempt's outcome changes beyond its delivery: the next try, or its webhook's state (a
    success clears ``failing_since`` only on a webhook that shows as failing: no write otherwise)."""
    if delivery.state == "pending" and delivery.next_attempt_at is not None:
        services.queue.send(delivery.key, delivery.next_attempt_at - now)
    elif hook is None:
        return
    elif delivery.state == "gone":
        services.hooks.update(hook.webhook_id, disabled_reason="the receiver answered 410 Gone")
    elif delivery.state == "failed":
        services.hooks.update(hook.webhook_id, failing_since=isoformat(utcnow()))
    elif delivery.state == "delivered" and hook.failing_since:
        services.hooks.update(hook.webhook_id, failing_since=None)


def sender_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The webhooks queue's batch: one attempt per record, side by side (each may wait the whole delivery
    timeout on its receiver: one after another, two slow receivers would outlast the function's timeout
    and hold up the batch's other deliveries); a record that raised is retried by SQS."""
    configure_logging()

    def attempt_record(record: dict[str, Any]) -> dict[str, str] | None:
        try:
            attempt(services(), str(json.loads(record["body"])["delivery"]))
            return None
        except Exception:
            log.exception("webhook_delivery_failed")
            return {"itemIdentifier": str(record.get("messageId", ""))}

    outcomes = side_by_side(attempt_record, list(event.get("Records", [])), SEND_THREADS)
    return {"batchItemFailures": [failure for failure in outcomes if failure is not None]}


def epoch_iso(seconds: float | None) -> str | None:
    return None if seconds is None else isoformat(datetime.fromtimestamp(seconds, tz=timezone.utc))
