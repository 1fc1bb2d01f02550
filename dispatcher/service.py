"""Per-record dispatch logic: load, admit, provision. Pure of Lambda and SQS event shapes."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

from shared import errors
from shared.capacity import CapacityCounter
from shared.functions import get_function
from shared.logs import bind_job, get_logger
from shared.models import JobMessage, JobRecord, isoformat, utcnow
from shared.queue import JobQueue
from shared.settings import DispatcherSettings
from shared.stacks import StackLauncher, stack_name_for
from shared.status import JobStatus
from shared.store import JobStore

log = get_logger(__name__)


@dataclass(frozen=True)
class DispatchServices:
    settings: DispatcherSettings
    store: JobStore
    queue: JobQueue
    capacity: CapacityCounter
    stacks: StackLauncher


def dispatch(services: DispatchServices, message: JobMessage) -> str:
    """Provision one job's stack. Returns what happened (for logs and tests).

    Raising means "retry this message later"; every expected outcome returns.
    """
    bind_job(message.job_id)
    job = services.store.get(message.job_id)
    if job.status.is_terminal:
        log.info("job_skipped", status=job.status.value)
        return "skipped"
    if job.status is JobStatus.RUNNING or (job.status is JobStatus.PROVISIONING and job.stack_id):
        log.info("job_already_dispatched", status=job.status.value)
        return "duplicate"
    try:
        services.capacity.acquire(job.job_id)
    except errors.CapacityFullError:
        return defer(services, message)
    if job.status is JobStatus.QUEUED:
        job = _start_provisioning(services, job)
        if job.status is not JobStatus.PROVISIONING:
            return "skipped"
        if job.stack_id:
            return "duplicate"
    return _create_stack(services, job)


def defer(services: DispatchServices, message: JobMessage) -> str:
    """Capacity is full: send the job again later, so waiting never counts towards the DLQ."""
    settings = services.settings
    delay = min(settings.defer_max_seconds, settings.defer_base_seconds * 2 ** min(message.deferrals, 8))
    delay = int(delay * random.uniform(0.8, 1.2))
    services.queue.send(message.model_copy(update={"deferrals": message.deferrals + 1}), delay_seconds=delay)
    log.info("job_deferred", delay_seconds=delay, deferrals=message.deferrals + 1)
    return "deferred"


def _start_provisioning(services: DispatchServices, job: JobRecord) -> JobRecord:
    try:
        return services.store.transition(
            job.job_id,
            JobStatus.QUEUED,
            JobStatus.PROVISIONING,
            attempts=job.attempts + 1,
            dispatched_at=isoformat(utcnow()),
        )
    except errors.StaleStatusError:
        current = services.store.get(job.job_id)  # another delivery won, or the job was cancelled
        if current.status.is_terminal:
            services.capacity.release(job.job_id)
        log.info("job_transition_lost", status=current.status.value)
        return current


def _create_stack(services: DispatchServices, job: JobRecord) -> str:
    function = get_function(job.function)
    name = stack_name_for(job.job_id)
    try:
        stack_id = services.stacks.create(
            job.job_id,
            function.stack_parameters(job.job_id, job.params),
            {"JobId": job.job_id, "Owner": job.owner, "CostCenter": job.cost_center or ""},
        )
    except Exception as exc:
        log.exception("stack_create_failed", stack_name=name)
        _fail_provisioning(services, job, str(exc))
        return "failed"
    # A lost write: the worker already moved the job on, or it was cancelled; the name identifies the stack.
    with contextlib.suppress(errors.StaleStatusError):
        services.store.update_fields(job.job_id, JobStatus.PROVISIONING, stack_name=name, stack_id=stack_id)
    log.info("job_dispatched", stack_name=name, attempts=job.attempts)
    return "dispatched"


def _fail_provisioning(services: DispatchServices, job: JobRecord, reason: str) -> None:
    with contextlib.suppress(errors.StaleStatusError):
        services.store.transition(
            job.job_id,
            JobStatus.PROVISIONING,
            JobStatus.FAILED,
            error={"code": "provisioning_failed", "message": f"the job's infrastructure failed: {reason}"},
        )
    services.capacity.release(job.job_id)
    services.stacks.delete(stack_name_for(job.job_id))
