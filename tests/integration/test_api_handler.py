"""The API handler with real moto-backed DynamoDB, SQS and S3."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import Cloud


def test_submit_records_queued_job_and_enqueues_a_pointer(cloud: Cloud) -> None:
    status, body, headers = cloud.api("POST", "/jobs", {"digits": 15000, "cost_center": "12345", "name": "n"})

    assert status == 202
    assert body["status"] == "QUEUED"
    assert headers["Location"].endswith(f"/jobs/{body['job_id']}")
    job = cloud.job(body["job_id"])
    assert (job.owner, job.params, job.cost_center, job.name) == ("key-a", {"digits": 15000}, "12345", "n")
    assert (job.function, job.version) == ("pi", "1")
    messages = cloud.receive()
    assert [json.loads(m["body"])["job_id"] for m in messages] == [body["job_id"]]


def test_get_returns_own_job_and_hides_the_infrastructure(cloud: Cloud) -> None:
    job_id = cloud.submit(digits=100)

    status, body, _ = cloud.api("GET", f"/jobs/{job_id}")

    assert status == 200
    assert body["job_id"] == job_id and body["status"] == "QUEUED" and body["params"] == {"digits": 100}
    assert not {"stack_name", "stack_id", "instance_id", "owner"} & set(body)


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/jobs/{id}"), ("GET", "/jobs/{id}/result"), ("DELETE", "/jobs/{id}")]
)
def test_another_owner_and_unknown_ids_are_404(cloud: Cloud, method: str, path: str) -> None:
    job_id = cloud.submit()

    other, body, _ = cloud.api(method, path.format(id=job_id), key_id="key-b")
    unknown, _, _ = cloud.api(method, path.format(id="f" * 32))
    garbage, _, _ = cloud.api(method, path.format(id="..%2f"))

    assert (other, unknown, garbage) == (404, 404, 404)
    assert body["error"]["code"] == "not_found"
    assert cloud.job(job_id).status.value == "QUEUED"  # another owner's DELETE changed nothing


def test_idempotency_key_returns_the_same_job(cloud: Cloud) -> None:
    headers = {"Idempotency-Key": "order-17"}
    first = cloud.api("POST", "/jobs", {"digits": 10}, headers=headers)
    again = cloud.api("POST", "/jobs", {"digits": 10}, headers=headers)
    other_owner = cloud.api("POST", "/jobs", {"digits": 10}, headers=headers, key_id="key-b")
    changed = cloud.api("POST", "/jobs", {"digits": 11}, headers=headers)

    assert first[0] == again[0] == 202
    assert first[1]["job_id"] == again[1]["job_id"]
    assert again[2].get("Idempotent-Replayed") == "true"
    assert other_owner[1]["job_id"] != first[1]["job_id"]
    assert changed[0] == 409 and changed[1]["error"]["details"][0]["field"] == "Idempotency-Key"
    assert len(cloud.receive()) == 2  # one message per job, none for the repeat


def test_list_is_own_jobs_newest_first_and_paginated(cloud: Cloud) -> None:
    mine = [cloud.submit(digits=d) for d in (1, 2, 3, 4, 5)]
    cloud.submit(digits=9, **{}) if False else cloud.api("POST", "/jobs", {"digits": 9}, key_id="key-b")

    seen: list[str] = []
    path = "/jobs?limit=2"
    while True:
        status, body, _ = cloud.api("GET", path)
        assert status == 200 and len(body["jobs"]) <= 2
        seen += [job["job_id"] for job in body["jobs"]]
        if not body["next"]:
            break
        path = f"/jobs?limit=2&next={body['next']}"

    assert seen == list(reversed(mine))


def test_pagination_token_of_another_owner_is_rejected(cloud: Cloud) -> None:
    for _ in range(3):
        cloud.submit()
    _, body, _ = cloud.api("GET", "/jobs?limit=1")

    status, error, _ = cloud.api("GET", f"/jobs?next={body['next']}", key_id="key-b")
    bad, _, _ = cloud.api("GET", "/jobs?next=not-a-token")

    assert status == bad == 422
    assert error["error"]["details"][0]["field"] == "next"


def test_per_run_execute_creates_the_same_kind_of_job(cloud: Cloud) -> None:
    status, body, _ = cloud.api(
        "POST", "/PerRunExecute", {"StackName": "legacy", "CostCenter": "12345", "DigitsToCalculate": "250"}
    )

    assert status == 202
    job = cloud.job(body["job_id"])
    assert (job.params["digits"], job.cost_center, job.name, job.status.value) == (
        250,
        "12345",
        "legacy",
        "QUEUED",
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("POST", "/jobs", "{not json", 400, "body"),
        ("POST", "/jobs", "[1, 2]", 400, "body"),
        ("POST", "/jobs", None, 400, "body"),
        ("POST", "/jobs", {"digits": "many"}, 422, "digits"),
        ("POST", "/jobs", {"digits": 0}, 422, "digits"),
        ("POST", "/jobs", {"digits": 10_000_001}, 422, "digits"),
        ("POST", "/jobs", {"digits": 5, "template": "evil.yaml"}, 422, "template"),
        ("POST", "/PerRunExecute", {"DigitsToCalculate": "x"}, 422, "DigitsToCalculate"),
        ("GET", "/jobs?limit=1000", None, 422, "limit"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    cloud: Cloud, method: str, path: str, body: object, status: int, field: str
) -> None:
    got, payload, _ = cloud.api(method, path, body)

    assert got == status
    assert field in [d["field"] for d in payload["error"]["details"]]
    assert payload["error"]["message"]
    assert cloud.receive() == []  # nothing half-done


def test_unknown_route_and_method(cloud: Cloud) -> None:
    assert cloud.api("PUT", "/jobs")[0] == 405
    assert cloud.api("GET", "/nothing")[0] == 404


def test_missing_api_key_identity_is_403(cloud: Cloud) -> None:
    status, body, _ = cloud.api("GET", "/jobs", key_id="")
    assert status == 403 and body["error"]["code"] == "forbidden"


def test_queue_failure_is_503_and_the_job_is_not_left_queued(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIJOBS_QUEUE_URL", cloud.queue_url + "-missing")
    import pijobs.api_handler.handler

    pijobs.api_handler.handler.services.cache_clear()

    status, body, _ = cloud.api("POST", "/jobs", {"digits": 10}, headers={"Idempotency-Key": "k1"})

    assert status == 503 and body["error"]["code"] == "service_unavailable"
    jobs, _ = cloud.store.list_for_owner("key-a", limit=10)
    assert [(j.status.value, j.error.code if j.error else None) for j in jobs] == [
        ("FAILED", "enqueue_failed")
    ]


def test_a_body_nested_thousands_deep_is_a_400_not_a_500(cloud: Cloud) -> None:
    body = '{"function": "word-count", "params": ' + "[" * 100_000 + "]" * 100_000 + "}"

    status, answer, _ = cloud.api("POST", "/jobs", body)

    assert status == 400 and answer["error"]["details"] == [{"field": "body", "problem": "nested too deeply"}]
