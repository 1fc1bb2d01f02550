"""Nothing stuck, nothing lost, on the embedded stack: killed workers, waiting for capacity, dead letters."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pijobs.local.stack import LocalStack
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.store import JobStore
from tests.e2e.test_http import Client

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def alice(local_stack: LocalStack) -> Client:
    return Client(local_stack, local_stack.api_key)


def _capacity(stack: LocalStack) -> CapacityCounter:
    return CapacityCounter(stack.client("dynamodb"), stack.outputs["TableName"], default_limit=2)


def _queue_depth(stack: LocalStack, url_key: str) -> int:
    attributes = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.outputs[url_key],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def _wait_for(predicate: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def _kill_group_like_a_crash(pid: int) -> None:
    """SIGKILL the worker's process group, sparing multiprocessing's resource tracker where /proc shows it.

    On an instance the machine's /dev/shm goes with it; here the tracker, once everyone else is gone,
    unlinks the pool's named semaphores, which would otherwise pile up in /dev/shm run after run.
    """
    group = os.getpgid(pid)
    proc = Path("/proc")
    if not proc.is_dir():
        os.killpg(group, signal.SIGKILL)
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            if b"resource_tracker" in (entry / "cmdline").read_bytes():
                continue
            os.kill(int(entry.name), signal.SIGKILL)
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue  # gone meanwhile


def _capacity_matches_live_jobs(stack: LocalStack) -> None:
    """The slots held are the live jobs' (the worker releases its slot just after its job's last status
    write, so a poll that saw SUCCEEDED may come before the release: wait for it, briefly)."""

    def matches() -> bool:
        live = JobStore(stack.client("dynamodb"), stack.outputs["TableName"]).live_jobs()
        state = _capacity(stack).state()
        assert state is not None
        return bool(state["active"] == len([j for j in live if j.status.is_live]))

    _wait_for(matches, 30, "the capacity item to count the live jobs")


def test_a_killed_worker_is_noticed_retried_and_succeeds(alice: Client, local_stack: LocalStack) -> None:
    job_id = alice.post("/jobs", {"digits": 4_000_000}).json()["job_id"]
    _wait_for(lambda: alice.get(f"/jobs/{job_id}").json()["status"] == "RUNNING", 60, "RUNNING")
    (pid,) = local_stack.runner.running().values()

    with capture_logs() as events:
        _kill_group_like_a_crash(pid)
        killed = time.monotonic()
        _wait_for(lambda: alice.get(f"/jobs/{job_id}").json()["attempts"] == 2, 60, "the retry")
        noticed = time.monotonic() - killed

    job = alice.wait(job_id, timeout=180)
    assert job["status"] == "SUCCEEDED" and job["attempts"] == 2
    print(f"reaper noticed the dead worker and re-queued the job in {noticed:.1f} s")
    # Retried because its heartbeat stopped (not, much later, because its deadline passed).
    assert [e["code"] for e in events if e["event"] == "job_retrying"] == ["worker_lost"], events


def test_waiting_for_capacity_never_dead_letters(alice: Client, local_stack: LocalStack) -> None:
    """MaxActiveStacks=1 and five jobs: they wait through many more than maxReceiveCount receive cycles."""
    capacity = _capacity(local_stack)
    capacity.set_limit(1)
    try:
        jobs = [alice.post("/jobs", {"digits": 2000 + n}).json()["job_id"] for n in range(5)]
        finished = [alice.wait(job_id, timeout=240) for job_id in jobs]
    finally:
        capacity.set_limit(2)
    assert [job["status"] for job in finished] == ["SUCCEEDED"] * 5
    assert _queue_depth(local_stack, "DeadLetterQueueUrl") == 0
    _capacity_matches_live_jobs(local_stack)


def test_a_malformed_message_reaches_the_dlq(alice: Client, local_stack: LocalStack) -> None:
    sqs = local_stack.client("sqs")
    sqs.send_message(QueueUrl=local_stack.outputs["QueueUrl"], MessageBody='{"job_id": "not-a-job"}')

    _wait_for(lambda: _queue_depth(local_stack, "DeadLetterQueueUrl") == 1, 60, "dead-lettering")

    job_id = alice.post("/jobs", {"digits": 100}).json()["job_id"]
    assert alice.wait(job_id)["status"] == "SUCCEEDED"  # the pipeline is not blocked by the bad message
    sqs.purge_queue(QueueUrl=local_stack.outputs["DeadLetterQueueUrl"])
    _capacity_matches_live_jobs(local_stack)


@pytest.fixture(autouse=True)
def _nothing_left_between_tests(local_stack: LocalStack) -> Iterator[None]:
    yield
    _wait_for(lambda: not local_stack.runner.running(), 60, "workers to finish")
