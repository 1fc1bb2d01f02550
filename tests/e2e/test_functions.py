"""Business functions over HTTP on the embedded stack: the catalog, the generic body, and a second function
(word-count, from the test distribution under tests/plugins) run end to end, cancelled and reaped, with no
change to the core."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
import requests

from pijobs.local.stack import LocalStack
from pijobs.shared.capacity import CapacityCounter
from tests.e2e.test_http import Client
from tests.e2e.test_recovery import _kill_group_like_a_crash, _wait_for

pytestmark = pytest.mark.e2e
TEXT = "the cat and the hat; The end. Cat's hat? the-end"


@pytest.fixture(scope="module")
def carol(local_stack: LocalStack) -> Client:
    return Client(local_stack, local_stack.create_api_key("carol")[1])


def _running(client: Client, job_id: str) -> None:
    _wait_for(lambda: client.get(f"/jobs/{job_id}").json()["status"] == "RUNNING", 60, "RUNNING")


def test_the_catalog_serves_every_installed_function_with_its_json_schema(carol: Client) -> None:
    response = carol.get("/functions")

    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    functions = {f["name"]: f for f in response.json()["functions"]}
    assert set(functions) == {"pi", "sql", "word-count"}
    word_count = functions["word-count"]
    assert set(word_count) == {"name", "version", "title", "description", "parameters", "limits"}
    assert word_count["parameters"]["required"] == ["text"]
    assert word_count["parameters"]["additionalProperties"] is False
    assert word_count["limits"] == {"max_text_chars": 100_000}
    assert functions["pi"]["parameters"]["properties"]["digits"]["type"] == "integer"
    assert carol.get("/functions/word-count").json() == word_count


def test_an_unknown_function_is_a_404_in_the_catalog_and_a_422_on_submit(carol: Client) -> None:
    missing = carol.get("/functions/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    refused = carol.post("/jobs", {"function": "nope", "params": {}})
    assert refused.status_code == 422
    (detail,) = refused.json()["error"]["details"]
    assert detail["field"] == "function" and "pi" in detail["problem"] and "word-count" in detail["problem"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "params.text"),
        ({"text": "a", "top": 0}, "params.top"),
        ({"text": "a", "top": "3"}, "params.top"),
        ({"text": "a", "shell": "rm -rf /"}, "params.shell"),
        ({"text": "x" * 100_001}, "params.text"),  # the operator's limit, not the model's
    ],
)
def test_bad_parameters_are_a_422_naming_the_field_by_its_path(
    carol: Client, params: dict[str, object], field: str
) -> None:
    response = carol.post("/jobs", {"function": "word-count", "params": params})

    assert response.status_code == 422
    assert [d["field"] for d in response.json()["error"]["details"]] == [field]


def test_the_second_function_runs_end_to_end_and_its_result_downloads(carol: Client) -> None:
    submitted = carol.post(
        "/jobs", {"function": "word-count", "params": {"text": TEXT, "top": 3}, "name": "count"}
    )
    assert submitted.status_code == 202, submitted.text

    job = carol.wait(submitted.json()["job_id"])

    assert job["status"] == "SUCCEEDED", job
    assert (job["function"], job["version"], job["params"]) == (
        "word-count",
        "1.0.0",
        {"text": TEXT, "top": 3, "lowercase": True, "pause_seconds": 0},
    )
    result = job["result"]
    assert result["filename"] == "word-count.json" and result["content_type"] == "application/json"
    assert result["metadata"] == {"words": 10, "distinct": 7}
    download = requests.get(result["url"], timeout=30)
    assert download.status_code == 200
    assert (len(download.content), hashlib.sha256(download.content).hexdigest()) == (
        result["bytes"],
        result["sha256"],
    )
    assert json.loads(download.content)["top"] == [["the", 3], ["hat", 2], ["cat", 1]]
    summary = carol.get("/jobs?function=word-count").json()["jobs"]
    assert [j["job_id"] for j in summary] == [job["job_id"]]
    assert summary[0]["function"] == "word-count"


def test_the_list_filters_by_function(carol: Client) -> None:
    pi_job = carol.post("/jobs", {"function": "pi", "params": {"digits": 50}}).json()["job_id"]
    shorthand = carol.post("/jobs", {"digits": 60}).json()["job_id"]
    for job_id in (pi_job, shorthand):
        assert carol.wait(job_id)["status"] == "SUCCEEDED"

    listed = carol.get("/jobs?function=pi").json()["jobs"]
    assert [j["job_id"] for j in listed] == [shorthand, pi_job]
    assert {j["function"] for j in carol.get("/jobs").json()["jobs"]} == {"pi", "word-count"}
    bad = carol.get("/jobs?function=../x")
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "function"


def test_cancel_stops_a_running_job_of_the_second_function(carol: Client, local_stack: LocalStack) -> None:
    job_id = carol.post(
        "/jobs", {"function": "word-count", "params": {"text": TEXT, "pause_seconds": 60}}
    ).json()["job_id"]
    _running(carol, job_id)

    cancelled = carol.session.delete(f"{carol.base}/jobs/{job_id}", timeout=30)

    assert cancelled.status_code == 202 and cancelled.json()["status"] == "CANCELLED"
    stopped = _wait_for(lambda: not local_stack.runner.running(), 30, "the worker to stop")
    print(f"the cancelled word-count worker stopped {stopped:.1f} s after the cancel")
    job = carol.get(f"/jobs/{job_id}").json()
    assert job["status"] == "CANCELLED" and job["result"] is None


def test_the_reaper_retries_a_dead_worker_of_the_second_function(
    carol: Client, local_stack: LocalStack
) -> None:
    job_id = carol.post(
        "/jobs", {"function": "word-count", "params": {"text": TEXT, "pause_seconds": 3}}
    ).json()["job_id"]
    _running(carol, job_id)
    (pid,) = local_stack.runner.running().values()

    _kill_group_like_a_crash(pid)

    job = carol.wait(job_id, timeout=120)
    assert job["status"] == "SUCCEEDED" and job["attempts"] == 2
    assert job["result"]["metadata"] == {"words": 10, "distinct": 7}


@pytest.fixture(autouse=True)
def _nothing_left_between_tests(local_stack: LocalStack) -> Iterator[None]:
    yield
    _wait_for(lambda: not local_stack.runner.running(), 60, "workers to finish")
    counter = CapacityCounter(
        local_stack.client("dynamodb"), local_stack.outputs["TableName"], default_limit=2
    )
    _wait_for(lambda: (counter.state() or {}).get("active") == 0, 30, "capacity to be released")
