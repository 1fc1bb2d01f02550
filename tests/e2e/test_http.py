"""As a customer would: HTTP against the embedded stack (gateway -> API -> SQS -> dispatcher -> stack ->
worker -> S3 + DynamoDB)."""

from __future__ import annotations

import time
from typing import Any

import mpmath
import pytest
import requests

from pijobs.local.stack import LocalStack
from pijobs.shared.status import TERMINAL_STATES as TERMINAL

pytestmark = pytest.mark.e2e


def pi_string(digits: int) -> str:
    mpmath.mp.dps = digits + 20
    return mpmath.nstr(mpmath.pi, digits + 15, strip_zeros=False)[: digits + 2]


class Client:
    def __init__(self, stack: LocalStack, key: str) -> None:
        self.base = stack.api_url
        self.session = requests.Session()
        self.session.headers["x-api-key"] = key

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=30, **kwargs)

    def wait(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.get(f"/jobs/{job_id}").json()
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s: {job}")


@pytest.fixture(scope="module")
def alice(local_stack: LocalStack) -> Client:
    return Client(local_stack, local_stack.api_key)


@pytest.fixture(scope="module")
def bob(local_stack: LocalStack) -> Client:
    return Client(local_stack, local_stack.create_api_key("bob")[1])


def test_submit_poll_and_download_the_digits(alice: Client) -> None:
    submitted = alice.post("/jobs", {"digits": 15000, "cost_center": "12345", "name": "e2e"})
    assert submitted.status_code == 202
    job_id = submitted.json()["job_id"]
    assert submitted.headers["Location"].endswith(f"/jobs/{job_id}")

    job = alice.wait(job_id)

    assert job["status"] == "SUCCEEDED", job
    assert job["progress"] == 1.0 and job["attempts"] == 1
    download = requests.get(job["result"]["url"], timeout=30)
    assert download.status_code == 200
    assert len(download.content) == job["result"]["bytes"]
    assert download.text.splitlines()[-1] == pi_string(15000)
    redirect = alice.get(f"/jobs/{job_id}/result", allow_redirects=False)
    assert redirect.status_code == 302 and redirect.headers["Location"].startswith("http")


@pytest.mark.parametrize(
    ("request_kwargs", "status", "field"),
    [
        ({"data": "{broken", "headers": {"Content-Type": "application/json"}}, 400, "body"),
        ({"json": {"digits": "lots"}}, 422, "digits"),
        ({"json": {"digits": 12, "instance_type": "p5.48xlarge"}}, 422, "instance_type"),
        ({"json": {"digits": 0}}, 422, "digits"),
        ({"json": {"digits": 10**9}}, 422, "digits"),
        ({"json": {}}, 422, "digits"),
    ],
)
def test_bad_input_is_4xx_naming_the_field(
    alice: Client, request_kwargs: dict[str, Any], status: int, field: str
) -> None:
    response = alice.session.post(alice.base + "/jobs", timeout=30, **request_kwargs)

    assert response.status_code == status
    error = response.json()["error"]
    assert field in [d["field"] for d in error["details"]] and error["message"]


def test_missing_or_wrong_key_is_403(local_stack: LocalStack) -> None:
    no_key = requests.post(local_stack.api_url + "/jobs", json={"digits": 5}, timeout=30)
    wrong = requests.get(local_stack.api_url + "/jobs", headers={"x-api-key": "nope"}, timeout=30)

    assert no_key.status_code == wrong.status_code == 403


def test_another_key_cannot_see_the_job(alice: Client, bob: Client) -> None:
    job_id = alice.post("/jobs", {"digits": 20}).json()["job_id"]

    assert bob.get(f"/jobs/{job_id}").status_code == 404
    assert job_id not in [j["job_id"] for j in bob.get("/jobs").json()["jobs"]]
    assert job_id in [j["job_id"] for j in alice.get("/jobs").json()["jobs"]]
    alice.wait(job_id)


def test_idempotency_key_returns_the_same_job(alice: Client) -> None:
    headers = {"Idempotency-Key": f"e2e-{time.time_ns()}"}
    first = alice.post("/jobs", {"digits": 30}, headers=headers)
    second = alice.post("/jobs", {"digits": 30}, headers=headers)

    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] == second.json()["job_id"]
    assert alice.wait(first.json()["job_id"])["status"] == "SUCCEEDED"


def test_per_run_execute_runs_a_job(alice: Client) -> None:
    response = alice.post(
        "/PerRunExecute", {"StackName": "legacy", "CostCenter": "12345", "DigitsToCalculate": "500"}
    )

    assert response.status_code == 202
    job = alice.wait(response.json()["job_id"])
    assert job["status"] == "SUCCEEDED" and job["params"] == {"digits": 500} and job["name"] == "legacy"
    assert requests.get(job["result"]["url"], timeout=30).text.splitlines()[-1] == pi_string(500)


def test_keys_create_makes_a_working_key(local_stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    from pijobs.cli import main

    assert main(["keys", "create", "carol"]) == 0

    key = capsys.readouterr().out.strip().splitlines()[-1]
    carol = Client(local_stack, key)
    assert carol.get("/jobs").json() == {"jobs": [], "next": None}


def test_keys_list_shows_no_values_and_revoke_stops_a_key(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    from pijobs.cli import main

    key_id, value = local_stack.create_api_key("dave")
    dave = Client(local_stack, value)
    assert dave.get("/jobs").status_code == 200
    capsys.readouterr()

    assert main(["keys", "list", "--json"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "dave" in listed and value not in listed and local_stack.api_key not in listed

    assert main(["keys", "revoke", key_id]) == 0
    deadline = time.monotonic() + 10
    while dave.get("/jobs").status_code != 403:  # the gateway caches keys for 2 s, as API Gateway does
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)
    assert main(["keys", "revoke", key_id]) == 1
    assert "no API key" in capsys.readouterr().err
