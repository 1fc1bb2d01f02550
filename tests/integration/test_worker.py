"""The worker on its instance: result in S3, record SUCCEEDED or FAILED, slot released, stack deleted."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import mpmath
import pijobs.dispatcher.reaper
import pijobs.worker.job
import pijobs.worker.pi.engine
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError
from pijobs.shared.store import JobStore
from pijobs.worker.job import WorkerServices

from tests.integration.conftest import Cloud


def _provisioned(cloud: Cloud, digits: int) -> str:
    job_id = cloud.submit(digits=digits)
    assert cloud.dispatch(cloud.receive()) == []
    return job_id


def test_worker_computes_uploads_records_and_deletes_its_stack(cloud: Cloud) -> None:
    job_id = _provisioned(cloud, 1000)
    instance_id = cloud.running_instances()[0]["InstanceId"]

    assert cloud.run_worker(job_id) == 0

    job = cloud.job(job_id)
    assert job.status.value == "SUCCEEDED" and job.progress == 1.0
    assert job.instance_id == instance_id and job.started_at and job.finished_at
    assert job.result is not None
    assert job.result.key == f"results/key-a/{job_id}/pi-1000.txt"
    body = cloud.s3.get_object(Bucket=cloud.bucket, Key=job.result.key)["Body"].read()
    assert (len(body), hashlib.sha256(body).hexdigest()) == (job.result.bytes, job.result.sha256)
    header, digits = body.decode().rsplit("\n", 2)[0], body.decode().splitlines()[-1]
    assert f"InstanceId: {instance_id}" in header and "Timestamp: " in header
    mpmath.mp.dps = 1010
    assert digits == mpmath.nstr(mpmath.pi, 1010, strip_zeros=False)[:1002]
    assert cloud.live_stacks() == [] and cloud.running_instances() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_worker_failure_ends_failed_with_stack_deleted_and_slot_released(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _provisioned(cloud, 500)

    def broken(*args: object, **kwargs: object) -> None:
        raise MemoryError("out of memory while summing the series")

    monkeypatch.setattr(pijobs.worker.pi.engine, "compute_pi", broken)

    assert cloud.run_worker(job_id) == 1

    job = cloud.job(job_id)
    assert job.status.value == "FAILED"
    assert job.error is not None and job.error.code == "worker_failed"
    assert "memory" not in job.error.message and "Error" not in job.error.message  # the log has the detail
    assert cloud.live_stacks() == [] and cloud.running_instances() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_worker_of_a_cancelled_job_cleans_up_without_computing(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _provisioned(cloud, 500)
    assert cloud.api("DELETE", f"/jobs/{job_id}")[0] == 202
    monkeypatch.setattr(
        pijobs.worker.pi.engine, "compute_pi", lambda *a, **k: pytest.fail("computed a cancelled job")
    )

    assert cloud.run_worker(job_id) == 1

    assert cloud.job(job_id).status.value == "CANCELLED"
    assert cloud.live_stacks() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_cancel_while_running_stops_the_computation(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = _provisioned(cloud, 500)

    def slow(digits: int, out: object, *, progress: object, **kwargs: object) -> None:
        assert cloud.api("DELETE", f"/jobs/{job_id}")[0] == 202
        for step in range(200):
            import time

            time.sleep(0.01)
            progress(step / 200)  # type: ignore[operator]
        pytest.fail("the worker kept computing a cancelled job")

    monkeypatch.setattr(pijobs.worker.pi.engine, "compute_pi", slow)

    assert cloud.run_worker(job_id) == 1

    assert cloud.job(job_id).status.value == "CANCELLED"
    assert cloud.live_stacks() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_finished_job_cannot_be_cancelled(cloud: Cloud) -> None:
    job_id = _provisioned(cloud, 10)
    assert cloud.run_worker(job_id) == 0

    status, body, _ = cloud.api("DELETE", f"/jobs/{job_id}")

    assert status == 409 and body["error"]["code"] == "job_finished"


def test_get_of_a_finished_job_has_a_working_result_link(cloud: Cloud) -> None:
    job_id = _provisioned(cloud, 10)
    assert cloud.run_worker(job_id) == 0

    status, body, _ = cloud.api("GET", f"/jobs/{job_id}")
    redirect, _, headers = cloud.api("GET", f"/jobs/{job_id}/result")

    assert status == 200 and body["status"] == "SUCCEEDED"
    assert body["result"]["bytes"] > 12 and len(body["result"]["sha256"]) == 64
    assert body["result"]["url"].startswith("https://") or body["result"]["url"].startswith("http")
    assert redirect == 302 and headers["Location"]


def test_a_job_that_cannot_fit_in_memory_fails_with_a_clear_reason(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _provisioned(cloud, 50_000)
    monkeypatch.setattr(pijobs.worker.job, "available_memory", lambda: 10 * 2**20)

    assert cloud.run_worker(job_id) == 1

    job = cloud.job(job_id)
    assert job.status.value == "FAILED" and job.error is not None and job.error.code == "too_large"
    assert "50000" in job.error.message or "50,000" in job.error.message
    assert cloud.live_stacks() == [] and cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_the_worker_leaves_the_process_signal_handlers_as_it_found_them(cloud: Cloud) -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    job_id = _provisioned(cloud, 10)

    assert cloud.run_worker(job_id) == 0

    assert signal.getsignal(signal.SIGTERM) is before


def test_an_expired_result_says_so_instead_of_linking_to_nothing(cloud: Cloud) -> None:
    job_id = _provisioned(cloud, 10)
    assert cloud.run_worker(job_id) == 0
    fresh = cloud.api("GET", f"/jobs/{job_id}")[1]["result"]
    cloud.ddb.update_item(
        TableName=cloud.table,
        Key={"pk": {"S": f"job#{job_id}"}},
        UpdateExpression="SET finished_at = :old",
        ExpressionAttributeValues={":old": {"S": "2026-01-01T00:00:00.000Z"}},
    )

    view = cloud.api("GET", f"/jobs/{job_id}")
    redirect = cloud.api("GET", f"/jobs/{job_id}/result")

    assert fresh["url"] and fresh["expires_at"] > "2026-01-02"
    assert view[0] == 200 and view[1]["status"] == "SUCCEEDED"
    assert view[1]["result"]["url"] is None and view[1]["result"]["expires_at"] == "2026-01-08T00:00:00.000Z"
    assert redirect[0] == 410 and redirect[1]["error"]["code"] == "result_expired"
    assert "2026-01-08T00:00:00.000Z" in redirect[1]["error"]["message"]


def test_the_slot_is_held_until_the_stack_is_being_deleted(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Released first, the slot would let the next job's stack start beside this one: one over the cap."""
    from pijobs.shared.stacks import StackLauncher

    job_id = _provisioned(cloud, 10)
    held_at_delete: list[int] = []
    delete = StackLauncher.delete

    def recording_delete(self: StackLauncher, stack_name: str) -> None:
        held_at_delete.append(cloud.capacity().state()["active"])  # type: ignore[index]
        delete(self, stack_name)

    monkeypatch.setattr(StackLauncher, "delete", recording_delete)
    assert cloud.run_worker(job_id) == 0
    assert held_at_delete == [1]
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


# ---- S3 and DynamoDB failing under the worker -----------------------------------------------------------

QUICK_BACKOFF = {
    "transient_base_seconds": 0.01,
    "transient_cap_seconds": 0.02,
    "transient_total_seconds": 1.0,
}


def _slow_down() -> ClientError:
    """What S3 answers when it throttles (503 SlowDown)."""
    return ClientError(
        {
            "Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."},
            "ResponseMetadata": {"HTTPStatusCode": 503},
        },
        "PutObject",
    )


class FailingUploads:
    """The worker's S3 client, whose first ``failures`` uploads fail the way boto3's upload_file does."""

    def __init__(self, s3: Any, failures: int) -> None:
        self._s3 = s3
        self.failures = failures
        self.uploads = 0

    def upload_file(self, *args: Any, **kwargs: Any) -> None:
        self.uploads += 1
        if self.uploads <= self.failures:
            try:
                raise _slow_down()
            except ClientError as exc:
                raise S3UploadFailedError(f"Failed to upload to pijobs-results: {exc}")  # noqa: B904
        self._s3.upload_file(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def _objects_under(cloud: Cloud, job_id: str) -> list[str]:
    listing = cloud.s3.list_objects_v2(Bucket=cloud.bucket, Prefix=f"results/key-a/{job_id}/")
    return [item["Key"] for item in listing.get("Contents", [])]


def _uploads_failing(failures: int) -> tuple[list[FailingUploads], Callable[[WorkerServices], None]]:
    made: list[FailingUploads] = []

    def adapt(services: WorkerServices) -> None:
        made.append(FailingUploads(services.s3, failures))
        services.s3 = made[-1]

    return made, adapt


def test_a_short_s3_outage_during_the_upload_is_waited_out(cloud: Cloud) -> None:
    job_id = _provisioned(cloud, 10)
    clients, adapt = _uploads_failing(2)

    assert cloud.run_worker(job_id, adapt=adapt, **QUICK_BACKOFF) == 0

    job = cloud.job(job_id)
    assert clients[0].uploads == 3
    assert job.status.value == "SUCCEEDED" and job.attempts == 1 and job.history == []
    assert _objects_under(cloud, job_id) == [job.result.key]  # type: ignore[union-attr]


def test_a_result_that_cannot_be_stored_is_retried_on_a_new_attempt_that_succeeds(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = _provisioned(cloud, 10)
    first_stack = cloud.job(job_id).stack_name
    clients, adapt = _uploads_failing(failures=10**6)

    assert cloud.run_worker(job_id, adapt=adapt, **QUICK_BACKOFF) == 1

    # Not the job's failure: no result, neither SUCCEEDED nor FAILED worker_failed, but queued again.
    job = cloud.job(job_id)
    assert clients[0].uploads > 1  # the upload was retried before the attempt was given up
    assert job.status.value == "QUEUED" and job.result is None and _objects_under(cloud, job_id) == []
    assert job.error is not None and job.error.code == "result_upload_failed"
    assert cloud.live_stacks() == [] and cloud.capacity().state()["active"] == 0  # type: ignore[index]
    assert cloud.receive() == []  # the worker sends no message: it parks the job for the next admission
    assert job.wait_tag is not None

    pijobs.dispatcher.reaper.services.cache_clear()  # the reaper's next sweep starts the admission tick
    assert pijobs.dispatcher.reaper.reap(pijobs.dispatcher.reaper.services())["actions"] == {
        "admission_tick": "restarted"
    }
    assert cloud.dispatch(cloud.receive(wait_seconds=3)) == []
    assert cloud.job(job_id).stack_name != first_stack
    assert cloud.run_worker(job_id) == 0

    status, view, _ = cloud.api("GET", f"/jobs/{job_id}")
    assert status == 200 and view["status"] == "SUCCEEDED" and view["result"]["bytes"] > 0
    assert view["error"] is None and view["attempts"] == 2
    (entry,) = view["history"]
    assert entry["attempt"] == 1 and entry["code"] == "result_upload_failed" and entry["at"]
    assert entry["message"] == "the job's result could not be stored"


def test_the_last_attempt_that_cannot_store_its_result_fails_with_a_plain_reason(cloud: Cloud) -> None:
    job_id = _provisioned(cloud, 10)
    _, adapt = _uploads_failing(failures=10**6)

    assert cloud.run_worker(job_id, adapt=adapt, max_attempts=1, **QUICK_BACKOFF) == 1

    status, view, _ = cloud.api("GET", f"/jobs/{job_id}")
    assert status == 200 and view["status"] == "FAILED" and view["result"] is None
    assert view["error"] == {
        "code": "result_upload_failed",
        "message": "the job's result could not be stored",
    }
    assert [entry["code"] for entry in view["history"]] == ["result_upload_failed"]
    assert cloud.bucket not in str(view) and "SlowDown" not in str(view)
    assert cloud.live_stacks() == [] and cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_a_throttled_status_write_is_retried_not_lost(cloud: Cloud) -> None:
    job_id = _provisioned(cloud, 10)
    throttling = ThrottledOnce(cloud.ddb, "SUCCEEDED")

    def adapt(services: WorkerServices) -> None:
        services.store = JobStore(throttling, cloud.table)

    assert cloud.run_worker(job_id, adapt=adapt, **QUICK_BACKOFF) == 0

    assert throttling.throttled and cloud.job(job_id).status.value == "SUCCEEDED"


class ThrottledOnce:
    """A DynamoDB client that throttles the first update writing ``status``."""

    def __init__(self, ddb: Any, status: str) -> None:
        self._ddb = ddb
        self._status = status
        self.throttled = False

    def update_item(self, **request: Any) -> Any:
        if not self.throttled and {"S": self._status} in request["ExpressionAttributeValues"].values():
            self.throttled = True
            raise ClientError(
                {
                    "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "UpdateItem",
            )
        return self._ddb.update_item(**request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ddb, name)


def test_a_result_uploaded_for_a_job_cancelled_meanwhile_is_deleted(cloud: Cloud) -> None:
    """The cancel wins the race after the upload: the job stays CANCELLED and keeps no file."""
    job_id = _provisioned(cloud, 10)

    def cancel_after_upload(services: WorkerServices) -> None:
        upload = services.s3.upload_file

        def upload_then_cancel(*args: Any, **kwargs: Any) -> None:
            upload(*args, **kwargs)
            assert _objects_under(cloud, job_id)  # the file was there
            assert cloud.api("DELETE", f"/jobs/{job_id}")[0] == 202

        services.s3 = _With(services.s3, upload_file=upload_then_cancel)

    assert cloud.run_worker(job_id, adapt=cancel_after_upload) == 1

    job = cloud.job(job_id)
    assert job.status.value == "CANCELLED" and job.result is None
    assert _objects_under(cloud, job_id) == []
    assert cloud.live_stacks() == [] and cloud.capacity().state()["active"] == 0  # type: ignore[index]


class _With:
    """A client with some methods replaced."""

    def __init__(self, client: Any, **methods: Any) -> None:
        self._client = client
        self._methods = methods

    def __getattr__(self, name: str) -> Any:
        return self._methods.get(name) or getattr(self._client, name)
