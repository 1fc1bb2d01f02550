"""Webhooks through the API (moto in process): register, list, isolation, SSRF refusals, and a job's events
signed and delivered to a receiver on 127.0.0.1 (checked with the independent ``standardwebhooks`` package),
retried, disabled on 410, failing after the last attempt; a job's callback URL."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from pijobs.api_handler import notifier
from tests.integration.conftest import REGION, Cloud

pytestmark = pytest.mark.timeout(60)


class Receiver:
    """An HTTP receiver on 127.0.0.1: records each request and answers from ``answers`` (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        self.before_answer: Callable[[], None] = lambda: None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append(({**headers, "x-path": self.path}, body))
                receiver.before_answer()
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self, secret: str) -> list[dict[str, Any]]:
        """Each request's payload, after the standardwebhooks package verified its signature."""
        return [StandardWebhook(secret).verify(body, headers) for headers, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    made.thread.start()
    yield made
    made.server.shutdown()
    made.server.server_close()


class Hooks:
    """The webhooks queue and the table's stream next to the ``cloud``; pumps them like Lambda would."""

    def __init__(self, cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
        self.cloud = cloud
        self.queue_url = cloud.sqs.create_queue(QueueName="pijobs-webhooks")["QueueUrl"]
        for key, value in {
            "PIJOBS_WEBHOOKS_QUEUE_URL": self.queue_url,
            "PIJOBS_WEBHOOK_ALLOW_LOOPBACK": "true",
            "PIJOBS_WEBHOOK_RETRY_SCHEDULE": "0,0,0",
            "PIJOBS_PUBLIC_API_URL": "https://api.test",
            "PIJOBS_EVENT_BUS": "default",
        }.items():
            monkeypatch.setenv(key, value)
        cloud.ddb.update_table(
            TableName=cloud.table, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
        )
        from pijobs.api_handler import handler as api_handler

        api_handler.services.cache_clear()
        notifier.services.cache_clear()
        streams = boto3.client("dynamodbstreams", region_name=REGION)
        arn = cloud.ddb.describe_table(TableName=cloud.table)["Table"]["LatestStreamArn"]
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        self.streams = streams
        self.iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]

    def notify(self) -> dict[str, Any]:
        response = self.streams.get_records(ShardIterator=self.iterator)
        self.iterator = response["NextShardIterator"]
        return notifier.notifier_handler({"Records": response["Records"]}, None)

    def send(self, rounds: int = 10) -> None:
        for _ in range(rounds):
            messages = self.cloud.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if not messages:
                return
            records = [{"messageId": m["MessageId"], "body": m["Body"]} for m in messages]
            assert notifier.sender_handler({"Records": records}, None) == {"batchItemFailures": []}
            for m in messages:
                self.cloud.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    def pump(self) -> None:
        assert self.notify() == {"batchItemFailures": []}
        self.send()


@pytest.fixture
def hooks(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> Hooks:
    return Hooks(cloud, monkeypatch)


def add_hook(cloud: Cloud, url: str, key_id: str = "key-a", **extra: Any) -> dict[str, Any]:
    status, body, headers = cloud.api("POST", "/webhooks", {"url": url, **extra}, key_id=key_id)
    assert status == 201, body
    assert headers["Location"].endswith(f"/webhooks/{body['webhook_id']}")
    return body


def test_a_cancelled_jobs_event_arrives_signed_and_verifiable(
    cloud: Cloud, hooks: Hooks, receiver: Receiver
) -> None:
    hook = add_hook(cloud, receiver.url)
    assert hook["secret"].startswith("whsec_") and hook["state"] == "active"
    job_id = cloud.submit()

    assert cloud.api("DELETE", f"/jobs/{job_id}")[0] == 202
    hooks.pump()

    (event,) = receiver.events(hook["secret"])
    assert event["type"] == "job.cancelled"
    assert event["data"]["job_id"] == job_id
    assert event["data"]["status"] == "CANCELLED" and event["data"]["previous_status"] == "QUEUED"
    assert event["data"]["links"]["self"] == f"https://api.test/jobs/{job_id}"
    headers, body = receiver.requests[0]
    assert headers["webhook-id"] == f"evt_{job_id}_0_cancelled"
    assert len(body) < 20 * 1024
    assert "secret" not in body.decode() and "callback" not in body.decode()
    # a wrong secret does not verify
    other = add_hook(cloud, receiver.url, key_id="key-b")
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(other["secret"]).verify(body, headers)
    (delivery,) = cloud.api("GET", f"/webhooks/{hook['webhook_id']}/deliveries")[1]["deliveries"]
    assert delivery["state"] == "delivered" and delivery["response_status"] == 200
    assert delivery["type"] == "job.cancelled" and delivery["job_id"] == job_id


def test_a_batchs_deliveries_are_attempted_side_by_side(
    cloud: Cloud, hooks: Hooks, receiver: Receiver
) -> None:
    """Each receiver holds its answer until the other one has its request: attempted one after another,
    the first would wait for nothing (and a batch of slow receivers would outlast the sender's timeout)."""
    other = Receiver()
    other.thread.start()
    both, met = threading.Barrier(2, timeout=5), []

    def hold() -> None:
        try:
            both.wait()
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)

    try:
        receiver.before_answer = other.before_answer = hold
        first, second = add_hook(cloud, receiver.url), add_hook(cloud, other.url)
        assert cloud.api("DELETE", f"/jobs/{cloud.submit()}")[0] == 202
        hooks.pump()
        assert met == [True, True]
        assert [e["type"] for e in receiver.events(first["secret"]) + other.events(second["secret"])] == [
            "job.cancelled",
            "job.cancelled",
        ]
    finally:
        other.server.shutdown()
        other.server.server_close()


def test_a_key_sees_only_its_own_webhooks_and_gets_only_its_own_jobs_events(
    cloud: Cloud, hooks: Hooks, receiver: Receiver
) -> None:
    mine = add_hook(cloud, receiver.url, key_id="key-a")
    theirs = add_hook(cloud, receiver.url + "?b", key_id="key-b", events=["job.succeeded"])

    assert [h["webhook_id"] for h in cloud.api("GET", "/webhooks", key_id="key-a")[1]["webhooks"]] == [
        mine["webhook_id"]
    ]
    assert "secret" not in cloud.api("GET", f"/webhooks/{mine['webhook_id']}")[1]
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/test"), ("GET", "/deliveries"),
                           ("POST", "/rotate-secret")):  # fmt: skip
        status, body, _ = cloud.api(method, f"/webhooks/{theirs['webhook_id']}{suffix}", key_id="key-a")
        assert (status, body["error"]["code"]) == (404, "not_found"), (method, suffix)
    assert cloud.api("GET", "/webhooks/wh_nothing")[0] == 404

    job_id = cloud.submit()  # key-a's
    cloud.api("DELETE", f"/jobs/{job_id}")
    hooks.pump()
    assert [headers["x-path"] for headers, _ in receiver.requests] == ["/hook"]  # key-a's webhook only
    assert cloud.api("GET", f"/webhooks/{theirs['webhook_id']}/deliveries", key_id="key-b")[1] == {
        "deliveries": []
    }


def test_one_batch_of_two_keys_events_goes_each_to_its_own_keys_webhooks(
    cloud: Cloud, hooks: Hooks, receiver: Receiver
) -> None:
    """The notifier reads each owner's webhooks once a batch: a batch holding both keys' events still
    sends each job's event only to its owner's webhook."""
    add_hook(cloud, receiver.url + "?a", key_id="key-a")
    add_hook(cloud, receiver.url + "?b", key_id="key-b")
    jobs = {}
    for key in ("key-a", "key-b", "key-a"):
        status, body, _ = cloud.api("POST", "/jobs", {"digits": 50}, key_id=key)
        assert status == 202, body
        jobs[body["job_id"]] = key
        assert cloud.api("DELETE", f"/jobs/{body['job_id']}", key_id=key)[0] == 202
    hooks.pump()  # one notifier batch with the three cancellations

    got = sorted(
        (headers["x-path"], json.loads(body)["data"]["job_id"]) for headers, body in receiver.requests
    )
    assert got == sorted((f"/hook?{key[-1]}", job_id) for job_id, key in jobs.items())


def test_a_job_whose_fan_out_fails_is_answered_for_a_retry_and_the_others_are_delivered(
    cloud: Cloud, hooks: Hooks, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs of one batch are fanned out side by side: one job's failure (DynamoDB refusing its delivery)
    names only its record for the retry; the other jobs' events are delivered."""
    add_hook(cloud, receiver.url)
    unlucky, lucky = cloud.submit(), cloud.submit()
    for job_id in (unlucky, lucky):
        cloud.api("DELETE", f"/jobs/{job_id}")
    records = hooks.streams.get_records(ShardIterator=hooks.iterator)["Records"]
    add_delivery = notifier.WebhookStore.add_delivery

    def refuse_unlucky(store: Any, delivery: Any) -> bool:
        if delivery.job_id == unlucky:
            raise RuntimeError("ProvisionedThroughputExceededException")
        return bool(add_delivery(store, delivery))

    monkeypatch.setattr(notifier.WebhookStore, "add_delivery", refuse_unlucky)
    answer = notifier.notifier_handler({"Records": records}, None)
    hooks.send()

    failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
    unlucky_records = {
        r["dynamodb"]["SequenceNumber"]
        for r in records
        if (notifier.stream_event(r) or {}).get("job_id") == unlucky
    }
    assert failed == unlucky_records
    assert [json.loads(body)["data"]["job_id"] for _, body in receiver.requests] == [lucky]

    monkeypatch.setattr(notifier.WebhookStore, "add_delivery", add_delivery)
    retried = [r for r in records if r["dynamodb"]["SequenceNumber"] in failed]
    assert notifier.notifier_handler({"Records": retried}, None) == {"batchItemFailures": []}
    hooks.send()
    assert sorted(json.loads(body)["data"]["job_id"] for _, body in receiver.requests) == sorted(
        [lucky, unlucky]
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/x", "https"),
        ("http://93.184.216.34/x", "https"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.0.0.8/x", "private"),
        ("https://192.168.1.1/x", "private"),
        ("https://[::ffff:10.0.0.1]/x", "private"),
        ("https://[2002:a9fe:a9fe::1]/x", "tunnel"),  # 6to4 of 169.254.169.254
        ("https://[2001:0:4136:e378:8000:63bf:5601:56fe]/x", "tunnel"),  # Teredo
        ("https://224.0.0.1/x", "multicast"),
        ("https://240.0.0.1/x", "reserved"),
        ("https://0.0.0.0/x", "address"),
        ("http://user:pw@127.0.0.1/x", "credentials"),
        ("not a url", "https"),
    ],
)
def test_urls_a_webhook_may_not_call_are_refused_naming_url(
    cloud: Cloud, hooks: Hooks, url: str, problem: str
) -> None:
    status, body, _ = cloud.api("POST", "/webhooks", {"url": url})
    assert status == 422, body
    (detail,) = body["error"]["details"]
    assert detail["field"] == "url" and problem in detail["problem"]
    status, body, _ = cloud.api("POST", "/jobs", {"digits": 50, "callback_url": url})
    assert status == 422 and body["error"]["details"][0]["field"] == "callback_url"


def test_loopback_is_refused_off_the_embedded_stack(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    from pijobs.api_handler import handler as api_handler

    monkeypatch.setenv("PIJOBS_WEBHOOK_ALLOW_LOOPBACK", "false")
    api_handler.services.cache_clear()
    status, body, _ = cloud.api("POST", "/webhooks", {"url": "https://127.0.0.1/x"})
    assert status == 422 and "loopback" in body["error"]["details"][0]["problem"]


def test_bad_bodies_are_422s_naming_the_field(cloud: Cloud, hooks: Hooks, receiver: Receiver) -> None:
    status, body, _ = cloud.api("POST", "/webhooks", {"url": receiver.url, "events": ["job.exploded"]})
    assert status == 422 and body["error"]["details"][0]["field"].startswith("events")
    status, body, _ = cloud.api("POST", "/webhooks", {"events": ["job.failed"]})
    assert status == 422 and body["error"]["details"][0]["field"] == "url"


def test_failed_answers_are_retried_with_the_same_id_until_delivered(
    cloud: Cloud, hooks: Hooks, receiver: Receiver
) -> None:
    hook = add_hook(cloud, receiver.url, events=["job.cancelled"])
    receiver.answers = [500, 503, 302]  # a redirect is not followed: it is a failed attempt
    cloud.api("DELETE", f"/jobs/{cloud.submit()}")
    hooks.pump()

    events = receiver.events(hook["secret"])
    assert len(events) == 4 and len({h["webhook-id"] for h, _ in receiver.requests}) == 1
    (delivery,) = cloud.api("GET", f"/webhooks/{hook['webhook_id']}/deliveries")[1]["deliveries"]
    assert (delivery["state"], delivery["attempts"], delivery["response_status"]) == ("delivered", 4, 200)


def test_after_the_last_attempt_the_webhook_shows_as_failing_and_the_delivery_stays(
    cloud: Cloud, hooks: Hooks, receiver: Receiver
) -> None:
    hook = add_hook(cloud, receiver.url)
    receiver.answers = [500] * 4  # the first attempt and three retries
    cloud.api("DELETE", f"/jobs/{cloud.submit()}")
    hooks.pump()

    assert len(receiver.requests) == 4
    (delivery,) = cloud.api("GET", f"/webhooks/{hook['webhook_id']}/deliveries")[1]["deliveries"]
    assert (delivery["state"], delivery["attempts"], delivery["next_attempt_at"]) == ("failed", 4, None)
    (listed,) = cloud.api("GET", "/webhooks")[1]["webhooks"]
    assert listed["state"] == "failing" and listed["failing_since"]


def test_a_failing_webhook_is_active_again_after_its_next_delivery(
    cloud: Cloud, hooks: Hooks, receiver: Receiver
) -> None:
    hook = add_hook(cloud, receiver.url)
    receiver.answers = [500] * 4
    cloud.api("DELETE", f"/jobs/{cloud.submit()}")
    hooks.pump()
    assert cloud.api("GET", f"/webhooks/{hook['webhook_id']}")[1]["state"] == "failing"

    cloud.api("DELETE", f"/jobs/{cloud.submit()}")  # the receiver answers 200 now
    hooks.pump()

    shown = cloud.api("GET", f"/webhooks/{hook['webhook_id']}")[1]
    assert (shown["state"], shown.get("failing_since")) == ("active", None)


def test_410_disables_the_webhook(cloud: Cloud, hooks: Hooks, receiver: Receiver) -> None:
    hook = add_hook(cloud, receiver.url)
    receiver.answers = [410]
    for _ in range(2):
        cloud.api("DELETE", f"/jobs/{cloud.submit()}")
        hooks.pump()

    assert len(receiver.requests) == 1  # nothing more once it answered Gone
    listed = cloud.api("GET", f"/webhooks/{hook['webhook_id']}")[1]
    assert listed["state"] == "disabled" and "410" in listed["disabled_reason"]


def test_callback_url_gets_that_jobs_events_signed_with_its_own_secret(
    cloud: Cloud, hooks: Hooks, receiver: Receiver
) -> None:
    status, accepted, _ = cloud.api("POST", "/jobs", {"digits": 50, "callback_url": receiver.url})
    assert status == 202 and accepted["callback_secret"].startswith("whsec_")
    other = cloud.submit()  # no callback: nothing for it
    assert "callback" not in json.dumps(cloud.api("GET", f"/jobs/{accepted['job_id']}")[1])

    cloud.api("DELETE", f"/jobs/{accepted['job_id']}")
    cloud.api("DELETE", f"/jobs/{other}")
    hooks.pump()

    (event,) = receiver.events(accepted["callback_secret"])
    assert (event["type"], event["data"]["job_id"]) == ("job.cancelled", accepted["job_id"])


def test_rotated_secrets_both_sign_and_test_events_are_delivered(
    cloud: Cloud, hooks: Hooks, receiver: Receiver
) -> None:
    hook = add_hook(cloud, receiver.url)
    status, rotated, _ = cloud.api("POST", f"/webhooks/{hook['webhook_id']}/rotate-secret")
    assert status == 200 and rotated["secret"] != hook["secret"]

    status, queued, _ = cloud.api("POST", f"/webhooks/{hook['webhook_id']}/test")
    assert status == 202
    hooks.send()

    assert receiver.events(hook["secret"])[0]["type"] == "webhook.test"
    assert receiver.events(rotated["secret"])[0]["type"] == "webhook.test"
    assert receiver.requests[0][0]["webhook-id"] == queued["event_id"]


def test_a_removed_webhook_gets_nothing_more(cloud: Cloud, hooks: Hooks, receiver: Receiver) -> None:
    hook = add_hook(cloud, receiver.url)
    cloud.api("DELETE", f"/jobs/{cloud.submit()}")
    hooks.notify()  # the delivery is made...
    assert cloud.api("DELETE", f"/webhooks/{hook['webhook_id']}")[0] == 200
    hooks.send()  # ...but its webhook is gone before it is sent

    assert receiver.requests == []
    assert cloud.api("GET", "/webhooks")[1] == {"webhooks": []}


def test_every_state_change_is_one_eventbridge_event_for_operators(cloud: Cloud, hooks: Hooks) -> None:
    events = boto3.client("events", region_name=REGION)
    inbox = cloud.sqs.create_queue(QueueName="operator-inbox")["QueueUrl"]
    inbox_arn = cloud.sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    pattern = {"source": ["pijobs"], "detail-type": ["pijobs Job State Change"]}
    events.put_rule(Name="pijobs-changes", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="pijobs-changes", Targets=[{"Id": "inbox", "Arn": inbox_arn}])
    job_id = cloud.submit()

    cloud.api("DELETE", f"/jobs/{job_id}")
    hooks.pump()  # no webhook: the operators' event all the same

    (message,) = cloud.sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10)["Messages"]
    detail = json.loads(message["Body"])["detail"]
    assert detail["job_id"] == job_id and detail["owner_key_id"] == "key-a"
    assert (detail["previous_status"], detail["status"], detail["attempt"]) == ("QUEUED", "CANCELLED", 0)
    assert detail["error_code"] == "cancelled" and detail["function"] == "pi"


def test_a_url_that_became_private_is_refused_at_delivery(
    cloud: Cloud, hooks: Hooks, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = add_hook(cloud, receiver.url)
    cloud.api("DELETE", f"/jobs/{cloud.submit()}")
    monkeypatch.setenv("PIJOBS_WEBHOOK_ALLOW_LOOPBACK", "false")  # the sender's rules: no loopback
    notifier.services.cache_clear()
    hooks.pump()

    assert receiver.requests == []
    (delivery,) = cloud.api("GET", f"/webhooks/{hook['webhook_id']}/deliveries")[1]["deliveries"]
    assert delivery["response_status"] is None and delivery["error"].startswith("refused")
    assert delivery["state"] == "failed"


def test_the_clients_verify_webhook_takes_a_real_delivery(
    cloud: Cloud, hooks: Hooks, receiver: Receiver
) -> None:
    from pijobs.client import WebhookSignatureError, verify_webhook

    hook = add_hook(cloud, receiver.url)
    cloud.api("DELETE", f"/jobs/{cloud.submit()}")
    hooks.pump()
    headers, body = receiver.requests[0]

    assert verify_webhook(hook["secret"], headers, body)["type"] == "job.cancelled"
    with pytest.raises(WebhookSignatureError):
        verify_webhook(hook["secret"], headers, body.replace(b"CANCELLED", b"SUCCEEDED"))
    with pytest.raises(WebhookSignatureError):
        verify_webhook(hook["secret"], {**headers, "webhook-timestamp": "1000000000"}, body)
