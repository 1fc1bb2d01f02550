"""Admission (docs/scheduling.md): every job waits in fair order, and a free slot goes to the lowest tag.

A job is parked at submit (its tag taken atomically from its tenant's item, shared/tenants.py); a job
sent round again is parked by its message. Either way its message is then done: waiting costs no more
messages. Whoever handles a message admits waiting jobs into the free slots; each admission takes the slot
and moves QUEUED -> PROVISIONING in one transaction.
Slots that the workers free are filled by an admission tick: one delayed message at a time, for the whole
service, sent only while jobs wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pijobs.shared import errors
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.fairshare import (
    HALF_THE_SLOTS,
    WaitingJob,
    admission_order,
    default_owner_cap,
    owner_limit,
)
from pijobs.shared.lifecycle import Lifecycle
from pijobs.shared.logs import get_logger
from pijobs.shared.models import JobMessage, JobRecord, isoformat, utcnow
from pijobs.shared.queue import JobQueue
from pijobs.shared.status import JobStatus
from pijobs.shared.store import JobStore
from pijobs.shared.tenants import TenantStore

log = get_logger(__name__)

ADMISSIONS_PER_CALL = 20  # stacks one dispatcher call may create; a tick follows for the rest


class AdmissionSettings(Protocol):
    @property
    def admission_tick_seconds(self) -> int: ...


@dataclass(frozen=True)
class Admission:
    """What admitting needs. Only the dispatcher admits (``provision`` creates an admitted job's stack);
    the reaper, which cannot create stacks, only keeps the tick going."""

    store: JobStore
    capacity: CapacityCounter
    queue: JobQueue
    tick_seconds: int
    tenants: TenantStore | None = None
    owner_cap_setting: int = HALF_THE_SLOTS  # MaxActiveStacksPerOwner (fairshare.default_owner_cap)
    provision: Callable[[JobRecord], object] | None = None
    lifecycle: Lifecycle | None = None  # the dispatcher's: admitting is a status change


def park(admission: Admission, job: JobRecord) -> WaitingJob | None:
    """Give a QUEUED job its tag in the waiting index; the job as it now waits (also when it was parked
    already, at submit or by a duplicate message), or None if it is no longer QUEUED."""
    assert admission.tenants is not None
    if job.status is JobStatus.QUEUED and job.wait_tag is not None:
        return WaitingJob(job.wait_tag, job.job_id, job.owner)
    tenant = admission.tenants.get(job.owner)
    tag = admission.tenants.take_tag(tenant, clock=admission.capacity.ensure().get("clock", 0.0))
    if admission.store.park(job.job_id, tag):
        log.info("job_parked", tag=round(tag, 6))
        return WaitingJob(tag, job.job_id, job.owner)
    current = admission.store.get(job.job_id)
    if current.status is JobStatus.QUEUED and current.wait_tag is not None:
        return WaitingJob(current.wait_tag, job.job_id, job.owner)  # a duplicate message parked it first
    return None


def admit_waiting(
    admission: Admission, *, known: tuple[WaitingJob, ...] = (), budget: int = ADMISSIONS_PER_CALL
) -> list[str]:
    """Fill the free slots with waiting jobs in fair order; returns the admitted job ids.

    ``known`` are jobs the caller just parked: the index is eventually consistent and may not show them yet.
    """
    assert admission.provision is not None
    admitted: list[str] = []
    while len(admitted) < budget:
        state = admission.capacity.ensure()
        free = min(state["limit"] - state["active"], budget - len(admitted))
        if free <= 0:
            break
        active: dict[str, int] = state["owners"]
        default_cap = default_owner_cap(admission.owner_cap_setting, state["limit"])
        caps = _caps(admission, active, default_cap)
        blocked = frozenset(owner for owner, n in active.items() if n >= (caps.get(owner) or n + 1))
        indexed = admission.store.waiting_jobs(per_shard=free, skip_owners=blocked)
        seen = {job.job_id for job in indexed} | set(admitted)
        waiting = indexed + [job for job in known if job.job_id not in seen and job.owner not in blocked]
        if not waiting:
            break
        caps |= _caps(admission, {job.owner: 0 for job in waiting if job.owner not in caps}, default_cap)
        picks = admission_order(waiting, free=free, active=active, limit_of=caps.get)
        progressed = False
        for pick in picks:
            outcome = _admit(admission, pick, cap=caps.get(pick.owner), clock=max(state["clock"], pick.tag))
            if outcome == "full":
                break
            if outcome == "admitted":
                admitted.append(pick.job_id)
                progressed = True
        if not progressed:
            break
    return admitted


def _caps(admission: Admission, owners: dict[str, int], default: int | None) -> dict[str, int | None]:
    assert admission.tenants is not None
    policies = admission.tenants.policies(owners)
    return {owner: owner_limit(policy, default) for owner, policy in policies.items()}


def _admit(admission: Admission, pick: WaitingJob, *, cap: int | None, clock: float) -> str:
    """One job: slot and QUEUED -> PROVISIONING in one transaction, then its stack."""
    job = admission.store.get(pick.job_id)
    if job.status is not JobStatus.QUEUED:
        return "gone"
    slot = admission.capacity.acquire_item(job.job_id, job.owner, owner_cap=cap, clock=clock)
    assert admission.lifecycle is not None
    try:
        job = admission.lifecycle.transition(
            job,
            JobStatus.PROVISIONING,
            linked=(slot,),
            attempts=job.attempts + 1,
            dispatched_at=isoformat(utcnow()),
        )
    except errors.StaleStatusError:
        return "gone"  # cancelled, or admitted by a concurrent call
    except errors.LinkedWriteRefusedError:
        return "full"  # the slot went to a concurrent call (or the tenant reached its cap meanwhile)
    log.info("job_admitted", job_id=job.job_id, owner=job.owner, tag=round(pick.tag, 6))
    assert admission.provision is not None
    admission.provision(job)
    return "admitted"


# ---- the tick --------------------------------------------------------------------------------------------
def keep_ticking(admission: Admission, *, now: float | None = None, someone_waits: bool = False) -> bool:
    """While anyone waits, make sure one tick is on its way (True if this call sent it).

    ``someone_waits``: the caller knows a job waits (one it just parked), whatever the index shows yet.
    """
    if not someone_waits and not admission.store.is_anyone_waiting():
        return False
    now = time.time() if now is None else now
    due = now + admission.tick_seconds
    stale = now - max(60, 10 * admission.tick_seconds)  # a tick this overdue was lost: start another
    if admission.capacity.claim_tick(due, stale_before=stale):
        _send_tick(admission, due)
        return True
    return False


def on_tick(admission: Admission, message: JobMessage) -> list[str]:
    """A tick: admit into the slots freed since, then the next tick if jobs still wait, else end the chain."""
    assert message.tick is not None
    admitted = admit_waiting(admission)
    if admission.store.is_anyone_waiting():
        due = time.time() + admission.tick_seconds
        if admission.capacity.claim_tick(due, previous=message.tick):
            _send_tick(admission, due)
    elif admission.capacity.end_tick(message.tick):
        keep_ticking(admission)  # a job parked between the look and the end: start a new chain
    return admitted


def _send_tick(admission: Admission, due: float) -> None:
    admission.queue.send(JobMessage(tick=due), delay_seconds=admission.tick_seconds)
