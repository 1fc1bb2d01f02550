"""Admission under moto, the dispatcher's own services (docs/scheduling.md): the tick kept alive (while jobs
wait one tick is on its way; one overdue by more than a minute counts as lost and is replaced), duplicate
messages, and tenants without a cap of their own."""

from __future__ import annotations

import json

import pytest

import pijobs.dispatcher.handler
from pijobs.dispatcher.admission import keep_ticking, park
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
