"""Per-record dispatch logic: load, admit, provision. Pure of Lambda and SQS event shapes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

from pijobs.dispatcher.admission import Admission, admit_waiting, keep_ticking, on_tick, park
from pijobs.shared import errors
from pijobs.shared.attempts import failure_fields, status_after_failure
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.channel import mint_token
from pijobs.shared.compute import ComputeBackend, LaunchRequest
from pijobs.shared.functions import (
    WORKER_FILE,
    Registry,
    artifact_key,
    job_deadline,
    job_stack_parameters,
)
from pijobs.shared.job_errors import JobErrorCode
from pijobs.shared.lifecycle import Lifecycle
from pijobs.shared.logs import bind_job, get_logger
from pijobs.shared.models import JobMessage, JobRecord
from pijobs.shared.queue import JobQueue
from pijobs.shared.settings import DispatcherSettings, RetrySettings
from pijobs.shared.status import JobStatus
from pijobs.shared.store import JobStore
from pijobs.shared.tenants import TenantStore

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
    def lifecycle(self) -> Lifecycle: ...


@dataclass(frozen=True)
class DispatchServices:
    settings: DispatcherSettings
    store: JobStore
    queue: JobQueue
    capacity: CapacityCounter
    compute: ComputeBackend
    functions: Registry
    tenants: TenantStore
    s3: Any = None  # presigns the GET of each job's worker artifact

    @property
    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.store, self.capacity, self.compute)

    @property
    def admission(self) -> Admission:
        return Admission(
            store=self.store,
            capacity=self.capacity,
            queue=self.queue,
            tick_seconds=self.settings.admission_tick_seconds,
            tenants=self.tenants,
            owner_cap_setting=self.settings.max_active_stacks_per_owner,
            provision=lambda job: _provision(self, job),
            lifecycle=self.lifecycle,
        )


def dispatch(services: DispatchServices, message: JobMessage) -> str:
    """Handle one message: park its job in fair order, then admit waiting jobs into the free slots (the
    job itself, if its turn came). Returns what happened to the message's job (for logs and tests).

    Raising means "retry this message later"; every expected outcome returns.
    """
    admission = services.admission
    if message.job_id is None:
        admitted = on_tick(admission, message)
        return f"tick: {len(admitted)} admitted"
    bind_job(message.job_id)
    job = services.store.get(message.job_id)
    if job.status.is_terminal:
        log.info("job_skipped", status=job.status.value)
        return "skipped"
    if job.status is JobStatus.RUNNING or (job.status is JobStatus.PROVISIONING and job.stack_id):
        log.info("job_already_dispatched", status=job.status.value)
        return "duplicate"
    if job.status is JobStatus.PROVISIONING:
        return _create_stack(services, job)  # admitted, but its stack was not made (or is being made)
    waiting = park(admission, job)
    if waiting is None:
        log.info("job_skipped", status=services.store.get(job.job_id).status.value)
        return "skipped"  # cancelled meanwhile, or admitted by a concurrent call
    admitted = admit_waiting(admission, known=(waiting,))
    keep_ticking(admission, someone_waits=job.job_id not in admitted)
    bind_job(message.job_id)
    return "dispatched" if job.job_id in admitted else "waiting"


def _provision(services: DispatchServices, job: JobRecord) -> str:
    bind_job(job.job_id)
    return _create_stack(services, job)


def _create_stack(services: DispatchServices, job: JobRecord) -> str:
    """The job's stack from its function's template, at the version the job was submitted with, for this
    attempt: a new worker channel token (its hash on the record, the token only in the stack's NoEcho
    parameter) and a presigned GET of the worker artifact. The instance gets no credentials."""
    settings = services.settings
    token, grant = mint_token(job.attempts)
    try:
        function = services.functions.get(job.function)
        version = job.version or function.version
        params = function.parse_params(job.params)
        parameters = job_stack_parameters(
            function,
            params,
            job_id=job.job_id,
            deadline_seconds=job.deadline_seconds or job_deadline(function, params),
            artifact_url=_artifact_url(services, artifact_key(function.name, version, WORKER_FILE)),
            token=token,
            fixed=settings.stack_parameters,
        )
    except Exception:
        # Not the infrastructure's fault: the function was disabled since, or its plug-in is broken.
        log.exception("job_not_provisionable", function=job.function)
        _fail(services, job, code=JobErrorCode.FUNCTION_UNAVAILABLE.value, message=FUNCTION_UNAVAILABLE)
        return "failed"
    limits = services.functions.limits[function.name].model_dump(mode="json")
    # Before the stack: its worker's first call needs the grant. Not granted: the job was cancelled meanwhile,
    # or a concurrent dispatch of this attempt granted (and creates) it.
    if not services.store.grant_channel(job.job_id, job.attempts, channel=grant, limits=limits):
        log.info("job_already_granted", attempts=job.attempts)
        return "duplicate"
    request = LaunchRequest(
        job_id=job.job_id,
        attempt=job.attempts,
        owner=job.owner,
        cost_center=job.cost_center,
        function=function.name,
        version=version,
        parameters=parameters,
    )
    try:
        launched = services.compute.launch(request)
    except Exception as exc:
        log.exception("stack_create_failed", attempts=job.attempts)
        retry_or_fail(
            services,
            job,
            code=JobErrorCode.STACK_CREATE_FAILED.value,
            reason=f"creating the stack failed: {exc}",
        )
        return "retried"
    # A lost write: the worker already moved the job on, or it was cancelled; the name identifies the stack.
    with contextlib.suppress(errors.StaleStatusError):
        services.store.update_fields(
            job.job_id,
            JobStatus.PROVISIONING,
            stack_name=launched.handle,
            stack_id=launched.infrastructure_id,
        )
    log.info("job_dispatched", stack_name=launched.handle, attempts=job.attempts)
    return "dispatched"


FUNCTION_UNAVAILABLE = "this job's function is no longer offered; submit it again or to another function"


def _artifact_url(services: DispatchServices, key: str) -> str:
    """A presigned GET of the worker artifact at ``key`` (the instance has no credentials to read it)."""
    if services.s3 is None:
        raise errors.ServiceUnavailableError("the dispatcher has no client to presign the worker artifact")
    return str(
        services.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": services.settings.artifacts_bucket, "Key": key},
            ExpiresIn=services.settings.artifact_url_seconds,
        )
    )


def _fail(services: DispatchServices, job: JobRecord, *, code: str, message: str) -> None:
    try:
        services.lifecycle.transition(job, JobStatus.FAILED, error={"code": code, "message": message})
    except errors.StaleStatusError:
        log.info("job_fail_lost", status=services.store.get(job.job_id).status.value)


def retry_or_fail(services: RetryServices, job: JobRecord, *, code: str, reason: str) -> JobStatus:
    """An infrastructure failure: clean up, then queue the job again while attempts remain, else FAILED.

    A failure of the request itself (the worker's) is never retried; this is only for stacks and instances.
    """
    # The customer reads the code's plain message; the reason (stack states, exception text) is logged only.
    # The lifecycle deletes the attempt's stack and then releases its slot.
    failure = failure_fields(job.attempts, code)
    target = status_after_failure(job.attempts, services.settings.max_attempts)
    try:
        services.lifecycle.transition(
            job, target, **failure, stack_name=None, stack_id=None, instance_id=None
        )
    except errors.StaleStatusError:
        log.info("job_retry_lost", status=services.store.get(job.job_id).status.value)
        return services.store.get(job.job_id).status
    if target is JobStatus.QUEUED:
        delay = services.settings.retry_base_seconds * 2 ** max(0, job.attempts - 1)
        services.queue.send(JobMessage(job_id=job.job_id, function=job.function), delay_seconds=delay)
        log.warning("job_retrying", code=code, attempts=job.attempts, delay_seconds=delay, reason=reason)
    else:
        log.error("job_failed_for_good", code=code, attempts=job.attempts, reason=reason)
    return target
