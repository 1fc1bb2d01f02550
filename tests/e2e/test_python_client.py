"""The README's Python client over real HTTP: submit, wait, download; and each of its other calls."""

from __future__ import annotations

import hashlib
from pathlib import Path

import mpmath
import pytest

from pijobs.client import ApiError, PijobsClient, UploadRefusedError
from pijobs.local.stack import LocalStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(local_stack: LocalStack) -> PijobsClient:
    return PijobsClient(local_stack.api_url, local_stack.api_key, timeout=30)


def test_submit_wait_download_as_the_readme_shows(client: PijobsClient, tmp_path: Path) -> None:
    submitted = client.submit("pi", {"digits": 500}, name="readme", idempotency_key="readme-client-1")
    job = client.wait(submitted["job_id"], interval=0.2, timeout=120)

    download = client.download_result(job, tmp_path / "pi.txt")

    assert job["status"] == "SUCCEEDED"
    mpmath.mp.dps = 520
    digits = (tmp_path / "pi.txt").read_text().strip().splitlines()[-1]  # after the header lines
    assert digits == mpmath.nstr(mpmath.pi, 515, strip_zeros=False)[:502]
    assert download.sha256 == hashlib.sha256((tmp_path / "pi.txt").read_bytes()).hexdigest()
    repeated = client.submit("pi", {"digits": 500}, name="readme", idempotency_key="readme-client-1")
    assert repeated["job_id"] == job["job_id"]
    assert client.result_url(job["job_id"]).startswith("http")


def test_the_other_operations(client: PijobsClient) -> None:
    accepted = client.per_run_execute(20, stack_name="legacy", cost_center="12345")
    job = client.wait(accepted["job_id"], interval=0.2, timeout=120)
    assert job["status"] == "SUCCEEDED" and job["name"] == "legacy" and job["cost_center"] == "12345"

    assert any(entry["job_id"] == job["job_id"] for entry in client.iter_jobs(limit=2))
    assert client.list_jobs(limit=1, function="pi")["jobs"][0]["function"] == "pi"
    assert "pi" in {f["name"] for f in client.functions()} and client.function("pi")["name"] == "pi"
    assert "/jobs" in client.openapi()["paths"]

    with pytest.raises(ApiError) as refused:
        client.cancel(job["job_id"])  # finished already
    assert refused.value.status == 409
    with pytest.raises(ApiError) as missing:
        client.result_url("0" * 32)
    assert missing.value.status == 404 and missing.value.code == "not_found"


def test_the_upload_operations(client: PijobsClient, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("a,b\n1,2\n")
    bad.write_text("a,b\n1,3\n")  # the same size, another sha256
    progress: list[tuple[str, int, int]] = []

    upload = client.upload_file(good, on_progress=lambda *step: progress.append(step))
    declared = client.create_upload(
        "good.csv", good.stat().st_size, hashlib.sha256(good.read_bytes()).hexdigest()
    )
    client.send_upload(declared, bad)
    with pytest.raises(UploadRefusedError) as refused:
        client.wait_upload(declared["upload_id"], interval=0.1, timeout=30)

    assert upload["status"] == "AVAILABLE" and upload["filename"] == "good.csv"
    assert {phase for phase, _, _ in progress} == {"hash", "send"} and progress[-1][1:] == (8, 8)
    assert refused.value.upload["status"] == "REJECTED"
    assert refused.value.upload["reason"].startswith("checksum mismatch")
    assert upload["upload_id"] in [u["upload_id"] for u in client.iter_uploads(limit=1)]
    assert client.delete_upload(upload["upload_id"])["upload_id"] == upload["upload_id"]
    with pytest.raises(ApiError) as gone:
        client.get_upload(upload["upload_id"])
    assert gone.value.status == 404
