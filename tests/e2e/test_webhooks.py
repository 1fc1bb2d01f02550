"""Webhooks on the embedded stack, as a customer uses them over HTTP: a job's whole life arrives at a receiver
on 127.0.0.1, each event signed (checked with the independent ``standardwebhooks`` package); a receiver that
fails its first answers still gets every event; the job's own callback URL gets its events."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks import Webhook as StandardWebhook

from pijobs.local.stack import LocalStack
from tests.e2e.test_data_dir import Up

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TIMEOUT_S = 60


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/events"

    def verified(self, secret: str, job_id: str) -> list[dict[str, Any]]:
        found = [StandardWebhook(secret).verify(body, headers) for headers, body in list(self.requests)]
        return [e for e in found if e["data"].get("job_id") == job_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()
    made.server.server_close()


@pytest.fixture
def api(local_stack: LocalStack) -> requests.Session:
    session = requests.Session()
    session.headers["x-api-key"] = local_stack.api_key
    return session


def wait_for(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_jobs_life_arrives_signed_at_the_webhook_and_at_its_callback_url(
    local_stack: LocalStack, api: requests.Session, receiver: Receiver
) -> None:
    hook = api.post(f"{local_stack.api_url}/webhooks", json={"url": receiver.url}).json()
    callback = Receiver()
    try:
        accepted = api.post(
            f"{local_stack.api_url}/jobs", json={"digits": 100, "callback_url": callback.url}
        ).json()
        job_id = accepted["job_id"]

        life = {"job.provisioning", "job.running", "job.succeeded"}

        def finished() -> list[dict[str, Any]]:  # deliveries are unordered: wait for all three
            events = receiver.verified(hook["secret"], job_id)
            return events if life <= {e["type"] for e in events} else []

        events = wait_for(finished, "the job's life at the webhook")
        succeeded = next(e for e in events if e["type"] == "job.succeeded")
        assert succeeded["data"]["result"]["sha256"] and "url" not in succeeded["data"]["result"]
        assert succeeded["data"]["links"]["self"] == f"{local_stack.api_url}/jobs/{job_id}"
        wait_for(lambda: callback.verified(accepted["callback_secret"], job_id), "the callback's events")
        deliveries = api.get(f"{local_stack.api_url}/webhooks/{hook['webhook_id']}/deliveries").json()
        mine = [d for d in deliveries["deliveries"] if d["job_id"] == job_id]
        assert mine and all(d["state"] == "delivered" and d["response_status"] == 204 for d in mine)
    finally:
        callback.server.shutdown()
        callback.server.server_close()
        api.delete(f"{local_stack.api_url}/webhooks/{hook['webhook_id']}")


def test_operators_route_every_state_change_from_eventbridge_with_a_rule(
    local_stack: LocalStack, api: requests.Session
) -> None:
    """An operator's rule on the default bus (here to an SQS queue) gets one event per status change."""
    sqs, events = local_stack.client("sqs"), local_stack.client("events")
    queue_url = sqs.create_queue(QueueName="operator-job-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    pattern = {"source": ["pijobs"], "detail-type": ["pijobs Job State Change"]}
    events.put_rule(Name="operator-job-events", EventPattern=json.dumps(pattern))
    events.put_targets(Rule="operator-job-events", Targets=[{"Id": "queue", "Arn": queue_arn}])
    try:
        job_id = api.post(f"{local_stack.api_url}/jobs", json={"digits": 100}).json()["job_id"]
        seen: dict[str, dict[str, Any]] = {}

        def succeeded() -> bool:
            for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            ):
                event = json.loads(message["Body"])
                if event["detail"]["job_id"] == job_id:
                    seen[event["detail"]["status"]] = event
            return "SUCCEEDED" in seen

        wait_for(succeeded, "the job's SUCCEEDED event on the operator's queue")
        assert {"PROVISIONING", "RUNNING", "SUCCEEDED"} <= set(seen)
        done = seen["SUCCEEDED"]
        assert (done["source"], done["detail-type"]) == ("pijobs", "pijobs Job State Change")
        detail = done["detail"]
        assert (detail["function"], detail["previous_status"], detail["attempt"]) == ("pi", "RUNNING", 1)
        assert detail["result"]["sha256"] and detail["result"]["bytes"] > 100
        assert "url" not in json.dumps(detail).lower()  # no download link for operators either
    finally:
        events.remove_targets(Rule="operator-job-events", Ids=["queue"])
        events.delete_rule(Name="operator-job-events")
        sqs.delete_queue(QueueUrl=queue_url)


def test_a_receiver_failing_its_first_three_answers_gets_every_event(
    local_stack: LocalStack, api: requests.Session, receiver: Receiver
) -> None:
    hook = api.post(
        f"{local_stack.api_url}/webhooks", json={"url": receiver.url, "events": ["job.succeeded"]}
    ).json()
    receiver.answers = [500, 502, 503]
    try:
        job_id = api.post(f"{local_stack.api_url}/jobs", json={"digits": 50}).json()["job_id"]

        wait_for(lambda: len(receiver.requests) >= 4, "three retries (1 s, 2 s, 4 s apart here)")

        events = receiver.verified(hook["secret"], job_id)
        assert [e["type"] for e in events] == [
            "job.succeeded"
        ] * 4  # the same event, answered 500, 502, 503, 204
        assert len({headers["webhook-id"] for headers, _ in receiver.requests}) == 1
        delivered = lambda: [  # noqa: E731
            d
            for d in api.get(f"{local_stack.api_url}/webhooks/{hook['webhook_id']}/deliveries").json()[
                "deliveries"
            ]
            if d["state"] == "delivered"
        ]
        (delivery,) = wait_for(delivered, "the delivery recorded as delivered")
        assert (delivery["attempts"], delivery["response_status"]) == (4, 204)
    finally:
        api.delete(f"{local_stack.api_url}/webhooks/{hook['webhook_id']}")


def test_registration_refuses_private_addresses_naming_url(
    local_stack: LocalStack, api: requests.Session
) -> None:
    answer = api.post(f"{local_stack.api_url}/webhooks", json={"url": "https://169.254.169.254/"})
    assert answer.status_code == 422
    assert answer.json()["error"]["details"][0]["field"] == "url"


def test_the_cli_adds_tests_and_lists_a_webhook_that_pijobs_listen_verifies(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    from pijobs.cli import main
    from pijobs.listen import Listener, Received

    api = ["--api-url", local_stack.api_url, "--api-key", local_stack.api_key]
    got: list[Received] = []
    with Listener(["whsec_" + "A" * 44], got.append) as wrong_secret:
        assert main(["webhooks", "add", wrong_secret.url, "--json", *api]) == 0
        made = json.loads(capsys.readouterr().out)
    with Listener([made["secret"]], got.append, port=wrong_secret.port) as listener:
        assert main(["webhooks", "test", made["webhook_id"], *api]) == 0
        wait_for(lambda: any(r.verified for r in got), "the test event, verified by pijobs listen's receiver")
        assert main(["webhooks", "list", *api]) == 0
        assert made["webhook_id"] in capsys.readouterr().out
        assert main(["webhooks", "deliveries", made["webhook_id"], "--json", *api]) == 0
        (delivery,) = json.loads(capsys.readouterr().out)["deliveries"]
        assert delivery["type"] == "webhook.test" and delivery["state"] == "delivered"
        assert main(["webhooks", "remove", made["webhook_id"], *api]) == 0
    assert listener.url == wrong_secret.url
    assert got[-1].payload is not None and got[-1].payload["type"] == "webhook.test"


def test_webhooks_and_undelivered_events_survive_a_restart_of_pijobs_up(tmp_path: Path) -> None:
    """The receiver is down while the job runs; `pijobs up --data-dir` stops (Ctrl-C) and starts again; once
    the receiver is up every event arrives, signed with the secret given before the restart."""
    from pijobs.listen import Listener, Received

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    first = Up(tmp_path / "data", tmp_path / "up-1.log")
    try:
        api = first.session()
        made = api.post(f"{first.url}/webhooks", json={"url": f"http://127.0.0.1:{port}/"}).json()
        job_id = api.post(f"{first.url}/jobs", json={"digits": 50}, timeout=30).json()["job_id"]
        wait_for(lambda: api.get(f"{first.url}/jobs/{job_id}").json()["status"] == "SUCCEEDED", "the job")
    finally:
        first.stop(signal.SIGINT)
    got: list[Received] = []
    second = Up(tmp_path / "data", tmp_path / "up-2.log")
    try:
        assert second.session().get(f"{second.url}/webhooks/{made['webhook_id']}").status_code == 200
        with Listener([made["secret"]], got.append, port=port):
            wanted = {f"evt_{job_id}_1_{s}" for s in ("provisioning", "running", "succeeded")}
            wait_for(
                lambda: wanted <= {r.message_id for r in got if r.verified}, "every event after the restart"
            )
    finally:
        second.stop(signal.SIGINT)
    assert all(r.verified for r in got)
