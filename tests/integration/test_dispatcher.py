"""The dispatcher with real moto CloudFormation, DynamoDB and SQS."""

from __future__ import annotations

import json
import threading
import time

import pytest

import pijobs.dispatcher.handler
from pijobs.shared.stacks import job_id_of
from tests.integration.conftest import Cloud, run_racing


def test_dispatch_creates_one_stack_with_whitelisted_parameters_and_tags(cloud: Cloud) -> None:
    job_id = cloud.submit(digits=2000, cost_center="cc-9")

    assert cloud.dispatch(cloud.receive()) == []

    job = cloud.job(job_id)
    assert job.status.value == "PROVISIONING" and job.attempts == 1
    assert job.stack_name == f"pijob-{job_id}-1" and job.stack_id
    (stack,) = cloud.live_stacks()
    params = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert params["JobId"] == job_id and params["Digits"] == "2000"
    assert params["InstanceType"] == "c7i.large"
    tags = {t["Key"]: t["Value"] for t in stack["Tags"]}
    assert tags == {"JobId": job_id, "Owner": "key-a", "CostCenter": "cc-9"}
    assert len(cloud.running_instances()) == 1


def test_duplicate_delivery_creates_exactly_one_stack(cloud: Cloud) -> None:
    job_id = cloud.submit()
    (record,) = cloud.receive()
    duplicate = {**record, "messageId": "dup-1"}

    assert cloud.dispatch([record]) == []
    assert pijobs.dispatcher.handler.lambda_handler({"Records": [duplicate]}, None) == {
        "batchItemFailures": []
    }

    assert [s["StackName"] for s in cloud.live_stacks()] == [f"pijob-{job_id}-1"]
    assert cloud.capacity().state()["active"] == 1  # type: ignore[index]


def test_concurrent_duplicate_delivery_creates_exactly_one_stack(cloud: Cloud) -> None:
    job_id = cloud.submit()
    (record,) = cloud.receive()
    barrier = threading.Barrier(6)
    results: list[object] = []

    def deliver(n: int) -> None:
        barrier.wait()
        results.append(
            pijobs.dispatcher.handler.lambda_handler({"Records": [{**record, "messageId": f"m{n}"}]}, None)
        )

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(6)]
    run_racing(threads)

    assert all(r == {"batchItemFailures": []} for r in results)
    assert [s["StackName"] for s in cloud.live_stacks()] == [f"pijob-{job_id}-1"]
    assert len(cloud.running_instances()) == 1
    state = cloud.capacity().state()
    assert state is not None and state["active"] == 1 and state["holders"] == {job_id}


def test_capacity_bounds_live_stacks_and_every_job_finishes(cloud: Cloud) -> None:
    """MaxActiveStacks=2, ten jobs of two tenants: never more than two stacks at once, all ten SUCCEEDED."""
    jobs = []
    for n in range(10):  # two tenants: each may hold one of the two slots (half of MaxActiveStacks)
        status, body, _ = cloud.api("POST", "/jobs", {"digits": 30 + n}, key_id=f"key-{n % 2}")
        assert status == 202, body
        jobs.append(str(body["job_id"]))
    most_at_once = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        records = cloud.receive(wait_seconds=1)  # the admission tick comes after its delay
        if records:
            assert cloud.dispatch(records) == []
        live = cloud.live_stacks()
        most_at_once = max(most_at_once, len(live))
        assert len(live) <= 2
        if live:
            job_id = str(job_id_of(live[0]["StackName"]))
            assert cloud.run_worker(job_id) == 0
        if all(cloud.job(j).status.value == "SUCCEEDED" for j in jobs):
            break

    assert [cloud.job(j).status.value for j in jobs] == ["SUCCEEDED"] * 10
    assert most_at_once == 2
    assert cloud.live_stacks() == [] and cloud.running_instances() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]
    dlq = cloud.sqs.get_queue_attributes(
        QueueUrl=cloud.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"


def test_waiting_for_capacity_parks_the_job_and_one_tick_admits_it_when_a_slot_frees(cloud: Cloud) -> None:
    cloud.capacity(limit=1).set_limit(1)
    first, second, third = cloud.submit(), cloud.submit(), cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    assert [cloud.job(j).status.value for j in (first, second, third)] == ["PROVISIONING", "QUEUED", "QUEUED"]

    # Waiting costs no message per job: the queue holds one tick for the whole service, nothing else.
    (tick,) = cloud.receive(wait_seconds=2)
    assert set(json.loads(tick["body"])) >= {"tick"} and json.loads(tick["body"])["job_id"] is None
    assert cloud.dispatch([tick]) == []
    assert cloud.job(second).status.value == "QUEUED"  # no slot freed yet: the tick chains the next one

    assert cloud.run_worker(first) == 0
    (tick,) = cloud.receive(wait_seconds=2)
    assert cloud.dispatch([tick]) == []
    assert cloud.job(second).status.value == "PROVISIONING"
    assert cloud.job(third).status.value == "QUEUED"


@pytest.mark.parametrize("body", ["not json", json.dumps({"job_id": "x"}), json.dumps({"job_id": "a" * 32})])
def test_bad_or_orphan_messages_are_reported_not_raised(cloud: Cloud, body: str) -> None:
    good = cloud.submit()
    records = cloud.receive()
    bad = {"messageId": "bad-1", "receiptHandle": "r", "body": body}

    response = pijobs.dispatcher.handler.lambda_handler({"Records": [bad, *records]}, None)

    assert response == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    assert cloud.job(good).status.value == "PROVISIONING"


def test_cancelled_job_is_never_provisioned(cloud: Cloud) -> None:
    job_id = cloud.submit()
    status, body, _ = cloud.api("DELETE", f"/jobs/{job_id}")
    assert status == 202 and body["status"] == "CANCELLED"

    assert cloud.dispatch(cloud.receive()) == []

    assert cloud.live_stacks() == []
    assert cloud.job(job_id).status.value == "CANCELLED"
    assert cloud.capacity().state() in (None, {"active": 0, "limit": 2, "holders": set()})


def test_stack_creation_failure_is_retried_then_fails_with_nothing_left(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIJOBS_ARTIFACTS_URL", "https://pijobs-missing.s3.amazonaws.com/")
    monkeypatch.setenv("PIJOBS_RETRY_BASE_SECONDS", "0")
    pijobs.dispatcher.handler.services.cache_clear()
    job_id = cloud.submit()

    seen = []
    for _ in range(10):
        records = cloud.receive()
        if not records:
            break
        assert cloud.dispatch(records) == []
        seen.append(cloud.job(job_id).status.value)

    job = cloud.job(job_id)
    assert seen == ["QUEUED", "QUEUED", "FAILED"]  # attempts 1 and 2 retried, the third is the last
    assert job.attempts == 3 and job.error is not None and job.error.code == "stack_create_failed"
    assert job.error.message == "the job's infrastructure could not be created"  # no URL, no exception text
    assert [(entry.attempt, entry.code, entry.message) for entry in job.history] == [
        (n, "stack_create_failed", job.error.message) for n in (1, 2, 3)
    ]
    assert cloud.live_stacks() == [] and cloud.running_instances() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]
