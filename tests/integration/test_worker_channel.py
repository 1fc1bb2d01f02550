"""The worker channel attacked: a worker holding job A's token tries to reach job B (another tenant's) and
everything around it. Each attempt is refused (401/403/404/409/410 in the error envelope, never a 500),
answers nothing of B, and changes nothing of B; and nothing secret is kept at rest.

Job A belongs to key-a, job B to key-b; both are dispatched (each attempt has its own token, handed only to
its instance's UserData) and B is started by its own worker.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

import pytest
import requests

from pijobs.shared.inputs import pin_inputs
from pijobs.shared.models import JobRecord
from pijobs.shared.status import JobStatus
from tests.integration.conftest import API_URL, Cloud, in_process_send
from tests.integration.test_job_inputs import put_upload, submit_sql

OPERATIONS = ("start", "heartbeat", "output", "finish")
BODIES: dict[str, Any] = {
    "start": {},
    "heartbeat": {"progress": 0.5},
    "output": {"filename": "x.txt", "bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()},
    "finish": {"outcome": "FAILED", "error": {"code": "refused", "message": "no"}},
}
SUCCEEDED = {"outcome": "SUCCEEDED", "output": BODIES["output"]}


def _raw(cloud: Cloud, job_id: str) -> dict[str, Any]:
    """The job's item as DynamoDB holds it (every attribute, not the model's view)."""
    return cloud.ddb.get_item(TableName=cloud.table, Key={"pk": {"S": f"job#{job_id}"}})["Item"]  # type: ignore[no-any-return]


@pytest.fixture
def jobs(cloud: Cloud) -> dict[str, Any]:
    """A (key-a, a plain job, dispatched) and B (key-b, an sql job over key-b's upload, started)."""
    cloud.capacity(limit=4).set_limit(4)
    a = cloud.submit(digits=20)
    upload = put_upload(cloud, "key-b", b"city,amount\nsecret,1\n")
    b = submit_sql(
        cloud, "key-b", pin_inputs({"t": upload.upload_id}, {upload.upload_id: upload}, owner="key-b")
    )
    assert cloud.dispatch(cloud.receive()) == []
    if cloud.job(b).status is not JobStatus.PROVISIONING:
        assert cloud.dispatch(cloud.receive(wait_seconds=2)) == []
    token_a, token_b = cloud.worker_token(a), cloud.worker_token(b)
    assert token_a != token_b
    status, started = cloud.worker_call(b, "start", token=token_b)
    assert status == 200 and started["inputs"]["t"]["url"]
    return {"a": a, "b": b, "token_a": token_a, "token_b": token_b, "upload": upload}


def _refused(status: int, body: dict[str, Any], *allowed: int) -> None:
    assert status in allowed, (status, body)
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]


def test_a_token_opens_its_own_job_and_no_other(cloud: Cloud, jobs: dict[str, Any]) -> None:
    b_before = _raw(cloud, jobs["b"])

    for operation in OPERATIONS:
        status, body = cloud.worker_call(jobs["b"], operation, BODIES[operation], token=jobs["token_a"])
        _refused(status, body, 403)
        assert jobs["b"] not in json.dumps(body) and "secret" not in json.dumps(body)

    assert _raw(cloud, jobs["b"]) == b_before
    # ... while A's own token opens A, and answers A's data only
    status, started = cloud.worker_call(jobs["a"], "start", token=jobs["token_a"])
    assert status == 200 and started["job_id"] == jobs["a"] and started["inputs"] == {}
    assert jobs["b"] not in json.dumps(started)


def test_b_s_inputs_are_never_handed_to_a(cloud: Cloud, jobs: dict[str, Any]) -> None:
    status, started = cloud.worker_call(jobs["a"], "start", token=jobs["token_a"])
    assert status == 200 and jobs["upload"].key not in json.dumps(started)
    status, body = cloud.worker_call(jobs["b"], "start", token=jobs["token_a"])
    _refused(status, body, 403)
    assert jobs["upload"].key not in json.dumps(body) and "X-Amz" not in json.dumps(body)


def test_a_cannot_upload_under_b_s_prefix_or_succeed_with_b_s_file(
    cloud: Cloud, jobs: dict[str, Any]
) -> None:
    a, b = jobs["a"], jobs["b"]
    assert cloud.worker_call(a, "start", token=jobs["token_a"])[0] == 200
    # A path in the name is refused; any name lands under A's own prefix.
    status, body = cloud.worker_call(
        a, "output", {**BODIES["output"], "filename": f"../../key-b/{b}/result.csv"}, token=jobs["token_a"]
    )
    _refused(status, body, 422)
    status, post = cloud.worker_call(a, "output", BODIES["output"], token=jobs["token_a"])
    assert status == 200 and post["fields"]["key"] == f"results/key-a/{a}/x.txt"
    # The upload policy names A's key, size and sha256 (S3 enforces it on AWS; moto does not).
    policy = json.loads(base64.b64decode(post["fields"]["policy"]))
    assert {"key": f"results/key-a/{a}/x.txt"} in policy["conditions"]
    assert ["content-length-range", 3, 3] in policy["conditions"]
    # A file planted under B's prefix (as moto lets a POST do) makes neither job succeed.
    cloud.s3.put_object(Bucket=cloud.bucket, Key=f"results/key-b/{b}/x.txt", Body=b"abc")
    status, body = cloud.worker_call(a, "finish", SUCCEEDED, token=jobs["token_a"])
    _refused(status, body, 409)
    assert body["error"]["code"] == "result_mismatch"
    assert cloud.job(a).status is JobStatus.RUNNING and cloud.job(b).result is None


def test_a_wrong_file_at_a_s_own_key_does_not_succeed(cloud: Cloud, jobs: dict[str, Any]) -> None:
    a = jobs["a"]
    assert cloud.worker_call(a, "start", token=jobs["token_a"])[0] == 200
    status, post = cloud.worker_call(a, "output", BODIES["output"], token=jobs["token_a"])
    assert status == 200
    for body in (b"abd", b"abcd"):  # another sha256, another size
        requests.post(post["url"], data=post["fields"], files={"file": ("x.txt", body)}, timeout=10)
        status, answer = cloud.worker_call(a, "finish", SUCCEEDED, token=jobs["token_a"])
        _refused(status, answer, 409)
    requests.post(post["url"], data=post["fields"], files={"file": ("x.txt", b"abc")}, timeout=10)
    status, answer = cloud.worker_call(a, "finish", SUCCEEDED, token=jobs["token_a"])
    assert status == 200 and answer == {"status": "SUCCEEDED"}
    job = cloud.job(a)
    assert job.result is not None and job.result.key == f"results/key-a/{a}/x.txt"
    redirect = cloud.api("GET", f"/jobs/{a}/result", key_id="key-a")
    assert redirect[0] == 302 and f"/results/key-a/{a}/x.txt?" in redirect[2]["Location"]
    # The attempt is over: the slot is back, the stack deleted, the token spent.
    assert cloud.capacity().state()["holders"] == {jobs["b"]}  # type: ignore[index]
    status, answer = cloud.worker_call(a, "heartbeat", {"progress": 1}, token=jobs["token_a"])
    _refused(status, answer, 410)


def test_a_token_stops_working_when_its_attempt_is_cancelled(cloud: Cloud, jobs: dict[str, Any]) -> None:
    a = jobs["a"]
    assert cloud.worker_call(a, "start", token=jobs["token_a"])[0] == 200
    assert cloud.api("DELETE", f"/jobs/{a}", key_id="key-a")[0] == 202
    cancelled = _raw(cloud, a)

    for operation in OPERATIONS:
        status, body = cloud.worker_call(a, operation, BODIES[operation], token=jobs["token_a"])
        _refused(status, body, 410)
    status, body = cloud.worker_call(a, "finish", SUCCEEDED, token=jobs["token_a"])
    _refused(status, body, 410)

    assert _raw(cloud, a) == cancelled and cloud.job(a).status is JobStatus.CANCELLED


def test_an_earlier_attempt_s_token_does_not_work_on_the_retry(cloud: Cloud, jobs: dict[str, Any]) -> None:
    a, old = jobs["a"], jobs["token_a"]
    assert cloud.worker_call(a, "start", token=old)[0] == 200
    give_back = {"outcome": "RETRY", "error": {"code": "result_upload_failed", "message": "x"}}
    assert cloud.worker_call(a, "finish", give_back, token=old) == (200, {"status": "QUEUED"})
    _refused(*cloud.worker_call(a, "start", token=old), 410)  # queued: the attempt is over

    import pijobs.dispatcher.reaper as reaper

    reaper.services.cache_clear()
    reaper.reap(reaper.services())  # starts the admission tick that admits the parked job
    assert cloud.dispatch(cloud.receive(wait_seconds=3)) == []
    retried = cloud.job(a)
    assert retried.status is JobStatus.PROVISIONING and retried.attempts == 2
    new = cloud.worker_token(a)
    assert new != old
    before = _raw(cloud, a)

    for operation in OPERATIONS:
        status, body = cloud.worker_call(a, operation, BODIES[operation], token=old)
        _refused(status, body, 403)
    assert _raw(cloud, a) == before
    assert cloud.worker_call(a, "start", token=new)[0] == 200


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (None, 401),
        ("", 401),
        ("Basic dXNlcjpwYXNz", 401),
        ("Bearer", 401),
        (f"Bearer {secrets.token_urlsafe(32)}", 403),  # forged: a well-formed token nobody minted
        ("Bearer x", 403),
        (f"Bearer {'A' * 200}", 403),
    ],
)
def test_no_token_or_a_forged_one_is_refused(
    cloud: Cloud, jobs: dict[str, Any], authorization: str | None, expected: int
) -> None:
    b_before = _raw(cloud, jobs["b"])
    for operation in OPERATIONS:
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        status, raw = in_process_send(
            "POST",
            f"{API_URL}/worker/jobs/{jobs['b']}/{operation}",
            headers,
            json.dumps(BODIES[operation]).encode(),
        )
        _refused(status, json.loads(raw), expected)
    assert _raw(cloud, jobs["b"]) == b_before


def test_unknown_jobs_operations_and_bad_bodies_are_4xx_never_500(cloud: Cloud, jobs: dict[str, Any]) -> None:
    a, token = jobs["a"], jobs["token_a"]
    _refused(*cloud.worker_call("0" * 32, "start", token=token), 403)  # no such job: as another's
    _refused(*cloud.worker_call("not-an-id", "start", token=token), 403)
    _refused(*cloud.worker_call(a, "delete", token=token), 404)
    _refused(*cloud.worker_call(a, "heartbeat", {"progress": 0.1}, token=token), 409)  # not started
    assert cloud.worker_call(a, "start", token=token)[0] == 200
    for operation, body in (
        ("heartbeat", {"progress": 7}),
        ("heartbeat", {"progress": 0.5, "status": "SUCCEEDED"}),
        ("output", {"filename": "x", "bytes": -1, "sha256": "0" * 64}),
        ("output", {"filename": "x", "bytes": 1, "sha256": "nothex"}),
        ("finish", {**SUCCEEDED, "metadata": {"x": "y" * 20_000}}),
        ("finish", {"outcome": "SUCCEEDED"}),  # no output named
        ("finish", {"outcome": "FAILED"}),
        ("finish", {"outcome": "RETRY", "error": {"code": "anything_else", "message": "x"}}),
        ("finish", {"outcome": "CANCELLED"}),
    ):
        status, answer = cloud.worker_call(a, operation, body, token=token)
        assert 400 <= status < 500, (operation, body, status, answer)
    _refused(*cloud.worker_call(a, "finish", SUCCEEDED, token=token), 409)  # nothing stored
    assert cloud.job(a).status is JobStatus.RUNNING


def test_nothing_secret_is_kept_at_rest(cloud: Cloud, jobs: dict[str, Any]) -> None:
    """No token and no presigned URL in any job record, the capacity item or any other item: only the
    tokens' sha256."""
    assert cloud.run_worker(jobs["b"]) == 0
    items = cloud.ddb.scan(TableName=cloud.table)["Items"]
    dump = json.dumps(items)
    for token in (jobs["token_a"], jobs["token_b"]):
        assert token not in dump
        assert hashlib.sha256(token.encode()).hexdigest() in dump
    assert "X-Amz-Signature" not in dump and "Signature=" not in dump and "X-Amz-Credential" not in dump
    record = JobRecord.from_item(_plain(_raw(cloud, jobs["b"])))
    assert record.channel is not None and record.channel.attempt == 1


def test_every_status_change_leaves_one_event(cloud: Cloud, jobs: dict[str, Any]) -> None:
    assert cloud.run_worker(jobs["b"]) == 0
    items = cloud.ddb.scan(TableName=cloud.table)["Items"]
    events = sorted(
        (_plain(item) for item in items if item["pk"]["S"].startswith(f"event#{jobs['b']}#")),
        key=lambda e: str(e["at"]),
    )
    assert [(e["previous"], e["status"]) for e in events] == [
        ("QUEUED", "PROVISIONING"),
        ("PROVISIONING", "RUNNING"),
        ("RUNNING", "SUCCEEDED"),
    ]
    assert {(e["owner"], e["function"], e["version"], e["attempt"]) for e in events} == {
        ("key-b", "sql", "1", 1)
    }


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    from pijobs.shared.models import from_dynamo

    return {k: from_dynamo(TypeDeserializer().deserialize(v)) for k, v in item.items()}
