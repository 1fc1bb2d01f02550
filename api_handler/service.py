"""What the API does, independent of HTTP: submit, read, list and cancel jobs; create, read, list and delete
uploads."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from pijobs.api_handler.contract import (
    CreateUploadRequest,
    ListJobsQuery,
    ListUploadsQuery,
    PerRunExecuteRequest,
)
from pijobs.api_handler.web import validation_error
from pijobs.shared import errors
from pijobs.shared.capacity import CapacityCounter
from pijobs.shared.compute import ComputeBackend
from pijobs.shared.functions import BusinessFunction, Registry, catalog_entry, job_deadline, result_key
from pijobs.shared.hooks import WebhookStore
from pijobs.shared.ids import is_id
from pijobs.shared.inputs import UPLOADS_PREFIX, UploadRecord, UploadStatus, pin_inputs, upload_key
from pijobs.shared.job_errors import JobErrorCode
from pijobs.shared.lifecycle import Lifecycle
from pijobs.shared.logs import get_logger
from pijobs.shared.models import JobMessage, JobRecord, JobRequest, isoformat, new_job_id, utcnow
from pijobs.shared.queue import JobQueue
from pijobs.shared.settings import ApiSettings
from pijobs.shared.status import JobStatus
from pijobs.shared.store import JobStore
from pijobs.shared.tenants import TenantStore
from pijobs.shared.uploads import UploadStore, checksum_header
from pijobs.shared.webhooks import new_secret

log = get_logger(__name__)

IDEMPOTENCY_KEY_MAX = 128
QueryModel = TypeVar("QueryModel", bound=BaseModel)


@dataclass(frozen=True)
class ApiServices:
    settings: ApiSettings
    store: JobStore
    queue: JobQueue
    s3: Any
    functions: Registry
    tenants: TenantStore
    capacity: CapacityCounter
    uploads: UploadStore
    presigner: Any  # an S3 client that signs with SigV4 (the presigned POSTs and the worker's input GETs)
    compute: ComputeBackend  # destroys an attempt's infrastructure when it ends here (a cancel, a finish)
    hooks: WebhookStore | None = None  # the key's webhooks and their deliveries (api_handler/webhooks.py)
    sqs: Any = None  # the webhooks queue's client (POST /webhooks/{id}/test)

    @property
    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.store, self.capacity, self.compute)


@dataclass(frozen=True)
class Submission:
    """A validated request: the function, its parsed parameters and the customer's labels."""

    function: BusinessFunction
    params: BaseModel
    cost_center: str | None = None
    name: str | None = None
    callback_url: str | None = None  # checked (api_handler/webhooks.py) before the submission is parsed


PI_SHORTHAND = "pi"  # ``{"digits": N}`` without "function" (and POST /PerRunExecute) mean this function


def parse_submission(registry: Registry, body: dict[str, Any]) -> Submission:
    """``{"function", "params", "cost_center"?, "name"?}``; a body without "function" is the pi shorthand."""
    if "function" not in body:
        labels: dict[str, Any] = {key: body[key] for key in ("cost_center", "name") if key in body}
        params = {key: value for key, value in body.items() if key not in labels}
        return _submission(registry, {"function": PI_SHORTHAND, "params": params, **labels}, prefix="")
    return _submission(registry, body, prefix="params.")


def _submission(registry: Registry, body: dict[str, Any], *, prefix: str) -> Submission:
    try:
        request = JobRequest.model_validate(body)
    except PydanticValidationError as exc:
        raise validation_error(exc) from exc
    if request.function not in registry:
        enabled = ", ".join(f.name for f in registry) or "none"
        raise errors.ValidationError(
            f"no function {request.function}; see GET /functions",
            details=[{"field": "function", "problem": f"must be one of: {enabled}"}],
        )
    function = registry.get(request.function)
    try:
        params = function.parse_params(request.params)
    except PydanticValidationError as exc:
        raise validation_error(exc, prefix=prefix) from exc
    limits = registry.limits[function.name]
    problems = function.bound_problems(params, limits) + function.check(params, limits)
    if problems:
        details = [{"field": f"{prefix}{name}", "problem": problem} for name, problem in problems]
        fields = ", ".join(sorted({d["field"] for d in details}))
        raise errors.ValidationError(f"invalid request: {fields}", details=details)
    return Submission(function, params, request.cost_center, request.name)


def parse_per_run_execute(registry: Registry, body: dict[str, Any]) -> Submission:
    """The original service's call: ``{"StackName", "CostCenter", "DigitsToCalculate"}``."""
    try:
        request = PerRunExecuteRequest.model_validate(body)
    except PydanticValidationError as exc:
        raise validation_error(exc) from exc
    mapped: dict[str, Any] = {"digits": request.DigitsToCalculate}
    if request.CostCenter:
        mapped["cost_center"] = request.CostCenter
    if request.StackName:
        mapped["name"] = request.StackName
    try:
        return parse_submission(registry, mapped)
    except errors.ValidationError as exc:
        renamed = {"digits": "DigitsToCalculate", "cost_center": "CostCenter", "name": "StackName"}
        for detail in exc.details:
            detail["field"] = renamed.get(detail["field"], detail["field"])
        raise


def parse_query(model: type[QueryModel], query: dict[str, str]) -> QueryModel:
    """A route's query string by its model: a 422 naming each bad parameter."""
    try:
        return model.model_validate(query)
    except PydanticValidationError as exc:
        raise validation_error(exc) from exc


def _create_parked(
    services: ApiServices, job: JobRecord, *, idempotency_key: str | None, fingerprint: str
) -> JobRecord:
    """The job is written already parked in fair order (docs/scheduling.md): its place among the waiting
    jobs is its submission's, however long its message then waits in the queue behind other tenants'.

    The place (the tenant's next tag) is taken first, atomically, so parallel submissions of one tenant
    never contend: each gets its own. A repeated idempotent submission leaves a gap in the tenant's tags.
    """
    tenant = services.tenants.get(job.owner)
    clock = float((services.capacity.state() or {}).get("clock", 0.0))
    tag = services.tenants.take_tag(tenant, clock=clock)
    return services.store.create(
        job.model_copy(update={"wait_tag": tag}), idempotency_key=idempotency_key, fingerprint=fingerprint
    )


def submit_job(
    services: ApiServices, owner: str, submission: Submission, idempotency_key: str | None = None
) -> tuple[JobRecord, bool]:
    """Record the job QUEUED and enqueue it. Returns the job and whether it was created by this call."""
    if idempotency_key is not None and not (0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX):
        raise errors.ValidationError(
            "Idempotency-Key must be 1 to 128 characters",
            details=[{"field": "Idempotency-Key", "problem": "must be 1 to 128 characters"}],
        )
    function = submission.function
    now = utcnow()
    # Each named input must be one of the caller's AVAILABLE, unexpired uploads, pinned (key, size, sha256)
    # in the job; anything else is a 422 naming params.inputs.<name>, not a job that could only fail.
    requested = function.requested_inputs(submission.params)
    found = services.uploads.get_many(requested.values()) if requested else {}
    inputs = pin_inputs(requested, found, owner=owner, now=now)
    params = submission.params.model_dump(mode="json")
    job = JobRecord(
        job_id=new_job_id(),
        owner=owner,
        function=function.name,
        version=function.version,
        params=params,
        cost_center=submission.cost_center,
        name=submission.name,
        status=JobStatus.QUEUED,
        created_at=isoformat(now),
        updated_at=isoformat(now),
        deadline_seconds=job_deadline(function, submission.params),
        inputs=inputs or None,
        expires_at=int((now + timedelta(days=services.settings.job_ttl_days)).timestamp()),
        callback_url=submission.callback_url,
        callback_secret=new_secret() if submission.callback_url else None,
    )
    request = {
        "function": function.name,
        "params": params,
        "cost_center": submission.cost_center,
        "name": submission.name,
    }
    if submission.callback_url:
        request["callback_url"] = submission.callback_url
    fingerprint = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    stored = _create_parked(services, job, idempotency_key=idempotency_key, fingerprint=fingerprint)
    if stored.job_id != job.job_id:
        log.info("job_submit_repeated", job_id=stored.job_id, owner=owner)
        return stored, False
    try:
        services.queue.send(JobMessage(job_id=job.job_id, function=function.name))
    except Exception as exc:
        log.error("job_enqueue_failed", job_id=job.job_id, error=str(exc))
        services.lifecycle.transition(
            job,
            JobStatus.FAILED,
            error={
                "code": JobErrorCode.ENQUEUE_FAILED.value,
                "message": "the job could not be queued; submit it again",
            },
        )
        if idempotency_key is not None:
            services.store.forget_idempotency_key(owner, idempotency_key)
        raise errors.ServiceUnavailableError("the job queue is unavailable; try again") from exc
    log.info("job_submitted", job_id=job.job_id, owner=owner, function=function.name, params=params)
    return job, True


def function_entry(services: ApiServices, name: str) -> dict[str, Any]:
    function = services.functions.get(name)
    return catalog_entry(function, services.functions.limits[function.name])


def get_job(services: ApiServices, owner: str, job_id: str) -> JobRecord:
    return services.store.get_for_owner(_checked_id(job_id), owner)


def list_jobs(services: ApiServices, owner: str, query: ListJobsQuery) -> tuple[list[JobRecord], str | None]:
    return services.store.list_for_owner(
        owner,
        limit=query.limit or services.settings.page_size,
        token=query.next,
        function=query.function,
        status=query.status,
        name_contains=query.name_contains,
    )


def cancel_job(services: ApiServices, owner: str, job_id: str) -> JobRecord:
    """QUEUED jobs are never provisioned; a live one's attempt ends at once: the lifecycle deletes its stack
    (the instance goes with it) and releases its slot, and its worker's token stops working."""
    job = services.store.get_for_owner(_checked_id(job_id), owner)
    for _ in range(3):
        if job.status.is_terminal:
            raise errors.JobNotCancellableError(
                f"job {job.job_id} has already finished ({job.status.value})",
                details=[{"field": "status", "problem": f"job is {job.status.value}"}],
            )
        try:
            cancelled = services.lifecycle.transition(
                job,
                JobStatus.CANCELLED,
                error={"code": JobErrorCode.CANCELLED.value, "message": "cancelled by the customer"},
            )
        except errors.StaleStatusError:
            job = services.store.get(job.job_id)
            continue
        log.info("job_cancelled", job_id=job.job_id, previous=job.status.value)
        return cancelled
    raise errors.StaleStatusError(f"job {job.job_id} kept changing; try again")


def result_expires_at(services: ApiServices, job: JobRecord) -> datetime | None:
    """When the bucket's lifecycle deletes the result (S3 counts whole days from the upload; the record
    counts from the finish, a little earlier, so the API never links to a result that is gone)."""
    if job.result is None or not job.finished_at:
        return None
    finished = datetime.fromisoformat(job.finished_at.replace("Z", "+00:00"))
    return finished + timedelta(days=services.settings.result_expiry_days)


def result_link(services: ApiServices, job: JobRecord) -> str | None:
    """The result's URL for the job view: None while there is none and once it expired."""
    try:
        return result_url(services, job) if job.result else None
    except errors.ResultExpiredError:
        return None


def result_url(services: ApiServices, job: JobRecord) -> str:
    if job.result is None:
        raise errors.ResultNotReadyError(
            f"job {job.job_id} has no result ({job.status.value})",
            details=[{"field": "status", "problem": f"job is {job.status.value}"}],
        )
    expires_at = result_expires_at(services, job)
    if expires_at is not None and expires_at <= utcnow():
        raise errors.ResultExpiredError(
            f"the result of job {job.job_id} expired at {isoformat(expires_at)}; submit the job again",
            details=[{"field": "result", "problem": f"expired at {isoformat(expires_at)}"}],
        )
    # The link is built from the job's own id and owner (and the file's plain name), never from a key that
    # anything else wrote: a result outside results/<owner>/<job>/ cannot be linked.
    key = result_key(job.owner, job.job_id, job.result.filename)
    return str(
        services.s3.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": services.settings.results_bucket,
                "Key": key,
                # a link followed in a browser saves the file under its name instead of showing it
                "ResponseContentDisposition": _attachment(job.result.filename),
            },
            ExpiresIn=services.settings.result_url_seconds,
        )
    )


def _attachment(filename: str) -> str:
    """A Content-Disposition naming the file, its name reduced to characters no header can misread."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename).lstrip(".") or "result"
    return f'attachment; filename="{safe}"'


def _checked_id(job_id: str) -> str:
    if not is_id(job_id):
        raise errors.NoSuchJobError(f"no job {job_id}")
    return job_id


# ---- uploads ---------------------------------------------------------------------------------------------
def parse_upload_request(body: dict[str, Any]) -> CreateUploadRequest:
    try:
        return CreateUploadRequest.model_validate(body)
    except PydanticValidationError as exc:
        raise validation_error(exc) from exc


@dataclass(frozen=True)
class PresignedPost:
    url: str
    fields: dict[str, str]
    expires_at: datetime


def create_upload(
    services: ApiServices, owner: str, request: CreateUploadRequest
) -> tuple[UploadRecord, PresignedPost]:
    """Record the upload PENDING, then presign one POST of exactly the declared file to its own key: the
    size fixed by ``content-length-range`` and the sha256 by the ``x-amz-checksum-sha256`` field, both in
    the signed policy. (S3 enforces those on AWS; pijobs checks the object itself all the same.)"""
    settings = services.settings
    if request.bytes > settings.max_upload_bytes:
        raise errors.ValidationError(
            "the file is larger than one upload takes",
            details=[{"field": "bytes", "problem": f"must be at most {settings.max_upload_bytes} bytes"}],
        )
    now = utcnow()
    upload_id = new_job_id()
    sha256 = request.sha256.lower()
    upload = UploadRecord(
        upload_id=upload_id,
        owner=owner,
        status=UploadStatus.PENDING,
        key=upload_key(owner, upload_id),
        bytes=request.bytes,
        sha256=sha256,
        filename=request.filename,
        created_at=isoformat(now),
        expires_at=int((now + timedelta(days=settings.upload_expiry_days)).timestamp()),
    )
    services.uploads.create(upload)  # before the link exists: every object that can arrive has a record
    # S3 checks a POST's checksum field against the body when the form names the algorithm too.
    checksum = {"x-amz-checksum-algorithm": "SHA256", "x-amz-checksum-sha256": checksum_header(sha256)}
    post = services.presigner.generate_presigned_post(
        Bucket=settings.results_bucket,
        Key=upload.key,
        Fields=checksum,
        Conditions=[
            ["content-length-range", request.bytes, request.bytes],
            *({name: value} for name, value in checksum.items()),
        ],
        ExpiresIn=settings.upload_url_seconds,
    )
    log.info("upload_created", upload_id=upload_id, owner=owner, bytes=request.bytes)
    expires_at = now + timedelta(seconds=settings.upload_url_seconds)
    return upload, PresignedPost(str(post["url"]), {k: str(v) for k, v in post["fields"].items()}, expires_at)


def upload_origin(services: ApiServices) -> str:
    """Where the browser sends an upload's presigned POST (scheme://host[:port]): the origin of a URL signed
    by the same client, for the same bucket, as ``create_upload``'s (a local signature, no AWS call)."""
    post = services.presigner.generate_presigned_post(
        Bucket=services.settings.results_bucket, Key=UPLOADS_PREFIX, ExpiresIn=60
    )
    parts = urlsplit(str(post["url"]))
    return f"{parts.scheme}://{parts.netloc}"


def get_upload(services: ApiServices, owner: str, upload_id: str) -> UploadRecord:
    if not is_id(upload_id):
        raise errors.NoSuchUploadError(f"no upload {upload_id}")
    return services.uploads.get_for_owner(upload_id, owner)


def list_uploads(
    services: ApiServices, owner: str, query: ListUploadsQuery
) -> tuple[list[UploadRecord], str | None]:
    return services.uploads.list_for_owner(
        owner, limit=query.limit or services.settings.page_size, token=query.next
    )


def delete_upload(services: ApiServices, owner: str, upload_id: str) -> UploadRecord:
    """The record first, then the object: a file that still arrives finds no record and is deleted by the
    verifier. A job already accepted with the upload and not yet started cannot fetch it any more."""
    if not is_id(upload_id):
        raise errors.NoSuchUploadError(f"no upload {upload_id}")
    upload = services.uploads.delete(upload_id, owner)
    services.s3.delete_object(Bucket=services.settings.results_bucket, Key=upload.key)
    log.info("upload_deleted", upload_id=upload_id, owner=owner, status=upload.status.value)
    return upload
