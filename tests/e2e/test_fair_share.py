"""Fair share on the embedded stack over HTTP: a flood from one tenant does not hold up two small ones."""

from __future__ import annotations

import threading
import time

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
