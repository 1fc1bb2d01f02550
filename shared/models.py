"""Pydantic models at the boundaries: requests, the job record, the queue message."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pijobs.shared.channel import ChannelGrant
from pijobs.shared.ids import ID_PATTERN, new_id
from pijobs.shared.inputs import PinnedInput
from pijobs.shared.status import JobStatus

COST_CENTER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_PATTERN = r"^[^\x00-\x1f]{1,128}$"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def isoformat(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    return new_id()


class JobRequest(BaseModel):
    """The body of ``POST /jobs``: which business function, its parameters, and the customer's labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    function: str = Field(min_length=1, max_length=64, description="a name from GET /functions")
    params: dict[str, Any] = Field(default_factory=dict, description="the function's parameters")
    cost_center: str | None = Field(default=None, pattern=COST_CENTER_PATTERN)
    name: str | None = Field(default=None, pattern=NAME_PATTERN)


class ResultInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bucket: str
    key: str
    bytes: int
    sha256: str
    content_type: str = "application/octet-stream"
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def filename(self) -> str:
        """The name the customer downloads the result under (the key's last part)."""
        return self.key.rsplit("/", 1)[-1]


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str
    message: str


class AttemptInfo(BaseModel):
    """One attempt that infrastructure failed (the job was queued again, or failed after the last)."""

    model_config = ConfigDict(extra="ignore")

    attempt: int
    code: str
    message: str
    at: str


class JobRecord(BaseModel):
    """The job item in DynamoDB (key ``pk = job#<job_id>``)."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    owner: str
    function: str = "pi"
    version: str | None = None  # the function's version at submission: the stack is made from its template
    params: dict[str, Any]
    cost_center: str | None = None
    name: str | None = None
    status: JobStatus
    attempts: int = 0
    created_at: str
    updated_at: str
    dispatched_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    heartbeat_at: str | None = None
    # While QUEUED: when a message for the job was last sent or deferred, the reaper's sign that one exists.
    message_at: str | None = None
    # While parked for capacity (dispatcher/admission.py): the job's place in the fair order.
    wait_tag: float | None = None
    progress: float | None = None
    deadline_seconds: int | None = None
    stack_name: str | None = None
    stack_id: str | None = None
    instance_id: str | None = None
    # The inputs pinned at submit ({name: PinnedInput}); the worker channel's start presigns a GET of each for
    # the attempt's instance, answered to it and kept nowhere.
    inputs: dict[str, PinnedInput] | None = None
    # The current attempt's worker channel: the sha256 of its token (never the token) and that attempt.
    channel: ChannelGrant | None = None
    limits: dict[str, Any] | None = None  # the operator's limits for the function, as of dispatch
    result: ResultInfo | None = None
    error: ErrorInfo | None = None
    history: list[AttemptInfo] = Field(default_factory=list)
    expires_at: int | None = None
    # POST /jobs' callback_url: where this job's events also go, signed with its own secret (shown once).
    callback_url: str | None = None
    callback_secret: str | None = None

    def to_item(self) -> dict[str, Any]:
        item = to_dynamo(self.model_dump(mode="json", exclude_none=True))
        item["pk"] = job_key(self.job_id)
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> JobRecord:
        return cls.model_validate(from_dynamo(item))


class JobMessage(BaseModel):
    """What travels through SQS: a pointer to a job's record (never the record), or an admission tick.

    A tick (``tick``: when it was due, epoch seconds) carries no job: it asks the dispatcher to admit waiting
    jobs into slots that freed meanwhile (docs/scheduling.md).
    """

    model_config = ConfigDict(extra="forbid")

    job_id: str | None = Field(default=None, pattern=ID_PATTERN)
    function: str = "pi"
    tick: float | None = None
    deferrals: int = Field(default=0, ge=0)  # read from messages an older dispatcher deferred; unused

    @model_validator(mode="after")
    def _one_kind(self) -> JobMessage:
        if (self.job_id is None) == (self.tick is None):
            raise ValueError("a message names a job_id or is a tick, one of the two")
        return self


def job_key(job_id: str) -> str:
    return f"job#{job_id}"


def to_dynamo(value: Any) -> Any:
    """Floats become Decimals (DynamoDB's number type); containers are converted recursively."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_dynamo(v) for v in value]
    return value


def from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, set)):
        return [from_dynamo(v) for v in value]
    return value
