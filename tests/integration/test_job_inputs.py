"""A job that reads inputs, under moto: the dispatcher presigns one GET per pinned input of the job's own
owner, the worker fetches exactly those, checks them, and the sql function runs over them.

A test here puts the object in S3 and writes the job record with its pinned inputs the way the API does
(``shared.inputs.pin_inputs``), then sends the job's message; the uploads API and its verifier have their
own tests (tests/integration/test_uploads.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any

import pydantic
import pytest
import requests
from structlog.testing import capture_logs

from pijobs.shared.inputs import PinnedInput, UploadRecord, UploadStatus, pin_inputs, upload_key
from pijobs.shared.models import JobMessage, JobRecord, isoformat, new_job_id, utcnow
from pijobs.shared.queue import JobQueue
from pijobs.shared.status import JobStatus
from pijobs.worker.job import WorkerServices
from tests.integration.conftest import Cloud

CSV = b"city,amount\nOslo,3\nLima,5\nOslo,4\n"
QUERY = "SELECT city, sum(amount) AS total FROM t GROUP BY city ORDER BY city"


def put_upload(cloud: Cloud, owner: str, body: bytes) -> UploadRecord:
    upload_id = new_job_id()
    key = upload_key(owner, upload_id)
    cloud.s3.put_object(Bucket=cloud.bucket, Key=key, Body=body)
    return UploadRecord(
        upload_id=upload_id,
        owner=owner,
        status=UploadStatus.AVAILABLE,
        key=key,
        bytes=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
    )


def submit_sql(cloud: Cloud, owner: str, pinned: dict[str, PinnedInput], query: str = QUERY) -> str:
    """What POST /jobs does for an sql job once it has pinned its inputs."""
    job_id = new_job_id()
    now = isoformat(utcnow())
    params = {"query": query, "inputs": {n: p.upload_id for n, p in pinned.items()}, "format": "csv"}
    record = JobRecord(
        job_id=job_id,
        owner=owner,
        function="sql",
        version="1",
        params=params,
        status=JobStatus.QUEUED,
        created_at=now,
        updated_at=now,
        message_at=now,
        deadline_seconds=3600,
        inputs=pinned,
    )
    cloud.store.create(record)
    JobQueue(cloud.sqs, cloud.queue_url).send(JobMessage(job_id=job_id, function="sql"))
    return job_id


class Fetches:
    """The worker's GETs, made with requests (which moto answers in-process), each one recorded."""

    def __init__(self, failures: int = 0) -> None:
        self.urls: list[str] = []
        self.failures = failures

    def __call__(self, url: str, destination: Path) -> None:
        self.urls.append(url)
        if len(self.urls) <= self.failures:
            raise urllib.error.HTTPError(url, 503, "Slow Down", {}, None)  # type: ignore[arg-type]
        response = requests.get(url, timeout=10)
        response.raise_for_status()
        destination.write_bytes(response.content)

    def adapt(self, services: WorkerServices) -> None:
        services.fetch = self


def path_of(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path)


def test_an_sql_job_reads_its_own_input_through_its_presigned_get(cloud: Cloud) -> None:
    upload = put_upload(cloud, "key-a", CSV)
    job_id = submit_sql(
        cloud, "key-a", pin_inputs({"t": upload.upload_id}, {upload.upload_id: upload}, owner="key-a")
    )

    assert cloud.dispatch(cloud.receive()) == []
    dispatched = cloud.job(job_id)
    assert dispatched.status is JobStatus.PROVISIONING
    assert dispatched.limits == {
        "max_rows": 10_000_000,
        "max_result_bytes": 1 << 30,
        "max_timeout_seconds": 3600,
    }
    raw = str(cloud.ddb.get_item(TableName=cloud.table, Key={"pk": {"S": f"job#{job_id}"}})["Item"])
    assert "X-Amz-Signature" not in raw and "Signature=" not in raw  # no link is kept anywhere
    fetches = Fetches(failures=2)  # two transient failures, waited out

    assert cloud.run_worker(job_id, adapt=fetches.adapt, transient_base_seconds=0.01) == 0

    job = cloud.job(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result is not None
    # One link, made by the worker channel's start for exactly the pinned object, tried three times.
    assert len(fetches.urls) == 3 and len(set(fetches.urls)) == 1
    assert path_of(fetches.urls[0]).endswith(f"/{upload.key}")  # virtual-hosted: the bucket is the host
    assert "X-Amz-Expires=3600" in fetches.urls[0]
    body = cloud.s3.get_object(Bucket=cloud.bucket, Key=job.result.key)["Body"].read().decode()
    assert list(csv.reader(io.StringIO(body))) == [["city", "total"], ["Lima", "5"], ["Oslo", "7"]]
    assert job.result.metadata["rows"] == 2
    assert job.result.metadata["columns"] == [
        {"name": "city", "type": "VARCHAR"},
        {"name": "total", "type": "HUGEINT"},
    ]
    assert cloud.live_stacks() == [] and cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_an_input_changed_after_it_was_pinned_fails_the_job_input_corrupt(cloud: Cloud) -> None:
    upload = put_upload(cloud, "key-a", CSV)
    job_id = submit_sql(
        cloud, "key-a", pin_inputs({"t": upload.upload_id}, {upload.upload_id: upload}, owner="key-a")
    )
    assert cloud.dispatch(cloud.receive()) == []
    cloud.s3.put_object(Bucket=cloud.bucket, Key=upload.key, Body=CSV[:-3])  # truncated after the check

    assert cloud.run_worker(job_id, adapt=Fetches().adapt) == 1

    job = cloud.job(job_id)
    assert job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == "input_corrupt" and "input t" in job.error.message
    assert job.result is None and cloud.live_stacks() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_an_input_pinned_outside_its_owners_prefix_is_never_presigned(cloud: Cloud) -> None:
    theirs = put_upload(cloud, "key-b", b"secret,data\n1,2\n")
    stolen = PinnedInput(upload_id=theirs.upload_id, key=theirs.key, bytes=theirs.bytes, sha256=theirs.sha256)
    job_id = submit_sql(cloud, "key-a", {"t": stolen})
    assert cloud.dispatch(cloud.receive()) == []
    fetches = Fetches()

    assert cloud.run_worker(job_id, adapt=fetches.adapt) == 1

    assert fetches.urls == []  # start answered no link for it: the worker refused the job
    job = cloud.job(job_id)
    assert job.status is JobStatus.FAILED and job.error is not None and job.error.code == "input_unavailable"
    assert "secret,data" not in str(job.model_dump()) and cloud.live_stacks() == []
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_every_input_pinned_outside_its_owners_prefix_is_refused_and_logged_and_only_those(
    cloud: Cloud,
) -> None:
    """A record whose pins were changed after submit: start answers a link for each input still under the
    owner's prefix, none for the others, and the operator's log names each of those."""
    own = put_upload(cloud, "key-a", CSV)
    theirs = [put_upload(cloud, "key-b", b"secret,data\n1,2\n") for _ in range(2)]
    pinned = pin_inputs({"b": own.upload_id}, {own.upload_id: own}, owner="key-a")
    for name, upload in zip(("a", "c"), theirs, strict=True):
        pinned[name] = PinnedInput(
            upload_id=upload.upload_id, key=upload.key, bytes=upload.bytes, sha256=upload.sha256
        )
    job_id = submit_sql(cloud, "key-a", pinned)
    assert cloud.dispatch(cloud.receive()) == []

    with capture_logs() as logs:
        status, started = cloud.worker_call(job_id, "start", token=cloud.worker_token(job_id))

    assert status == 200 and sorted(started["inputs"]) == ["b"]
    assert path_of(started["inputs"]["b"]["url"]).endswith(f"/{own.key}")
    refused = [e["input"] for e in logs if e["event"] == "input_not_owned"]
    assert refused == ["a", "c"] and all(
        e["log_level"] == "error" for e in logs if e["event"] == "input_not_owned"
    )


def test_a_refused_input_link_gives_the_attempt_back_for_fresh_links(cloud: Cloud) -> None:
    upload = put_upload(cloud, "key-a", CSV)
    job_id = submit_sql(
        cloud, "key-a", pin_inputs({"t": upload.upload_id}, {upload.upload_id: upload}, owner="key-a")
    )
    assert cloud.dispatch(cloud.receive()) == []

    def expired(url: str, destination: Path) -> None:
        from pijobs.shared.errors import InputUnavailableError

        raise InputUnavailableError("the input's link was refused (HTTP 403)")

    def adapt(services: WorkerServices) -> Any:
        services.fetch = expired

    assert cloud.run_worker(job_id, adapt=adapt) == 1

    job = cloud.job(job_id)
    assert job.status is JobStatus.QUEUED and job.error is not None and job.error.code == "input_unavailable"
    assert [h.code for h in job.history] == ["input_unavailable"]


def test_through_the_api_a_bad_query_or_an_unknown_upload_is_a_422(cloud: Cloud) -> None:
    """A job naming an upload that does not exist is refused at submit, never queued to fail later."""
    inputs = {"t": "a" * 32}
    status, body, _ = cloud.api(
        "POST", "/jobs", {"function": "sql", "params": {"query": "ATTACH 'x.db'", "inputs": inputs}}
    )
    assert status == 422
    assert [d["field"] for d in body["error"]["details"]] == ["params.query"]

    # DuckDB reads a PIVOT without the values of its column as two statements, which the worker refuses
    pivot = "SELECT * FROM (PIVOT t ON x USING sum(y))"
    status, body, _ = cloud.api(
        "POST", "/jobs", {"function": "sql", "params": {"query": pivot, "inputs": inputs}}
    )
    assert status == 422
    assert [d["field"] for d in body["error"]["details"]] == ["params.query"]
    assert "PIVOT t ON x IN (" in body["error"]["details"][0]["problem"]

    status, body, _ = cloud.api(
        "POST", "/jobs", {"function": "sql", "params": {"query": QUERY, "inputs": inputs}}
    )
    assert status == 422, body
    assert [d["field"] for d in body["error"]["details"]] == ["params.inputs.t"]
    assert cloud.receive() == []  # nothing queued


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("key", {"S": ""}),  # no object
        ("key", {"S": "uploads/key-a/" + "a" * 1011}),  # 1,025 characters: longer than any S3 key
        ("key", {"S": "results/key-a/" + "a" * 32}),  # not an upload (another job's result, say)
        ("key", {"S": f"uploads/key-a/{'a' * 32}/../{'b' * 32}"}),  # a path out of the upload
        ("bytes", {"N": "0"}),  # no upload is empty
    ],
)
def test_a_job_whose_pinned_input_was_tampered_with_in_the_table_is_refused_when_read(
    cloud: Cloud, field: str, value: dict[str, str]
) -> None:
    # Given a job pinned as the API pins, whose pin was then changed in the table behind its back
    upload = put_upload(cloud, "key-a", CSV)
    job_id = submit_sql(
        cloud, "key-a", pin_inputs({"t": upload.upload_id}, {upload.upload_id: upload}, owner="key-a")
    )
    cloud.ddb.update_item(
        TableName=cloud.table,
        Key={"pk": {"S": f"job#{job_id}"}},
        UpdateExpression="SET #inputs.#t.#field = :value",
        ExpressionAttributeNames={"#inputs": "inputs", "#t": "t", "#field": field},
        ExpressionAttributeValues={":value": value},
    )

    # Then the record is not read as a job: the store refuses it, and the API answers an internal error
    # that shows nothing of it
    with pytest.raises(pydantic.ValidationError, match=f"inputs.t.{field}"):
        cloud.store.get(job_id)
    status, body, _ = cloud.api("GET", f"/jobs/{job_id}")
    assert status == 500 and body["error"] == {
        "code": "internal_error",
        "message": "internal error",
        "details": [],
        "request_id": body["error"]["request_id"],
    }
