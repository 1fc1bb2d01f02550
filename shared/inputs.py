"""Job inputs: files a customer uploaded, named in a job's parameters and pinned in its record at submit.

A function that takes inputs has an ``inputs`` field of type ``Inputs`` in its request model
(``{"t": "<upload_id>"}``) and sets ``BusinessFunction.accepts_inputs``. At submit the API looks up each named
upload and calls ``pin_inputs``: the job record then keeps, per input, the object's key, size and sha256 as
they were when the job was accepted (``PinnedInput``). When the attempt's worker starts (the worker channel),
the API presigns one short-lived GET per pinned input and answers them to that worker only; it downloads
through those URLs and checks size and sha256 before the function sees a byte. The instance holds no
credentials: it cannot read ``uploads/`` (or anything else) on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from pijobs.shared import errors
from pijobs.shared.ids import ID_PATTERN

UPLOADS_PREFIX = "uploads/"
MAX_INPUTS = 8
# An input's name is also an SQL identifier (the sql function's view), so: lowercase, digits, underscores.
INPUT_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
UPLOAD_ID_PATTERN = ID_PATTERN
SHA256_PATTERN = r"^[a-f0-9]{64}$"
OWNER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"  # an API key's id
MIN_UPLOAD_BYTES = 1  # an upload's declared size, and so every record and pin of one, is at least this


def _inner(pattern: str) -> str:
    return pattern.removeprefix("^").removesuffix("$")


# an upload's object key, uploads/<owner>/<upload id>: the only kind of key a job's input may name
UPLOAD_KEY_PATTERN = f"^{re.escape(UPLOADS_PREFIX)}{_inner(OWNER_PATTERN)}/{_inner(UPLOAD_ID_PATTERN)}$"

InputName = Annotated[str, StringConstraints(pattern=INPUT_NAME_PATTERN)]
UploadId = Annotated[str, StringConstraints(pattern=UPLOAD_ID_PATTERN)]
Inputs = Annotated[
    dict[InputName, UploadId],
    Field(
        min_length=1,
        max_length=MAX_INPUTS,
        description="the job's input files: a name for each (a-z, 0-9, _) -> an upload_id of yours",
    ),
]


def upload_prefix(owner: str) -> str:
    """Where one owner's uploads live; nothing outside it is ever pinned or presigned for their jobs."""
    return f"{UPLOADS_PREFIX}{owner}/"


def upload_key(owner: str, upload_id: str) -> str:
    return f"{upload_prefix(owner)}{upload_id}"


def parse_upload_key(key: str) -> tuple[str, str] | None:
    """``(owner, upload_id)`` of an upload's object key (as stored, not URL-encoded), None for any other."""
    parts = key.removeprefix(UPLOADS_PREFIX).split("/")
    if not key.startswith(UPLOADS_PREFIX) or len(parts) != 2:
        return None
    owner, upload_id = parts
    if not re.fullmatch(OWNER_PATTERN, owner) or not re.fullmatch(UPLOAD_ID_PATTERN, upload_id):
        return None
    return owner, upload_id


class UploadStatus(str, Enum):
    PENDING = "PENDING"  # nothing arrived yet
    AVAILABLE = "AVAILABLE"  # size and sha256 verified by pijobs
    REJECTED = "REJECTED"


class UploadRecord(BaseModel):
    """An upload as the jobs table keeps it (``shared/uploads.py``): the object the customer declared, its
    state, and when it expires. ``bytes`` and ``sha256`` are what was declared; an AVAILABLE upload's
    object was read back and found to be exactly that."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    upload_id: str
    owner: str
    status: UploadStatus
    key: str
    bytes: int = Field(ge=MIN_UPLOAD_BYTES)
    sha256: str = Field(pattern=SHA256_PATTERN)
    filename: str = ""
    created_at: str | None = None  # (every upload the API makes has one: the uploads index needs it)
    expires_at: int | None = None  # epoch seconds (the table's TTL attribute); unusable from then on
    verified_at: str | None = None
    reason: str | None = None  # why it was REJECTED

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now.timestamp()


class PinnedInput(BaseModel):
    """One input as the job record keeps it: the object the job was accepted with, and its checksum."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upload_id: str = Field(pattern=UPLOAD_ID_PATTERN)
    key: str = Field(pattern=UPLOAD_KEY_PATTERN)
    bytes: int = Field(ge=MIN_UPLOAD_BYTES)
    sha256: str = Field(pattern=SHA256_PATTERN)


NOT_FOUND = "no such upload"


def pin_inputs(
    requested: Mapping[str, str],
    uploads: Mapping[str, UploadRecord | None],
    *,
    owner: str,
    now: datetime | None = None,
    field_prefix: str = "params.inputs",
) -> dict[str, PinnedInput]:
    """The pinned inputs of a job, from its requested ``{name: upload_id}`` and the upload records found
    (``uploads[upload_id]``, None or absent when there is none). Every problem is one detail naming
    ``params.inputs.<name>``, all raised together as a ValidationError; another owner's upload reads exactly
    like a missing one, and an upload past its ``expires_at`` (as of ``now``) cannot be used."""
    moment = now or datetime.now(timezone.utc)
    pinned: dict[str, PinnedInput] = {}
    problems: list[dict[str, str]] = []
    for name, upload_id in sorted(requested.items()):
        upload = uploads.get(upload_id)
        problem = _problem_of(upload, upload_id, owner, moment)
        if problem:
            problems.append({"field": f"{field_prefix}.{name}", "problem": problem})
            continue
        assert upload is not None
        pinned[name] = PinnedInput(
            upload_id=upload.upload_id, key=upload.key, bytes=upload.bytes, sha256=upload.sha256
        )
    if problems:
        raise errors.ValidationError("an input cannot be used", details=problems)
    return pinned


def _problem_of(upload: UploadRecord | None, upload_id: str, owner: str, now: datetime) -> str | None:
    if upload is None or upload.owner != owner or upload.upload_id != upload_id:
        return NOT_FOUND
    if not is_owned_key(upload.key, owner):
        return NOT_FOUND  # a record that points outside its owner's prefix is never trusted
    if upload.status is not UploadStatus.AVAILABLE:
        return f"the upload is {upload.status.value}, not AVAILABLE"
    if upload.is_expired(now):
        return "the upload has expired: upload the file again"
    return None


def is_owned_key(key: str, owner: str) -> bool:
    """Whether ``key`` is one object under the owner's uploads prefix (no '..', no empty parts)."""
    rest = key.removeprefix(upload_prefix(owner))
    return (
        rest != key and bool(re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", rest)) and ".." not in rest
    )
