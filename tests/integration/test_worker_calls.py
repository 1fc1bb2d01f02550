"""The worker channel's answers to a job's own worker: what a start, a heartbeat, an output grant and an
attempt's end leave on the job (the API handler in-process, moto)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

import pijobs.api_handler.handler
from pijobs.shared.functions import result_key
from pijobs.shared.job_errors import JobErrorCode
from pijobs.shared.status import JobStatus
from tests.integration.conftest import Cloud


def _dispatched(cloud: Cloud) -> tuple[str, str]:
    job_id = cloud.submit(digits=20)
    assert cloud.dispatch(cloud.receive()) == []
    assert cloud.job(job_id).status is JobStatus.PROVISIONING
    return job_id, cloud.worker_token(job_id)


def test_a_started_job_shows_no_progress_then_each_heartbeat_s_to_four_places(cloud: Cloud) -> None:
    job_id, token = _dispatched(cloud)

    assert cloud.worker_call(job_id, "start", {"instance_id": "i-0123456789abcdef0"}, token=token)[0] == 200
    assert cloud.job(job_id).progress == 0.0
    assert cloud.worker_call(job_id, "heartbeat", {"progress": 0.123456}, token=token)[0] == 200
    status, view, _ = cloud.api("GET", f"/jobs/{job_id}")
    assert status == 200 and view["progress"] == 0.1235


def test_the_result_post_is_granted_for_the_next_hour(cloud: Cloud) -> None:
    job_id, token = _dispatched(cloud)
    cloud.worker_call(job_id, "start", token=token)
    declared = {"filename": "r.txt", "bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}

    status, grant = cloud.worker_call(job_id, "output", declared, token=token)

    assert status == 200
    expires = datetime.fromisoformat(grant["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expires - datetime.now(timezone.utc) <= timedelta(hours=1)


def test_a_failure_message_of_500_characters_is_kept_and_a_longer_one_refused(cloud: Cloud) -> None:
    job_id, token = _dispatched(cloud)
    cloud.worker_call(job_id, "start", token=token)

    def fail(message: str) -> int:
        body = {"outcome": "FAILED", "error": {"code": "bad_input", "message": message}}
        return cloud.worker_call(job_id, "finish", body, token=token)[0]

    assert fail("m" * 501) == 422
    assert fail("") == 422
    assert fail("m" * 500) == 200
    error = cloud.job(job_id).error
    assert error is not None and error.message == "m" * 500


def test_an_attempt_given_back_waits_at_the_fair_share_clock_s_present(cloud: Cloud) -> None:
    """docs/scheduling.md: a job queued again goes back to the waiting index at the clock's present."""
    job_id, token = _dispatched(cloud)
    cloud.worker_call(job_id, "start", token=token)
    clock = cloud.capacity().state()["clock"]  # type: ignore[index]
    assert clock > 0  # moved to the admitted job's tag

    body = {"outcome": "RETRY", "error": {"code": JobErrorCode.RESULT_UPLOAD_FAILED.value, "message": "no"}}
    assert cloud.worker_call(job_id, "finish", body, token=token) == (200, {"status": "QUEUED"})

    job = cloud.job(job_id)
    assert job.status is JobStatus.QUEUED and job.wait_tag == clock


def test_start_answers_the_operator_s_limits_for_the_function(cloud: Cloud) -> None:
    job_id, token = _dispatched(cloud)

    status, started = cloud.worker_call(job_id, "start", token=token)

    assert status == 200 and started["limits"] and started["limits"] == cloud.job(job_id).limits


def test_a_result_of_exactly_the_largest_size_and_an_empty_one_may_be_declared(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIJOBS_MAX_RESULT_BYTES", "1000")
    pijobs.api_handler.handler.services.cache_clear()
    job_id, token = _dispatched(cloud)
    cloud.worker_call(job_id, "start", token=token)

    def declare(size: int) -> int:
        body = {"filename": "r.txt", "bytes": size, "sha256": "0" * 64}
        return cloud.worker_call(job_id, "output", body, token=token)[0]

    assert (declare(1000), declare(0), declare(1001)) == (200, 200, 422)


@pytest.mark.parametrize(("stored", "status"), [(b"abc", 200), (b"abd", 409)])
def test_a_result_stored_with_s3_s_checksum_is_checked_against_it(
    cloud: Cloud, stored: bytes, status: int
) -> None:
    """On AWS the POST stores the object with its sha256 (the signed x-amz-checksum-sha256): the API
    compares that checksum with the declared one instead of reading the object back."""
    job_id, token = _dispatched(cloud)
    cloud.worker_call(job_id, "start", token=token)
    declared = {"filename": "r.txt", "bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}
    key = result_key(cloud.job(job_id).owner, job_id, "r.txt")
    cloud.s3.put_object(Bucket=cloud.bucket, Key=key, Body=stored, ChecksumAlgorithm="SHA256")
    assert cloud.s3.head_object(Bucket=cloud.bucket, Key=key, ChecksumMode="ENABLED")["ChecksumSHA256"]

    answer = cloud.worker_call(job_id, "finish", {"outcome": "SUCCEEDED", "output": declared}, token=token)

    assert answer[0] == status, answer
    if status == 200:
        assert cloud.job(job_id).progress == 1.0  # a finished job is all done, whatever its last heartbeat


def test_a_progress_past_1_and_an_unknown_operation_are_refused_naming_little_of_it(cloud: Cloud) -> None:
    job_id, token = _dispatched(cloud)
    cloud.worker_call(job_id, "start", token=token)

    assert cloud.worker_call(job_id, "heartbeat", {"progress": 1.0}, token=token)[0] == 200
    assert cloud.worker_call(job_id, "heartbeat", {"progress": 1.5}, token=token)[0] == 422
    assert cloud.worker_call(job_id, "heartbeat", {"progress": -0.5}, token=token)[0] == 422
    status, refused = cloud.worker_call(job_id, "x" * 40, {}, token=token)
    assert status == 404 and "x" * 32 in refused["error"]["message"]
    assert "x" * 33 not in refused["error"]["message"]  # a caller's text is echoed short


def test_a_result_s_metadata_of_at_most_16_kib_is_kept(cloud: Cloud) -> None:
    job_id, token = _dispatched(cloud)
    cloud.worker_call(job_id, "start", token=token)
    declared = {"filename": "r.txt", "bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}
    key = result_key(cloud.job(job_id).owner, job_id, "r.txt")
    cloud.s3.put_object(Bucket=cloud.bucket, Key=key, Body=b"abc", ChecksumAlgorithm="SHA256")

    def finish(size: int) -> int:
        metadata = {"note": "n" * (size - len(json.dumps({"note": ""})))}
        body = {"outcome": "SUCCEEDED", "output": declared, "metadata": metadata}
        return cloud.worker_call(job_id, "finish", body, token=token)[0]

    assert finish(16_385) == 422
    assert finish(16_384) == 200
    result = cloud.job(job_id).result
    assert result is not None and len(json.dumps(result.metadata)) == 16_384
