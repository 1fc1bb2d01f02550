"""Per-record dispatch logic: load, admit, provision. Pure of Lambda and SQS event shapes."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Protocol

from shared import errors
from shared.attempts import failure_fields, status_after_failure
from shared.capacity import CapacityCounter
from shared.functions import TEMPLATE_FILE, Registry, artifact_key, job_deadline, job_stack_parameters
from shared.logs import bind_job, get_logger
from shared.models import JobMessage, JobRecord, isoformat, utcnow
from shared.queue import JobQueue
from shared.settings import DispatcherSettings, RetrySettings
from shared.stacks import StackLauncher, stack_name_for
from shared.status import JobStatus
from shared.store import JobStore

log = get_logger(__name__)


class RetryServices(Protocol):
    """What a retry decision touches (the dispatcher's and the reaper's services both fit)."""

    @property
    def settings(self) -> RetrySettings: ...
    @property
    def store(self) -> JobStore: ...
    @property
    def queue(self) -> JobQueue: ...
    @property
    def capacity(self) -> CapacityCounter: ...
    @property
    def stacks(self) -> StackLauncher: ...


@dataclass(frozen=True)
class DispatchServices:
    settings: DispatcherSettings
    store: JobStore
    queue: JobQueue
    capacity: CapacityCounter
    stacks: StackLauncher
    functions: Registry


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
    # The record says its message is alive, so the reaper does not send a second one (and a second chain).
    with contextlib.suppress(errors.StaleStatusError):
        services.store.update_fields(message.job_id, JobStatus.QUEUED, message_at=isoformat(utcnow()))
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
    """The job's stack from its function's template, at the version the job was submitted with."""
    settings = services.settings
    name = stack_name_for(job.job_id, job.attempts)
    try:
        function = services.functions.get(job.function)
        version = job.version or function.version
        params = function.parse_params(job.params)
        parameters = job_stack_parameters(
            function,
            params,
            job_id=job.job_id,
            version=version,
            deadline_seconds=job.deadline_seconds or job_deadline(function, params),
            artifacts_bucket=settings.artifacts_bucket,
            fixed=settings.stack_parameters,
        )
    except Exception:
        # Not the infrastructure's fault: the function was disabled since, or its plug-in is broken.
        log.exception("job_not_provisionable", function=job.function)
        _fail(services, job, code="function_unavailable", message=FUNCTION_UNAVAILABLE)
        return "failed"
    template_url = settings.template_url(artifact_key(function.name, version, TEMPLATE_FILE))
    try:
        stack_id = services.stacks.create(
            name,
            template_url,
            parameters,
            {"JobId": job.job_id, "Owner": job.owner, "CostCenter": job.cost_center or ""},
        )
    except Exception as exc:
        log.exception("stack_create_failed", stack_name=name)
        retry_or_fail(services, job, code="stack_create_failed", reason=f"creating the stack failed: {exc}")
        return "retried"
    # A lost write: the worker already moved the job on, or it was cancelled; the name identifies the stack.
    with contextlib.suppress(errors.StaleStatusError):
        services.store.update_fields(job.job_id, JobStatus.PROVISIONING, stack_name=name, stack_id=stack_id)
    log.info("job_dispatched", stack_name=name, attempts=job.attempts)
    return "dispatched"


FUNCTION_UNAVAILABLE = "this job's function is no longer offered; submit it again or to another function"


def _fail(services: DispatchServices, job: JobRecord, *, code: str, message: str) -> None:
    try:
        services.store.transition(
            job.job_id, job.status, JobStatus.FAILED, error={"code": code, "message": message}
        )
    except errors.StaleStatusError:
        log.info("job_fail_lost", status=services.store.get(job.job_id).status.value)
    finally:
        services.capacity.release(job.job_id)


def retry_or_fail(services: RetryServices, job: JobRecord, *, code: str, reason: str) -> JobStatus:
    """An infrastructure failure: clean up, then queue the job again while attempts remain, else FAILED.

    A failure of the request itself (the worker's) is never retried; this is only for stacks and instances.
    """
    if job.stack_name or job.status is JobStatus.PROVISIONING:
        services.stacks.delete(job.stack_name or stack_name_for(job.job_id, job.attempts))
    # The customer reads the code's plain message; the reason (stack states, exception text) is logged only.
    failure = failure_fields(job.attempts, code)
    target = status_after_failure(job.attempts, services.settings.max_attempts)
    try:
        services.store.transition(
            job.job_id, job.status, target, **failure, stack_name=None, stack_id=None, instance_id=None
        )
    except errors.StaleStatusError:
        log.info("job_retry_lost", status=services.store.get(job.job_id).status.value)
        return services.store.get(job.job_id).status
    finally:
        services.capacity.release(job.job_id)
    if target is JobStatus.QUEUED:
        delay = services.settings.retry_base_seconds * 2 ** max(0, job.attempts - 1)
        services.queue.send(JobMessage(job_id=job.job_id, function=job.function), delay_seconds=delay)
        log.warning("job_retrying", code=code, attempts=job.attempts, delay_seconds=delay, reason=reason)
    else:
        log.error("job_failed_for_good", code=code, attempts=job.attempts, reason=reason)
    return target
