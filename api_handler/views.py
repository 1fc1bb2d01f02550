"""What a customer sees of a job (no stacks, instances or methods) and of an upload (no bucket or key)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pijobs.api_handler.contract import JobSummary, JobView, Links, ResultView, UploadView
from pijobs.shared.inputs import UploadRecord
from pijobs.shared.models import JobRecord, isoformat
from pijobs.shared.status import JobStatus


def job_links(base_url: str, job_id: str) -> Links:
    self_url = f"{base_url}/jobs/{job_id}"
    return Links(self=self_url, result=f"{self_url}/result")


def job_view(
    job: JobRecord,
    *,
    base_url: str,
    result_url: str | None = None,
    result_expires_at: datetime | None = None,
) -> JobView:
    result = None
    if job.result is not None:
        result = ResultView(
            filename=job.result.filename,
            bytes=job.result.bytes,
            sha256=job.result.sha256,
            content_type=job.result.content_type,
            metadata=job.result.metadata,
            expires_at=isoformat(result_expires_at) if result_expires_at else None,
            url=result_url,  # None once expired
        )
    return JobView(
        job_id=job.job_id,
        status=job.status,
        function=job.function,
        version=job.version,
        params=job.params,
        cost_center=job.cost_center,
        name=job.name,
        attempts=job.attempts,
        progress=job.progress,
        created_at=job.created_at,
        updated_at=job.updated_at,
        dispatched_at=job.dispatched_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        heartbeat_at=job.heartbeat_at,
        estimated_finish_at=estimated_finish(job),
        error=job.error,
        history=job.history,  # attempts the infrastructure failed
        result=result,
        links=job_links(base_url, job.job_id),
    )


def job_summary(job: JobRecord, *, base_url: str) -> JobSummary:
    return JobSummary(
        job_id=job.job_id,
        status=job.status,
        function=job.function,
        params=job.params,
        name=job.name,
        progress=job.progress,
        estimated_finish_at=estimated_finish(job),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        links=job_links(base_url, job.job_id),
    )


ETA_MIN_PROGRESS = 0.01  # below this, a rate says little


def estimated_finish(job: JobRecord) -> str | None:
    """When a running job should finish, at its own rate so far: it reached ``progress`` by ``heartbeat_at``
    (the time of that reading), having started at ``started_at``. None while there is no such reading."""
    if job.status != JobStatus.RUNNING or not job.started_at or not job.heartbeat_at:
        return None
    progress = job.progress or 0.0
    if not ETA_MIN_PROGRESS <= progress < 1.0:
        return None
    started, read = _parse(job.started_at), _parse(job.heartbeat_at)
    elapsed = (read - started).total_seconds()
    if elapsed <= 0:
        return None
    return isoformat(read + timedelta(seconds=elapsed * (1.0 - progress) / progress))


def upload_view(upload: UploadRecord) -> UploadView:
    expires_at = datetime.fromtimestamp(upload.expires_at or 0, tz=timezone.utc)
    return UploadView(
        upload_id=upload.upload_id,
        status=upload.status,
        filename=upload.filename,
        bytes=upload.bytes,
        sha256=upload.sha256,
        created_at=upload.created_at or "",
        expires_at=isoformat(expires_at),
        verified_at=upload.verified_at,
        reason=upload.reason,
    )


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
