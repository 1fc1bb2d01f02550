"""Fair share on the embedded stack over HTTP: a flood from one tenant does not hold up two small ones."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from pijobs.local.stack import LocalStack
from tests.e2e.test_http import Client

pytestmark = pytest.mark.e2e

GONE = ("DELETE_IN_PROGRESS", "DELETE_COMPLETE")


def _live_stacks(stack: LocalStack) -> int:
    summaries = stack.client("cloudformation").list_stacks()["StackSummaries"]
    return sum(1 for s in summaries if s["StackName"].startswith("pijob-") and s["StackStatus"] not in GONE)


def test_a_flood_does_not_delay_the_small_tenants_and_capacity_is_never_exceeded(
    local_stack: LocalStack,
) -> None:
    flood, small_b, small_c = (Client(local_stack, local_stack.create_api_key(n)[1]) for n in "ABC")
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _live_stacks(local_stack))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        a_jobs = [flood.post("/jobs", {"digits": 20 + n}).json()["job_id"] for n in range(16)]
        b_jobs = [small_b.post("/jobs", {"digits": 60 + n}).json()["job_id"] for n in range(2)]
        c_jobs = [small_c.post("/jobs", {"digits": 70}).json()["job_id"]]
        records = {}
        for client, jobs in ((flood, a_jobs), (small_b, b_jobs), (small_c, c_jobs)):
            for job_id in jobs:
                job = client.wait(job_id, timeout=240)
                assert job["status"] == "SUCCEEDED", job
                records[job_id] = job
    finally:
        stop.set()
        sampler.join()

    # Two slots and A's backlog ahead of them: after B and C arrive, B's two and C's one are admitted
    # within the next few slots (their tags sit next to A's next ones), not after the rest of A's sixteen.
    arrived = min(records[j]["created_at"] for j in b_jobs + c_jobs)
    small_done = max(records[j]["dispatched_at"] for j in b_jobs + c_jobs)
    a_between = [j for j in a_jobs if arrived < records[j]["dispatched_at"] < small_done]
    a_after = [j for j in a_jobs if records[j]["dispatched_at"] > small_done]
    assert len(a_between) <= 3, (len(a_between), len(a_after))
    assert a_after, "A's flood should still have been waiting when the small tenants were served"
    assert peak <= 2, f"{peak} job stacks were alive at once with MaxActiveStacks 2"


RUNAWAY = "SELECT count(*) FROM range(100000000) a, range(100000000) b"  # would run for days


def test_runaway_queries_of_one_tenant_stop_at_their_timeout_and_never_hold_up_another_tenant(
    local_stack: LocalStack,
) -> None:
    """Tenant A submits six queries that never end; tenant B's small pi job is done within 10 s all the
    same (A holds at most half the slots), and each of A's queries is stopped at its timeout."""
    from tests.e2e.test_sql import ROWS, _upload

    a_id, a_key = local_stack.create_api_key("runaway-a")
    a, b = Client(local_stack, a_key), Client(local_stack, local_stack.create_api_key("small-b")[1])
    upload = _upload(local_stack, a_id, ROWS)
    params = {"query": RUNAWAY, "inputs": {"scores": upload.upload_id}, "timeout_seconds": 4}
    runaway = []
    for _ in range(6):
        response = a.post("/jobs", {"function": "sql", "params": params})
        assert response.status_code == 202, response.text
        runaway.append(response.json()["job_id"])
    try:
        deadline = time.monotonic() + 60
        while not any(a.get(f"/jobs/{j}").json()["status"] == "RUNNING" for j in runaway):
            assert time.monotonic() < deadline, "none of A's queries started"
            time.sleep(0.2)

        submitted = time.monotonic()
        small = b.post("/jobs", {"digits": 2000}).json()["job_id"]
        done = b.wait(small, timeout=60)
        waited = time.monotonic() - submitted

        assert done["status"] == "SUCCEEDED" and waited < 10, (done["status"], waited)
        first = a.wait(runaway[0], timeout=60)
        assert first["status"] == "FAILED" and first["error"]["code"] == "query_timeout", first
        ran = _seconds(first["finished_at"]) - _seconds(first["started_at"])
        assert ran < 4 + 10, ran  # the interrupt, not the job's deadline (4 + 600 + 300 s)
    finally:
        for job_id in runaway:
            a.session.delete(f"{a.base}/jobs/{job_id}", timeout=30)
        for job_id in runaway:
            a.wait(job_id, timeout=60)


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
