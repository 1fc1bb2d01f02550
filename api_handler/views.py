"""What a customer sees of a job: no stacks, instances or methods."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.models import JobRecord, isoformat


def job_links(base_url: str, job_id: str) -> dict[str, str]:
    self_url = f"{base_url}/jobs/{job_id}"
    return {"self": self_url, "result": f"{self_url}/result"}


def job_view(
    job: JobRecord,
    *,
    base_url: str,
    result_url: str | None = None,
    result_expires_at: datetime | None = None,
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status.value,
        "function": job.function,
        "version": job.version,
        "params": job.params,
        "cost_center": job.cost_center,
        "name": job.name,
        "attempts": job.attempts,
        "progress": job.progress,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "dispatched_at": job.dispatched_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "heartbeat_at": job.heartbeat_at,
        "error": job.error.model_dump() if job.error else None,
        "history": [entry.model_dump() for entry in job.history],  # attempts the infrastructure failed
        "result": None,
        "links": job_links(base_url, job.job_id),
    }
    if job.result is not None:
        view["result"] = {
            "filename": job.result.filename,
            "bytes": job.result.bytes,
            "sha256": job.result.sha256,
            "content_type": job.result.content_type,
            "metadata": job.result.metadata,
            "expires_at": isoformat(result_expires_at) if result_expires_at else None,
            "url": result_url,  # None once expired
        }
    return view


def job_summary(job: JobRecord, *, base_url: str) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "status": job.status.value,
        "function": job.function,
        "params": job.params,
        "name": job.name,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "links": job_links(base_url, job.job_id),
    }
