"""The lifecycle's state-change events (the outbox the webhooks read) and its side effects, under moto."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog.testing
from boto3.dynamodb.types import TypeDeserializer

from pijobs.shared.lifecycle import EVENT_TTL_DAYS, Lifecycle
from pijobs.shared.models import from_dynamo
from pijobs.shared.status import JobStatus
from tests.integration.conftest import Cloud


class RecordingCompute:
    def __init__(self) -> None:
        self.destroyed: list[tuple[str, int | None]] = []

    def launch(self, request: object) -> object:
        raise AssertionError("nothing is launched here")

    def describe(self) -> list[object]:
        return []

    def destroy(self, job_id: str, attempt: int | None) -> None:
        self.destroyed.append((job_id, attempt))


def _events(cloud: Cloud, job_id: str) -> list[dict[str, Any]]:
    items = cloud.ddb.scan(TableName=cloud.table)["Items"]
    plain = [{k: from_dynamo(TypeDeserializer().deserialize(v)) for k, v in i.items()} for i in items]
    return sorted(
        (e for e in plain if str(e["pk"]).startswith(f"event#{job_id}#")), key=lambda e: str(e["at"])
    )


def _running(cloud: Cloud) -> str:
    job_id = cloud.submit(digits=20)
    assert cloud.dispatch(cloud.receive()) == []
    cloud.store.transition(job_id, JobStatus.PROVISIONING, JobStatus.RUNNING)
    return job_id


def test_a_failure_s_event_names_its_code_and_expires_after_the_ttl(cloud: Cloud) -> None:
    job_id = _running(cloud)
    compute = RecordingCompute()
    lifecycle = Lifecycle(cloud.store, cloud.capacity(), compute)  # type: ignore[arg-type]
    error = {"code": "worker_lost", "message": "no heartbeat"}

    lifecycle.transition(cloud.job(job_id), JobStatus.FAILED, error=error)

    (event,) = [e for e in _events(cloud, job_id) if e["status"] == "FAILED"]
    assert event["pk"] == f"event#{job_id}#1#FAILED"
    assert (event["previous"], event["error_code"], event["attempt"]) == ("RUNNING", "worker_lost", 1)
    at = datetime.fromisoformat(str(event["at"]).replace("Z", "+00:00"))
    expected = (at + timedelta(days=EVENT_TTL_DAYS)).timestamp()
    assert EVENT_TTL_DAYS == 7 and abs(int(event["expires_at"]) - expected) <= 2
    assert compute.destroyed == [(job_id, 1)]  # the attempt ended: its infrastructure goes


def test_a_success_s_event_has_no_error_code_and_a_live_step_destroys_nothing(cloud: Cloud) -> None:
    job_id = cloud.submit(digits=20)
    assert cloud.dispatch(cloud.receive()) == []
    compute = RecordingCompute()
    capacity = cloud.capacity()
    lifecycle = Lifecycle(cloud.store, capacity, compute)  # type: ignore[arg-type]

    job = lifecycle.transition(cloud.job(job_id), JobStatus.RUNNING)  # live -> live: the attempt goes on
    assert compute.destroyed == [] and capacity.state()["holders"] == {job_id}  # type: ignore[index]
    lifecycle.transition(job, JobStatus.SUCCEEDED)

    events = _events(cloud, job_id)
    assert [(e["previous"], e["status"]) for e in events][-2:] == [
        ("PROVISIONING", "RUNNING"),
        ("RUNNING", "SUCCEEDED"),
    ]
    assert all("error_code" not in e for e in events)  # None is left out of the item, not stored
    assert compute.destroyed == [(job_id, 1)]
    assert capacity.state()["holders"] == set()  # type: ignore[index]


class FailingRelease:
    """A capacity counter whose release fails (DynamoDB throttled it)."""

    def __init__(self) -> None:
        self.released: list[str] = []

    def release(self, job_id: str) -> bool:
        self.released.append(job_id)
        raise RuntimeError("ProvisionedThroughputExceededException")


def test_a_failed_release_does_not_undo_or_hide_the_status_change(cloud: Cloud) -> None:
    """The change is written; the slot is the reaper's recount's to repair, the caller sees success."""
    job_id = _running(cloud)
    capacity = FailingRelease()
    lifecycle = Lifecycle(cloud.store, capacity, RecordingCompute())  # type: ignore[arg-type]

    changed = lifecycle.transition(cloud.job(job_id), JobStatus.CANCELLED)

    assert changed.status is JobStatus.CANCELLED and cloud.job(job_id).status is JobStatus.CANCELLED
    assert capacity.released == [job_id]


def test_the_log_says_what_changed(cloud: Cloud) -> None:
    job_id = _running(cloud)
    lifecycle = Lifecycle(cloud.store, cloud.capacity(), RecordingCompute())  # type: ignore[arg-type]

    with structlog.testing.capture_logs() as logs:
        lifecycle.transition(cloud.job(job_id), JobStatus.CANCELLED)

    (entry,) = [e for e in logs if e["event"] == "job_state_changed"]
    assert (entry["previous"], entry["status"], entry["owner"], entry["attempt"]) == (
        "RUNNING",
        "CANCELLED",
        cloud.job(job_id).owner,
        1,
    )
