"""The reaper (a scheduled Lambda; a periodic task locally): nothing stuck, nothing lost.

Every live job is checked against its deadline, its heartbeat and its stack. A dead worker, a failed or
vanished stack or a provisioning that never finished is an infrastructure failure (retried while attempts
remain); a job past its deadline is TIMED_OUT. Stacks that belong to no live job are deleted, and the capacity
counter is recounted from the records so a lost release can never shrink capacity for good.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, TextIO

from pijobs.dispatcher.admission import Admission, keep_ticking
from pijobs.dispatcher.service import retry_or_fail
from pijobs.shared import errors, metrics
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.compute import ComputeBackend, Health, Infrastructure
from pijobs.shared.job_errors import JobErrorCode
from pijobs.shared.lifecycle import Lifecycle
from pijobs.shared.logs import bind_job, clear_context, configure_logging, get_logger
from pijobs.shared.models import JobMessage, JobRecord, isoformat, utcnow
from pijobs.shared.queue import JobQueue
from pijobs.shared.settings import ReaperSettings
from pijobs.shared.status import JobStatus
from pijobs.shared.store import JobStore
from pijobs.shared.wiring import Adapters

log = get_logger(__name__)


@dataclass(frozen=True)
class ReaperServices:
    settings: ReaperSettings
    store: JobStore
    queue: JobQueue
    capacity: CapacityCounter
    compute: ComputeBackend

    @property
    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.store, self.capacity, self.compute)

    @property
    def admission(self) -> Admission:
        """The reaper admits nothing (it cannot create stacks); it keeps the admission tick alive."""
        return Admission(
            store=self.store,
            capacity=self.capacity,
            queue=self.queue,
            tick_seconds=self.settings.admission_tick_seconds,
        )


@lru_cache(maxsize=1)
def services() -> ReaperServices:
    made = Adapters(ReaperSettings.from_env())
    return ReaperServices(
        settings=made.settings,
        store=made.store,
        queue=made.queue,
        capacity=made.capacity,
        compute=made.compute(),
    )


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    configure_logging()
    clear_context()
    return reap(services())


def reap(
    services: ReaperServices, now: datetime | None = None, *, metrics_to: TextIO | None = None
) -> dict[str, Any]:
    """One sweep. Returns what it did, by job id, for logs and tests. Its metrics go to ``metrics_to``
    (default: stdout when Lambda runs it, else nowhere; shared/metrics.py)."""
    now = now or utcnow()
    running = {(i.job_id, i.attempt): i for i in services.compute.describe()}
    actions: dict[str, str] = {}
    live: list[JobRecord] = []
    for job in services.store.live_jobs():
        bind_job(job.job_id)
        try:
            # By job and attempt: a provisioning job's stack name may not be on the record yet.
            action = check_job(services, job, running.get((job.job_id, job.attempts)), now)
        except Exception:
            log.exception("reap_job_failed")
            action = "error"
        if action:
            actions[job.job_id] = action
        else:
            live.append(job)
    unhandled = [i for i in running.values() if i.job_id not in actions]
    actions.update(delete_orphan_stacks(services, unhandled, {j.job_id: j for j in live}))
    clear_context()  # what follows is about the sweep, not about the last job looked at
    recount(services, live)
    # Jobs wait but no tick is on its way (it was lost): nobody would admit them.
    if keep_ticking(services.admission, now=now.timestamp()):
        actions["admission_tick"] = "restarted"
    stream = metrics.destination(metrics_to)
    if stream is not None:
        publish_metrics(services, live, now, stream)
    # A sweep that changed nothing is routine: at debug level, so the log shows what happened, not the clock.
    (log.info if actions else log.debug)("reaper_swept", live_jobs=len(live), actions=len(actions))
    return {"actions": actions, "live": len(live)}


def check_job(
    services: ReaperServices, job: JobRecord, stack: Infrastructure | None, now: datetime
) -> str | None:
    """What to do with one live job: None when it is healthy."""
    settings = services.settings
    if job.status is JobStatus.QUEUED:
        if job.wait_tag is not None:
            return None  # parked: it waits in the index, no message needed
        last_sign = min(_age(stamp, now) for stamp in (job.updated_at, job.message_at) if stamp)
        if last_sign > settings.requeue_after_seconds:
            return _requeue(services, job, now)
        return None
    if _past_deadline(job, now):
        return _time_out(services, job)
    reason = _infrastructure_problem(settings, job, stack, now)
    if reason is None:
        return None
    status = retry_or_fail(services, job, code=reason[0], reason=reason[1])
    return "retried" if status is JobStatus.QUEUED else status.value.lower()


def _past_deadline(job: JobRecord, now: datetime) -> bool:
    if job.status is not JobStatus.RUNNING or not job.started_at or not job.deadline_seconds:
        return False
    return _age(job.started_at, now) > job.deadline_seconds


def _infrastructure_problem(
    settings: ReaperSettings, job: JobRecord, stack: Infrastructure | None, now: datetime
) -> tuple[str, str] | None:
    since_dispatch = _age(job.dispatched_at or job.updated_at, now)
    if stack is None and since_dispatch > settings.vanished_grace_seconds:
        return JobErrorCode.STACK_VANISHED.value, "the job's stack disappeared"
    if stack is not None and stack.health is Health.FAILED:
        return JobErrorCode.STACK_FAILED.value, stack.reason
    if job.status is JobStatus.PROVISIONING and since_dispatch > settings.provisioning_timeout_seconds:
        limit = settings.provisioning_timeout_seconds
        return JobErrorCode.PROVISIONING_TIMEOUT.value, f"the instance did not start within {limit} s"
    if job.status is JobStatus.RUNNING:
        silent = _age(job.heartbeat_at or job.started_at or job.updated_at, now)
        if silent > settings.heartbeat_timeout_seconds:
            return (
                JobErrorCode.WORKER_LOST.value,
                f"no heartbeat for {int(silent)} s: the worker or its instance died",
            )
    return None


def _time_out(services: ReaperServices, job: JobRecord) -> str:
    message = f"the job ran past its deadline of {job.deadline_seconds} s"
    error = {"code": JobErrorCode.DEADLINE_EXCEEDED.value, "message": message}
    try:  # the lifecycle deletes the stack, then releases the slot: live stacks never exceed the cap
        services.lifecycle.transition(job, JobStatus.TIMED_OUT, error=error)
    except errors.StaleStatusError:
        return "lost_race"
    log.warning("job_timed_out", deadline_seconds=job.deadline_seconds)
    return "timed_out"


def delete_orphan_stacks(
    services: ReaperServices, running: list[Infrastructure], live: dict[str, JobRecord]
) -> dict[str, str]:
    """Destroy job infrastructure whose job is finished, unknown, or on another attempt; give back the
    slots of unknown jobs."""
    actions: dict[str, str] = {}
    for infrastructure in running:
        job = live.get(infrastructure.job_id)
        if _belongs_to(job, infrastructure) or infrastructure.health is Health.ENDING:
            continue
        bind_job(infrastructure.job_id)
        services.compute.destroy(infrastructure.job_id, infrastructure.attempt)
        if job is None:
            services.capacity.release(infrastructure.job_id)
        log.info("orphan_stack_deleted", stack_name=infrastructure.handle)
        actions[infrastructure.handle] = "orphan_deleted"
    return actions


def _belongs_to(job: JobRecord | None, infrastructure: Infrastructure) -> bool:
    """True when ``infrastructure`` is the current attempt's of a provisioning or running job."""
    return job is not None and job.status.is_live and infrastructure.attempt == job.attempts


def recount(services: ReaperServices, live: list[JobRecord]) -> None:
    """Holders are the provisioning and running jobs (admission makes both in one transaction).

    The live index is eventually consistent, so where it and the capacity item disagree about a job, the
    job's own record (a consistent read) decides. The write is conditional on the count not having moved
    since it was read; if it moved, the next sweep recounts.
    """
    state = services.capacity.state()
    if state is None:
        return
    indexed = {j.job_id: j.owner for j in live if j.status.is_live}
    holders: dict[str, str] = {k: v for k, v in indexed.items() if k in state["owner_of"]}
    for job_id in sorted(set(indexed) ^ set(state["owner_of"])):  # one order, whatever the hash seed
        try:
            job = services.store.get(job_id)
        except errors.NoSuchJobError:
            continue
        if job.status.is_live:
            holders[job_id] = job.owner
    owners = Counter(holders.values())
    if (holders, len(holders), owners) == (state["owner_of"], state["active"], state["owners"]):
        return
    recounted = services.capacity.recount(holders, expected_active=state["active"])
    if recounted and state["active"] != len(holders):
        log.warning("capacity_recounted", was=state["active"], now=len(holders))


def publish_metrics(services: ReaperServices, live: list[JobRecord], now: datetime, stream: TextIO) -> None:
    """The sweep's gauges and the jobs finished since the last sweep, as EMF lines (shared/metrics.py).

    A failure here is logged, never raised: metrics must not stop the sweep that keeps jobs moving. The
    window is claimed before it is read, so each finished job is counted at most once: a sweep that fails
    after its claim leaves its window's jobs out (the log says metrics_failed).
    """
    stack = services.settings.primary_stack_name
    try:
        state = services.capacity.state()
        gauges = {
            metrics.ACTIVE_STACKS: state["active"] if state else 0,
            metrics.MAX_ACTIVE_STACKS: state["limit"] if state else services.settings.max_active_stacks,
            metrics.WAITING_JOBS: sum(1 for job in live if job.wait_tag is not None),
        }
        metrics.emit(metrics.emf_document(gauges, stack=stack, timestamp=now), stream)
        until = now - timedelta(seconds=services.settings.metrics_lag_seconds)
        first = until - timedelta(minutes=1)  # a first sweep counts a minute, not every job ever stored
        start = services.store.advance_metrics_watermark(isoformat(until), start=isoformat(first))
        if start is None:
            return
        finished = services.store.finished_between(start, isoformat(until))
        for document in metrics.finished_documents(finished, stack=stack, timestamp=now):
            metrics.emit(document, stream)
    except Exception:
        log.exception("metrics_failed")


def _requeue(services: ReaperServices, job: JobRecord, now: datetime) -> str | None:
    """No message for the job was seen for too long: send one, and note it, so the next sweep does not."""
    try:
        services.store.update_fields(job.job_id, JobStatus.QUEUED, message_at=isoformat(now))
    except errors.StaleStatusError:
        return None  # dispatched or cancelled meanwhile
    services.queue.send(JobMessage(job_id=job.job_id, function=job.function))
    log.warning("job_requeued", reason="queued too long without being dispatched")
    return "requeued"


def _age(stamp: str, now: datetime) -> float:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (now - moment) / timedelta(seconds=1)
