"""An infrastructure failure costs a job one attempt: what the customer reads of it, and what comes next.

The dispatcher, the reaper and the worker decide the same way: QUEUED again while attempts remain, else
FAILED; the customer reads the code's plain message (never stack states, bucket names or exception text),
and the record's ``history`` keeps one entry per failed attempt.
"""

from __future__ import annotations

from typing import Any

from pijobs.shared.job_errors import JobErrorCode
from pijobs.shared.models import isoformat, utcnow
from pijobs.shared.status import JobStatus
from pijobs.shared.store import Append

INFRASTRUCTURE_MESSAGES = {
    JobErrorCode.STACK_CREATE_FAILED.value: "the job's infrastructure could not be created",
    JobErrorCode.STACK_FAILED.value: "the job's infrastructure failed",
    JobErrorCode.STACK_VANISHED.value: "the job's infrastructure disappeared",
    JobErrorCode.PROVISIONING_TIMEOUT.value: "the job's instance did not start in time",
    JobErrorCode.WORKER_LOST.value: "the job's instance stopped reporting progress",
    JobErrorCode.RESULT_UPLOAD_FAILED.value: "the job's result could not be stored",
    JobErrorCode.INPUT_UNAVAILABLE.value: "the job's input files could not be fetched",
    "default": "the job's infrastructure failed",
}


def status_after_failure(attempts: int, max_attempts: int) -> JobStatus:
    return JobStatus.QUEUED if attempts < max_attempts else JobStatus.FAILED


def failure_fields(attempt: int, code: str) -> dict[str, Any]:
    """The record's ``error`` and a new ``history`` entry, written in the same conditional update."""
    error = {"code": code, "message": INFRASTRUCTURE_MESSAGES.get(code, INFRASTRUCTURE_MESSAGES["default"])}
    entry = {"attempt": attempt, **error, "at": isoformat(utcnow())}
    return {"error": error, "history": Append([entry])}
