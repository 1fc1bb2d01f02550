"""Admission under moto, the dispatcher's own services (docs/scheduling.md): the tick kept alive (while jobs
wait one tick is on its way; one overdue by more than a minute counts as lost and is replaced), duplicate
messages, and tenants without a cap of their own."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest

import pijobs.dispatcher.handler
from pijobs.dispatcher.admission import admit_waiting, keep_ticking, on_tick, park
from pijobs.dispatcher.service import retry_or_fail
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.fairshare import INDEX_SHARDS, shard_of
from pijobs.shared.models import JobMessage
from pijobs.shared.store import JobStore
from pijobs.shared.tenants import TenantStore
from tests.integration.conftest import Cloud


def test_a_pending_tick_is_replaced_only_once_it_is_overdue_by_more_than_a_minute(cloud: Cloud) -> None:
    cloud.capacity(limit=1).set_limit(1)
    assert keep_ticking(pijobs.dispatcher.handler.services().admission) is False  # nobody waits: no tick
    assert cloud.capacity().state()["tick_at"] is None  # type: ignore[index]
    cloud.submit(), cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []  # the second job waits: a tick is on its way
    due = cloud.capacity().state()["tick_at"]  # type: ignore[index]
    admission = pijobs.dispatcher.handler.services().admission

    assert keep_ticking(admission, now=due + 59.5) is False  # late, not lost: no second tick
    assert cloud.capacity().state()["tick_at"] == due  # type: ignore[index]
    assert keep_ticking(admission, now=due + 60.5) is True  # lost: this call sends the next one
    assert cloud.capacity().state()["tick_at"] == due + 61.5  # type: ignore[index]
    sent = [json.loads(message["body"]).get("tick") for message in cloud.receive(wait_seconds=2)]
    assert due + 61.5 in sent


def test_a_parked_job_s_message_delivered_again_takes_no_second_place(cloud: Cloud) -> None:
    """SQS delivers a message at least once: a job parked already keeps its tag, and its tenant's next job
    is not pushed back by a place the duplicate took."""
    cloud.capacity(limit=1).set_limit(1)
    cloud.submit()
    waiting = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    parked = cloud.job(waiting)
    tenants = TenantStore(cloud.ddb, cloud.table)
    last_tag = tenants.get(parked.owner).last_tag
    assert parked.wait_tag is not None

    again = park(pijobs.dispatcher.handler.services().admission, parked)

    assert again is not None and again.tag == parked.wait_tag
    assert tenants.get(parked.owner).last_tag == last_tag
    assert cloud.job(waiting).wait_tag == parked.wait_tag


def test_the_tick_that_admits_the_last_waiting_job_ends_the_chain(cloud: Cloud) -> None:
    cloud.capacity(limit=1).set_limit(1)
    first, second = cloud.submit(), cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    assert cloud.run_worker(first) == 0

    ticks = [m for m in cloud.receive(wait_seconds=3) if json.loads(m["body"]).get("tick")]
    assert ticks and cloud.dispatch(ticks[-1:]) == []

    assert cloud.job(second).status.value == "PROVISIONING"
    assert cloud.capacity().state()["tick_at"] is None  # type: ignore[index]
    assert not [m for m in cloud.receive(wait_seconds=2) if json.loads(m["body"]).get("tick")]


@pytest.mark.parametrize("cloud", [{"PIJOBS_MAX_ACTIVE_STACKS_PER_OWNER": "0"}], indirect=True)
def test_without_a_per_tenant_cap_a_tenant_with_a_live_stack_gets_the_next_free_slot(cloud: Cloud) -> None:
    first = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    assert cloud.job(first).status.value == "PROVISIONING"

    second = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []

    assert cloud.job(second).status.value == "PROVISIONING"


def test_a_job_cancelled_before_its_message_is_handled_is_not_parked(cloud: Cloud) -> None:
    job_id = cloud.submit()
    as_read = cloud.job(job_id).model_copy(update={"wait_tag": None})  # read before it was parked, say
    assert cloud.api("DELETE", f"/jobs/{job_id}")[0] == 202

    assert park(pijobs.dispatcher.handler.services().admission, as_read) is None
    assert cloud.job(job_id).status.value == "CANCELLED"


def _submit_as(cloud: Cloud, owner: str) -> str:
    status, body, _ = cloud.api("POST", "/jobs", {"digits": 30}, key_id=owner)
    assert status == 202, body
    return str(body["job_id"])


@pytest.mark.parametrize("cloud", [{"PIJOBS_MAX_ACTIVE_STACKS_PER_OWNER": "0"}], indirect=True)
def test_a_tenant_at_its_cap_whose_jobs_fill_the_first_read_does_not_hold_up_the_others(cloud: Cloud) -> None:
    """Each index partition's first page holds only A's jobs (the lowest tags), and A may run one: the call
    reads again without A and gives the other free slot to B, but never admits more than its budget."""
    cloud.capacity().set_limit(10)
    TenantStore(cloud.ddb, cloud.table).set_policy("key-a", max_active=1, weight=100.0)  # tags 0.01 apart
    a_jobs: list[str] = []
    while min(sum(shard_of(j) == shard for j in a_jobs) for shard in range(INDEX_SHARDS)) < 2:
        a_jobs.append(_submit_as(cloud, "key-a"))  # until two of A's fill each partition's first page
    b_jobs = [_submit_as(cloud, "key-b") for _ in range(3)]  # tags 1, 2, 3: after all of A's
    admission = pijobs.dispatcher.handler.services().admission

    admitted = admit_waiting(admission, budget=2)

    # A's first, then (A at its cap) one of B's, and no more. (Which of B's: each partition's read skips A's
    # jobs a bounded number of times, so B's lowest tag may sit behind more of A's than that.)
    assert len(admitted) == 2 and admitted[0] == a_jobs[0] and admitted[1] in b_jobs
    assert cloud.capacity().state()["owners"] == {"key-a": 1, "key-b": 1}  # type: ignore[index]


def test_a_job_cancelled_after_it_was_parked_is_not_admitted_and_the_call_ends(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher parks a job, then admits: a cancel in between leaves a pick that is gone. The call
    admits nothing and returns (it does not read the same picks again and again)."""
    reads = 0
    ensure = CapacityCounter.ensure

    def counted(self: CapacityCounter) -> Any:
        nonlocal reads
        reads += 1
        assert reads < 20, "admission reads the capacity item again and again: the call does not end"
        return ensure(self)

    job_id = cloud.submit()
    admission = pijobs.dispatcher.handler.services().admission
    waiting = park(admission, cloud.job(job_id))
    assert waiting is not None
    assert cloud.api("DELETE", f"/jobs/{job_id}")[0] == 202
    monkeypatch.setattr(CapacityCounter, "ensure", counted)

    assert admit_waiting(admission, known=(waiting,)) == []

    assert cloud.job(job_id).status.value == "CANCELLED"
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


@pytest.mark.parametrize("cloud", [{"PIJOBS_MAX_ACTIVE_STACKS_PER_OWNER": "0"}], indirect=True)
def test_one_dispatcher_call_creates_at_most_twenty_stacks_and_the_next_tick_the_rest(cloud: Cloud) -> None:
    cloud.capacity().set_limit(30)
    jobs = [cloud.submit() for _ in range(22)]  # parked at submit; their messages are not delivered
    provisioned: list[str] = []
    admission = dataclasses.replace(
        pijobs.dispatcher.handler.services().admission, provision=lambda job: provisioned.append(job.job_id)
    )

    assert len(on_tick(admission, JobMessage(tick=time.time()))) == 20
    assert len(provisioned) == 20 and set(provisioned) <= set(jobs)
    assert cloud.capacity().state()["active"] == 20  # type: ignore[index]
    rest = [job_id for job_id in jobs if job_id not in provisioned]
    assert on_tick(admission, JobMessage(tick=time.time())) == rest  # the next tick admits the other two


@pytest.mark.parametrize("cloud", [{"PIJOBS_MAX_ACTIVE_STACKS_PER_OWNER": "0"}], indirect=True)
def test_slots_taken_by_a_concurrent_call_first_leave_the_jobs_waiting_after_one_refused_write(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two calls read the same two free slots; the other's transactions land first: this call's first is
    refused, and it stops there (the slots are gone: one refused write, not one per job it picked). Its
    jobs keep their places; no error, so the message is not retried."""
    cloud.capacity(limit=2).set_limit(2)
    jobs = [cloud.submit(), cloud.submit()]
    tags = [cloud.job(job_id).wait_tag for job_id in jobs]
    acquire_item = CapacityCounter.acquire_item
    requests: list[str] = []

    def other_call_first(self: CapacityCounter, job_id: str, *args: Any, **kwargs: Any) -> Any:
        if not requests:
            monkeypatch.setattr(CapacityCounter, "acquire_item", acquire_item)
            self.acquire("other-call-s-job-1", owner="key-b")
            self.acquire("other-call-s-job-2", owner="key-b")
            monkeypatch.setattr(CapacityCounter, "acquire_item", other_call_first)
        requests.append(job_id)
        return acquire_item(self, job_id, *args, **kwargs)

    monkeypatch.setattr(CapacityCounter, "acquire_item", other_call_first)

    assert admit_waiting(pijobs.dispatcher.handler.services().admission) == []

    assert requests == jobs[:1]
    assert [(cloud.job(j).status.value, cloud.job(j).wait_tag) for j in jobs] == [("QUEUED", t) for t in tags]
    holders = {"other-call-s-job-1", "other-call-s-job-2"}
    assert cloud.capacity().state()["holders"] == holders  # type: ignore[index]


@pytest.mark.parametrize("cloud", [{"PIJOBS_ADMISSION_TICK_SECONDS": "10"}], indirect=True)
def test_with_a_tick_longer_than_six_seconds_a_pending_tick_is_lost_after_ten_ticks(cloud: Cloud) -> None:
    cloud.capacity(limit=1).set_limit(1)
    cloud.submit(), cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    due = cloud.capacity().state()["tick_at"]  # type: ignore[index]
    admission = pijobs.dispatcher.handler.services().admission

    assert keep_ticking(admission, now=due + 95) is False  # more than a minute, less than ten ticks
    assert keep_ticking(admission, now=due + 105) is True
    assert cloud.capacity().state()["tick_at"] == due + 115  # type: ignore[index]


def test_a_tick_that_leaves_jobs_waiting_sends_the_next_one_a_tick_later(cloud: Cloud) -> None:
    cloud.capacity(limit=1).set_limit(1)
    cloud.submit(), cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []  # the first runs, the second waits: a tick is on its way
    admission = pijobs.dispatcher.handler.services().admission
    pending = cloud.capacity().state()["tick_at"]  # type: ignore[index]
    before = time.time()

    assert on_tick(admission, JobMessage(tick=pending)) == []  # no slot freed meanwhile

    due = cloud.capacity().state()["tick_at"]  # type: ignore[index]
    assert before + admission.tick_seconds <= due <= time.time() + admission.tick_seconds
    sent = [json.loads(message["body"]).get("tick") for message in cloud.receive(wait_seconds=2)]
    assert due in sent


def test_when_two_deliveries_of_one_message_race_the_loser_answers_the_place_the_winner_took(
    cloud: Cloud,
) -> None:
    """SQS may hand one message to two dispatcher calls at once: both read the job before it was parked,
    one parks it, the other's parking is refused and it answers the job as it now waits."""
    cloud.capacity(limit=1).set_limit(1)
    cloud.submit()
    job_id = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    parked = cloud.job(job_id)
    as_read = parked.model_copy(update={"wait_tag": None})  # read before the other call parked it

    again = park(pijobs.dispatcher.handler.services().admission, as_read)

    assert again is not None and again.tag == parked.wait_tag and again.job_id == job_id
    assert cloud.job(job_id).wait_tag == parked.wait_tag


def test_a_stale_delivery_does_not_park_a_job_that_was_sent_round_again_meanwhile(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job sent round again waits, without a place, for its retry's message, which parks it. Two
    deliveries of that message race: while this call parks, the other has parked and admitted the job,
    whose stack then failed (sent round again once more). This call's parking is refused and it must not
    take the job as waiting: it has no place, and its next message parks it."""
    cloud.capacity(limit=2).set_limit(2)
    job_id = cloud.submit()
    services = pijobs.dispatcher.handler.services()
    admission = services.admission
    assert admit_waiting(admission) == [job_id]
    retry_or_fail(services, cloud.job(job_id), code="stack_create_failed", reason="a test's failure")
    as_read = cloud.job(job_id)  # the retry, as this call reads it: QUEUED, no place yet
    assert as_read.status.value == "QUEUED" and as_read.wait_tag is None
    store_park = JobStore.park

    def the_other_call_first(self: JobStore, *args: Any, **kwargs: Any) -> bool:
        monkeypatch.setattr(JobStore, "park", store_park)
        assert park(admission, cloud.job(job_id)) is not None and admit_waiting(admission) == [job_id]
        parked = store_park(self, *args, **kwargs)  # this call's write, after the other's admission
        retry_or_fail(services, cloud.job(job_id), code="stack_create_failed", reason="a test's failure")
        return parked

    monkeypatch.setattr(JobStore, "park", the_other_call_first)

    assert park(admission, as_read) is None

    job = cloud.job(job_id)
    assert job.status.value == "QUEUED" and job.wait_tag is None and job.attempts == 2
    assert cloud.capacity().state()["active"] == 0  # type: ignore[index]


def test_while_every_slot_is_taken_a_message_reads_no_waiting_job_and_writes_no_slot(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At capacity (the usual state under load), each message only parks its job and keeps the tick going:
    no query of the waiting index, no refused slot transaction, one read of the capacity item."""
    cloud.capacity(limit=1).set_limit(1)
    first = cloud.submit()
    assert cloud.dispatch(cloud.receive()) == []
    assert cloud.job(first).status.value == "PROVISIONING"
    second = cloud.submit()
    calls: list[str] = []
    for cls, name in (
        (JobStore, "waiting_jobs"),
        (CapacityCounter, "acquire_item"),
        (CapacityCounter, "ensure"),
    ):
        monkeypatch.setattr(cls, name, _counted(getattr(cls, name), name, calls))

    assert cloud.dispatch(cloud.receive()) == []

    assert cloud.job(second).status.value == "QUEUED" and cloud.job(second).wait_tag is not None
    assert [call for call in calls if call != "ensure"] == []
    assert cloud.capacity().state()["tick_at"] is not None  # type: ignore[index]


def _counted(method: Any, name: str, calls: list[str]) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        assert len(calls) < 20, f"{calls[:5]}...: the call does not end"
        return method(*args, **kwargs)

    return call
