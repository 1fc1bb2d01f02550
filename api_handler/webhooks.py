"""What the API does with webhooks, independent of HTTP: register, list, read, remove, test, rotate a key's
webhooks and list their deliveries; check a job's callback URL (docs/webhooks.md)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from pijobs.api_handler.contract import CreateWebhookRequest, DeliveryView, WebhookView
from pijobs.api_handler.service import ApiServices
from pijobs.api_handler.web import validation_error
from pijobs.shared import errors
from pijobs.shared.hooks import (
    DELIVERY_TTL_DAYS,
    MAX_WEBHOOKS_PER_KEY,
    Delivery,
    DeliveryQueue,
    SigningSecret,
    Webhook,
    WebhookStore,
)
from pijobs.shared.ids import new_id
from pijobs.shared.models import isoformat, utcnow
from pijobs.shared.webhooks import (
    ALL_EVENT_TYPES,
    ROTATION_GRACE_SECONDS,
    TEST_EVENT_TYPE,
    UrlPolicy,
    UrlRefused,
    check_url,
    event_payload,
    new_secret,
)

WEBHOOK_ID_PREFIX = "wh_"


def _store(services: ApiServices) -> WebhookStore:
    if services.hooks is None:
        raise errors.ServiceUnavailableError("webhooks are not available on this deployment")
    return services.hooks


def checked_url(services: ApiServices, url: Any, field: str = "url") -> str:
    """``url`` if a webhook may call it (shared/webhooks.py's rules); else a 422 naming ``field``."""
    if not isinstance(url, str):
        raise errors.ValidationError(
            f"invalid request: {field}", details=[{"field": field, "problem": "must be a string"}]
        )
    try:
        check_url(url, UrlPolicy(allow_loopback_http=services.settings.webhook_allow_loopback))
    except UrlRefused as exc:
        raise errors.ValidationError(
            f"invalid request: {field}", details=[{"field": field, "problem": str(exc)}]
        ) from exc
    return url


def parse_webhook(body: dict[str, Any]) -> CreateWebhookRequest:
    try:
        return CreateWebhookRequest.model_validate(body)
    except PydanticValidationError as exc:
        raise validation_error(exc) from exc


def create_webhook(services: ApiServices, owner: str, request: CreateWebhookRequest) -> Webhook:
    store = _store(services)
    checked_url(services, request.url)
    if len(store.list_for_owner(owner)) >= MAX_WEBHOOKS_PER_KEY:
        raise errors.ValidationError(
            f"a key has at most {MAX_WEBHOOKS_PER_KEY} webhooks; remove one first",
            details=[{"field": "url", "problem": f"at most {MAX_WEBHOOKS_PER_KEY} webhooks per key"}],
        )
    hook = Webhook(
        webhook_id=WEBHOOK_ID_PREFIX + new_id(),
        hook_owner=owner,
        url=request.url,
        events=sorted(set(request.events or ALL_EVENT_TYPES)),
        description=request.description,
        created_at=isoformat(utcnow()),
        secrets=[SigningSecret(secret=new_secret())],
    )
    return store.create(hook)


def list_webhooks(services: ApiServices, owner: str) -> list[Webhook]:
    return _store(services).list_for_owner(owner)


def get_webhook(services: ApiServices, owner: str, webhook_id: str) -> Webhook:
    return _store(services).get_for_owner(webhook_id, owner)


def delete_webhook(services: ApiServices, owner: str, webhook_id: str) -> Webhook:
    hook = get_webhook(services, owner, webhook_id)
    _store(services).delete(hook.webhook_id)
    return hook


def rotate_secret(services: ApiServices, owner: str, webhook_id: str) -> tuple[Webhook, str, int]:
    """A new current secret; the one it replaces signs too until the grace period ends."""
    hook = get_webhook(services, owner, webhook_id)
    now = time.time()
    until = int(now + ROTATION_GRACE_SECONDS)
    current = [s for s in hook.secrets if s.until is None]
    kept = [SigningSecret(secret=s.secret, until=until) for s in current]
    secret = new_secret()
    secrets = [SigningSecret(secret=secret), *kept]
    if not _store(services).update(
        hook.webhook_id, secrets=[s.model_dump(exclude_none=True) for s in secrets]
    ):
        raise errors.NoSuchWebhookError(f"no webhook {webhook_id}")
    return hook.model_copy(update={"secrets": secrets}), secret, until


def test_webhook(services: ApiServices, owner: str, webhook_id: str) -> Delivery:
    """A ``webhook.test`` event, delivered (and retried, and logged) like any other."""
    hook = get_webhook(services, owner, webhook_id)
    if not services.settings.webhooks_queue_url or services.sqs is None:
        raise errors.ServiceUnavailableError("webhooks are not available on this deployment")
    now = utcnow()
    event_id = "evt_test_" + new_id()
    data = {"webhook_id": hook.webhook_id, "message": "a test event from pijobs"}
    body = json.dumps(
        event_payload(TEST_EVENT_TYPE, isoformat(now), data), separators=(",", ":"), sort_keys=True
    )
    delivery = Delivery(
        target=hook.webhook_id,
        event_id=event_id,
        type=TEST_EVENT_TYPE,
        hook_owner=owner,
        url=hook.url,
        body=body,
        created_at=isoformat(now),
        next_attempt_at=now.timestamp(),
        expires_at=int((now + timedelta(days=DELIVERY_TTL_DAYS)).timestamp()),
    )
    _store(services).add_delivery(delivery)
    DeliveryQueue(services.sqs, services.settings.webhooks_queue_url).send(delivery.key)
    return delivery


def list_deliveries(services: ApiServices, owner: str, webhook_id: str) -> list[Delivery]:
    hook = get_webhook(services, owner, webhook_id)
    return _store(services).deliveries(hook.webhook_id)


# ---- views ---------------------------------------------------------------------------------------------
def webhook_view(hook: Webhook) -> dict[str, Any]:
    state = "disabled" if hook.disabled_reason else "failing" if hook.failing_since else "active"
    return WebhookView(
        webhook_id=hook.webhook_id,
        url=hook.url,
        events=hook.events,
        description=hook.description,
        created_at=hook.created_at,
        state=state,
        disabled_reason=hook.disabled_reason,
        failing_since=hook.failing_since,
    ).model_dump(mode="json")


def delivery_view(delivery: Delivery) -> DeliveryView:
    next_at = delivery.next_attempt_at if delivery.state == "pending" else None
    return DeliveryView(
        event_id=delivery.event_id,
        type=delivery.type,
        job_id=delivery.job_id,
        job_attempt=delivery.job_attempt,
        state=delivery.state,
        attempts=delivery.attempts,
        created_at=delivery.created_at,
        last_attempt_at=delivery.last_attempt_at,
        response_status=delivery.response_status,
        duration_ms=delivery.duration_ms,
        next_attempt_at=None
        if next_at is None
        else isoformat(datetime.fromtimestamp(next_at, tz=timezone.utc)),
        error=delivery.error,
    )
