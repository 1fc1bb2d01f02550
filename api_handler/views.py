"""What a customer sees of a job (no stacks, instances or methods) and of an upload (no bucket or key)."""

from __future__ import annotations

from datetime import datetime, timezone

from pijobs.api_handler.contract import JobSummary, JobView, Links, ResultView, UploadView
from pijobs.shared.inputs import UploadRecord
from pijobs.shared.models import JobRecord, isoformat


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
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        links=job_links(base_url, job.job_id),
    )


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
