"""Admission under moto: one transaction per admission, fair order across tenants, caps, sparse indexes."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import pijobs.dispatcher.handler
import pijobs.dispatcher.reaper
from pijobs.shared import aws
from pijobs.shared.fairshare import shard_of
from pijobs.shared.models import job_key
from pijobs.shared.status import JobStatus
from pijobs.shared.store import WAIT_TAG
from pijobs.shared.tenants import TenantStore
from tests.integration.conftest import Cloud, run_racing


def _submit(cloud: Cloud, owner: str, n: int) -> list[str]:
    jobs = []
    for _ in range(n):
        status, body, _ = cloud.api("POST", "/jobs", {"digits": 30}, key_id=owner)
        assert status == 202, body
        jobs.append(str(body["job_id"]))
    return jobs


def _admitted(cloud: Cloud, jobs: list[str]) -> list[str]:
    return [j for j in jobs if cloud.job(j).status is not JobStatus.QUEUED]


def _finish_all_and_tick(cloud: Cloud, order: list[str]) -> None:
    """Run every live job's worker (freeing its slot), then deliver the tick that fills the slots."""
    for job_id in [j for j in order if cloud.job(j).status is JobStatus.PROVISIONING]:
        assert cloud.run_worker(job_id) == 0
    ticks = cloud.receive(wait_seconds=3)
    assert ticks, "jobs wait, so a tick must be on its way"
    assert cloud.dispatch(ticks) == []


NO_OWN_CAP = [{"PIJOBS_MAX_ACTIVE_STACKS_PER_OWNER": "0"}]


@pytest.mark.parametrize("cloud", NO_OWN_CAP, indirect=True)
def test_concurrent_dispatch_never_gives_a_slot_without_its_transition(cloud: Cloud) -> None:
    cloud.capacity().set_limit(3)
    jobs = _submit(cloud, "key-a", 8)
    records = cloud.receive()
    barrier = threading.Barrier(len(records))

    def deliver(record: dict[str, Any]) -> None:
        barrier.wait()
        pijobs.dispatcher.handler.lambda_handler({"Records": [record]}, None)

    threads = [threading.Thread(target=deliver, args=(record,)) for record in records]
    run_racing(threads)

    provisioning = {j for j in jobs if cloud.job(j).status is JobStatus.PROVISIONING}
    state = cloud.capacity().state()
    assert state is not None
    assert len(provisioning) == 3 and state["active"] == 3 and state["holders"] == provisioning
    assert len(cloud.live_stacks()) == 3
    waiting = {job.job_id for job in cloud.store.waiting_jobs(per_shard=10)}
    assert waiting == set(jobs) - provisioning  # every other job is parked, none lost, none twice


def test_a_late_tenant_is_served_before_the_flood_that_came_first(cloud: Cloud) -> None:
    cloud.capacity().set_limit(1)
    flood = _submit(cloud, "key-a", 6)
    assert cloud.dispatch(cloud.receive()) == []
    (late,) = _submit(cloud, "key-b", 1)
    assert cloud.dispatch(cloud.receive()) == []  # parks B's job (the tick may come with it)

    _finish_all_and_tick(cloud, flood)
    if cloud.job(late).status is JobStatus.QUEUED:  # B's tag ties with A's second job's: either goes first
        assert len(_admitted(cloud, flood)) == 2
        _finish_all_and_tick(cloud, flood)

    assert cloud.job(late).status is JobStatus.PROVISIONING  # B's one job, before A's other four
    assert len(_admitted(cloud, flood)) <= 2


@pytest.mark.parametrize("cloud", [{"PIJOBS_MAX_ACTIVE_STACKS_PER_OWNER": "1"}], indirect=True)
def test_a_tenant_at_its_cap_waits_while_others_use_the_free_slots(cloud: Cloud) -> None:
    cloud.capacity().set_limit(3)
    a_jobs = _submit(cloud, "key-a", 3)
    b_jobs = _submit(cloud, "key-b", 1)
    assert cloud.dispatch(cloud.receive()) == []

    assert len(_admitted(cloud, a_jobs)) == 1 and _admitted(cloud, b_jobs) == b_jobs
    state = cloud.capacity().state()
    assert state is not None and state["active"] == 2 and state["owners"] == {"key-a": 1, "key-b": 1}

    # An operator raises A's own cap: the next tick gives A the free slot.
    TenantStore(cloud.ddb, cloud.table).set_policy("key-a", max_active=2)
    ticks = cloud.receive(wait_seconds=3)
    assert cloud.dispatch(ticks) == []
    assert len(_admitted(cloud, a_jobs)) == 2


def test_a_capped_tenants_long_queue_ahead_hides_no_other_tenants_job(cloud: Cloud) -> None:
    """A capped tenant's jobs ahead in tag order are filtered out of the waiting index's reads after they
    were read: when they outnumbered what the reads looked at (ten reads of ``per_shard`` items), the other
    tenant's job behind them was not found, and a free slot stayed idle while it waited."""
    (late,) = _submit(cloud, "key-b", 1)
    flood: list[str] = []
    while sum(shard_of(job_id) == shard_of(late) for job_id in flood) < 30:
        flood += _submit(cloud, "key-a", 10)
    for tag, job_id in enumerate([*flood, late], start=1):  # the flood's tags first, then the late job's
        cloud.ddb.update_item(
            TableName=cloud.table,
            Key={"pk": {"S": job_key(job_id)}},
            UpdateExpression="SET #tag = :tag",
            ExpressionAttributeNames={"#tag": WAIT_TAG},
            ExpressionAttributeValues={":tag": {"N": str(tag)}},
        )

    found = cloud.store.waiting_jobs(per_shard=1, skip_owners=frozenset({"key-a"}))

    assert [job.job_id for job in found] == [late]


def test_a_heavier_weight_gets_the_larger_share(cloud: Cloud) -> None:
    TenantStore(cloud.ddb, cloud.table).set_policy("key-b", weight=3.0)
    cloud.capacity().set_limit(1)
    a_jobs, b_jobs = _submit(cloud, "key-a", 4), _submit(cloud, "key-b", 4)
    assert cloud.dispatch(cloud.receive()) == []
    admitted: list[str] = []
    for _ in range(4):
        admitted += [j for j in _admitted(cloud, a_jobs + b_jobs) if j not in admitted]
        _finish_all_and_tick(cloud, a_jobs + b_jobs)
    admitted += [j for j in _admitted(cloud, a_jobs + b_jobs) if j not in admitted]

    owners = ["B" if j in b_jobs else "A" for j in admitted[:5]]
    assert owners.count("B") >= 3, owners


def test_a_cancelled_waiting_job_leaves_both_indexes(cloud: Cloud) -> None:
    cloud.capacity().set_limit(1)
    first, second = _submit(cloud, "key-a", 2)
    assert cloud.dispatch(cloud.receive()) == []
    assert [job.job_id for job in cloud.store.waiting_jobs(per_shard=5)] == [second]

    assert cloud.api("DELETE", f"/jobs/{second}")[0] == 202

    assert cloud.store.waiting_jobs(per_shard=5) == []
    assert {job.job_id for job in cloud.store.live_jobs()} == {first}


def test_the_reaper_reads_live_jobs_through_the_index_and_never_scans(cloud: Cloud) -> None:
    pijobs.dispatcher.reaper.services.cache_clear()
    done, live = _submit(cloud, "key-a", 2)
    assert cloud.dispatch(cloud.receive()) == []
    assert cloud.run_worker(done) == 0
    scans: list[str] = []
    client = aws.client("dynamodb")
    client.meta.events.register("before-call.dynamodb.Scan", lambda **kwargs: scans.append("Scan"))

    result = pijobs.dispatcher.reaper.reap(pijobs.dispatcher.reaper.services())

    assert scans == []
    assert result["live"] == 1  # the finished job is not read at all
    assert {job.job_id for job in cloud.store.live_jobs()} == {live}


def test_a_job_is_admitted_and_ticked_for_even_before_the_waiting_index_shows_it(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On AWS a GSI lags its table by a moment: the job a call just parked must not wait for the index."""
    from pijobs.shared.store import JobStore

    monkeypatch.setattr(JobStore, "waiting_jobs", lambda self, **kwargs: [])
    monkeypatch.setattr(JobStore, "is_anyone_waiting", lambda self: False)
    cloud.capacity().set_limit(1)
    first, second = _submit(cloud, "key-a", 2)

    assert cloud.dispatch(cloud.receive()) == []

    assert cloud.job(first).status is JobStatus.PROVISIONING  # admitted though the index showed nobody
    assert cloud.job(second).status is JobStatus.QUEUED
    (tick,) = cloud.receive(wait_seconds=3)  # and a tick is on its way for the second
    assert '"tick"' in tick["body"]


def test_one_tenant_submitting_from_16_threads_gets_202_for_every_job_each_with_its_own_place(
    cloud: Cloud,
) -> None:
    """Parallel submissions of one key never contend: each takes the tenant's next tag atomically."""
    statuses: list[int] = []
    jobs: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def submit_ten() -> None:
        barrier.wait()
        for _ in range(10):
            status, body, _ = cloud.api("POST", "/jobs", {"digits": 30}, key_id="key-a")
            with lock:
                statuses.append(status)
                if status == 202:
                    jobs.append(str(body["job_id"]))

    threads = [threading.Thread(target=submit_ten) for _ in range(16)]
    run_racing(threads)

    assert statuses == [202] * 160
    tags = sorted(cloud.job(job_id).wait_tag or 0.0 for job_id in jobs)
    assert tags == [float(n) for n in range(1, 161)]  # nothing admitted yet: the clock is 0, the weight 1
    assert TenantStore(cloud.ddb, cloud.table).get("key-a").last_tag == 160.0


def test_an_idle_tenant_starts_at_the_clock_and_a_busy_one_after_its_last_tag(cloud: Cloud) -> None:
    tenants = TenantStore(cloud.ddb, cloud.table)
    tenants.set_policy("key-b", weight=2.0)

    first = tenants.take_tag(tenants.get("key-a"), clock=10.0)
    second = tenants.take_tag(tenants.get("key-a"), clock=10.0)
    stale = tenants.take_tag(tenants.get("key-a"), clock=5.0)  # a parking that read an older clock
    heavier = [tenants.take_tag(tenants.get("key-b"), clock=10.0) for _ in range(3)]
    # A tenant read before a concurrent parking moved its tag past the clock: no tag is taken twice.
    behind = tenants.get("key-c")
    raced = tenants.take_tag(tenants.get("key-c"), clock=20.0)
    late = tenants.take_tag(behind, clock=20.0)

    assert (first, second, stale) == (11.0, 12.0, 13.0)
    assert heavier == [10.5, 11.0, 11.5]
    assert (raced, late) == (21.0, 22.0)


def test_by_default_one_tenant_holds_at_most_half_the_slots(cloud: Cloud) -> None:
    """A tenant whose jobs never end cannot take every slot: another tenant's job is admitted at once."""
    cloud.capacity().set_limit(4)
    runaway = _submit(cloud, "key-a", 6)
    assert cloud.dispatch(cloud.receive()) == []
    (small,) = _submit(cloud, "key-b", 1)
    assert cloud.dispatch(cloud.receive()) == []

    assert len(_admitted(cloud, runaway)) == 2
    assert cloud.job(small).status is JobStatus.PROVISIONING
    state = cloud.capacity().state()
    assert state is not None and state["owners"] == {"key-a": 2, "key-b": 1}

    TenantStore(cloud.ddb, cloud.table).set_policy("key-a", max_active=3)  # an operator's override
    ticks = cloud.receive(wait_seconds=3)
    assert cloud.dispatch(ticks) == []
    assert len(_admitted(cloud, runaway)) == 3


@pytest.mark.parametrize("cloud", NO_OWN_CAP, indirect=True)
def test_the_fair_share_clock_moves_to_each_admitted_job_s_tag(cloud: Cloud) -> None:
    """Admission advances the clock, so a tenant that arrives later starts at it, not at 0 (where it would
    jump the queue ahead of every tag already handed out, and keep an idle tenant's debt for ever)."""
    cloud.capacity().set_limit(1)
    first, second = _submit(cloud, "key-a", 2)  # parked at submit: tags 1 and 2
    tags = {job_id: cloud.job(job_id).wait_tag for job_id in (first, second)}
    assert tags == {first: 1.0, second: 2.0}
    assert cloud.dispatch(cloud.receive()) == []
    assert _admitted(cloud, [first, second]) == [first]
    assert cloud.capacity().state()["clock"] == 1.0  # type: ignore[index]

    _finish_all_and_tick(cloud, [first])
    assert _admitted(cloud, [second]) == [second]
    assert cloud.capacity().state()["clock"] == 2.0  # type: ignore[index]
    (late,) = _submit(cloud, "key-b", 1)
    assert cloud.job(late).wait_tag == 3.0  # the clock's 2, plus one step
