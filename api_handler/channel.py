"""The worker channel's platform end: what a job's instance may do, authenticated by its attempt's token.

``POST /worker/jobs/{id}/{operation}`` with ``Authorization: Bearer <token>``, outside the customer's API
(no API key, not in the OpenAPI document or the usage plan). A token works for its own job and attempt
only, while that attempt is live (PROVISIONING or RUNNING): no or a malformed token is 401, a token that
is not the job's current one (another job's, an earlier attempt's, a forged one, or no such job) is 403, a
token whose attempt has ended (cancelled, timed out, finished, retried) is 410, a call out of order 409.
A refused call changes nothing and names nothing of any job. Every status change goes through the
lifecycle (shared/lifecycle.py), which also releases the slot and deletes the stack at the attempt's end.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from pijobs.api_handler.service import ApiServices
from pijobs.api_handler.web import validation_error
from pijobs.shared import errors
from pijobs.shared.attempts import failure_fields, status_after_failure
from pijobs.shared.aws import error_code
from pijobs.shared.channel import RETRY_CODES, FinishOutcome, Operation, token_matches
from pijobs.shared.digest import digest_chunks, read_chunks
from pijobs.shared.functions import FILENAME_PATTERN, METADATA_MAX_BYTES, result_key
from pijobs.shared.ids import is_id
from pijobs.shared.inputs import is_owned_key
from pijobs.shared.logs import bind_job, get_logger
from pijobs.shared.models import JobRecord, ResultInfo, isoformat, utcnow
from pijobs.shared.status import JobStatus
from pijobs.shared.store import park_fields
from pijobs.shared.uploads import checksum_header

log = get_logger(__name__)

BEARER = re.compile(r"Bearer ([^\s]{1,256})")


# ---- the bodies -------------------------------------------------------------------------------------------
class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance_id: str | None = Field(default=None, pattern=r"^i-[0-9a-f]{8,17}$")


class HeartbeatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    progress: float = Field(ge=0.0, le=1.0)


class OutputRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(pattern=f"^{FILENAME_PATTERN.pattern}$")
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    content_type: str = Field(default="application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")


class FailureInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    message: str = Field(min_length=1, max_length=500)


class FinishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal["SUCCEEDED", "FAILED", "RETRY"]
    output: OutputRequest | None = None  # SUCCEEDED: the file ``output`` granted the POST for
    metadata: dict[str, Any] | None = None
    error: FailureInfo | None = None


# ---- one call ---------------------------------------------------------------------------------------------
def handle(
    services: ApiServices, job_id: str, operation: str, authorization: str | None, body: dict[str, Any]
) -> Any:
    """One channel call: authenticate, then the operation. Returns the answer's JSON."""
    handlers = {
        Operation.START.value: start,
        Operation.HEARTBEAT.value: heartbeat,
        Operation.OUTPUT.value: output,
        Operation.FINISH.value: finish,
    }
    if operation not in handlers:
        raise errors.RouteNotFoundError(f"no worker operation {operation[:32]!r}")
    job = authenticate(services, job_id, authorization)
    bind_job(job.job_id)
    return handlers[operation](services, job, body)


def authenticate(services: ApiServices, job_id: str, authorization: str | None) -> JobRecord:
    """The job whose current attempt ``authorization`` is the token of, while that attempt is live."""
    match = BEARER.fullmatch((authorization or "").strip())
    if match is None:
        raise errors.WorkerUnauthenticatedError("a worker token is required (Authorization: Bearer ...)")
    refused = errors.WorkerForbiddenError("this token is not good for this job")
    if not is_id(job_id):
        raise refused
    try:
        job = services.store.get(job_id)
    except errors.NoSuchJobError:
        raise refused from None
    if not token_matches(match.group(1), job.channel):
        log.warning("worker_token_refused", job_id=job_id)
        raise refused
    assert job.channel is not None
    if job.channel.attempt != job.attempts or not job.status.is_live:
        raise errors.AttemptEndedError(f"this attempt has ended; the job is {job.status.value}")
    return job


def _parse(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except PydanticValidationError as exc:
        raise validation_error(exc) from exc


def start(services: ApiServices, job: JobRecord, body: dict[str, Any]) -> dict[str, Any]:
    """PROVISIONING -> RUNNING (a repeated start of a RUNNING attempt answers the same); the job's function,
    parameters, limits and deadline, and a fresh presigned GET for each pinned input."""
    request: StartRequest = _parse(StartRequest, body)
    if job.status is JobStatus.PROVISIONING:
        now = isoformat(utcnow())
        job = services.lifecycle.transition(
            job,
            JobStatus.RUNNING,
            attempt=job.attempts,
            started_at=now,
            heartbeat_at=now,
            progress=0.0,
            instance_id=request.instance_id,
        )
    log.info("job_started", instance_id=job.instance_id, attempt=job.attempts)
    return {
        "job_id": job.job_id,
        "attempt": job.attempts,
        "function": job.function,
        "version": job.version,
        "params": job.params,
        "limits": job.limits or {},
        "deadline_seconds": job.deadline_seconds,
        "started_at": job.started_at,
        "instance_id": job.instance_id,
        "inputs": _input_grants(services, job),
    }


def _input_grants(services: ApiServices, job: JobRecord) -> dict[str, dict[str, Any]]:
    """A presigned GET for each pinned input, for exactly its object; answered, never stored or logged."""
    grants: dict[str, dict[str, Any]] = {}
    for name, pin in sorted((job.inputs or {}).items()):
        if not is_owned_key(pin.key, job.owner):  # pins are made under the owner's prefix at submit
            log.error("input_not_owned", input=name)
            continue
        url = services.presigner.generate_presigned_url(
            "get_object",
            Params={"Bucket": services.settings.results_bucket, "Key": pin.key},
            ExpiresIn=services.settings.input_url_seconds,
        )
        grants[name] = {"upload_id": pin.upload_id, "bytes": pin.bytes, "sha256": pin.sha256, "url": url}
    return grants


def heartbeat(services: ApiServices, job: JobRecord, body: dict[str, Any]) -> dict[str, Any]:
    request: HeartbeatRequest = _parse(HeartbeatRequest, body)
    _require_running(job, "heartbeat")
    services.store.update_fields(
        job.job_id,
        JobStatus.RUNNING,
        attempt=job.attempts,
        heartbeat_at=isoformat(utcnow()),
        progress=round(request.progress, 4),
    )
    return {"status": JobStatus.RUNNING.value, "cancelled": False}


def output(services: ApiServices, job: JobRecord, body: dict[str, Any]) -> dict[str, Any]:
    """A presigned POST for exactly the declared file at the job's own result key (size and sha256 in its
    signed policy); ``finish`` declares it again and the stored object must be exactly it."""
    request: OutputRequest = _parse(OutputRequest, body)
    _require_running(job, "output")
    settings = services.settings
    if request.bytes > settings.max_result_bytes:
        raise errors.ValidationError(
            "the result is larger than one POST takes",
            details=[{"field": "bytes", "problem": f"must be at most {settings.max_result_bytes}"}],
        )
    checksum = {
        "x-amz-checksum-algorithm": "SHA256",
        "x-amz-checksum-sha256": checksum_header(request.sha256),
    }
    fields = {**checksum, "Content-Type": request.content_type}
    post = services.presigner.generate_presigned_post(
        Bucket=settings.results_bucket,
        Key=result_key(job.owner, job.job_id, request.filename),
        Fields=fields,
        Conditions=[
            ["content-length-range", request.bytes, request.bytes],
            *({name: value} for name, value in fields.items()),
        ],
        ExpiresIn=settings.result_post_seconds,
    )
    expires_at = utcnow() + timedelta(seconds=settings.result_post_seconds)
    log.info("result_post_granted", filename=request.filename, bytes=request.bytes)
    return {"url": post["url"], "fields": post["fields"], "expires_at": isoformat(expires_at)}


def finish(services: ApiServices, job: JobRecord, body: dict[str, Any]) -> dict[str, Any]:
    """The attempt's end: SUCCEEDED once the stored object is exactly the declared one, FAILED with the
    worker's code, or RETRY (QUEUED again while attempts remain). The lifecycle releases the slot and
    deletes the stack."""
    request: FinishRequest = _parse(FinishRequest, body)
    _require_running(job, "finish")
    outcome = FinishOutcome(request.outcome)
    if outcome is FinishOutcome.SUCCEEDED:
        if request.output is None:
            raise errors.ValidationError(
                "a success names its output", details=[{"field": "output", "problem": "required"}]
            )
        finished = _succeed(services, job, request.output, request.metadata or {})
    elif request.error is None:
        raise errors.ValidationError(
            "a failure names its error", details=[{"field": "error", "problem": "required"}]
        )
    elif outcome is FinishOutcome.FAILED:
        finished = services.lifecycle.transition(
            job, JobStatus.FAILED, attempt=job.attempts, error=request.error.model_dump()
        )
    else:
        finished = _give_back(services, job, request.error.code)
    log.info("job_finished_by_worker", outcome=outcome.value, status=finished.status.value)
    return {"status": finished.status.value}


def _require_running(job: JobRecord, what: str) -> None:
    if job.status is not JobStatus.RUNNING:
        raise errors.WorkerConflictError(
            f"{what} needs a started job; call start first",
            details=[{"field": "status", "problem": f"job is {job.status.value}"}],
        )


def _succeed(
    services: ApiServices, job: JobRecord, declared: OutputRequest, metadata: dict[str, Any]
) -> JobRecord:
    """SUCCEEDED with the result at the job's own key, once the stored object is exactly the declared file:
    what the record then says of it is what was checked."""
    if len(json.dumps(metadata, allow_nan=False)) > METADATA_MAX_BYTES:
        raise errors.ValidationError(
            "the result's metadata is too large",
            details=[{"field": "metadata", "problem": f"must be at most {METADATA_MAX_BYTES} bytes"}],
        )
    key = result_key(job.owner, job.job_id, declared.filename)
    _check_stored(services, key, declared)
    result = ResultInfo(
        bucket=services.settings.results_bucket,
        key=key,
        bytes=declared.bytes,
        sha256=declared.sha256,
        content_type=declared.content_type,
        metadata=metadata,
    )
    return services.lifecycle.transition(
        job, JobStatus.SUCCEEDED, attempt=job.attempts, result=result, progress=1.0
    )


def _check_stored(services: ApiServices, key: str, declared: OutputRequest) -> None:
    """The object at ``key`` is exactly the declared one: its size, and its sha256 (S3's stored checksum
    where it has one, else read back). One GET: its body is read only when S3 kept no checksum."""
    bucket = services.settings.results_bucket
    try:
        stored = services.s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            raise errors.ResultMismatchError("the declared result was not stored") from exc
        raise
    body = stored["Body"]
    try:
        if int(stored.get("ContentLength", -1)) != declared.bytes:
            raise errors.ResultMismatchError("the stored result's size is not the declared one")
        if stored.get("ChecksumSHA256"):
            matches = stored["ChecksumSHA256"] == checksum_header(declared.sha256)
        else:  # storage kept no checksum (the local stand-in): read the object back
            received = digest_chunks(read_chunks(body), limit=declared.bytes)
            matches = received.matches(declared.bytes, declared.sha256)
    finally:
        body.close()
    if not matches:
        raise errors.ResultMismatchError("the stored result's sha256 is not the declared one")


def _give_back(services: ApiServices, job: JobRecord, code: str) -> JobRecord:
    """An infrastructure failure on the instance: QUEUED again while attempts remain, else FAILED. A job
    queued again goes straight back to the waiting index at the front (the fair-share clock's present);
    the admission tick, which the reaper restarts if none is running, admits it (docs/scheduling.md)."""
    if code not in RETRY_CODES:
        raise errors.ValidationError(
            "not a code an attempt is given back with",
            details=[{"field": "error.code", "problem": f"must be one of {sorted(RETRY_CODES)}"}],
        )
    target = status_after_failure(job.attempts, services.settings.max_attempts)
    fields = failure_fields(job.attempts, code)
    if target is JobStatus.QUEUED:
        clock = (services.capacity.state() or {}).get("clock", 0.0)
        fields |= park_fields(job.job_id, clock)
    return services.lifecycle.transition(
        job, target, attempt=job.attempts, **fields, stack_name=None, stack_id=None, instance_id=None
    )
