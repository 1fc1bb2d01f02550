"""The worker channel's facts, shared by the platform (which mints and checks) and the worker (which calls).

A job's instance holds no AWS credentials. At each attempt's dispatch the platform mints one random token
(TOKEN_BYTES of entropy), keeps only its sha256 on the job record (``JobRecord.channel``, with the attempt it
was minted for) and hands the token itself to that attempt's instance only (a NoEcho stack parameter written
into its UserData; locally the worker's environment). The worker then calls the few operations below over
HTTP on the API, authenticated by that token alone (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from enum import Enum

from pydantic import BaseModel, ConfigDict

from pijobs.shared.job_errors import JobErrorCode

TOKEN_BYTES = 32  # 256 bits
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43,128}")
# The route family of the channel: POST {api}/worker/jobs/{id}/{operation}, outside the customer's API.
WORKER_ROUTE = "/worker/jobs/{id}/{operation}"
# Where the worker finds its token and the API (the instance's UserData exports them; locally the runner).
TOKEN_ENV = "PIJOBS_WORKER_TOKEN"
API_URL_ENV = "PIJOBS_API_URL"


class Operation(str, Enum):
    START = "start"  # PROVISIONING -> RUNNING: the job's parameters, limits, fresh input links, deadline
    HEARTBEAT = "heartbeat"  # progress recorded; answers whether the job goes on
    OUTPUT = "output"  # a presigned POST for exactly the declared result file
    FINISH = "finish"  # SUCCEEDED (the stored file checked) or a failure; the platform cleans up


class FinishOutcome(str, Enum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # the job's own failure (refused, corrupt input, the function broke): final
    RETRY = "RETRY"  # the infrastructure's (result or inputs unreachable): another attempt while any remain


# The codes a worker may give back an attempt with (the platform decides QUEUED or FAILED).
RETRY_CODES = frozenset({JobErrorCode.RESULT_UPLOAD_FAILED.value, JobErrorCode.INPUT_UNAVAILABLE.value})


class ChannelGrant(BaseModel):
    """What the job record keeps of a channel token: its hash and the attempt it is good for."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    attempt: int
    token_sha256: str


def mint_token(attempt: int) -> tuple[str, ChannelGrant]:
    """A new token for ``attempt`` and what the record keeps of it."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, ChannelGrant(attempt=attempt, token_sha256=token_sha256(token))


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, grant: ChannelGrant | None) -> bool:
    """Whether ``token`` is the one ``grant`` was minted for (compared in constant time)."""
    if grant is None or not TOKEN_PATTERN.fullmatch(token):
        return False
    return hmac.compare_digest(token_sha256(token), grant.token_sha256)
