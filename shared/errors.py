"""Every pijobs error derives from PijobsError; the API maps classes to HTTP codes in one table."""

from __future__ import annotations

from typing import Any

from pijobs.shared.job_errors import JobErrorCode

MAX_DETAILS = 20  # an error names at most this many problems, then how many more there were


def capped(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_DETAILS problems and a count of the rest, so a body of 100,000 bad fields gets a small
    answer; each field name and problem shortened to a readable length."""
    shown = [
        {"field": str(d.get("field", ""))[:128], "problem": str(d.get("problem", ""))[:200]}
        for d in details[:MAX_DETAILS]
    ]
    if len(details) > MAX_DETAILS:
        shown.append({"field": "body", "problem": f"{len(details) - MAX_DETAILS} more problems not listed"})
    return shown


class PijobsError(Exception):
    """Base of all domain errors. ``code`` is stable and machine-readable."""

    code = "internal_error"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = capped(details or [])


class ValidationError(PijobsError):
    code = "validation_error"


class MalformedRequestError(PijobsError):
    code = "malformed_request"


class NoSuchJobError(PijobsError):
    code = "not_found"


class NoSuchUploadError(PijobsError):
    """No such upload of the caller's (another tenant's reads exactly like a missing one)."""

    code = "not_found"


class NoSuchWebhookError(PijobsError):
    """A webhook that does not exist or is another key's (the same answer for both)."""

    code = "not_found"


class RouteNotFoundError(PijobsError):
    code = "not_found"


class MethodNotAllowedError(PijobsError):
    code = "method_not_allowed"


class UnsupportedMediaTypeError(PijobsError):
    code = "unsupported_media_type"


class UnauthorizedError(PijobsError):
    code = "forbidden"


class IdempotencyConflictError(PijobsError):
    code = "idempotency_conflict"


class InvalidTransitionError(PijobsError):
    code = "invalid_transition"

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"a job cannot go from {current} to {target}")
        self.current = current
        self.target = target


class StaleStatusError(PijobsError):
    """A conditional status write lost: the record is no longer in the expected status."""

    code = "conflict"


class LinkedWriteRefusedError(PijobsError):
    """A status change made in one transaction with other items: one of those refused its condition (for
    admission, the capacity item: no slot). The job's record is unchanged."""

    code = "conflict"


class JobNotCancellableError(PijobsError):
    code = "job_finished"


class CapacityFullError(PijobsError):
    code = "capacity_full"


class ResultNotReadyError(PijobsError):
    code = "result_not_ready"


class ResultExpiredError(PijobsError):
    """The job's result was deleted by the results bucket's lifecycle rule."""

    code = "result_expired"


class ServiceUnavailableError(PijobsError):
    code = "service_unavailable"


class JobCancelledError(PijobsError):
    code = JobErrorCode.CANCELLED.value


class NoSuchFunctionError(PijobsError):
    """The named business function is not installed or not enabled."""

    code = "not_found"


class FunctionError(PijobsError):
    """A business function broke its contract at run time (a bug in the plug-in, not the customer's)."""

    code = JobErrorCode.FUNCTION_ERROR.value


class ResultUploadError(PijobsError):
    """The worker could not store the job's result (after waiting out transient failures): infrastructure."""

    code = JobErrorCode.RESULT_UPLOAD_FAILED.value


class InputCorruptError(PijobsError):
    """A job's input arrived with another size or sha256 than the job was accepted with."""

    code = JobErrorCode.INPUT_CORRUPT.value


class InputUnavailableError(PijobsError):
    """A job's input could not be fetched (its link is missing, expired or refused)."""

    code = JobErrorCode.INPUT_UNAVAILABLE.value


# ---- the worker channel (api_handler/channel.py) -------------------------------------------------------
class WorkerUnauthenticatedError(PijobsError):
    """A worker channel call without a token (or with something that is not one)."""

    code = "unauthenticated"


class WorkerForbiddenError(PijobsError):
    """A token that is not the job's current one: another job's, an earlier attempt's, forged; or no job."""

    code = "forbidden"


class AttemptEndedError(PijobsError):
    """The token's attempt has ended (finished, cancelled, timed out, retried): it works no more."""

    code = "attempt_ended"


class WorkerConflictError(PijobsError):
    """A channel call out of order (a heartbeat before start, a finish without a declared output)."""

    code = "conflict"


class ResultMismatchError(PijobsError):
    """The stored result is missing or not the declared one (size or sha256)."""

    code = "result_mismatch"
