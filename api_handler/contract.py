"""What the API promises, as pydantic models: the responses it sends and the requests it reads besides the
job submission (whose parameters each business function declares). Views build these models, routes
declare them, and the OpenAPI document (api_handler/openapi.py) is generated from them, so what is sent,
what is declared and what is documented cannot drift apart."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from pijobs.shared.functions import NAME_PATTERN
from pijobs.shared.ids import ID_PATTERN
from pijobs.shared.inputs import MIN_UPLOAD_BYTES, SHA256_PATTERN, UPLOAD_ID_PATTERN, UploadStatus
from pijobs.shared.models import AttemptInfo, ErrorInfo
from pijobs.shared.status import JobStatus

JOB_ID_PATTERN = ID_PATTERN
WebhookEventType = Literal[
    "job.provisioning",
    "job.running",
    "job.succeeded",
    "job.failed",
    "job.timed_out",
    "job.cancelled",
    "job.retrying",
]  # shared/webhooks.py's EVENT_TYPES (a unit test holds the two equal)
PAGE_LIMIT_RANGE = (1, 100)
# A whole number as text: ASCII digits only (str.isdigit also takes '²', '①' and other scripts' digits).
ASCII_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")


def _whole_number(value: Any) -> Any:
    """Text of ASCII digits as an int (a query string); any other text, a superscript or another script's
    digits, is an error naming the field."""
    if isinstance(value, str) and ASCII_WHOLE_NUMBER.fullmatch(value):
        return int(value)
    if isinstance(value, str):
        raise ValueError("must be a whole number (ASCII digits)")
    return value


def _quoted_whole_number(value: Any) -> Any:
    """The original API's number, also as text with spaces around it."""
    return _whole_number(value.strip() if isinstance(value, str) else value)


WholeNumber = Annotated[int, BeforeValidator(_whole_number), Field(strict=True)]
QuotedWholeNumber = Annotated[
    int,
    BeforeValidator(_quoted_whole_number),
    Field(strict=True),
    WithJsonSchema({"oneOf": [{"type": "integer"}, {"type": "string", "pattern": r"^\s*[0-9]{1,18}\s*$"}]}),
]


def _label(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Label = Annotated[
    str,
    BeforeValidator(_label),
    Field(strict=True),
    WithJsonSchema({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- requests ------------------------------------------------------------------------------------------
class ListJobsQuery(BaseModel):
    """``GET /jobs``'s query string (other parameters are ignored, as a proxy would)."""

    limit: WholeNumber | None = Field(
        default=None,
        ge=PAGE_LIMIT_RANGE[0],
        le=PAGE_LIMIT_RANGE[1],
        description="jobs per page (default 20)",
        json_schema_extra={"examples": [20]},
    )
    next: str | None = Field(
        default=None, max_length=2048, description="the previous page's `next`, to read the page after it"
    )
    function: str | None = Field(
        default=None, pattern=f"^(?:{NAME_PATTERN.pattern})$", description="only jobs of this function"
    )
    status: JobStatus | None = Field(default=None, description="only jobs in this state")
    name_contains: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="only jobs whose name contains this text (case-sensitive)",
    )


class ListUploadsQuery(BaseModel):
    """``GET /uploads``'s query string."""

    limit: WholeNumber | None = Field(
        default=None,
        ge=PAGE_LIMIT_RANGE[0],
        le=PAGE_LIMIT_RANGE[1],
        description="uploads per page (default 20)",
        json_schema_extra={"examples": [20]},
    )
    next: str | None = Field(
        default=None, max_length=2048, description="the previous page's `next`, to read the page after it"
    )


# A file's name as the customer calls it (a label: the object's key is pijobs' own).
FILENAME_PATTERN = r"^[^\x00-\x1f\x7f/\\]{1,255}$"


class CreateUploadRequest(Model):
    """``POST /uploads``: the file about to be sent, declared; pijobs accepts exactly that file."""

    filename: str = Field(
        pattern=FILENAME_PATTERN, description="the file's name (a label, no '/')", examples=["scores.csv"]
    )
    bytes: int = Field(
        strict=True, ge=MIN_UPLOAD_BYTES, description="the file's exact size in bytes", examples=[1048576]
    )
    sha256: str = Field(
        pattern=r"^[0-9a-fA-F]{64}$",
        description="the file's SHA-256, in hex",
        examples=["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
    )


class PerRunExecuteRequest(Model):
    """The original service's call, kept for its clients: N digits of pi."""

    DigitsToCalculate: QuotedWholeNumber = Field(
        description="how many digits of pi (a number, or a number as text)", examples=[1000]
    )
    StackName: Label | None = Field(default=None, description="a name for the job")
    CostCenter: Label | None = Field(default=None, description="a label for the bill")


# ---- responses -----------------------------------------------------------------------------------------
class Links(Model):
    self: str = Field(description="this job")
    result: str = Field(description="its result (a redirect once it has one)")


class Accepted(Model):
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    status: JobStatus
    links: Links
    callback_secret: str | None = Field(
        default=None,
        description="with a callback_url: the secret that signs this job's events, shown this once",
    )


class ResultView(Model):
    filename: str
    bytes: int
    sha256: str
    content_type: str
    metadata: dict[str, Any]
    expires_at: str | None = Field(description="when the result is deleted")
    url: str | None = Field(description="a short-lived download link; null once the result expired")


class JobView(Model):
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    status: JobStatus
    function: str
    version: str | None
    params: dict[str, Any]
    cost_center: str | None
    name: str | None
    attempts: int
    progress: float | None
    created_at: str
    updated_at: str
    dispatched_at: str | None
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    estimated_finish_at: str | None = Field(
        default=None,
        description="while it runs: when it should finish at the rate it has made progress so far",
    )
    error: ErrorInfo | None = Field(description="why the job failed or was cancelled")
    history: list[AttemptInfo] = Field(description="attempts the infrastructure failed, each with its error")
    result: ResultView | None
    links: Links


class JobSummary(Model):
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    status: JobStatus
    function: str
    params: dict[str, Any]
    name: str | None
    progress: float | None = Field(description="0 to 1 while it runs")
    estimated_finish_at: str | None = Field(
        default=None,
        description="while it runs: when it should finish at the rate it has made progress so far",
    )
    created_at: str
    started_at: str | None
    finished_at: str | None
    links: Links


class JobPage(Model):
    jobs: list[JobSummary] = Field(description="newest first")
    next: str | None = Field(description="pass as `next` for the following page; null on the last")


class ResultRedirect(Model):
    url: str = Field(description="the download link, also in the Location header")


class UploadCreated(Model):
    upload_id: str = Field(pattern=UPLOAD_ID_PATTERN)
    url: str = Field(description="where to POST the file: a multipart form of `fields`, then `file` last")
    fields: dict[str, str] = Field(description="the form fields to send as they are, before the file")
    expires_at: str = Field(description="until when the url takes the file")


class UploadView(Model):
    upload_id: str = Field(pattern=UPLOAD_ID_PATTERN)
    status: UploadStatus = Field(
        description="PENDING until the file arrived and was checked, then AVAILABLE or REJECTED"
    )
    filename: str
    bytes: int = Field(description="the size declared (an AVAILABLE upload's file has exactly this size)")
    sha256: str = Field(pattern=SHA256_PATTERN)
    created_at: str
    expires_at: str = Field(description="when the upload is deleted; it cannot be used from then on")
    verified_at: str | None = Field(description="when pijobs checked the file")
    reason: str | None = Field(description="why it was REJECTED")


class UploadPage(Model):
    uploads: list[UploadView] = Field(description="newest first")
    next: str | None = Field(description="pass as `next` for the following page; null on the last")


class FunctionEntry(Model):
    name: str
    version: str
    title: str
    description: str
    parameters: dict[str, Any] = Field(description="the JSON Schema of the function's `params`")
    limits: dict[str, Any] = Field(description="this deployment's limits for it")


class FunctionCatalog(Model):
    functions: list[FunctionEntry]


class ErrorDetail(Model):
    field: str = Field(description="the request part at fault: a body path, a parameter or a header")
    problem: str


class ErrorBody(Model):
    code: str = Field(description="stable and machine-readable")
    message: str
    details: list[ErrorDetail]
    request_id: str | None = Field(default=None, description="quote it when you report a problem")


class ErrorEnvelope(Model):
    """Every error, from the API and from the gateway in front of it."""

    error: ErrorBody


# ---- webhooks (docs/webhooks.md) -----------------------------------------------------------------------
WEBHOOK_ID_PATTERN = r"^wh_[0-9a-f]{32}$"


class CreateWebhookRequest(Model):
    """``POST /webhooks``: where to send which of your jobs' events."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="an https URL on a public address (the embedded stack also takes http to 127.0.0.1)",
        examples=["https://example.com/hooks/jobs"],
    )
    events: list[WebhookEventType] | None = Field(
        default=None, min_length=1, description="the event types to send (default: all of them)"
    )
    description: str | None = Field(default=None, max_length=256)


class WebhookView(Model):
    webhook_id: str = Field(pattern=WEBHOOK_ID_PATTERN)
    url: str
    events: list[str]
    description: str | None
    created_at: str
    state: str = Field(description="active; failing (a delivery used up its retries); or disabled (410 Gone)")
    disabled_reason: str | None
    failing_since: str | None


class WebhookCreated(WebhookView):
    secret: str = Field(
        description="signs every delivery (Standard Webhooks); shown this once", examples=["whsec_..."]
    )


class WebhookSecret(Model):
    webhook_id: str = Field(pattern=WEBHOOK_ID_PATTERN)
    secret: str = Field(
        description="the new secret, shown this once; the previous one also signs until `previous_until`"
    )
    previous_until: str


class WebhookPage(Model):
    webhooks: list[WebhookView] = Field(description="newest first")


class DeliveryView(Model):
    event_id: str = Field(description="the webhook-id header: the same on every attempt")
    type: str
    job_id: str | None
    job_attempt: int | None
    state: str = Field(
        description="pending, delivered, failed (retries used up) or gone (410, or the webhook went)"
    )
    attempts: int
    created_at: str
    last_attempt_at: str | None
    response_status: int | None
    duration_ms: int | None
    next_attempt_at: str | None
    error: str | None


class DeliveryPage(Model):
    deliveries: list[DeliveryView] = Field(description="the most recent, newest first")


class TestQueued(Model):
    event_id: str
    state: str
