"""Retrying a call that failed for a reason that passes (throttling, a 5xx, a dropped connection).

botocore already retries each request a few times within seconds; this covers an outage of a minute or so,
with exponential backoff and full jitter, bounded in total time. Anything else is raised at once.
"""

from __future__ import annotations

import http.client
import random
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pijobs.shared.aws import error_code
from pijobs.shared.logs import get_logger

try:  # the platform's AWS calls; the worker retries plain HTTP only and has no botocore
    from botocore.exceptions import ConnectionError as BotocoreConnectionError
    from botocore.exceptions import HTTPClientError

    _BOTOCORE_TRANSIENT: tuple[type[BaseException], ...] = (BotocoreConnectionError, HTTPClientError)
except ImportError:  # pragma: no cover - exercised by the worker's own environment
    _BOTOCORE_TRANSIENT = ()

log = get_logger(__name__)

T = TypeVar("T")

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "TransactionInProgressException",
        "InternalError",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Throttling, a server error or a connection problem, here or in what the exception was raised from
    (boto3's upload_file re-raises a ClientError as S3UploadFailedError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _BOTOCORE_TRANSIENT):
            return True
        if isinstance(current, urllib.error.HTTPError):  # a plain HTTP GET (a presigned URL)
            if current.code >= 500 or current.code in (408, 429):
                return True
        elif isinstance(current, _PLAIN_HTTP_TRANSIENT):
            return True
        if isinstance(current, Exception) and error_code(current) in THROTTLING_CODES:
            return True
        if _http_status(current) >= 500:
            return True
        current = current.__cause__ or current.__context__
    return False


# A plain HTTP call's connection failures: refused, reset, timed out, cut short.
_PLAIN_HTTP_TRANSIENT = (urllib.error.URLError, ConnectionError, TimeoutError, http.client.IncompleteRead)


def _http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status if isinstance(status, int) else 0


@dataclass(frozen=True)
class Backoff:
    """Waits ``uniform(0, min(cap, base * 2**n))`` before the n-th retry while ``total`` seconds allow."""

    base_seconds: float
    cap_seconds: float
    total_seconds: float
    sleep: Callable[[float], None] = time.sleep

    def call(self, what: str, function: Callable[[], T]) -> T:
        """``function()``, retried while it fails transiently and the time budget lasts."""
        started = time.monotonic()
        failures = 0
        while True:
            try:
                return function()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = random.uniform(0, min(self.cap_seconds, self.base_seconds * 2**failures))
                failures += 1
                if time.monotonic() - started + delay > self.total_seconds:
                    log.warning("transient_failure_gave_up", call=what, failures=failures, error=str(exc))
                    raise
                log.info("transient_failure_retrying", call=what, failures=failures, delay_seconds=delay)
                self.sleep(delay)
