"""The payloads docs/webhooks.md shows are the ones the embedded stack sends: one job of each ending (it
succeeds; its function refuses it; it is cancelled; its worker dies and it is queued again; it runs past its
deadline) and a test event arrive at a receiver, and each documented payload has exactly the keys of the
delivered one of its type. ``PIJOBS_WRITE_WEBHOOK_DOCS=1`` writes the delivered payloads into the docs."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from standardwebhooks import Webhook as StandardWebhook

from pijobs.client import PijobsClient
from pijobs.local.stack import LocalStack
from pijobs.shared.models import job_key
from pijobs.shared.webhooks import TEST_EVENT_TYPE
from tests.e2e.test_recovery import _kill_group_like_a_crash, _wait_for
from tests.e2e.test_webhooks import Receiver
from tests.unit.test_webhook_docs import DOCS, DOCUMENTED_TYPES, documented_payloads, shape, with_payloads

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TIMEOUT_S = 60
SHORT_DEADLINE_S = 2


def _running(client: PijobsClient, job_id: str) -> None:
    _wait_for(lambda: client.get(job_id)["status"] == "RUNNING", TIMEOUT_S, f"{job_id} RUNNING")


def _provoke_every_event(stack: LocalStack, client: PijobsClient) -> None:
    """One after the other (a key holds one slot here), each job reaching a different end."""
    succeeded = client.submit("pi", {"digits": 50}, name="docs-example")["job_id"]
    client.wait(succeeded, timeout=TIMEOUT_S)

    failed = client.submit("word-count", {"text": "?!"}, name="docs-no-words")["job_id"]  # no_words
    client.wait(failed, timeout=TIMEOUT_S)

    cancelled = client.submit("word-count", {"text": "x", "pause_seconds": 300}, name="docs-cancelled")
    _running(client, cancelled["job_id"])
    client.cancel(cancelled["job_id"])

    _wait_for(lambda: not stack.runner.running(), TIMEOUT_S, "the cancelled job's worker to stop")
    # The worker dies (as test_recovery kills one); the reaper notices its silent heartbeat and queues the
    # job again (job.retrying); its second attempt runs and succeeds.
    retried = client.submit("word-count", {"text": "to be or not", "pause_seconds": 5}, name="docs-retried")
    _running(client, retried["job_id"])
    (pid,) = stack.runner.running().values()
    _kill_group_like_a_crash(pid)
    client.wait(retried["job_id"], timeout=TIMEOUT_S)

    # A job's deadline is at least a minute (its function's work plus the instance's start): this one's
    # record is given a deadline of seconds, which the reaper then enforces as it would any other.
    late = client.submit("word-count", {"text": "x", "pause_seconds": 300}, name="docs-timed-out")["job_id"]
    _running(client, late)
    stack.client("dynamodb").update_item(
        TableName=stack.outputs["TableName"],
        Key={"pk": {"S": job_key(late)}},
        UpdateExpression="SET deadline_seconds = :short",
        ExpressionAttributeValues={":short": {"N": str(SHORT_DEADLINE_S)}},
    )
    client.wait(late, timeout=TIMEOUT_S)


def _first_of_each_type(receiver: Receiver, secret: str) -> dict[str, Any]:
    first: dict[str, Any] = {}
    for headers, body in list(receiver.requests):
        payload = StandardWebhook(secret).verify(body, headers)
        first.setdefault(payload["type"], payload)
    return first


def test_the_documented_payloads_have_the_keys_of_the_delivered_ones(local_stack: LocalStack) -> None:
    client = PijobsClient(local_stack.api_url, local_stack.create_api_key("webhook-docs")[1])
    receiver = Receiver()
    try:
        hook = client.add_webhook(receiver.url, description="docs")
        _provoke_every_event(local_stack, client)
        client.test_webhook(hook["webhook_id"])
        deadline = time.monotonic() + TIMEOUT_S
        while set(delivered := _first_of_each_type(receiver, hook["secret"])) != set(DOCUMENTED_TYPES):
            assert time.monotonic() < deadline, sorted(delivered)
            time.sleep(0.2)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()

    assert delivered[TEST_EVENT_TYPE]["data"]["webhook_id"] == hook["webhook_id"]
    if os.environ.get("PIJOBS_WRITE_WEBHOOK_DOCS"):
        DOCS.write_text(with_payloads(DOCS.read_text(encoding="utf-8"), delivered), encoding="utf-8")
    documented = documented_payloads(DOCS.read_text(encoding="utf-8"))
    for type_ in DOCUMENTED_TYPES:
        assert shape(documented[type_]) == shape(delivered[type_]), type_
