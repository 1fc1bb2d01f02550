"""Uploads as a customer makes them, over HTTP against the embedded stack: declare the file (POST /uploads),
send it with the presigned POST (multipart, as a browser or curl would), wait until pijobs has checked it,
query it with an sql job and download the result. A file that is not the declared one is REJECTED and
cannot be used; another tenant can neither see nor use an upload.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from typing import Any

import pytest
import requests

from pijobs.local.stack import LocalStack
from tests.e2e.test_http import Client

pytestmark = pytest.mark.e2e
CSV = b"team,points\nred,3\nblue,5\nred,4\n"
QUERY = "SELECT team, sum(points) AS points FROM scores GROUP BY team ORDER BY team"


def declare(client: Client, body: bytes, filename: str = "scores.csv") -> dict[str, Any]:
    answer = client.post(
        "/uploads",
        {"filename": filename, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def send(created: dict[str, Any], content: bytes) -> None:
    posted = requests.post(
        created["url"], data=created["fields"], files={"file": ("scores.csv", content)}, timeout=30
    )
    assert posted.status_code in (200, 201, 204), posted.text


def settled(client: Client, upload_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        upload: dict[str, Any] = client.get(f"/uploads/{upload_id}").json()
        if upload["status"] != "PENDING":
            return upload
        time.sleep(0.1)
    raise AssertionError(f"upload {upload_id} still PENDING after {timeout} s")


def submit_sql(client: Client, upload_id: str) -> requests.Response:
    params = {"query": QUERY, "inputs": {"scores": upload_id}, "format": "csv"}
    return client.post("/jobs", {"function": "sql", "params": params})


@pytest.fixture(scope="module")
def carol(local_stack: LocalStack) -> Client:
    return Client(local_stack, local_stack.create_api_key("carol")[1])


@pytest.fixture(scope="module")
def dave(local_stack: LocalStack) -> Client:
    return Client(local_stack, local_stack.create_api_key("dave")[1])


def test_upload_query_and_download_the_result(carol: Client) -> None:
    created = declare(carol, CSV)
    assert carol.get(f"/uploads/{created['upload_id']}").json()["status"] == "PENDING"

    send(created, CSV)
    upload = settled(carol, created["upload_id"])

    assert upload["status"] == "AVAILABLE", upload
    assert (upload["bytes"], upload["filename"]) == (len(CSV), "scores.csv") and upload["verified_at"]
    listed = carol.get("/uploads?limit=5").json()
    assert created["upload_id"] in [u["upload_id"] for u in listed["uploads"]]
    submitted = submit_sql(carol, created["upload_id"])
    assert submitted.status_code == 202, submitted.text
    job = carol.wait(submitted.json()["job_id"], timeout=60)
    assert job["status"] == "SUCCEEDED", job
    download = requests.get(job["result"]["url"], timeout=30)
    assert hashlib.sha256(download.content).hexdigest() == job["result"]["sha256"]
    assert list(csv.reader(io.StringIO(download.text))) == [["team", "points"], ["blue", "5"], ["red", "7"]]


@pytest.mark.parametrize(
    ("content", "problem"),
    [(CSV.replace(b"5", b"9"), "checksum mismatch"), (CSV[:-4], "size mismatch")],
    ids=["tampered", "truncated"],
)
def test_a_file_that_is_not_the_declared_one_is_rejected_and_cannot_be_used(
    local_stack: LocalStack, carol: Client, content: bytes, problem: str
) -> None:
    created = declare(carol, CSV)

    send(created, content)  # moto checks no POST policy condition: pijobs must
    upload = settled(carol, created["upload_id"])

    assert upload["status"] == "REJECTED" and upload["reason"].startswith(problem), upload
    refused = submit_sql(carol, created["upload_id"])
    assert refused.status_code == 422
    assert refused.json()["error"]["details"] == [
        {"field": "params.inputs.scores", "problem": "the upload is REJECTED, not AVAILABLE"}
    ]
    listing = local_stack.client("s3").list_objects_v2(
        Bucket=local_stack.outputs["ResultsBucket"], Prefix="uploads/"
    )
    assert not [o for o in listing.get("Contents", []) if o["Key"].endswith(created["upload_id"])]


def test_another_tenant_can_neither_see_nor_use_nor_delete_an_upload(carol: Client, dave: Client) -> None:
    created = declare(carol, CSV)
    send(created, CSV)
    assert settled(carol, created["upload_id"])["status"] == "AVAILABLE"
    upload_id = created["upload_id"]

    seen = dave.get(f"/uploads/{upload_id}")
    used = submit_sql(dave, upload_id)
    deleted = dave.session.delete(f"{dave.base}/uploads/{upload_id}", timeout=30)

    missing = dave.get(f"/uploads/{'0' * 32}").json()["error"]
    error = seen.json()["error"]
    assert seen.status_code == 404
    assert (error["code"], error["details"]) == (missing["code"], missing["details"]) == ("not_found", [])
    assert used.status_code == 422
    assert used.json()["error"]["details"] == [{"field": "params.inputs.scores", "problem": "no such upload"}]
    assert deleted.status_code == 404
    assert upload_id not in [u["upload_id"] for u in dave.get("/uploads").json()["uploads"]]
    # the owner still has it, and deletes it: then nobody can use it
    assert carol.session.delete(f"{carol.base}/uploads/{upload_id}", timeout=30).status_code == 200
    assert carol.get(f"/uploads/{upload_id}").status_code == 404
    assert submit_sql(carol, upload_id).status_code == 422
