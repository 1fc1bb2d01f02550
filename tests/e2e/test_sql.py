"""An sql job end to end on the embedded stack: the dispatcher presigns the input, the instance's worker
fetches it over HTTP from the local S3, checks it, runs DuckDB and stores the result, which downloads.

The test puts the input in S3 itself and writes the job with its pinned input the way POST /jobs does
(``pijobs.shared.inputs.pin_inputs``), to make inputs the verifier never saw; everything after that is the
real pipeline. tests/e2e/test_uploads.py goes through POST /uploads.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from pijobs.local.stack import LocalStack
from pijobs.shared.inputs import UploadRecord, UploadStatus, pin_inputs, upload_key
from pijobs.shared.models import JobMessage, JobRecord, isoformat, new_job_id, utcnow
from pijobs.shared.queue import JobQueue
from pijobs.shared.status import JobStatus
from pijobs.shared.store import JobStore
from pijobs.shared.uploads import UploadStore
from tests.e2e.test_http import Client

pytestmark = pytest.mark.e2e
ROWS = b'{"team": "red", "points": 3}\n{"team": "blue", "points": 5}\n{"team": "red", "points": 4}\n'


def _upload(stack: LocalStack, owner: str, body: bytes) -> UploadRecord:
    """The object and its record (the verifier, told of the object, deletes one that no record takes)."""
    upload_id = new_job_id()
    key = upload_key(owner, upload_id)
    record = UploadRecord(
        upload_id=upload_id,
        owner=owner,
        status=UploadStatus.AVAILABLE,
        key=key,
        bytes=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
    )
    UploadStore(stack.client("dynamodb"), stack.outputs["TableName"]).create(record)
    stack.client("s3").put_object(Bucket=stack.outputs["ResultsBucket"], Key=key, Body=body)
    return record


def _submit(stack: LocalStack, owner: str, upload: UploadRecord, query: str, fmt: str) -> str:
    job_id, now = new_job_id(), isoformat(utcnow())
    record = JobRecord(
        job_id=job_id,
        owner=owner,
        function="sql",
        version="1",
        params={"query": query, "inputs": {"scores": upload.upload_id}, "format": fmt},
        status=JobStatus.QUEUED,
        created_at=now,
        updated_at=now,
        message_at=now,
        deadline_seconds=3600,
        inputs=pin_inputs({"scores": upload.upload_id}, {upload.upload_id: upload}, owner=owner),
    )
    JobStore(stack.client("dynamodb"), stack.outputs["TableName"]).create(record)
    JobQueue(stack.client("sqs"), stack.outputs["QueueUrl"]).send(JobMessage(job_id=job_id, function="sql"))
    return job_id


def test_an_sql_job_over_an_uploaded_file_runs_end_to_end(local_stack: LocalStack) -> None:
    owner, key = local_stack.create_api_key("dora")
    dora = Client(local_stack, key)
    upload = _upload(local_stack, owner, ROWS)
    query = "SELECT team, sum(points) AS points FROM scores GROUP BY team ORDER BY points DESC"

    job = dora.wait(_submit(local_stack, owner, upload, query, "json"), timeout=60)

    assert job["status"] == "SUCCEEDED", job
    result = job["result"]
    assert result["filename"] == "result.jsonl" and result["content_type"] == "application/x-ndjson"
    assert result["metadata"]["rows"] == 2
    download = requests.get(result["url"], timeout=30)
    assert (len(download.content), hashlib.sha256(download.content).hexdigest()) == (
        result["bytes"],
        result["sha256"],
    )
    assert [json.loads(line) for line in download.text.splitlines()] == [
        {"team": "red", "points": 7},
        {"team": "blue", "points": 5},
    ]
    assert "input_urls" not in job and "inputs" not in job  # the record's links are the instance's only


def test_a_tampered_upload_fails_the_job_and_a_hostile_query_is_refused(local_stack: LocalStack) -> None:
    owner, key = local_stack.create_api_key("erin")
    erin = Client(local_stack, key)
    upload = _upload(local_stack, owner, ROWS)
    tampered = upload.model_copy(update={"sha256": "0" * 64})
    hostile = "SELECT * FROM read_text('/proc/self/environ')"

    corrupt = erin.wait(_submit(local_stack, owner, tampered, "SELECT * FROM scores", "csv"), timeout=60)
    refused = erin.wait(_submit(local_stack, owner, upload, hostile, "csv"), timeout=60)

    assert corrupt["status"] == "FAILED" and corrupt["error"]["code"] == "input_corrupt"
    assert refused["status"] == "FAILED" and refused["error"]["code"] == "query_rejected"
    assert "environ" not in refused["error"]["message"] and "/" not in refused["error"]["message"]
