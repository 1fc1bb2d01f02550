"""The worker on its instance: result in S3, record SUCCEEDED or FAILED, slot released, stack deleted."""

from __future__ import annotations

import hashlib
import urllib.error
from collections.abc import Callable
from typing import Any

import mpmath
import pytest

import pijobs.api_handler.handler
import pijobs.dispatcher.reaper
import pijobs.worker.job
import pijobs.worker.pi.engine
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


# ---- storage and the channel failing under the worker ---------------------------------------------------

QUICK_BACKOFF = {
    "transient_base_seconds": 0.01,
    "transient_cap_seconds": 0.02,
    "transient_total_seconds": 1.0,
}


class FailingPosts:
    """The worker's presigned POST, whose first ``failures`` tries fail as S3 throttling does (503)."""

    def __init__(self, post: Callable[..., None], failures: int) -> None:
        self._post = post
        self.failures = failures
        self.uploads = 0

    def __call__(self, url: str, fields: Any, path: Any) -> None:
        self.uploads += 1
        if self.uploads <= self.failures:
            raise urllib.error.HTTPError(url, 503, "Slow Down", {}, None)  # type: ignore[arg-type]
        self._post(url, fields, path)


def _objects_under(cloud: Cloud, job_id: str) -> list[str]:
    listing = cloud.s3.list_objects_v2(Bucket=cloud.bucket, Prefix=f"results/key-a/{job_id}/")
    return [item["Key"] for item in listing.get("Contents", [])]


def _uploads_failing(failures: int) -> tuple[list[FailingPosts], Callable[[WorkerServices], None]]:
    made: list[FailingPosts] = []

    def adapt(services: WorkerServices) -> None:
        made.append(FailingPosts(services.post, failures))
        services.post = made[-1]

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
    assert cloud.receive() == []  # the platform sends no message: it parks the job for the next admission
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


def test_the_last_attempt_that_cannot_store_its_result_fails_with_a_plain_reason(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIJOBS_MAX_ATTEMPTS", "1")  # the platform decides, not the worker
    pijobs.api_handler.handler.services.cache_clear()
    job_id = _provisioned(cloud, 10)
    _, adapt = _uploads_failing(failures=10**6)

    assert cloud.run_worker(job_id, adapt=adapt, **QUICK_BACKOFF) == 1

    status, view, _ = cloud.api("GET", f"/jobs/{job_id}")
    assert status == 200 and view["status"] == "FAILED" and view["result"] is None
    assert view["error"] == {
        "code": "result_upload_failed",
        "message": "the job's result could not be stored",
    }
    assert [entry["code"] for entry in view["history"]] == ["result_upload_failed"]
    assert cloud.bucket not in str(view) and "Slow Down" not in str(view)
    assert cloud.live_stacks() == [] and cloud.capacity().state()["active"] == 0  # type: ignore[index]


class ChannelOutage:
    """The worker channel answering 503 (or not at all) to the first ``failures`` calls of one operation."""

    def __init__(self, send: Any, operation: str, failures: int = 1) -> None:
        self._send = send
        self._operation = operation
        self.failures = failures
        self.refused = 0

    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if url.endswith("/" + self._operation) and self.refused < self.failures:
            self.refused += 1
            return 503, b'{"message": "Service Unavailable"}'
        return self._send(method, url, headers, body)  # type: ignore[no-any-return]


def test_a_channel_outage_at_the_finish_is_waited_out_not_lost(cloud: Cloud) -> None:
    job_id = _provisioned(cloud, 10)
    outage: list[ChannelOutage] = []

    def adapt(services: WorkerServices) -> None:
        outage.append(ChannelOutage(services.channel._send, "finish", failures=2))
        services.channel._send = outage[-1]

    assert cloud.run_worker(job_id, adapt=adapt, **QUICK_BACKOFF) == 0

    assert outage[0].refused == 2 and cloud.job(job_id).status.value == "SUCCEEDED"


def test_a_worker_that_cannot_reach_the_channel_is_left_to_the_reaper(cloud: Cloud) -> None:
    """Nothing changes on the record (the reaper later finds its heartbeat missing: worker_lost)."""
    job_id = _provisioned(cloud, 10)
    before = cloud.job(job_id)

    def adapt(services: WorkerServices) -> None:
        services.channel._send = ChannelOutage(services.channel._send, "start", failures=10**6)

    assert cloud.run_worker(job_id, adapt=adapt, **QUICK_BACKOFF) == 1

    assert cloud.job(job_id) == before


def test_a_result_uploaded_for_a_job_cancelled_meanwhile_is_not_linked(cloud: Cloud) -> None:
    """The cancel wins the race after the upload: the job stays CANCELLED, without a result; the finish is
    refused (410) and the attempt's stack and slot went with the cancel."""
    job_id = _provisioned(cloud, 10)

    def cancel_after_upload(services: WorkerServices) -> None:
        post = services.post

        def upload_then_cancel(url: str, fields: Any, path: Any) -> None:
            post(url, fields, path)
            assert _objects_under(cloud, job_id)  # the file was there
            assert cloud.api("DELETE", f"/jobs/{job_id}")[0] == 202

        services.post = upload_then_cancel

    assert cloud.run_worker(job_id, adapt=cancel_after_upload) == 1

    job = cloud.job(job_id)
    assert job.status.value == "CANCELLED" and job.result is None
    assert cloud.api("GET", f"/jobs/{job_id}/result")[0] == 409
    assert cloud.live_stacks() == [] and cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_a_job_costs_three_channel_calls_and_one_per_heartbeat(cloud: Cloud) -> None:
    """start, output and finish; each heartbeat one more (the budget: four plus one per heartbeat)."""
    job_id = _provisioned(cloud, 10)
    made: list[WorkerServices] = []

    assert cloud.run_worker(job_id, adapt=made.append, heartbeat_seconds=600) == 0

    assert made[0].channel.calls == 3 and cloud.job(job_id).status.value == "SUCCEEDED"
