"""The one lifecycle of a job: every status change, from the API, the dispatcher, the reaper and the worker
channel, goes through ``Lifecycle.transition``.

It owns, in one place:
- the conditional write: the transition table (shared/status.py) and the record still in the status (and, for
  the worker channel, the attempt) the caller read, or StaleStatusError;
- the state-change event, written in the same transaction as the change (an outbox item, ``event#...``, with
  a TTL; the webhooks read them from there): job id, owner, function, version, previous and new status,
  attempt, error code and time;
- the side effects: an attempt that ends (a live job that becomes QUEUED or terminal) has its infrastructure
  destroyed (the compute backend, shared/compute.py) and then its capacity slot released, in that order, so
  live stacks never outnumber MaxActiveStacks.

Callers say what happened (the target and the record's new fields), not which items to write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.compute import ComputeBackend
from pijobs.shared.logs import get_logger
from pijobs.shared.models import JobRecord, isoformat, utcnow
from pijobs.shared.status import JobStatus
from pijobs.shared.store import JobStore

log = get_logger(__name__)

EVENT_PREFIX = "event#"
EVENT_TTL_DAYS = 7
EVENT_FIELDS = (
    "job_id",
    "owner",
    "function",
    "version",
    "previous",
    "status",
    "attempt",
    "error_code",
    "at",
)


def state_change_event(job: JobRecord, target: JobStatus, fields: dict[str, Any], at: str) -> dict[str, Any]:
    """The event of ``job`` (as it was) moving to ``target`` with ``fields``."""
    error = fields.get("error")
    code = error.get("code") if isinstance(error, dict) else getattr(error, "code", None)
    return {
        "job_id": job.job_id,
        "owner": job.owner,
        "function": job.function,
        "version": job.version,
        "previous": job.status.value,
        "status": target.value,
        "attempt": int(fields.get("attempts", job.attempts)),
        "error_code": None if target is JobStatus.SUCCEEDED else code,
        "at": at,
    }


def event_key(event: dict[str, Any]) -> str:
    """One item per job, attempt and status reached (each is reached at most once per attempt)."""
    return f"{EVENT_PREFIX}{event['job_id']}#{event['attempt']}#{event['status']}"


@dataclass(frozen=True)
class Lifecycle:
    store: JobStore
    capacity: CapacityCounter
    compute: ComputeBackend

    def transition(
        self,
        job: JobRecord,
        target: JobStatus,
        *,
        linked: tuple[dict[str, Any], ...] = (),
        attempt: int | None = None,
        **fields: Any,
    ) -> JobRecord:
        """``job`` (as the caller read it) -> ``target`` with ``fields``; with ``attempt``, only while the
        record is still on that attempt. Raises StaleStatusError when the record moved on meanwhile
        (nothing is written then), LinkedWriteRefusedError when a ``linked`` item refused."""
        now = utcnow()
        event = state_change_event(job, target, fields, isoformat(now))
        item = {
            **{k: v for k, v in event.items() if v is not None},
            "pk": event_key(event),
            "expires_at": int((now + timedelta(days=EVENT_TTL_DAYS)).timestamp()),
        }
        put_event = {"Put": {"TableName": self.store.table_name, "Item": self.store.serialize(item)}}
        changed = self.store.transition(
            job.job_id, job.status, target, linked=(*linked, put_event), attempt=attempt, **fields
        )
        log.info("job_state_changed", **{k: v for k, v in event.items() if k != "job_id"})
        if job.status.is_live and not target.is_live:
            self.end_attempt(job)
        return changed

    def end_attempt(self, job: JobRecord) -> None:
        """Destroy the attempt's infrastructure, then give its slot back (each is idempotent; the reaper
        repeats what fails here: orphan infrastructure is destroyed and the capacity recounted)."""
        try:
            self.compute.destroy(job.job_id, job.attempts)
            log.info("infrastructure_destroy_requested", attempt=job.attempts)
        except Exception:
            log.exception("infrastructure_destroy_failed", attempt=job.attempts)
        try:
            self.capacity.release(job.job_id)
        except Exception:
            log.exception("slot_release_failed")
